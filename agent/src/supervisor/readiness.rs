//! When a new worker may take traffic: its port accepts, an HTTP probe answers 2xx, it says
//! `READY=1` over sd_notify or `'ready'` over Node's IPC channel, or it is still alive after a
//! while.

use super::ipc::Channel;
use crate::config::ReadyCheck;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};

/// A bound `NOTIFY_SOCKET` waiting for the worker's `READY=1`.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> std::io::Result<NotifySocket> {
        // a stale socket of an earlier worker: absent is normal, and any other failure makes the
        // bind below fail with the reason
        let _ = std::fs::remove_file(path);
        Ok(NotifySocket { socket: UnixDatagram::bind(path)?, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn wait_ready(&self) {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf).await
                && buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1")
            {
                return;
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // best effort: the next bind of this path removes a leftover
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Resolve when the worker is ready. The caller races this with the process exiting and with
/// its timeout.
pub async fn wait(check: &ReadyCheck, port: Option<u16>, notify: Option<&NotifySocket>, ipc: Option<&Channel>) {
    match check {
        ReadyCheck::Tcp => poll(|| async { TcpStream::connect(("127.0.0.1", port?)).await.ok().map(|_| ()) }).await,
        ReadyCheck::Http(path) => poll(|| probe_http(port, path, Duration::from_secs(2))).await,
        ReadyCheck::Notify => match notify {
            Some(n) => n.wait_ready().await,
            None => std::future::pending().await,
        },
        ReadyCheck::Message => match ipc {
            Some(c) => c.wait_ready().await,
            None => std::future::pending().await,
        },
        ReadyCheck::Alive(d) => tokio::time::sleep(*d).await,
    }
}

/// The longest pause between two readiness probes. A probe is one loopback connect (or one
/// small request), so probing often costs nothing, while every pause is time a deploy, reload or
/// restart waits on a worker that is ready already: with 200 ms, a worker ready at 320 ms was
/// seen at ~510 ms, on each step of a roll.
const MAX_PAUSE: Duration = Duration::from_millis(25);

/// Retry `attempt` with a short, growing pause until it succeeds.
async fn poll<F, Fut>(mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let mut pause = Duration::from_millis(10);
    loop {
        if attempt().await.is_some() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// `GET path` on the worker's port answers 2xx, each read within `timeout` (also what active
/// health probes with).
pub(super) async fn probe_http(port: Option<u16>, path: &str, timeout: Duration) -> Option<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port?)).await.ok()?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: deployer-agent\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        let r = tokio::time::timeout(timeout, s.read(&mut buf[n..])).await.ok()?.ok()?;
        if r == 0 {
            return None;
        }
        n += r;
    }
    // "HTTP/1.1 200"
    (buf.starts_with(b"HTTP/1.") && buf[9] == b'2').then_some(())
}
