//! Every process tree the agent starts lives in a cgroup of its own, when the host gives the agent
//! a writable cgroup v2 hierarchy: a worker, and each command of an install step or hook.
//!
//! A process group is not enough to end what a command starts: a daemon that calls `setsid`
//! leaves it, and a child of `sh -c` outlives the agent's `kill -9` (the death signal reaches
//! direct children only). A cgroup holds every descendant whatever it does, so
//! - `cgroup.kill` ends the whole tree at once (after a worker exits or is retired, after each
//!   install command, when a deploy is cancelled);
//! - the next agent ends the trees a killed agent left behind, before it binds any port;
//! - a worker's CPU (`cpu.stat`, which also counts children that already exited) and memory (the
//!   RSS of every process in it) are the tree's, so `max_memory`, `deployer ls` and `/metrics`
//!   see `node` under `npm start` or `sh -c`.
//!
//! Where: under the agent's own cgroup (`/proc/self/cgroup`), in `deployer-<hash of the state
//! dir>`, so two agents on one host never touch each other's trees. No controller is enabled, so
//! the agent may stay in its own cgroup beside them; under systemd the unit needs `Delegate=yes`.
//! Without a writable cgroup2 mount (a container, an old kernel, not root), or with
//! `DEPLOYER_CGROUPS=off` in the agent's environment, each tree is tracked by a tag instead: every
//! process the agent starts gets `DEPLOYER_TREE=deployer-<hash>/<name>` in its environment, which
//! its descendants inherit whether they call `setsid` or are re-parented to init, and the tree is
//! the set of processes whose environment holds that entry (read from `/proc/<pid>/environ`). It
//! is ended and measured the same way, and the next agent ends the tagged processes a killed one
//! left. What escapes a tag: a process that replaces its whole environment (`env -i`, `sudo`
//! without `-E`). The agent says at start which way it tracks trees.
//!
//! A process joins its cgroup between fork and exec, before it can start anything, by writing `0`
//! to `cgroup.procs` through a descriptor opened by the agent (the kernel checks the opener's
//! rights, so this works after the switch to an app's `user:` too). If that write fails, the
//! agent moves the process itself right after the spawn.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that tags a process tree where there are no cgroups.
pub const TAG_VAR: &str = "DEPLOYER_TREE";

/// The agent's part of the cgroup tree, its tag prefix where the host has no cgroups to give, or
/// nothing (process groups only: unit tests).
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    inner: Option<Arc<Root>>,
}

#[derive(Debug)]
struct Root {
    /// `deployer-<hash of the state dir>`: the cgroup's name, or the tags' prefix.
    name: String,
    /// The cgroup; `None`: trees are tagged.
    path: Option<PathBuf>,
    /// Makes every group name unique within one agent's life.
    next: AtomicU64,
}

impl Cgroups {
    /// Process groups only.
    pub fn none() -> Cgroups {
        Cgroups::default()
    }

    /// The agent's cgroup root for `state_dir`, created if needed; tagged trees (and why, logged)
    /// when there is no writable cgroup v2 hierarchy or `DEPLOYER_CGROUPS=off`.
    pub fn detect(state_dir: &Path) -> Cgroups {
        let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let hash = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let name = format!("deployer-{}", hex::encode(&hash[..6]));
        let off = std::env::var_os("DEPLOYER_CGROUPS").is_some_and(|v| v == "off");
        let path = if off { Err("DEPLOYER_CGROUPS=off".to_string()) } else { Self::root_for(&name) };
        let path = match path {
            Ok(path) => {
                tracing::debug!(path = %path.display(), "process trees in cgroups");
                Some(path)
            }
            Err(why) => {
                tracing::info!(
                    "no cgroup v2 to use ({why}): a worker's or install step's processes are tracked by the \
                     `{TAG_VAR}` entry of their environment"
                );
                None
            }
        };
        Cgroups { inner: Some(Arc::new(Root { name, path, next: AtomicU64::new(0) })) }
    }

