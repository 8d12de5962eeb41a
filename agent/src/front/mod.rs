//! The front: what owns an app's public port and spreads traffic over its ready workers.
//!
//! Like kamal-proxy, the contract with the supervisor is four verbs on a [`Rotation`]:
//! [`Rotation::add`] a ready worker, [`Rotation::remove`] it (no new traffic, idle upstream
//! connections closed at once), [`Backend::drain`] (wait for its in-flight work), and after that the
//! supervisor may signal the process. Nothing a client sent is ever written to a worker that has
//! left the rotation, which is why an app that dies at once on the reload signal fails nothing.

pub mod accept;
mod chunked;
#[cfg(test)]
mod differential;
pub mod http;
pub mod loops;
pub mod tcp;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How a front stops: it stops accepting (`accepting`; requests in flight finish, idle
/// keep-alive connections close), then, once the app's `drain_timeout` is over, the connections
/// still open are closed (`open`).
#[derive(Clone, Default)]
pub struct Stop {
    pub accepting: CancellationToken,
    pub open: CancellationToken,
}

impl Stop {
    /// Serve one connection (`serve`) until it ends, or until the open ones are closed. The whole
    /// of a spawned task: the close is listened for at its first poll only (a task's waker
    /// stays its own), and then only looked at, an atomic load per wake-up, where a poll of
    /// the listener would take its lock at every one, several times per request.
    pub async fn unless_closed(&self, serve: impl std::future::Future<Output = ()>) {
        let mut serve = std::pin::pin!(serve);
        let mut closed = std::pin::pin!(self.open.cancelled());
        let mut listening = false;
        std::future::poll_fn(|cx| {
            if serve.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
            if !listening {
                listening = true;
                return closed.as_mut().poll(cx);
            }
            if self.open.is_cancelled() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })
        .await;
    }
}

/// Idle upstream connections older than this are not reused. Node closes idle keep-alive
/// connections after 5 s; staying well under it means the front never writes a request onto a
/// connection the app is closing.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(3);
const MAX_IDLE_PER_BACKEND: usize = 512;

/// Idle upstream connections of one backend on one front loop, with when each became idle.
type IdlePool = Mutex<Vec<(TcpStream, Instant)>>;

/// One worker as the front sees it: an address, a count of work in flight, a pool.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// The worker's instance id, for logs.
    pub worker: u32,
    in_rotation: AtomicBool,
    /// Requests in flight (`http`) or open connections (`tcp`).
    inflight: AtomicUsize,
    /// Client connections currently pinned to this backend (`http` keep-alive), for balancing.
    pinned: AtomicUsize,
    drained: Notify,
    /// Idle upstream connections, one pool per front loop ([`loops::current`]): a connection is
    /// registered with the loop that opened it and is reused there.
    idle: Box<[IdlePool]>,
    /// Timeouts and refused connects in a row (passive health); an answer resets it.
    failures: AtomicUsize,
    /// Failed active health probes in a row; a passing probe resets it.
    probe_failures: AtomicUsize,
    /// Reported unhealthy once; its replacement is on the way.
    unhealthy: AtomicBool,
}

impl Backend {
    pub fn new(addr: SocketAddr, worker: u32) -> Arc<Backend> {
        Arc::new(Backend {
            addr,
            worker,
            in_rotation: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            pinned: AtomicUsize::new(0),
            drained: Notify::new(),
            idle: (0..=loops::count()).map(|_| Mutex::new(Vec::new())).collect(),
            failures: AtomicUsize::new(0),
            probe_failures: AtomicUsize::new(0),
            unhealthy: AtomicBool::new(false),
        })
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(SeqCst)
    }

    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(SeqCst)
    }

    /// Count one unit of work in, unless the backend has left the rotation.
    ///
    /// The increment comes before the check: `drain` clears the flag before it reads the count,
    /// so either the drain sees this work, or this sees the flag cleared and backs off.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Lease> {
        self.inflight.fetch_add(1, SeqCst);
        let lease = Lease(self.clone());
        self.in_rotation.load(SeqCst).then_some(lease)
    }

    /// Wait until no work is in flight, or `timeout`. Answers whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight.load(SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inflight.load(SeqCst) == 0;
            }
        }
    }

    /// This loop's pool.
    fn pool(&self) -> &IdlePool {
        &self.idle[loops::current().min(self.idle.len() - 1)]
    }

    /// A pooled idle connection young enough to reuse, that has sent nothing since its last answer.
    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.pool().lock().unwrap_or_else(|e| e.into_inner());
        while let Some((stream, since)) = idle.pop() {
            if since.elapsed() < UPSTREAM_IDLE && is_quiet(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, stream: TcpStream) {
        if !self.in_rotation() {
            return;
        }
        let mut idle = self.pool().lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_BACKEND {
            idle.push((stream, Instant::now()));
        }
    }

    /// Close pooled connections that have been idle too long.
    pub fn sweep_idle(&self) {
        for pool in &self.idle {
            pool.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, since)| since.elapsed() < UPSTREAM_IDLE);
        }
    }
}

