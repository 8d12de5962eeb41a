//! Running the install step and the lifecycle hooks: commands from the config only, no shell,
//! each in its own process group, with a timeout, output streamed to the deploy's log.
//!
//! Output is read in bounded memory (a line over 16 KiB is cut and marked, as for workers) and
//! every secret value the agent knows is masked before a line reaches the log file or the tail.
//! The log file of one deploy stops growing at [`MAX_LOG_BYTES`] (the tail goes on).

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
}

impl Output {
    pub fn create(path: PathBuf, secrets: Secrets) -> Output {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).ok();
        let file = Mutex::new(LogFile { file, written: 0 });
        Output { path, file, tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)), secrets }
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
        let launch = Launch { argv, cwd, env, listen_fd: None, fd_name: "", run_as };
        let mut child = spawn::spawn(&launch).map_err(|source| StepError::Spawn { cmd: cmd.clone(), source })?;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
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
        let waited = tokio::select! {
            (status, ()) = async { tokio::join!(child.wait(), capture) } => Ok(status),
            _ = tokio::time::sleep(timeout) => Err(StepError::Timeout { cmd: cmd.clone(), after: humantime::format_duration(timeout).to_string() }),
            _ = cancel.cancelled() => Err(StepError::Cancelled),
        };
        // The whole group goes, whatever happened: no install step leaves processes behind.
        if let Some(pid) = pid {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        match waited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => return Err(StepError::Exit { cmd, status: status.to_string() }),
            Ok(Err(e)) => return Err(StepError::Spawn { cmd, source: e }),
            Err(e) => {
                let _ = child.wait().await;
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
