//! No worker outlives the agent.
//!
//! Workers get `PR_SET_PDEATHSIG`, so they die with the agent even on `kill -9`. A worker's own
//! children (`npm start` -> `node`) do not, so every worker's process group is also recorded in
//! `state_dir/run/workers.pids` (pid and start time, which together name one process for good);
//! the next agent kills whatever of those groups is still alive before it binds any port.

use super::procstat;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug)]
pub struct PidRecord {
    path: PathBuf,
    live: Mutex<BTreeMap<u32, u64>>,
}

impl PidRecord {
    pub fn new(path: PathBuf) -> PidRecord {
        PidRecord { path, live: Mutex::new(BTreeMap::new()) }
    }

    pub fn add(&self, pid: u32) {
        let start = procstat::sample(pid).map_or(0, |s| s.start_ticks);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(pid, start);
        self.write(&live);
    }

    pub fn remove(&self, pid: u32) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&pid);
        self.write(&live);
    }

    fn write(&self, live: &BTreeMap<u32, u64>) {
        let text: String = live.iter().map(|(p, s)| format!("{p} {s}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.path)).is_err() {
            tracing::warn!(path = %self.path.display(), "cannot record worker pids");
        }
    }

    /// Kill the process groups a previous agent left behind. Answers how many were found.
    pub fn reap_previous(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return 0 };
        let mut reaped = 0;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(Ok(pid)), Some(Ok(start))) = (it.next().map(str::parse::<u32>), it.next().map(str::parse::<u64>))
            else {
                continue;
            };
            // The group may outlive its leader; kill it whenever the leader is gone or still ours.
            let leader_is_ours = procstat::sample(pid).is_some_and(|s| s.start_ticks == start);
            let leader_gone = procstat::sample(pid).is_none();
            if (leader_is_ours || leader_gone) && killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                tracing::warn!(pid, "stopped a worker process group left by a previous agent");
                reaped += 1;
            }
        }
        let _ = std::fs::remove_file(&self.path);
        reaped
    }
}
