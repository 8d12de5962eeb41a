//! Where an app's code comes from, as the config means it: `repo:` (with `branch`, `root`,
//! `auth` and the app's directory) or `cwd:`, never both and never neither. Built once when the
//! config is loaded, so no caller checks again whether a `repo` is there.

use super::AuthConfig;
use std::path::{Path, PathBuf};

/// An app's code.
#[derive(Debug, Clone, PartialEq)]
pub enum AppSource {
    /// Deployed from git: releases of `repo`'s `branch` under the app's directory.
    Git(GitSource),
    /// A directory run as it is (`cwd:`), absolute; deployed by other means.
    Dir(PathBuf),
}

/// `repo:` and what goes with it, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GitSource {
    /// An https or ssh URL, a `file://` URL, or an absolute local path.
    pub repo: String,
    /// The branch deployed.
    pub branch: String,
    /// The repository's subdirectory that holds the app (relative, inside the repository).
    pub root: PathBuf,
    /// Credentials for `repo`; key paths absolute.
    pub auth: Option<AuthConfig>,
    /// The app's directory (`repo.git`, `releases/`, `shared/`, `current`), absolute.
    pub dir: PathBuf,
}

impl AppSource {
    /// The git source of an app deployed from git.
    pub fn git(&self) -> Option<&GitSource> {
        match self {
            AppSource::Git(g) => Some(g),
            AppSource::Dir(_) => None,
        }
    }

    /// The git repository, for reports and messages.
    pub fn repo(&self) -> Option<&str> {
        self.git().map(|g| g.repo.as_str())
    }

    /// The app's directory, for an app deployed from git.
    pub fn app_dir(&self) -> Option<&Path> {
        self.git().map(|g| g.dir.as_path())
    }
}

/// Only until the config is resolved (serde needs a value for a field it does not read): every
/// loaded config has the source its keys say.
impl Default for AppSource {
    fn default() -> Self {
        AppSource::Dir(PathBuf::new())
    }
}
