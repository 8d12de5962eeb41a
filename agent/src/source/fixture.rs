//! A real upstream repository for the source tests, driven with the `git` CLI as a developer would.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A non-bare repository on branch `main` in a temp dir, with one commit.
pub struct Upstream {
    dir: tempfile::TempDir,
}

impl Upstream {
    pub fn new() -> Upstream {
        let up = Upstream { dir: tempfile::tempdir().unwrap() };
        up.git(&["init", "-q", "-b", "main"]);
        up.write("README.md", "hello\n");
        up.commit("initial");
        up
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository as a plain local path.
    pub fn path_url(&self) -> String {
        self.path().display().to_string()
    }

    /// The repository as a `file://` URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Run git in the repository, isolated from the user's and the system's config; stdout trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.symlinks=true",
            ])
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Write a file (and its directories) in the work tree.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Commit everything in the work tree; the new sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}
