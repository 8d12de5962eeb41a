//! A git repository an app deploys from, made with the real `git` CLI in a temp dir: the
//! example app committed on `main`, then whatever commits a test makes.

use crate::process::{CliOutput, run_to_end};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// A work tree with its `.git`; agents fetch from its path.
pub struct TestRepo {
    dir: TempDir,
}

impl TestRepo {
    /// A repository whose first commit on `main` is `examples/hello-node`.
    pub fn with_example_app() -> TestRepo {
        let dir = tempfile::Builder::new().prefix("deployer-repo-").tempdir().expect("a temp dir");
        crate::env::copy_example_app(dir.path());
        let repo = TestRepo { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["add", "--all"]);
        repo.git(&["commit", "--quiet", "--message", "the example app"]);
        repo
    }

    /// What an agent's `repo:` names.
    pub fn url(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `path` (relative to the work tree) and commit it on the current branch.
    /// Answers the new commit's sha.
    pub fn commit_file(&self, path: &str, content: &str, message: &str) -> String {
        let file: PathBuf = self.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create dirs in the repo");
        }
        std::fs::write(&file, content).expect("write a file in the repo");
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--message", message]);
        self.head()
    }

    /// Commit a new `.env` whose greeting the example app answers with (`hello from worker ...`),
    /// so a test sees which commit serves.
    pub fn commit_greeting(&self, greeting: &str) -> String {
        self.commit_file(".env", &format!("GREETING={greeting}\n"), &format!("say {greeting}"))
    }

    /// Commit an `app.js` (the example app's) that serves, then exits with 1 `ms` after its start,
    /// every time: a release that crash-loops after getting ready. Answers the sha.
    pub fn commit_crash_after(&self, ms: u64) -> String {
        let app_js = std::fs::read_to_string(self.path().join("app.js")).expect("app.js");
        let crashing = format!("{app_js}\nsetTimeout(() => process.exit(1), {ms});\n");
        self.commit_file("app.js", &crashing, &format!("crash {ms} ms after the start"))
    }

    /// Replace `path` in the work tree by a symlink to `target` and commit it. Answers the sha.
    pub fn commit_link(&self, path: &str, target: &Path) -> String {
        let p = self.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dirs in the repo");
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).expect("remove a dir in the repo"),
            Ok(_) => std::fs::remove_file(&p).expect("remove a file in the repo"),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(target, &p).expect("make a link in the repo");
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--message", &format!("{path} -> {}", target.display())]);
        self.head()
    }

    /// The sha of `HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).stdout.trim().to_string()
    }

    /// Run `git <args>` in the work tree; panics with its output when it fails.
    pub fn git(&self, args: &[&str]) -> CliOutput {
        let mut cmd = Command::new("git");
        cmd.current_dir(self.path())
            .args(["-c", "user.name=deployer tests", "-c", "user.email=tests@deployer.invalid"])
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        let out = run_to_end(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "git {args:?} failed:\n{}{}", out.stdout, out.stderr);
        out
    }
}
