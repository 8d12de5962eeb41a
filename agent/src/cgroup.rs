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
//! Without a writable cgroup2 mount (a container, an old kernel, not root) everything works as
//! before with process groups only, which the agent says once at start.
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

/// The agent's part of the cgroup tree, or nothing when the host has none to give.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    inner: Option<Arc<Root>>,
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    /// Makes every group name unique within one agent's life.
    next: AtomicU64,
}

impl Cgroups {
    /// Process groups only.
    pub fn none() -> Cgroups {
        Cgroups::default()
    }

    /// The agent's cgroup root for `state_dir`, created if needed; `none()` (and why, logged)
    /// when there is no writable cgroup v2 hierarchy.
    pub fn detect(state_dir: &Path) -> Cgroups {
        match Self::root_for(state_dir) {
            Ok(path) => {
                tracing::debug!(path = %path.display(), "process trees in cgroups");
                Cgroups { inner: Some(Arc::new(Root { path, next: AtomicU64::new(0) })) }
            }
            Err(why) => {
                tracing::info!(
                    "no cgroup v2 to use ({why}): a worker's or install step's processes are ended by process \
                     group only"
                );
                Cgroups::none()
            }
        }
    }

    fn root_for(state_dir: &Path) -> Result<PathBuf, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 mount")?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = own_cgroup(&own).ok_or("not in a cgroup v2 hierarchy")?;
        let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let hash = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let name = format!("deployer-{}", hex::encode(&hash[..6]));
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

    /// A new, empty group for one process tree; `None` without cgroups or when it cannot be made
    /// (then the caller relies on the process group, and says nothing more: start said it).
    pub fn create(&self, what: &str) -> Option<Tree> {
        let root = self.inner.as_ref()?;
        let n = root.next.fetch_add(1, Ordering::Relaxed);
        let name: String =
            what.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        // The pid too: during an upgrade two agents make groups side by side.
        let path = root.path.join(format!("{name}.{}.{n}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot create a cgroup");
            return None;
        }
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(path.join("cgroup.procs")) {
            Ok(procs) => Some(Tree { path, procs }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open a cgroup");
                let _ = std::fs::remove_dir(&path); // empty: nothing to lose
                None
            }
        }
    }

    /// End every tree a previous agent on this state dir left (it was killed before it could),
    /// and remove their groups. Answers how many groups held processes.
    pub fn reap_previous(&self) -> usize {
        let Some(root) = &self.inner else { return 0 };
        let Ok(entries) = std::fs::read_dir(&root.path) else { return 0 };
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
        if let Some(root) = &self.inner {
            let _ = std::fs::remove_dir(&root.path); // fails while a tree is left: it stays for the next agent
        }
    }
}

/// One process tree's cgroup. Dropping it ends whatever is left in it and removes the group.
#[derive(Debug)]
pub struct Tree {
    path: PathBuf,
    procs: File,
}

impl Tree {
    /// For the child, between fork and exec: write `0` here to join.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Make sure `pid` is in the group: the child joined by itself, or is moved now.
    pub fn adopt(&self, pid: u32) {
        if self.contains(pid) {
            return;
        }
        if let Err(e) = (&self.procs).write_all(pid.to_string().as_bytes()) {
            tracing::warn!(pid, path = %self.path.display(), error = %e, "cannot move a process into its cgroup");
        }
    }

    fn contains(&self, pid: u32) -> bool {
        pids_in(&self.path).contains(&pid)
    }

    /// Every process in the tree now.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.path)
    }

    /// CPU time of the tree, including processes that already exited, in microseconds.
    pub fn cpu_usec(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok())
    }

    /// Kill what is left and wait (bounded) until the tree is empty. Answers whether it is.
    pub async fn end(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if pids_in(&self.path).is_empty() {
                return true;
            }
            kill_all(&self.path);
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
        end_and_remove(&self.path, Duration::from_millis(500));
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
    for pid in pids_in(path) {
        // SAFETY: kill(2) has no memory-safety preconditions; a pid in this group is ours to end.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
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
        let Some(tree) = cgroups.create("test.tree") else {
            eprintln!("no writable cgroup v2 here; nothing to check");
            return;
        };
        use std::os::unix::process::CommandExt;
        let fd = tree.procs_fd();
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
        let path = tree.path.clone();
        drop(tree);
        assert!(!path.exists(), "the group is removed");
        cgroups.remove_root();
    }
}
