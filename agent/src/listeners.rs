//! Listening sockets the agent did not open itself: systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`).
//!
//! With the sockets held by systemd (`examples/deployer-agent.socket`), a crashed or restarting
//! agent never closes a port: connections wait in the kernel's accept queue until the next agent
//! takes the same socket and serves them, instead of being refused.
//!
//! A socket is matched to its user by name first (`FileDescriptorName=` in the socket unit: `api`
//! for the API, an app's name for its front), else by the address it is bound to. A socket that
//! matches nothing is closed once the config has taken what it needs, with a warning.
//! Nothing here is inherited by children: the fds are close-on-exec and the variables are left out
//! of every child's environment (`Secrets::child_env`).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

/// The first fd systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;

/// The inherited sockets not yet taken, by name.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(String, TcpListener)>,
}

static INHERITED: OnceLock<Mutex<Inherited>> = OnceLock::new();

/// Listening sockets handed over by an old agent (`crate::handover`), by name.
pub fn adopt(fds: Vec<(String, std::os::fd::OwnedFd)>) {
    let mut inherited = INHERITED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    for (name, fd) in fds {
        match listening_tcp(fd) {
            Ok(l) => {
                tracing::info!(name, addr = ?l.local_addr().ok(), "listening socket handed over by the previous agent");
                inherited.sockets.push((name, l));
            }
            Err(why) => tracing::warn!(name, "ignoring a handed-over fd: {why}"),
        }
    }
}

/// Claim what systemd passed, once, at start (before any other fd is opened, so fd 3.. are still
/// what it passed). Answers how many sockets were received.
pub fn claim_from_env() -> usize {
    let found = Inherited::from_env(std::process::id());
    let n = found.sockets.len();
    for (name, l) in &found.sockets {
        tracing::info!(name, addr = ?l.local_addr().ok(), "listening socket received from systemd");
    }
    INHERITED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).sockets.extend(found.sockets);
    n
}

/// The socket for `name` bound to `addr`: the inherited one if there is one (by name, else by
/// address), else a new one bound here.
pub fn tcp(name: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    if let Some(l) = take(name, addr) {
        return Ok(l);
    }
    bind(addr)
}

/// The inherited socket for `name` or `addr`, if any.
pub fn take(name: &str, addr: SocketAddr) -> Option<TcpListener> {
    let mut inherited = INHERITED.get()?.lock().unwrap_or_else(|e| e.into_inner());
    let i = inherited
        .sockets
        .iter()
        .position(|(n, _)| n == name)
        .or_else(|| inherited.sockets.iter().position(|(_, l)| l.local_addr().is_ok_and(|a| same_addr(a, addr))))?;
    let (_, l) = inherited.sockets.remove(i);
    if !l.local_addr().is_ok_and(|a| same_addr(a, addr)) {
        tracing::warn!(
            name,
            want = %addr,
            got = ?l.local_addr().ok(),
            "the socket named for this listener is bound elsewhere; using it as it is"
        );
    }
    Some(l)
}

/// Close the sockets received and never matched, once the config has taken what it needs: an
/// app removed from the config while the agent was being upgraded or restarted must not keep
/// its port (systemd keeps its own copy of a socket unit's sockets).
pub fn close_unused() {
    let Some(inherited) = INHERITED.get() else { return };
    for (name, l) in std::mem::take(&mut inherited.lock().unwrap_or_else(|e| e.into_inner()).sockets) {
        tracing::warn!(name, addr = ?l.local_addr().ok(), "a received socket matches no app and not the API; closed");
    }
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() && b.ip().is_unspecified())
}

