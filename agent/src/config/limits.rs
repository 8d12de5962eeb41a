//! `limits:` of an app: how much one commit of its repository may make the agent fetch and write.
//! A commit over a limit fails its deploy with an error naming the key; the agent and the other
//! apps are not affected. Every key has a default, so `limits:` is only written to raise one.

use super::units::Size;
use super::{At, ConfigError};
use crate::source::Limits;
use serde::Deserialize;

/// The deepest `max_depth` accepted: a path of that many directories no longer fits Linux's
/// 4096-byte `PATH_MAX` with names of more than two characters, and removing a release holds a
/// file descriptor per level.
const MAX_DEPTH_CEILING: u32 = 1024;

/// `limits: { max_files: 200000, max_depth: 256, max_file_size: 100M, max_release_size: 2G,
/// max_fetch_size: 1G, max_fetch_objects: 1000000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Files, symlinks and directories one release may hold (default 200000). Well above large
    /// monorepos (the Linux kernel has about 90,000 files), and it bounds the inodes, the time
    /// and the agent's memory (about 100 bytes per entry while the tree is listed) of one deploy.
    pub max_files: u64,
    /// How deeply a release's directories may nest (default 256, at most 1024). Real trees stay
    /// under 30 levels; git itself refuses trees deeper than 4096 (`core.maxTreeDepth`).
    pub max_depth: u32,
    /// The largest single file of a release (default `100M`, GitHub's own ceiling for a file).
    /// It is checked from the object's header before it is read, and the agent holds at most one
    /// file this large in memory at a time (larger objects are streamed where git stores them
    /// loose). For a repository on this host, every file a fetch brings is held to it, not only
    /// the deployed commit's.
    pub max_file_size: Size,
    /// The sum of a release's file sizes (default `2G`): the disk one release may take, checked
    /// before anything is written. `keep_releases` of them are kept.
    pub max_release_size: Size,
    /// Bytes one fetch may download (default `1G`): git compresses, so this allows a history far
    /// larger, while a server, or a repository on this host, cannot fill the disk or memory.
    pub max_fetch_size: Size,
    /// Objects (commits, directories, file versions) one fetch may download (default 1000000):
    /// indexing costs the agent about 100 bytes of memory per object.
    pub max_fetch_objects: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = Limits::default();
        LimitsConfig {
            max_files: d.max_files,
            max_depth: d.max_depth,
            max_file_size: Size(d.max_file_size),
            max_release_size: Size(d.max_release_size),
            max_fetch_size: Size(d.max_fetch_size),
            max_fetch_objects: d.max_fetch_objects,
        }
    }
}

impl LimitsConfig {
    /// The limits the app's git source holds its repository to.
    pub fn to_source(self) -> Limits {
        Limits {
            max_files: self.max_files,
            max_depth: self.max_depth,
            max_file_size: self.max_file_size.0,
            max_release_size: self.max_release_size.0,
            max_fetch_size: self.max_fetch_size.0,
            max_fetch_objects: self.max_fetch_objects,
        }
    }
}

/// Every limit of app `name` is at least 1, and `max_depth` at most [`MAX_DEPTH_CEILING`].
pub(super) fn check(name: &str, limits: &LimitsConfig, at: &At<'_>) -> Result<(), ConfigError> {
    let values = [
        ("max_files", limits.max_files),
        ("max_depth", u64::from(limits.max_depth)),
        ("max_file_size", limits.max_file_size.0),
        ("max_release_size", limits.max_release_size.0),
        ("max_fetch_size", limits.max_fetch_size.0),
        ("max_fetch_objects", limits.max_fetch_objects),
    ];
    for (key, value) in values {
        if value == 0 {
            return Err(at(
                &["apps", name, "limits", key],
                format!("`limits.{key}: 0` of app `{name}` would refuse every deploy"),
                Some(format!("remove `{key}` to keep its default, or write a larger value")),
            ));
        }
    }
    if limits.max_depth > MAX_DEPTH_CEILING {
        return Err(at(
            &["apps", name, "limits", "max_depth"],
            format!("`limits.max_depth: {}` of app `{name}` is over {MAX_DEPTH_CEILING}", limits.max_depth),
            Some(format!(
                "a path that deep does not fit the system's 4096-byte path limit; write {MAX_DEPTH_CEILING} or less"
            )),
        ));
    }
    Ok(())
}
