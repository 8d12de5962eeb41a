//! Running the install step and the lifecycle hooks: commands from the config only, no shell,
//! each in its own process group and (where the host has one) its own cgroup, with a timeout,
//! output streamed to the deploy's log.
//!
//! A command is over when its process exits: whatever it started is then killed (its process
//! group, and in a cgroup also what left the group with `setsid`), so a daemon started by
//! `npm install` does not outlive the deploy, and a background child that keeps stdout open does
//! not make a finished step look hung.
//!
//! Output is read in bounded memory (a line over 16 KiB is cut and marked, as for workers) and
//! every secret value the agent knows is masked before a line reaches the log file or the tail.
//! The log file of one deploy stops growing at [`MAX_LOG_BYTES`] (the tail goes on).

use crate::cgroup::Cgroups;
use crate::config::RunAs;
use crate::secrets::Secrets;
use crate::supervisor::lines;
use crate::supervisor::spawn::{self, Launch};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

const TAIL_LINES: usize = 40;

/// What one deploy's log file may hold: an install step printing without end fills no disk.
const MAX_LOG_BYTES: u64 = 32 << 20;

/// A deploy's command output: a log file and the last lines (kept with the deploy record).
pub struct Output {
    path: PathBuf,
    file: Mutex<LogFile>,
    tail: Mutex<VecDeque<String>>,
    secrets: Secrets,
    /// Where each command's process tree goes, and the name that says whose it is.
    cgroups: Cgroups,
    scope: String,
}

impl Output {
    pub fn create(path: PathBuf, secrets: Secrets) -> Output {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).ok();
        let file = Mutex::new(LogFile { file, written: 0 });
        let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
        Output { path, file, tail, secrets, cgroups: Cgroups::none(), scope: String::new() }
    }

    /// Run each command's processes in a cgroup named after `scope` (e.g. `web.deploy-7`).
    pub fn in_cgroups(mut self, cgroups: Cgroups, scope: String) -> Output {
        self.cgroups = cgroups;
        self.scope = scope;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep one line, its secrets masked.
    pub fn line(&self, line: &str) {
        self.keep(&self.secrets.mask(line));
    }

    /// Keep one line as it is (masked and cut already).
    fn keep(&self, line: &str) {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).append(line);
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    async fn capture(&self, pipe: impl AsyncRead + Unpin) {
        lines::read(pipe, |line| self.keep(&line.finish(&self.secrets))).await;
    }
}

/// The deploy's log file and how much was written to it.
struct LogFile {
    file: Option<std::fs::File>,
    written: u64,
}

impl LogFile {
    fn append(&mut self, line: &str) {
        let Some(f) = self.file.as_mut() else { return };
        let len = line.len() as u64 + 1;
        if self.written + len > MAX_LOG_BYTES {
            // the marker is a courtesy: the log is closed either way, and a failed write of it fails nothing else
            let _ = writeln!(f, "[deployer] the log stops here: over {} MiB of output", MAX_LOG_BYTES >> 20);
            self.file = None;
            return;
        }
        // A log line that cannot be written is not worth failing the deploy for.
        if writeln!(f, "{line}").is_ok() {
            self.written += len;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("`{cmd}` could not start: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status})")]
    Exit { cmd: String, status: String },
    #[error("`{cmd}` did not finish within {after}")]
    Timeout { cmd: String, after: String },
    #[error("cancelled")]
    Cancelled,
}

/// Run `cmds` in order in `cwd`; the first failure stops the rest.
pub async fn run(
    cmds: &[Vec<String>],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    run_as: Option<&RunAs>,
    timeout: Duration,
    cancel: &CancellationToken,
    out: &Output,
) -> Result<(), StepError> {
    for argv in cmds {
        let cmd = shell_words::join(argv);
        out.line(&format!("$ {cmd}"));
        let tree = out.cgroups.create(&out.scope);
        let cgroup_procs = tree.as_ref().and_then(|t| t.procs_fd());
        let tagged: BTreeMap<String, String>;
        let env = match tree.as_ref().and_then(|t| t.env()) {
            Some((k, v)) => {
                tagged = env.iter().map(|(k, v)| (k.clone(), v.clone())).chain([(k, v)]).collect();
                &tagged
            }
            None => env,
        };
        let launch = Launch { argv, cwd, env, listen_fd: None, fd_name: "", run_as, cgroup_procs, ipc_fd: None };
        let mut child = spawn::spawn(&launch).map_err(|source| StepError::Spawn { cmd: cmd.clone(), source })?;
        let pid = child.id();
        if let (Some(t), Some(pid)) = (&tree, pid) {
            t.adopt(pid);
        }
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let capture = async {
            let a = async {
                if let Some(s) = stdout {
                    out.capture(s).await
                }
            };
            let b = async {
                if let Some(s) = stderr {
                    out.capture(s).await
                }
            };
            tokio::join!(a, b);
        };
        let mut capture = std::pin::pin!(capture);
        let mut captured = false;
        let deadline = tokio::time::sleep(timeout);
        let mut deadline = std::pin::pin!(deadline);
        // The command is over when its process exits, whoever still holds its output.
        let waited = loop {
            tokio::select! {
                status = child.wait() => break Ok(status),
                () = &mut capture, if !captured => captured = true,
                () = &mut deadline => {
                    let after = humantime::format_duration(timeout).to_string();
                    break Err(StepError::Timeout { cmd: cmd.clone(), after });
                }
                () = cancel.cancelled() => break Err(StepError::Cancelled),
            }
        };
        // Whatever happened, nothing the command started outlives it: its group, then its tree.
        let left = tree.as_ref().map_or(0, |t| t.pids().len());
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL); // ESRCH: the group is gone already
        }
        if let Some(t) = &tree {
            if left > 0 && waited.as_ref().is_ok_and(|s| s.is_ok()) {
                out.line(&format!("[deployer] ended {left} process(es) `{cmd}` left running"));
            }
            if !t.end(Duration::from_secs(5)).await {
                out.line("[deployer] processes of this command did not end; the next agent ends them");
            }
        }
        if waited.is_err() {
            let _ = child.wait().await; // killed just above: this reaps it
        }
        // Read what is left in the pipes; a holder outside the tree (a `setsid` daemon on a host
        // without cgroups) is not waited for.
        if !captured && tokio::time::timeout(Duration::from_secs(2), &mut capture).await.is_err() {
            out.line("[deployer] a process started by this command still holds its output; not read further");
        }
        match waited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => return Err(StepError::Exit { cmd, status: status.to_string() }),
            Ok(Err(e)) => return Err(StepError::Spawn { cmd, source: e }),
            Err(e) => {
                out.line(&format!("[deployer] {e}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_stops_growing_and_the_tail_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Output::create(dir.path().join("deploy-1.log"), Secrets::for_test(&[("T", "the-secret-value")]));
        let line = "o".repeat(16 * 1024);
        for _ in 0..(MAX_LOG_BYTES / line.len() as u64 + 10) {
            out.line(&line);
        }
        out.line("last: the-secret-value");
        let size = std::fs::metadata(out.path()).expect("the log").len();
        assert!(size <= MAX_LOG_BYTES + 100, "{size}");
        assert_eq!(out.tail().len(), TAIL_LINES);
        assert_eq!(out.tail().last().map(String::as_str), Some("last: ***"));
    }
}
