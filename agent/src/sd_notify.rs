//! Telling systemd how the agent is (`Type=notify`): `READY=1` once the API and the apps are up,
//! `STOPPING=1` at a stop, `RELOADING=1` around a SIGHUP, and `WATCHDOG=1` while the agent's
//! runtime and its supervisor answer (`WatchdogSec=` in the unit restarts an agent that hangs).
//!
//! The socket's path is read once at start and never reaches a child (`Secrets::child_env`).

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::Duration;

static SOCKET: OnceLock<Option<String>> = OnceLock::new();

fn socket() -> Option<&'static str> {
    SOCKET.get_or_init(|| std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty())).as_deref()
}

/// Send one state line; nothing happens when systemd is not listening.
pub fn notify(state: &str) {
    let Some(path) = socket() else { return };
    if let Err(e) = send(path, state) {
        tracing::warn!(socket = path, error = %e, "cannot notify systemd");
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        // An abstract socket: its name starts with a NUL byte instead of the `@`.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// `RELOADING=1` with the monotonic time systemd (253 and later) wants beside it.
pub fn reloading() -> String {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    let now = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } == 0 {
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
    } else {
        0
    };
    format!("RELOADING=1\nMONOTONIC_USEC={now}")
}

/// How often systemd wants `WATCHDOG=1`, if it does (for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Ping systemd's watchdog at half its interval while the runtime runs tasks and the supervisor's
/// app table can be read (a deadlock there, or a runtime that stopped running tasks, stops the
/// pings and systemd restarts the agent). A separate task, so a long reload never misses a ping.
pub async fn watchdog(every: Duration, supervisor: std::sync::Arc<crate::supervisor::Supervisor>) {
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
    let mut tick = tokio::time::interval(every / 2);
    loop {
        tick.tick().await;
        let _apps = supervisor.list();
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8 path"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("deployer-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        send(&format!("@{name}"), "WATCHDOG=1").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
