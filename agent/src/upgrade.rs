//! The old agent's side of an upgrade (see [`crate::handover`]), and its trigger: the control
//! socket `state_dir/run/control.sock` (root only: the state dir is 0700) that
//! `deployer-agent upgrade` writes `upgrade` to, reading the progress lines back.

use crate::handover;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a new agent may take to serve (its workers' readiness included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an upgrade waits for running deploys to end before it gives up.
const DEPLOY_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("deploys of {apps} still running after {}s; try again when they are done", DEPLOY_WAIT.as_secs())]
    Busy { apps: String },
    #[error("cannot start the new agent `{path}`: {source}")]
    Spawn { path: String, source: std::io::Error },
    #[error("cannot hand the sockets over: {0}")]
    Handover(#[from] handover::HandoverError),
    #[error("the new agent exited ({0}) before it served; its reason is in the agent's log. This agent keeps serving")]
    Exited(String),
    #[error("the new agent did not serve within {}s; it was stopped and this agent keeps serving", READY_TIMEOUT.as_secs())]
    NotReady,
    #[error("the new agent gave up ({0}); this agent keeps serving")]
    GaveUp(String),
    #[error("an upgrade is already running")]
    AlreadyRunning,
}

/// One `upgrade` asked on the control socket: progress lines go back to the asker.
pub struct Request {
    pub progress: mpsc::UnboundedSender<String>,
}

impl Request {
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!("upgrade: {line}");
        let _ = self.progress.send(line); // the asker may have gone: the upgrade goes on
    }
}

/// The control socket: the one handed over by an old agent, else a new one.
pub fn control_listener(state_dir: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if let Some(fd) = handover::take_control() {
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(true)?;
        return Ok(l);
    }
    let path = control_path(state_dir);
    // A file left by an agent that died: nobody listens on it.
    let _ = std::fs::remove_file(&path); // NotFound is the usual case
    let l = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

pub fn control_path(state_dir: &Path) -> PathBuf {
    state_dir.join("run").join("control.sock")
}

/// Serve the control socket until `stop`: each connection sends one command line.
pub async fn serve_control(
    listener: tokio::net::UnixListener,
    requests: mpsc::Sender<Request>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = stop.cancelled() => return,
        };
        let Ok((conn, _)) = conn else { continue };
        let requests = requests.clone();
        tasks.spawn(async move {
            let (read, mut write) = conn.into_split();
            let mut line = String::new();
            let mut read = tokio::io::BufReader::new(read);
            if tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line)).await.is_err() {
                return;
            }
            if line.trim() != "upgrade" {
                // The asker may have gone: nothing else to tell.
                let _ = write.write_all(b"error: unknown command; the control socket knows `upgrade`\n").await;
                return;
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            if requests.try_send(Request { progress: tx }).is_err() {
                // The asker may have gone: nothing else to tell.
                let _ = write.write_all(format!("error: {}\n", UpgradeError::AlreadyRunning).as_bytes()).await;
                return;
            }
            while let Some(l) = rx.recv().await {
                if write.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// What the old agent hands over.
pub struct Sockets {
    pub fds: Vec<(String, OwnedFd)>,
}

/// Start the new agent on `fds` and wait until it serves. Answers its pid and our end of the
/// pair, which must stay open until this process exits (its close tells the new agent we are
/// gone).
pub async fn start_new(
    exe: &Path,
    config: &Path,
    sockets: Sockets,
    req: &Request,
) -> Result<(u32, std::os::unix::net::UnixStream), UpgradeError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(handover::HandoverError::from)?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config").arg(config).arg("run").env(handover::FD_VAR, "3").env_remove("WATCHDOG_PID");
    // SAFETY: dup2 only, between fork and exec: our end of the pair becomes fd 3 (without
    // close-on-exec); every other fd of the agent is close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| UpgradeError::Spawn { path: exe.display().to_string(), source })?;
    drop(theirs);
    // Ended if this future is dropped before the new agent serves (the old agent was stopped).
    let mut child = NewAgent(Some(child));
    let pid = child.id();
    req.say(format!("started the new agent `{}` (pid {pid})", exe.display()));
    let borrowed: Vec<(String, std::os::fd::BorrowedFd<'_>)> =
        sockets.fds.iter().map(|(n, f)| (n.clone(), f.as_fd())).collect();
    if let Err(e) = handover::send(&ours, &borrowed) {
        // Usually a new agent that exited at once (its end of the pair closed): say that.
        if let Some(status) = exited(&mut child).await {
            return Err(UpgradeError::Exited(status));
        }
        end_child(&mut child).await;
        return Err(e.into());
    }
    req.say(format!("handed over {} sockets and the state dir's lock; waiting for its workers", borrowed.len()));
    drop(sockets);
    // Wait for `ready` on the pair, or the child's exit, or the deadline.
    let reader = ours.try_clone().map_err(handover::HandoverError::from)?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        // Without the timeout the read is only unbounded; any failure reads as not ready.
        let _ = reader.set_read_timeout(Some(READY_TIMEOUT));
        let _ = BufReader::new(reader).read_line(&mut line); // an error or EOF: not ready
        line.trim().to_string()
    });
    let said = ready.await.unwrap_or_default();
    if let Some(why) = said.strip_prefix("failed: ") {
        end_child(&mut child).await;
        return Err(UpgradeError::GaveUp(why.to_string()));
    }
    if said != "ready" {
        if let Some(status) = exited(&mut child).await {
            return Err(UpgradeError::Exited(status));
        }
        end_child(&mut child).await;
        return Err(UpgradeError::NotReady);
    }
    child.keep();
    Ok((pid, ours))
}

/// The new agent's process until it serves: dropped before that (an upgrade given up or
/// interrupted), it is killed, so no second agent runs on unasked.
struct NewAgent(Option<std::process::Child>);

impl NewAgent {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        match self.0.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }
    /// It serves: it outlives this agent.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for NewAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill(); // it may have exited already
            let _ = c.wait(); // reaps it
        }
    }
}

/// How the new agent exited, if it does within a moment (a closed pair is usually an exit).
async fn exited(child: &mut NewAgent) -> Option<String> {
    for _ in 0..20 {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Stop a new agent that did not make it: SIGTERM, then SIGKILL after 10 s.
async fn end_child(child: &mut NewAgent) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM); // ESRCH: exited already
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed and reaped by its Drop.
    drop(std::mem::replace(child, NewAgent(None)));
}

/// Wait (bounded) until no deploy is queued or running.
pub async fn wait_for_deploys(busy: impl Fn() -> Vec<String>, req: &Request) -> Result<(), UpgradeError> {
    let deadline = tokio::time::Instant::now() + DEPLOY_WAIT;
    let mut said = false;
    loop {
        let apps = busy();
        if apps.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UpgradeError::Busy { apps: apps.join(", ") });
        }
        if !said {
            req.say(format!("waiting for the deploys of {} to end first", apps.join(", ")));
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `deployer-agent upgrade`: ask the agent of `state_dir` to upgrade, print its progress.
/// Answers whether it succeeded.
pub fn ask(state_dir: &Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    let path = control_path(state_dir);
    let mut conn = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("no agent answers on `{}` (is it running with this config?)", path.display()))?;
    conn.write_all(b"upgrade\n")?;
    let mut ok = false;
    for line in BufReader::new(conn).lines() {
        let line = line.context("the agent closed the control connection")?;
        eprintln!("{line}");
        ok = line.starts_with("ok:");
    }
    Ok(ok)
}
