//! Helpers of the abuse suite (`tests/e2e/abuse/`): a decoy directory outside every app that the
//! agent (root) must never touch or read out, a bystander app whose clients must see no failure
//! while another app on the same agent is attacked, and the setup for workers run as `nobody`.

use crate::env::{AppSpec, Setup};
use crate::{Agent, Load, LoadReport};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// The name of the bystander app (see [`Bystander`]).
pub const BYSTANDER: &str = "bystander";

/// A root-owned directory outside the agent's state dir, with a private file of `KEY=VALUE`
/// lines (like `/etc/deployer/agent.env`) and a subdirectory of data. An attack that makes root
/// read, move, chown, delete or write through a link shows up as a changed [`Decoy::snapshot`];
/// one that leaks it shows [`Decoy::SECRET`] somewhere it should not be.
pub struct Decoy {
    dir: TempDir,
    before: BTreeMap<String, String>,
}

impl Decoy {
    /// The value of the decoy's secret file: it must never appear in a worker's environment, a
    /// deploy, a log or a report.
    pub const SECRET: &'static str = "decoy-secret-7f3a9c";

    pub fn new() -> Decoy {
        let dir = tempfile::Builder::new().prefix("deployer-decoy-").tempdir().expect("a decoy dir");
        let secret = dir.path().join("agent.env");
        std::fs::write(&secret, format!("DECOY_SECRET={}\nOTHER=x\n", Decoy::SECRET)).expect("write the decoy");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod the decoy");
        std::fs::create_dir_all(dir.path().join("data/inner")).expect("decoy dirs");
        std::fs::write(dir.path().join("data/inner/file.txt"), "decoy data\n").expect("decoy data");
        std::fs::write(dir.path().join("data/top.txt"), "top\n").expect("decoy data");
        // Readable by others, like most of /etc: `nobody` can reach it, so only root's mistakes count.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod the decoy");
        let before = snapshot(dir.path());
        Decoy { dir, before }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The private `KEY=VALUE` file (mode 0600, root's).
    pub fn secret_file(&self) -> PathBuf {
        self.path().join("agent.env")
    }

    /// Every entry under the decoy: type, mode, owner, size and content (files) or target (links).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(self.path())
    }

    /// Panics, listing the differences, if anything under the decoy changed.
    pub fn assert_untouched(&self) {
        let now = self.snapshot();
        if now != self.before {
            let mut diff = String::new();
            for (k, v) in &self.before {
                match now.get(k) {
                    None => diff.push_str(&format!("  gone: {k} ({v})\n")),
                    Some(n) if n != v => diff.push_str(&format!("  changed: {k}: {v} -> {n}\n")),
                    _ => {}
                }
            }
            for (k, v) in &now {
                if !self.before.contains_key(k) {
                    diff.push_str(&format!("  new: {k} ({v})\n"));
                }
            }
            panic!("the decoy directory {} was changed:\n{diff}", self.path().display());
        }
    }
}

impl Default for Decoy {
    fn default() -> Self {
        Decoy::new()
    }
}

fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let kind = if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default())
        } else if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
            "dir".to_string()
        } else {
            format!(
                "file {:?}",
                std::fs::read(&p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
            )
        };
        out.insert(rel, format!("{kind} mode {:o} owner {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid()));
    }
    out
}

/// A second app on the attacked agent (the example app, 2 workers) with clients on it from
/// [`Bystander::start`] to [`Bystander::finish`]: an attack on another app costs it nothing.
pub struct Bystander {
    load: Load,
}

impl Bystander {
    /// The bystander's app spec: add it to the test's [`crate::TestEnv`] with `.app(...)`.
    pub fn app() -> AppSpec {
        AppSpec::new(BYSTANDER)
    }

    /// Start 10 keep-alive clients on the bystander and wait until they are served.
    pub fn start(agent: &Agent) -> Bystander {
        let load = Load::start(agent.port(BYSTANDER), 10, true);
        assert!(load.wait_for_more(20, Duration::from_secs(15)), "the bystander's load did not get going");
        Bystander { load }
    }

    /// Stop the clients; panics unless every request was answered 200 and some were served
    /// after the attack.
    pub fn finish(self) -> LoadReport {
        assert!(self.load.wait_for_more(20, Duration::from_secs(15)), "the bystander stopped answering");
        let report = self.load.stop();
        assert_eq!(report.failed, 0, "the bystander failed requests during the attack: {report}");
        report
    }
}

/// Whether the tests run as root (the abuse suite runs workers as `nobody`, which needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The test's temp dir is private to root; workers run as `nobody` must reach their releases.
pub fn open_to_nobody(setup: &Setup) {
    std::fs::set_permissions(setup.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
}

/// `nobody`'s uid, as `/proc/<pid>/status` shows it.
pub fn nobody_uid() -> u32 {
    nix::unistd::User::from_name("nobody").expect("getpwnam").expect("a `nobody` user").uid.as_raw()
}