    fn root_for(name: &str) -> Result<PathBuf, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 mount")?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = own_cgroup(&own).ok_or("not in a cgroup v2 hierarchy")?;
        let path = mount.join(own.trim_start_matches('/')).join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        // Writable for real (a read-only bind mount lets mkdir fail, but check anyway).
        std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))
            .map_err(|e| format!("cannot write {}: {e}", path.join("cgroup.procs").display()))?;
        Ok(path)
    }

    /// A new, empty group for one process tree; `None` without any tracking or when its cgroup
    /// cannot be made (then the caller relies on the process group, and says nothing more: start
    /// said it).
    pub fn create(&self, what: &str) -> Option<Tree> {
        let root = self.inner.as_ref()?;
        let n = root.next.fetch_add(1, Ordering::Relaxed);
        let name: String =
            what.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        // The pid too: during an upgrade two agents make groups side by side.
        let name = format!("{name}.{}.{n}", std::process::id());
        let Some(root_path) = &root.path else {
            return Some(Tree::Tagged { tag: format!("{}/{name}", root.name) });
        };
        let path = root_path.join(name);
        if let Err(e) = std::fs::create_dir(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot create a cgroup");
            return None;
        }
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(path.join("cgroup.procs")) {
            Ok(procs) => Some(Tree::Cgroup { path, procs }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open a cgroup");
                let _ = std::fs::remove_dir(&path); // empty: nothing to lose
                None
            }
        }
    }

    /// End every tree a previous agent on this state dir left (it was killed before it could),
    /// and remove their groups. Answers how many trees held processes.
    pub fn reap_previous(&self) -> usize {
        let Some(root) = &self.inner else { return 0 };
        let Some(root_path) = &root.path else {
            let prefix = format!("{}/", root.name);
            let left = tagged(|tag| tag.starts_with(&prefix));
            let trees: std::collections::BTreeSet<&str> = left.iter().map(|(_, tag)| tag.as_str()).collect();
            let pids: Vec<u32> = left.iter().map(|(pid, _)| *pid).collect();
            end_tagged(&pids, |tag| tag.starts_with(&prefix), Duration::from_secs(5));
            return trees.len();
        };
        let Ok(entries) = std::fs::read_dir(root_path) else { return 0 };
        let mut reaped = 0;
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if !pids_in(&path).is_empty() {
                reaped += 1;
            }
            end_and_remove(&path, Duration::from_secs(5));
        }
        reaped
    }

    /// At the agent's end: its root, if nothing is left in it.
    pub fn remove_root(&self) {
        if let Some(path) = self.inner.as_ref().and_then(|r| r.path.as_ref()) {
            let _ = std::fs::remove_dir(path); // fails while a tree is left: it stays for the next agent
        }
    }
}

/// One process tree: its cgroup, or its tag. Dropping it ends whatever is left in it (and
/// removes the group).
#[derive(Debug)]
pub enum Tree {
    Cgroup { path: PathBuf, procs: File },
    Tagged { tag: String },
}

impl Tree {
    /// For the child, between fork and exec: write `0` here to join (cgroups only).
    pub fn procs_fd(&self) -> Option<RawFd> {
        match self {
            Tree::Cgroup { procs, .. } => Some(procs.as_raw_fd()),
            Tree::Tagged { .. } => None,
        }
    }

    /// The entry to add to the child's environment (tagged trees only).
    pub fn env(&self) -> Option<(String, String)> {
        match self {
            Tree::Cgroup { .. } => None,
            Tree::Tagged { tag } => Some((TAG_VAR.to_string(), tag.clone())),
        }
    }

    /// Make sure `pid` is in the group: the child joined by itself, or is moved now. (A tagged
    /// child has its tag from the spawn.)
    pub fn adopt(&self, pid: u32) {
        let Tree::Cgroup { path, procs } = self else { return };
        if pids_in(path).contains(&pid) {
            return;
        }
        if let Err(e) = { procs }.write_all(pid.to_string().as_bytes()) {
            tracing::warn!(pid, path = %path.display(), error = %e, "cannot move a process into its cgroup");
        }
    }

    /// Every process in the tree now.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Tree::Cgroup { path, .. } => pids_in(path),
            Tree::Tagged { tag } => tagged(|t| t == tag).into_iter().map(|(pid, _)| pid).collect(),
        }
    }

    /// CPU time of the tree, including processes that already exited, in microseconds (cgroups
    /// only).
    pub fn cpu_usec(&self) -> Option<u64> {
        let Tree::Cgroup { path, .. } = self else { return None };
        let text = std::fs::read_to_string(path.join("cpu.stat")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok())
    }

    /// Kill what is left and wait (bounded) until the tree is empty. Answers whether it is.
    pub async fn end(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = self.pids();
            if left.is_empty() {
                return true;
            }
            match self {
                Tree::Cgroup { path, .. } => kill_all(path),
                Tree::Tagged { .. } => kill_pids(&left),
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // A tree is dropped after its process was reaped: what is left is stray children, ended
        // here. Zombies leave a cgroup as soon as their parent (init, by now) reaps them.
        match self {
            Tree::Cgroup { path, .. } => end_and_remove(path, Duration::from_millis(500)),
            Tree::Tagged { tag } => {
                let left: Vec<u32> = tagged(|t| t == tag).into_iter().map(|(pid, _)| pid).collect();
                if !left.is_empty() {
                    end_tagged(&left, |t| t == tag, Duration::from_millis(500));
                }
            }
        }
    }
}

