//! Taking client connections for a front, within the agent's connection budget: one accept
//! loop for the `http` and `tcp` fronts.
//!
//! A front waits for a slot of the budget *before* it accepts, so past the cap new connections
//! wait in the kernel's accept queue, holding no fd of the agent's: the API, webhooks, worker
//! pipes and git, which share the agent's fd table, keep theirs. If the table runs out anyway,
//! the error is logged once a few seconds, not once per retry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How many client connections a front may hold at once (each also holds one upstream
/// connection): a slot of the agent's budget for all fronts (`crate::limits`), and one of its
/// own share, so that a flood on one app's port leaves room for the others.
#[derive(Clone)]
pub struct Budget {
    pub all_fronts: Arc<Semaphore>,
    pub this_front: Arc<Semaphore>,
}

/// Both slots of one connection, given back when it is dropped.
pub struct Slot {
    _all_fronts: OwnedSemaphorePermit,
    _this_front: OwnedSemaphorePermit,
}

/// A client connection counted in the budget until it is dropped.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

/// The next client connection, `None` once `shutdown` is cancelled.
pub async fn next(listener: &TcpListener, budget: &Budget, shutdown: &CancellationToken) -> Option<Accepted> {
    // Its own share first: a front at its cap waits without holding a slot others could use.
    let this_front = tokio::select! {
        s = budget.this_front.clone().acquire_owned() => s.ok()?,
        _ = shutdown.cancelled() => return None,
    };
    let all_fronts = tokio::select! {
        s = budget.all_fronts.clone().acquire_owned() => s.ok()?,
        _ = shutdown.cancelled() => return None,
    };
    let slot = Slot { _all_fronts: all_fronts, _this_front: this_front };
    let mut failures = 0u64;
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Nagle's algorithm only delays small writes: a socket that refuses the option still works
                let _ = stream.set_nodelay(true);
                return Some(Accepted { stream, peer, slot });
            }
            Err(e) => {
                failures += 1;
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, failures, "accept failed; retrying");
                    warned = Some(Instant::now());
                }
                // Out of fds: give the other connections time to finish before trying again.
                let pause = if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
                    Duration::from_millis(250)
                } else {
                    Duration::from_millis(50)
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
