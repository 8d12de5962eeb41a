//! No worker outlives the agent.
//!
//! Workers get `PR_SET_PDEATHSIG`, so they die with the agent even on `kill -9`. A worker's own
//! children (`npm start` -> `node`) do not, so every worker's process group is also recorded in
//! `state_dir/run/workers.pids`, one `<pid> <start time> <boot id>` per line; the next agent
//! kills whatever of those groups is still alive before it binds any port.
//!
//! A pid alone does not name a process for good: after a reboot (or a wrap of the pid space) the
//! same number is somebody else's. A group is killed only when it is still the recorded one:
//! - the record is of this boot (`/proc/sys/kernel/random/boot_id`; a record of the older
//!   two-field format counts as this boot's only if the file was written since the boot);
//! - its leader is alive with the recorded start time (`/proc/<pid>/stat` field 22), or the
//!   leader is gone and every process left in the group is in the session the worker's `setsid`
//!   made (session id = the pid) and started no earlier than the worker.

use super::procstat;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct PidRecord {
    path: PathBuf,
    /// This boot's id, `-` when the kernel does not say.
    boot: String,
    live: Mutex<BTreeMap<u32, u64>>,
}

impl PidRecord {
    pub fn new(path: PathBuf) -> PidRecord {
        PidRecord { path, boot: boot_id().unwrap_or_else(|| "-".into()), live: Mutex::new(BTreeMap::new()) }
    }

    pub fn add(&self, pid: u32) {
        let start = procstat::sample(pid).map_or(0, |s| s.start_ticks);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(pid, start);
        self.write(&live);
    }

    /// Write the file again from what this agent holds.
    pub fn rewrite(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        self.write(&live);
    }

    pub fn remove(&self, pid: u32) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&pid);
        self.write(&live);
    }

    fn write(&self, live: &BTreeMap<u32, u64>) {
        let text: String = live.iter().map(|(p, s)| format!("{p} {s} {}\n", self.boot)).collect();
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record worker pids");
        }
    }

    /// Kill the process groups a previous agent left behind. Answers how many were killed.
    pub fn reap_previous(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return 0 };
        let written_this_boot = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
            .zip(boot_time())
            .is_some_and(|(written, booted)| written >= booted);
        let mut reaped = 0;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(Ok(pid)), Some(Ok(start))) = (it.next().map(str::parse::<u32>), it.next().map(str::parse::<u64>))
            else {
                continue;
            };
            let this_boot = match it.next() {
                Some(boot) if boot != "-" && self.boot != "-" => boot == self.boot,
                // The older format, or a kernel without a boot id: the file's age decides.
                _ => written_this_boot,
            };
            if !this_boot {
                tracing::info!(pid, "a worker pid recorded before the last boot: not touched");
                continue;
            }
            if !still_ours(pid, start) {
                tracing::info!(pid, "a recorded worker pid now names another process: not touched");
                continue;
            }
            if killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                tracing::warn!(pid, "stopped a worker process group left by a previous agent");
                reaped += 1;
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the previous agent's pid record");
        }
        reaped
    }
}

/// Whether process group `pid` is still the worker recorded with `start` (see the module doc).
fn still_ours(pid: u32, start: u64) -> bool {
    if start == 0 || pid <= 1 || pid > i32::MAX as u32 {
        return false;
    }
    match procstat::membership(pid) {
        Some(leader) => leader.start_ticks == start,
        // The group may outlive its leader: what is left must be the worker's own children.
        None => procstat::group_members(pid).iter().all(|m| m.session == pid && m.start_ticks >= start),
    }
}

/// This boot's id: a random uuid the kernel makes at each boot.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