/// Whether an idle upstream connection may carry a request: its worker has sent nothing since its
/// last answer. Bytes a worker sends unasked (a second answer, a body after `HEAD` or `204`) would
/// be read as the answer to the next request sent on it, maybe another client's; an end of file
/// means the worker closed it. Like nginx, such a connection is dropped. No syscall unless the
/// loop saw the socket become readable (a read that drained it cleared that).
fn is_quiet(stream: &TcpStream) -> bool {
    matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One unit of work in flight on a backend; dropping it counts the work out.
#[derive(Debug)]
pub struct Lease(Arc<Backend>);

impl Lease {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, SeqCst) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Why a backend was found unhealthy (for logs and the `worker.unhealthy` report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhealthy {
    /// Passive: this many response timeouts or refused connects in a row.
    Requests(usize),
    /// Active: this many failed health probes in a row.
    Probes(usize),
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Requests(n) => write!(f, "{n} timeouts or refused connects in a row"),
            Unhealthy::Probes(n) => write!(f, "{n} failed health probes in a row"),
        }
    }
}

/// The set of backends that take new traffic.
#[derive(Debug, Default)]
pub struct Rotation {
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    changed: Notify,
    next: AtomicUsize,
    /// Failures in a row after which a backend is unhealthy; 0: never.
    unhealthy_after: AtomicUsize,
    /// Backends found unhealthy, for the supervisor to replace ([`Rotation::next_unhealthy`]).
    unhealthy: Mutex<Vec<(Arc<Backend>, Unhealthy)>>,
    unhealthy_found: Notify,
}

impl Rotation {
    /// Passive health: after `n` timeouts or refused connects in a row a backend leaves the
    /// rotation and is handed to whoever waits in [`Rotation::next_unhealthy`]. 0 turns it off.
    pub fn set_unhealthy_after(&self, n: usize) {
        self.unhealthy_after.store(n, SeqCst);
    }

    /// A request to `b` timed out or a connect to it was refused.
    pub fn failed(&self, b: &Arc<Backend>) {
        let n = b.failures.fetch_add(1, SeqCst) + 1;
        let limit = self.unhealthy_after.load(SeqCst);
        if limit != 0 && n >= limit {
            self.found_unhealthy(b, Unhealthy::Requests(limit));
        }
    }

    /// Active health: a probe of `b` failed; after `limit` in a row `b` is unhealthy exactly as
    /// after passive failures.
    pub fn probe_failed(&self, b: &Arc<Backend>, limit: usize) {
        let n = b.probe_failures.fetch_add(1, SeqCst) + 1;
        if n >= limit.max(1) {
            self.found_unhealthy(b, Unhealthy::Probes(limit.max(1)));
        }
    }

    /// A probe of `b` passed: its probe failure count starts again.
    pub fn probe_passed(&self, b: &Backend) {
        b.probe_failures.store(0, SeqCst);
    }

