//! The `tcp` front: a layer-4 proxy for protocols the front does not speak.
//!
//! It sees connections, not requests: a worker leaving the rotation gets no new connections and
//! is drained when its open connections close (or at `drain_timeout`). Long-lived keep-alive
//! clients therefore hold an old worker until the drain timeout; the `http` front moves them at
//! a request boundary instead.

use super::{Lease, Rotation, accept};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::http::FrontStats;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accept client connections until `shutdown`, within `budget`; each one is relayed on `tracker`,
/// on the front loop that accepted it.
pub async fn serve(
    listener: TcpListener,
    rotation: Arc<Rotation>,
    stats: Arc<FrontStats>,
    budget: accept::Budget,
    rules: tokio::sync::watch::Receiver<Arc<super::http::ClientRules>>,
    stop: super::Stop,
    tracker: TaskTracker,
) {
    accept::spread(listener, move |listener| {
        let (rotation, stats, budget, rules) = (rotation.clone(), stats.clone(), budget.clone(), rules.clone());
        let (stop, tracker) = (stop.clone(), tracker.clone());
        async move {
            while let Some(accept::Accepted { stream: client, slot, .. }) =
                accept::next(&listener, &budget, &stop.accepting).await
            {
                let rotation = rotation.clone();
                let stats = stats.clone();
                let idle = rules.borrow().tunnel_idle_timeout;
                let stop = stop.clone();
                tracker.spawn(async move {
                    stats.requests.fetch_add(1, Relaxed);
                    let relayed = async {
                        let Some((lease, upstream)) = connect(&rotation).await else {
                            stats.errors.fetch_add(1, Relaxed);
                            return;
                        };
                        relay(client, upstream, idle).await;
                        drop(lease);
                    };
                    stop.unless_closed(relayed).await;
                    drop(slot);
                });
            }
        }
    })
    .await;
}

/// A connection to the least busy worker; a worker that refuses is skipped for the next one.
async fn connect(rotation: &Rotation) -> Option<(Lease, TcpStream)> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    for _ in 0..4 {
        let lease = rotation.pick_wait(&tried, Duration::from_secs(10)).await?;
        let addr = lease.backend().addr;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                // Nagle's algorithm only delays small writes: a socket that refuses the option still works
                let _ = s.set_nodelay(true);
                return Some((lease, s));
            }
            _ => tried.push(addr),
        }
    }
    None
}

async fn relay(mut client: TcpStream, mut upstream: TcpStream, idle: Duration) {
    if super::tunnel::relay(&mut client, &mut upstream, idle).await {
        tracing::debug!("tcp connection idle; closed");
    }
}
