//! Running the install step and the lifecycle hooks: commands from the config only, no shell,
//! each in its own process group, with a timeout, output streamed to the deploy's log.

use crate::config::RunAs;
use crate::supervisor::spawn::{self, Launch};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

const TAIL_LINES: usize = 40;

/// A deploy's command output: a log file and the last lines (kept with the deploy record).
pub struct Output {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    tail: Mutex<VecDeque<String>>,
}

impl Output {
    pub fn create(path: PathBuf) -> Output {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).ok();
        Output { path, file: Mutex::new(file), tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn line(&self, line: &str) {
        if let Some(f) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = writeln!(f, "{line}");
        }
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
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => self.line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r'])),
            }
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
