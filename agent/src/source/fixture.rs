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

/// A bare repository `repo.git` in a temp dir whose objects a test writes by hand, byte for
/// byte, on branch `main`: trees git itself refuses to make (30,000 levels deep, odd names and
/// modes) included.
pub struct RawRepo {
    dir: tempfile::TempDir,
    repo: git2::Repository,
}

impl RawRepo {
    pub fn new() -> RawRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path().join("repo.git")).unwrap();
        RawRepo { dir, repo }
    }

    /// The repository as a local path, what an app's `repo:` names.
    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    /// The bare repository.
    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// The temp dir holding `repo.git` (a [`GitDaemon`] serves it as `repo.git`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn blob(&self, data: &[u8]) -> git2::Oid {
        self.repo.odb().unwrap().write(git2::ObjectType::Blob, data).unwrap()
    }

    /// A tree of `(mode, name, object)` entries, written as given: no sorting, no checks.
    pub fn tree(&self, entries: &[(&str, &[u8], git2::Oid)]) -> git2::Oid {
        self.repo.odb().unwrap().write(git2::ObjectType::Tree, &tree_bytes(entries)).unwrap()
    }

    /// `levels` directories named `d`, one inside the other, with `leaf` (a tree) at the bottom.
    pub fn chain(&self, levels: usize, leaf: git2::Oid) -> git2::Oid {
        let odb = self.repo.odb().unwrap();
        let mut tree = leaf;
        for _ in 0..levels {
            tree = odb.write(git2::ObjectType::Tree, &tree_bytes(&[("40000", b"d", tree)])).unwrap();
        }
        tree
    }

    /// A commit of `tree`, made the head of `main`; its sha.
    pub fn commit(&self, tree: git2::Oid) -> String {
        let parent = self.repo.refname_to_id("refs/heads/main").ok();
        let mut text = format!("tree {tree}\n");
        if let Some(parent) = parent {
            text.push_str(&format!("parent {parent}\n"));
        }
        text.push_str("author t <t@t> 1700000000 +0000\ncommitter t <t@t> 1700000000 +0000\n\nraw\n");
        let commit = self.repo.odb().unwrap().write(git2::ObjectType::Commit, text.as_bytes()).unwrap();
        self.repo.reference("refs/heads/main", commit, true, "test").unwrap();
        commit.to_string()
    }
}

/// A tree object's bytes: `<mode> <name>\0<20-byte id>` per entry.
pub fn tree_bytes(entries: &[(&str, &[u8], git2::Oid)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (mode, name, oid) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(oid.as_bytes());
    }
    bytes
}

/// `git daemon` serving the repositories under a directory over `git://` on loopback, one
/// `git daemon --inetd` per connection (so the port is the test's own, bound before anything
/// connects): libgit2's smart protocol, as against a real git server.
pub struct GitDaemon {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GitDaemon {
    /// Serve `base` (its subdirectories are the repositories), with `git -c <config>` for each.
    pub fn serve(base: &Path, config: &[&str]) -> GitDaemon {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (base, config, stopped) =
            (base.to_path_buf(), config.iter().map(|c| c.to_string()).collect::<Vec<_>>(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let input = std::os::fd::OwnedFd::from(conn.try_clone().unwrap());
                let mut cmd = Command::new("git");
                for c in &config {
                    cmd.args(["-c", c]);
                }
                let child = cmd
                    .args(["daemon", "--inetd", "--export-all", "--informative-errors"])
                    .arg(format!("--base-path={}", base.display()))
                    .arg(&base)
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .stdin(std::process::Stdio::from(input))
                    .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(conn)))
                    .stderr(std::process::Stdio::null())
                    .spawn();
                // Reaped in the background; the daemon exits when the client hangs up.
                if let Ok(mut child) = child {
                    std::thread::spawn(move || child.wait());
                }
            }
        });
        GitDaemon { port, stop }
    }

    /// The `git://` URL of repository `name` under the served directory.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        // the listener may be gone already, which ends the loop too
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