/// A new listening socket, as the fronts and the API bind them (`SO_REUSEADDR`, backlog 1024).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Inherited {
    fn from_env(own_pid: u32) -> Inherited {
        let var = |k: &str| std::env::var(k).ok();
        let found = Self::parse(own_pid, var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
        // SAFETY: the variables are removed before any thread is started (`claim_from_env` is
        // called first thing in `main`, on one thread).
        unsafe {
            for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                std::env::remove_var(k);
            }
        }
        let mut sockets = Vec::new();
        for (fd, name) in found {
            // SAFETY: systemd passed fd 3..3+n to this pid for us to own; each is taken once.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            match listening_tcp(owned) {
                Ok(l) => sockets.push((name, l)),
                Err(why) => tracing::warn!(fd, name, "ignoring a passed fd: {why}"),
            }
        }
        Inherited { sockets }
    }

    /// Which fds are ours and their names, from the three variables' values.
    fn parse(own_pid: u32, pid: Option<String>, fds: Option<String>, names: Option<String>) -> Vec<(RawFd, String)> {
        if pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(own_pid) {
            return Vec::new();
        }
        let Some(n) = fds.and_then(|n| n.trim().parse::<RawFd>().ok()).filter(|n| (1..=1024).contains(n)) else {
            return Vec::new();
        };
        let names: Vec<String> = names.map(|s| s.split(':').map(str::to_string).collect()).unwrap_or_default();
        (0..n)
            .map(|i| {
                let name = names.get(i as usize).filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| "unknown".into());
                (SD_LISTEN_FDS_START + i, name)
            })
            .collect()
    }
}

/// Check that `fd` is a listening TCP socket, make it close-on-exec and non-blocking.
fn listening_tcp(fd: OwnedFd) -> Result<TcpListener, String> {
    let socket = socket2::Socket::from(fd);
    let listening = socket.is_listener().map_err(|e| format!("not a socket: {e}"))?;
    if !listening {
        return Err("not a listening socket".into());
    }
    if socket.r#type().map_err(|e| e.to_string())? != socket2::Type::STREAM
        || socket.local_addr().map_err(|e| e.to_string())?.as_socket().is_none()
    {
        return Err("not a TCP socket".into());
    }
    socket.set_cloexec(true).map_err(|e| e.to_string())?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(socket.into())
}

/// Sockets received, by name, for tests.
#[cfg(test)]
fn names() -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    if let Some(i) = INHERITED.get() {
        for (n, _) in &i.lock().unwrap_or_else(|e| e.into_inner()).sockets {
            *m.entry(n.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn fds_are_ours_only_when_the_pid_is() {
        assert_eq!(Inherited::parse(42, s("42"), s("2"), s("api:web")), vec![(3, "api".into()), (4, "web".into())]);
        assert!(Inherited::parse(42, s("41"), s("2"), s("api:web")).is_empty(), "meant for another process");
        assert!(Inherited::parse(42, None, s("2"), None).is_empty());
        assert!(Inherited::parse(42, s("42"), s("0"), None).is_empty());
        assert!(Inherited::parse(42, s("42"), s("-1"), None).is_empty());
        assert!(Inherited::parse(42, s("42"), s("many"), None).is_empty());
    }

    #[test]
    fn unnamed_fds_are_matched_by_address() {
        assert_eq!(Inherited::parse(7, s("7"), s("2"), s("api")), vec![(3, "api".into()), (4, "unknown".into())]);
        assert_eq!(Inherited::parse(7, s("7"), s("1"), None), vec![(3, "unknown".into())]);
    }

    #[test]
    fn only_a_listening_tcp_socket_is_taken() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listening_tcp(OwnedFd::from(l)).is_ok());
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(listening_tcp(OwnedFd::from(udp)).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(listening_tcp(OwnedFd::from(file)).is_err());
        assert!(names().is_empty());
    }

    #[test]
    fn addresses_match_on_port_and_ip_or_both_unspecified() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(same_addr(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(same_addr(a("0.0.0.0:80"), a("0.0.0.0:80")));
        assert!(!same_addr(a("127.0.0.1:80"), a("127.0.0.1:81")));
        assert!(!same_addr(a("127.0.0.2:80"), a("127.0.0.1:80")));
    }
}