    /// Take `b` out of rotation (unless it is the last one) and hand it to the supervisor, once.
    fn found_unhealthy(&self, b: &Arc<Backend>, why: Unhealthy) {
        if b.unhealthy.swap(true, SeqCst) {
            return;
        }
        // The last backend stays: a slow answer beats none (every worker of an app that waits
        // on a dead database times out; taking them all away would only add 503s).
        if self.snapshot().iter().any(|x| !Arc::ptr_eq(x, b)) {
            self.remove(b);
        }
        self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()).push((b.clone(), why));
        self.unhealthy_found.notify_one();
    }

    /// `b` answered: its failure count starts again.
    pub fn answered(&self, b: &Backend) {
        if b.failures.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            b.failures.store(0, SeqCst);
        }
    }

    /// The next backend found unhealthy, and why (waits until there is one).
    pub async fn next_unhealthy(&self) -> (Arc<Backend>, Unhealthy) {
        loop {
            let found = self.unhealthy_found.notified();
            if let Some(b) = self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                return b;
            }
            found.await;
        }
    }

    /// Put a ready backend into rotation.
    pub fn add(&self, b: &Arc<Backend>) {
        b.in_rotation.store(true, SeqCst);
        let mut all = self.backends.write().unwrap_or_else(|e| e.into_inner());
        if !all.iter().any(|x| Arc::ptr_eq(x, b)) {
            let mut v = Vec::clone(&all);
            v.push(b.clone());
            *all = Arc::new(v);
        }
        drop(all);
        self.changed.notify_waiters();
    }

    /// Take a backend out of rotation: no new work reaches it; its idle connections close now.
    pub fn remove(&self, b: &Arc<Backend>) {
        b.in_rotation.store(false, SeqCst);
        let mut all = self.backends.write().unwrap_or_else(|e| e.into_inner());
        if all.iter().any(|x| Arc::ptr_eq(x, b)) {
            *all = Arc::new(all.iter().filter(|x| !Arc::ptr_eq(x, b)).cloned().collect());
        }
        drop(all);
        for pool in &b.idle {
            pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The least busy backend in rotation, not in `exclude`, with a lease on it.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<Lease> {
        for _ in 0..4 {
            let all = self.snapshot();
            let n = all.len();
            if n == 0 {
                return None;
            }
            let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let best = (0..n)
                .map(|i| &all[(start + i) % n])
                .filter(|b| !exclude.contains(&b.addr))
                .min_by_key(|b| b.inflight.load(SeqCst) + b.pinned.load(SeqCst))?;
            if let Some(lease) = best.try_acquire() {
                return Some(lease);
            }
        }
        None
    }

    /// Like [`Rotation::pick`], but when no backend is in rotation (all restarting), wait for one
    /// up to `patience` instead of failing the request at once.
    pub async fn pick_wait(&self, exclude: &[SocketAddr], patience: Duration) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(l) = self.pick(exclude) {
                return Some(l);
            }
            if !exclude.is_empty() && !self.snapshot().is_empty() {
                return None;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.pick(exclude);
            }
        }
    }

    pub fn sweep_idle(&self) {
        for b in self.snapshot().iter() {
            b.sweep_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_removed_backend_takes_no_new_work_and_drains() {
        let rot = Rotation::default();
        let b = Backend::new("127.0.0.1:1".parse().unwrap(), 0);
        rot.add(&b);
        let lease = rot.pick(&[]).expect("in rotation");
        rot.remove(&b);
        assert!(rot.pick(&[]).is_none());
        assert!(b.try_acquire().is_none());
        assert!(!b.drain(Duration::from_millis(20)).await, "one request still in flight");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.drain(Duration::from_secs(5)).await }
        });
        drop(lease);
        assert!(waiter.await.unwrap());
        assert_eq!(b.inflight(), 0);
    }

    #[tokio::test]
    async fn a_backend_failing_in_a_row_leaves_the_rotation_and_is_reported_once() {
        let rot = Rotation::default();
        rot.set_unhealthy_after(3);
        let a = Backend::new("127.0.0.1:1".parse().unwrap(), 0);
        let b = Backend::new("127.0.0.1:2".parse().unwrap(), 1);
        rot.add(&a);
        rot.add(&b);
        rot.failed(&a);
        rot.failed(&a);
        rot.answered(&a);
        rot.failed(&a);
        rot.failed(&a);
        assert!(a.in_rotation(), "an answer in between resets the count");
        rot.failed(&a);
        assert!(!a.in_rotation());
        rot.failed(&a);
        let (sick, why) = tokio::time::timeout(Duration::from_secs(1), rot.next_unhealthy()).await.unwrap();
        assert!(Arc::ptr_eq(&sick, &a));
        assert_eq!(why, Unhealthy::Requests(3));
        assert!(tokio::time::timeout(Duration::from_millis(50), rot.next_unhealthy()).await.is_err(), "reported once");
        // The last backend in rotation stays in it, but is still reported for replacement.
        for _ in 0..3 {
            rot.failed(&b);
        }
        assert!(b.in_rotation());
        let (sick, _) = tokio::time::timeout(Duration::from_secs(1), rot.next_unhealthy()).await.unwrap();
        assert!(Arc::ptr_eq(&sick, &b));
    }

    #[tokio::test]
    async fn failed_probes_in_a_row_make_a_backend_unhealthy_even_with_passive_health_off() {
        let rot = Rotation::default();
        rot.set_unhealthy_after(0);
        let a = Backend::new("127.0.0.1:1".parse().unwrap(), 0);
        let b = Backend::new("127.0.0.1:2".parse().unwrap(), 1);
        rot.add(&a);
        rot.add(&b);
        rot.probe_failed(&a, 2);
        rot.probe_passed(&a);
        rot.probe_failed(&a, 2);
        assert!(a.in_rotation(), "a passing probe in between resets the count");
        rot.probe_failed(&a, 2);
        assert!(!a.in_rotation());
        let (sick, why) = tokio::time::timeout(Duration::from_secs(1), rot.next_unhealthy()).await.unwrap();
        assert!(Arc::ptr_eq(&sick, &a));
        assert_eq!(why, Unhealthy::Probes(2));
        rot.failed(&a);
        rot.probe_failed(&a, 2);
        assert!(tokio::time::timeout(Duration::from_millis(50), rot.next_unhealthy()).await.is_err(), "reported once");
    }

    #[tokio::test]
    async fn picks_the_least_busy() {
        let rot = Rotation::default();
        let a = Backend::new("127.0.0.1:1".parse().unwrap(), 0);
        let b = Backend::new("127.0.0.1:2".parse().unwrap(), 1);
        rot.add(&a);
        rot.add(&b);
        let l1 = rot.pick(&[]).unwrap();
        let l2 = rot.pick(&[]).unwrap();
        assert_ne!(l1.backend().addr, l2.backend().addr);
        let l3 = rot.pick(&[l1.backend().addr]).unwrap();
        assert_eq!(l3.backend().addr, l2.backend().addr);
    }
}
