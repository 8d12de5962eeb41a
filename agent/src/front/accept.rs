//! Taking client connections for a front, within the agent's connection budget: one accept
//! loop for the `http` and `tcp` fronts.
//!
//! A front waits for a slot of the budget *before* it accepts, so past the cap new connections
//! wait in the kernel's accept queue, holding no fd of the agent's: the API, webhooks, worker
//! pipes and git, which share the agent's fd table, keep theirs. If the table runs out anyway,
//! the error is logged once a few seconds, not once per retry.
//!
//! [`spread`] runs a front's accept loop on every front loop ([`super::loops`]), each with its
//! own copy of the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
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
/// Whether the fronts take connections. Closed only in an upgrade's new agent until its workers
/// serve: until then the old agent takes every connection from the shared sockets, and if the
/// new one gives up it has taken none.
static OPEN: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(true));

/// Take no connection until [`open`].
pub fn hold() {
    OPEN.send_replace(false);
}

/// Take connections (again).
pub fn open() {
    OPEN.send_replace(true);
}

pub async fn next(listener: &TcpListener, budget: &Budget, shutdown: &CancellationToken) -> Option<Accepted> {
    if !*OPEN.borrow() {
        let mut open = OPEN.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
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
            // `TCP_NODELAY` comes from the listener ([`spread`]): no syscall per connection.
            Ok((stream, peer)) => {
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

/// Serve `listener` on every front loop: `serve` runs once per loop with that loop's copy of the
/// listener (each loop takes the connections it has room for; the kernel wakes them all, the
/// first to `accept` gets it). Returns when every loop's `serve` has.
///
/// Accepted connections get `TCP_NODELAY` from the listener (Linux copies it to each one), so a
/// small answer leaves at once without a `setsockopt` per connection.
pub async fn spread<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    set_nodelay(&listener);
    let loops = super::loops::handles();
    let listener = match listener.into_std() {
        Ok(l) if !loops.is_empty() => l,
        Ok(l) => match TcpListener::from_std(l) {
            // No loop could start: serve on the caller's runtime.
            Ok(l) => return serve(l).await,
            Err(e) => return tracing::error!(error = %e, "front listener lost"),
        },
        Err(e) => return tracing::error!(error = %e, "front listener lost"),
    };
    let serve = Arc::new(serve);
    let mut running = Vec::with_capacity(loops.len());
    for handle in loops {
        let copy = match listener.try_clone() {
            Ok(copy) => copy,
            Err(e) => {
                tracing::warn!(error = %e, "cannot copy a front listener; fewer loops serve it");
                continue;
            }
        };
        let serve = serve.clone();
        // `from_std` registers the copy with the loop it runs on.
        running.push(handle.spawn(async move {
            match TcpListener::from_std(copy) {
                Ok(l) => serve(l).await,
                Err(e) => tracing::warn!(error = %e, "a front loop cannot take its listener"),
            }
        }));
    }
    drop(listener);
    for r in running {
        if let Err(e) = r.await {
            tracing::error!(error = %e, "a front loop's accept loop ended abnormally");
        }
    }
}

fn set_nodelay(listener: &TcpListener) {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket this listener owns, with a local int.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_NODELAY on the listener");
    }
}
