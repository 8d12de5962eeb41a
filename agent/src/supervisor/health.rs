//! Active health: every `health.interval` each online worker of an `http` or `tcp` front is
//! probed on its private port; `health.failures` failed probes in a row make it unhealthy in the
//! rotation ([`Rotation::probe_failed`]), and from there it goes the way of passive health: out
//! of rotation, reported, replaced through the reload path by `App::replace_unhealthy`.

use super::App;
use super::readiness::probe_http;
use super::worker::WorkerState;
use crate::config::{HealthCheck, HealthConfig};
use crate::front::Rotation;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Probe the app's workers until the app is cancelled. The config is read at each round, so a
/// reload onto a config with (or without) `health` takes effect without a restart.
pub(super) async fn probe_workers(app: Arc<App>, rotation: Arc<Rotation>) {
    loop {
        let health = app.config().health;
        let round = tokio::time::Instant::now() + health.as_ref().map_or(Duration::from_secs(1), |h| h.interval);
        if let Some(h) = health {
            probe_round(&app, &rotation, &h).await;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(round) => {}
            _ = app.cancel.cancelled() => return,
        }
    }
}

async fn probe_round(app: &App, rotation: &Rotation, h: &HealthConfig) {
    let online: Vec<_> =
        app.workers().iter().filter(|w| w.status().state == WorkerState::Online).filter_map(|w| w.backend()).collect();
    let probes = online.iter().map(|b| async move {
        if probe(&h.check, b.addr, h.timeout).await {
            rotation.probe_passed(b);
        } else {
            tracing::debug!(app = %app.name, worker = b.worker, "health probe failed");
            rotation.probe_failed(b, h.failures as usize);
        }
    });
    futures_util::future::join_all(probes).await;
}

/// One probe: a 2xx to `GET path`, or an accepted connection, within `timeout`.
async fn probe(check: &HealthCheck, addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            HealthCheck::Http(path) => probe_http(Some(addr.port()), path, timeout).await.is_some(),
            HealthCheck::Tcp => TcpStream::connect(addr).await.is_ok(),
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on loopback answering every connection with `answer` (or nothing).
    async fn server(answer: Option<&'static str>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                // the probe's request is read and discarded; a client gone early is one of the cases probed
                let _ = s.read(&mut buf).await;
                if let Some(a) = answer {
                    // the probe may have hung up already: that is its business
                    let _ = s.write_all(a.as_bytes()).await;
                } else {
                    held.push(s);
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_probe_passes_on_2xx_only_and_fails_at_its_timeout() {
        let t = Duration::from_millis(300);
        let http = |p: &str| HealthCheck::Http(p.into());
        let ok = server(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
        assert!(probe(&http("/healthz"), ok, t).await);
        assert!(probe(&HealthCheck::Tcp, ok, t).await);
        let sick = server(Some("HTTP/1.1 500 Internal Server Error\r\n\r\n")).await;
        assert!(!probe(&http("/healthz"), sick, t).await);
        let silent = server(None).await;
        let started = std::time::Instant::now();
        assert!(!probe(&http("/healthz"), silent, t).await);
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(!probe(&HealthCheck::Tcp, closed, t).await, "a refused connect fails");
    }
}