/// When this boot began (`btime` in `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    /// A `sleep` in a process group of its own (not a worker, not the agent's).
    fn bystander() -> Child {
        Command::new("sleep").arg("30").process_group(0).spawn().expect("spawn sleep")
    }

    fn start_of(pid: u32) -> u64 {
        procstat::sample(pid).expect("a live process").start_ticks
    }

    fn alive(child: &mut Child) -> bool {
        child.try_wait().expect("try_wait").is_none()
    }

    fn killed(child: &mut Child) -> bool {
        use std::os::unix::process::ExitStatusExt;
        child.wait().expect("wait").signal() == Some(libc::SIGKILL)
    }

    fn record(dir: &tempfile::TempDir, text: &str) -> PidRecord {
        let path = dir.path().join("workers.pids");
        std::fs::write(&path, text).unwrap();
        PidRecord::new(path)
    }

    #[test]
    fn a_record_whose_start_time_does_not_match_is_not_killed() {
        let t = tempfile::tempdir().unwrap();
        let mut other = bystander();
        let pid = other.id();
        let boot = boot_id().expect("a boot id");
        // The pid of a worker of an earlier run, reused by an unrelated process.
        let rec = record(&t, &format!("{pid} {} {boot}\n", start_of(pid) + 1));
        assert_eq!(rec.reap_previous(), 0);
        assert!(alive(&mut other), "an unrelated process was killed");
        // cleanup: the process may have exited already; its status is not what the test checks
        let _ = other.kill();
        let _ = other.wait(); // reaps it, killed just above
    }

    #[test]
    fn a_group_recorded_by_this_boot_is_killed() {
        let t = tempfile::tempdir().unwrap();
        let mut worker = bystander();
        PidRecord::new(t.path().join("workers.pids")).add(worker.id());
        let next_agent = PidRecord::new(t.path().join("workers.pids"));
        assert_eq!(next_agent.reap_previous(), 1);
        assert!(killed(&mut worker));
        assert!(!t.path().join("workers.pids").exists());
    }

    #[test]
    fn a_record_of_another_boot_is_not_killed_even_if_the_start_time_matches() {
        let t = tempfile::tempdir().unwrap();
        let mut other = bystander();
        let pid = other.id();
        let rec = record(&t, &format!("{pid} {} 00000000-0000-0000-0000-000000000000\n", start_of(pid)));
        assert_eq!(rec.reap_previous(), 0);
        assert!(alive(&mut other));
        // cleanup: the process may have exited already; its status is not what the test checks
        let _ = other.kill();
        let _ = other.wait(); // reaps it, killed just above
    }

    #[test]
    fn an_old_format_record_counts_by_the_age_of_the_file() {
        let t = tempfile::tempdir().unwrap();
        let mut other = bystander();
        let pid = other.id();
        let line = format!("{pid} {}\n", start_of(pid));
        // Written before this boot: a previous boot's pids name nothing of ours.
        let rec = record(&t, &line);
        let file = std::fs::File::options().write(true).open(t.path().join("workers.pids")).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1)).unwrap();
        assert_eq!(rec.reap_previous(), 0);
        assert!(alive(&mut other));
        // Written since the boot: still ours.
        let rec = record(&t, &line);
        assert_eq!(rec.reap_previous(), 1);
        assert!(killed(&mut other));
    }

    #[test]
    fn a_group_whose_leader_is_gone_is_killed_only_if_it_is_still_the_workers_session() {
        let boot = boot_id().expect("a boot id");
        for (ours, expect) in [(true, 1), (false, 0)] {
            let t = tempfile::tempdir().unwrap();
            // `setsid` makes `sh` a session and group leader, as a worker is; it leaves a child
            // in its group and exits.
            let out = Command::new("setsid")
                .args(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $$ $!"])
                .output()
                .expect("setsid sh");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut ids = text.split_whitespace().map(|s| s.parse::<u32>().expect("a pid"));
            let (leader, child) = (ids.next().expect("leader"), ids.next().expect("child"));
            assert!(procstat::membership(leader).is_none(), "the leader is gone");
            let child_start = start_of(child);
            // A record newer than the process left in the group cannot be its worker.
            let recorded = if ours { child_start } else { child_start + 1 };
            let rec = record(&t, &format!("{leader} {recorded} {boot}\n"));
            assert_eq!(rec.reap_previous(), expect);
            let gone = |pid: u32| {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    if procstat::membership(pid).is_none_or(|_| {
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
                    }) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            };
            if ours {
                assert!(gone(child), "the orphaned group was not killed");
            } else {
                assert!(procstat::membership(child).is_some(), "an unrelated group was killed");
                // cleanup: ESRCH if the group ended on its own
                let _ = nix::sys::signal::kill(Pid::from_raw(child as i32), Signal::SIGKILL);
            }
        }
    }
}
