//! Upgrading the agent without closing a socket: `deployer-agent upgrade`.
//!
//! The running agent (the old one) starts the agent binary now on disk as a new process and
//! hands it, over a unix socket pair with `SCM_RIGHTS`, every listening socket it serves (the API,
//! each front, `fd`-mode listeners), the state dir's lock (a `flock` belongs to the open file, so
//! the new process holds it from then on) and its control socket. The new agent starts its own
//! workers on the recorded releases with the config file as it is now, and says `ready` once its
//! API and every app's workers are up. Only then does the old agent stop, in its usual order:
//! its fronts stop accepting (the new agent takes every new connection from the same sockets),
//! its in-flight requests finish, its workers stop, it exits. The new agent sees the pair close
//! and takes over the last shared file (the worker pid record).
//!
//! If the new binary cannot start, exits, or is not ready within the timeout, the old agent ends
//! it and keeps serving; the command says why. A running deploy is waited for first (bounded).
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) the old agent tells systemd the new pid
//! (`MAINPID=`) before it stops, so the unit follows the new process.

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

/// The variable that tells a new agent which fd is its end of the pair.
pub const FD_VAR: &str = "DEPLOYER_HANDOVER_FD";

/// At most this many sockets cross at once (one message).
const MAX_FDS: usize = 250;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the hand-over message is malformed: {0}")]
    Malformed(String),
}

/// What a new agent received, by name: `api`, `control`, `lock`, and each app's listener.
#[derive(Debug, Default)]
pub struct Received {
    pub fds: Vec<(String, OwnedFd)>,
}

impl Received {
    /// Take the fd named `name`.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.fds.iter().position(|(n, _)| n == name)?;
        Some(self.fds.remove(i).1)
    }
}

/// Send `fds` with their names in one message.
pub fn send(sock: &UnixStream, fds: &[(String, BorrowedFd<'_>)]) -> Result<(), HandoverError> {
    if fds.len() > MAX_FDS {
        return Err(HandoverError::Malformed(format!("{} sockets, at most {MAX_FDS}", fds.len())));
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    let payload = format!("{}\n", names.join("\u{1f}"));
    let raw: Vec<RawFd> = fds.iter().map(|(_, f)| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(payload.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
    Ok(())
}

/// Receive the one message [`send`] sends.
pub fn receive(sock: &UnixStream) -> Result<Received, HandoverError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just created these fds in this process for us.
                fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    let text = std::str::from_utf8(&buf[..bytes]).map_err(|e| HandoverError::Malformed(e.to_string()))?;
    let names: Vec<String> = text.trim_end_matches('\n').split('\u{1f}').map(str::to_string).collect();
    if names.len() != fds.len() {
        return Err(HandoverError::Malformed(format!("{} names for {} sockets", names.len(), fds.len())));
    }
    Ok(Received { fds: names.into_iter().zip(fds).collect() })
}

/// A new agent's side, while the upgrade runs: the received state-dir lock, and the pair to
/// say `ready` on and to see the old agent go.
static NEW_SIDE: OnceLock<Mutex<NewSide>> = OnceLock::new();

#[derive(Debug, Default)]
struct NewSide {
    pair: Option<UnixStream>,
    lock: Option<OwnedFd>,
    control: Option<OwnedFd>,
}

/// In a new agent started by an upgrade (the variable set): receive what the old agent hands
/// over, before the runtime starts. The listeners go to [`crate::listeners`]; the lock and the
/// control socket wait here for the supervisor and the daemon. Answers whether this agent was
/// started by an upgrade.
pub fn claim_from_env() -> Result<bool, HandoverError> {
    let Some(fd) = std::env::var(FD_VAR).ok().and_then(|v| v.parse::<RawFd>().ok()) else { return Ok(false) };
    // SAFETY: single-threaded still; the variable is ours (the old agent set it), and no child
    // may see it.
    unsafe { std::env::remove_var(FD_VAR) };
    // SAFETY: the old agent put our end of the pair on this fd for us to own.
    let pair = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut got = receive(&pair)?;
    let lock = got.take("lock");
    let control = got.take("control");
    crate::listeners::adopt(got.fds);
    let _ = NEW_SIDE.set(Mutex::new(NewSide { pair: Some(pair), lock, control })); // set once, at start
    Ok(true)
}

/// Whether this agent was started by an upgrade (and must not end the old agent's workers).
pub fn is_new_side() -> bool {
    NEW_SIDE.get().is_some()
}

/// The state dir's lock the old agent holds, handed over.
pub fn take_lock() -> Option<OwnedFd> {
    NEW_SIDE.get()?.lock().unwrap_or_else(|e| e.into_inner()).lock.take()
}

/// The control socket the old agent served, handed over.
pub fn take_control() -> Option<OwnedFd> {
    NEW_SIDE.get()?.lock().unwrap_or_else(|e| e.into_inner()).control.take()
}

/// Tell the old agent this one will not serve, and why (one line).
pub fn say_failed(why: &str) {
    let Some(side) = NEW_SIDE.get() else { return };
    let Some(mut pair) = side.lock().unwrap_or_else(|e| e.into_inner()).pair.take() else { return };
    let line = format!("failed: {}\n", why.replace('\n', " "));
    if let Err(e) = pair.write_all(line.as_bytes()) {
        tracing::error!(error = %e, "cannot tell the previous agent why this one gives up");
    }
}

/// Tell the old agent this one serves; then wait (in a thread) until it has exited, and call
/// `gone`.
pub fn say_ready(gone: impl FnOnce() + Send + 'static) {
    let Some(side) = NEW_SIDE.get() else { return };
    let Some(mut pair) = side.lock().unwrap_or_else(|e| e.into_inner()).pair.take() else { return };
    if let Err(e) = pair.write_all(b"ready\n") {
        tracing::error!(error = %e, "cannot tell the previous agent this one is ready");
        return;
    }
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = pair.read_to_end(&mut rest); // EOF (or an error) is the old agent's exit either way
        gone();
    });
}