/// The processes (not this one) whose environment has a `DEPLOYER_TREE` entry `matches` takes,
/// with the entry's value.
fn tagged(matches: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let key = format!("{TAG_VAR}=");
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == own {
            continue;
        }
        // Gone meanwhile, a zombie (empty) or not ours to read: not in any tree of ours.
        let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
        let tag = environ
            .split(|b| *b == 0)
            .find_map(|entry| entry.strip_prefix(key.as_bytes()))
            .and_then(|v| std::str::from_utf8(v).ok());
        if let Some(tag) = tag.filter(|t| matches(t)) {
            found.push((pid, tag.to_string()));
        }
    }
    found
}

/// SIGKILL `pids`, then whatever else `matches` finds, until none is left or `within` passed.
fn end_tagged(pids: &[u32], matches: impl Fn(&str) -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    kill_pids(pids);
    loop {
        let left: Vec<u32> = tagged(&matches).into_iter().map(|(pid, _)| pid).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(left = left.len(), "tagged processes did not end; the next agent ends them");
            return;
        }
        kill_pids(&left);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_pids(pids: &[u32]) {
    for pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was found in one of our
        // trees a moment ago.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Kill everything in the group and remove it, waiting at most `within` for it to empty. A group
/// that does not empty in time is left for the next agent's `reap_previous`.
fn end_and_remove(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        kill_all(path);
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(path = %path.display(), error = %e, "a cgroup did not empty; the next agent ends it");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn kill_all(path: &Path) {
    // `cgroup.kill` (Linux 5.14) kills the whole subtree in one step, including processes forking
    // while it runs; older kernels get SIGKILL pid by pid.
    if std::fs::write(path.join("cgroup.kill"), b"1").is_ok() {
        return;
    }
    kill_pids(&pids_in(path));
}

fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Field 5 is the mount point; spaces in it are octal-escaped.
        let mount = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(mount.replace("\\040", " ")))
    })
}

/// This process's cgroup in the v2 hierarchy: the `0::<path>` line of `/proc/self/cgroup`.
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| p.trim_end_matches(" (deleted)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_a_hybrid_host() {
        let mi = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n\
                  36 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("35 25 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn reads_the_own_cgroup_from_the_v2_line() {
        assert_eq!(
            own_cgroup("4:memory:/x\n0::/system.slice/deployer-agent.service\n"),
            Some("/system.slice/deployer-agent.service")
        );
        assert_eq!(own_cgroup("1:cpu:/\n"), None);
    }

    /// Real cgroups, where this machine has them (as root): a tree holds a `setsid` child, the
    /// tree's end kills it, and dropping the tree removes the group.
    #[tokio::test]
    async fn a_tree_ends_a_child_that_left_the_process_group() {
        let state = tempfile::tempdir().expect("tempdir");
        let cgroups = Cgroups::detect(state.path());
        let Some(tree) = cgroups.create("test.tree").filter(|t| t.procs_fd().is_some()) else {
            eprintln!("no writable cgroup v2 here; nothing to check");
            return;
        };
        use std::os::unix::process::CommandExt;
        let fd = tree.procs_fd().expect("a cgroup");
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "setsid sleep 300 & sleep 300"]);
        // SAFETY: one write(2) between fork and exec, as `supervisor::spawn` does.
        unsafe {
            cmd.pre_exec(move || {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("sh");
        tree.adopt(child.id());
        // The sh joined before exec, so its children are in the tree too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree.pids().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tree.pids().len(), 3, "sh and its two sleeps: {:?}", tree.pids());
        assert!(tree.end(Duration::from_secs(5)).await, "the tree emptied");
        // reaps `sh`, which `end` killed
        let _ = child.wait();
        let path = match &tree {
            Tree::Cgroup { path, .. } => path.clone(),
            Tree::Tagged { .. } => unreachable!("filtered above"),
        };
        drop(tree);
        assert!(!path.exists(), "the group is removed");
        cgroups.remove_root();
    }
}
