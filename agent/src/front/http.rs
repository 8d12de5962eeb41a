//! The `http` front: an HTTP/1.1 reverse proxy that parses only message boundaries.
//!
//! Every CPU cycle the front spends is taken from the app on a small host, so it does not build
//! request objects: `httparse` finds where a head ends and how long the body is, and bytes are
//! passed through otherwise. A keep-alive client connection is pinned to one upstream connection
//! and moves to another worker only at a request boundary, when its worker has left the rotation.
//! Upstream connections are pooled per worker, so a client that opens a connection per request
//! still reuses warm connections to the app.

mod fuzz;

pub use fuzz::fuzz_frame;

use super::chunked::Chunked;
use super::{Backend, Lease, Rotation, UPSTREAM_IDLE, accept, is_quiet};
use bytes::{Buf, BytesMut};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for a worker when none is in rotation (all restarting).
const NO_WORKER_PATIENCE: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: usize = 4;
/// How long the front's own short answers (400, 502, 504...) may take to be taken by the client.
const RESPOND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping front still waits for the first request of a connection it accepted:
/// that client has not been answered yet and has no reason to retry, so closing on it would
/// fail a request (a keep-alive connection between requests is closed at once instead).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(3);

/// How the front treats clients (the app's `front:` config); changed by SIGHUP through a
/// `watch` channel, which a client connection looks at once per request head: a change applies
/// to keep-alive connections already open (a load balancer's may never close) from their next
/// request on.
pub struct ClientRules {
    /// The whole head of a request must arrive within this long of its first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A worker must start its answer within this long of getting the whole request (then 504),
    /// and may not fall silent longer than this in the middle of it.
    pub response_timeout: Duration,
    /// A client may not fall silent longer than this while it sends a request body, nor stop
    /// taking its answer for longer than this (nginx's `send_timeout`): a client that never reads
    /// would otherwise hold its connection, and a lease on a worker, for ever.
    pub body_timeout: Duration,
    /// An upgraded connection (websocket) with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// The largest request body passed on: a larger `Content-Length` is answered 413 before the
    /// worker sees a byte; a chunked body that grows past it is cut (413 if nothing was answered).
    pub max_body: u64,
    /// Whether a peer's forwarding headers are believed (`trusted_proxies`).
    pub trusted_proxy: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// Where one JSON line per request goes (`access_log: true`); a full channel drops lines
    /// rather than slow a request down.
    pub access_log: Option<tokio::sync::mpsc::Sender<String>>,
    /// Cancelled when these rules are replaced (any change of the app's config, a SIGHUP's
    /// included): a connection idle between requests, or waiting for the rest of a head, takes up
    /// the new timeouts at once instead of waiting out the old ones. Listened for once per rules,
    /// not once per request.
    pub superseded: CancellationToken,
}

impl Default for ClientRules {
    fn default() -> Self {
        ClientRules {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            response_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_body: 100 << 20,
            tunnel_idle_timeout: Duration::from_secs(600),
            trusted_proxy: Box::new(|_| false),
            access_log: None,
            superseded: CancellationToken::new(),
        }
    }
}

impl std::fmt::Debug for ClientRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRules")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("body_timeout", &self.body_timeout)
            .finish_non_exhaustive()
    }
}

/// Counters of one front, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct FrontStats {
    pub requests: AtomicU64,
    /// Requests answered by the front itself with 502/503 (a worker failed them).
    pub errors: AtomicU64,
    /// Requests sent again to another connection or worker after a failure before any answer.
    pub retries: AtomicU64,
    /// Requests a worker did not answer within `response_timeout` (answered 504; also in `errors`).
    pub timeouts: AtomicU64,
}

/// Accept client connections until `shutdown`, within `budget`; each one is served on `tracker`,
/// on the front loop that accepted it.
pub async fn serve(
    listener: TcpListener,
    rotation: Arc<Rotation>,
    stats: Arc<FrontStats>,
    rules: tokio::sync::watch::Receiver<Arc<ClientRules>>,
    budget: accept::Budget,
    stop: super::Stop,
    tracker: TaskTracker,
) {
    let ids = Arc::new(RequestIds::new());
    accept::spread(listener, move |listener| {
        let (rotation, stats, rules, budget) = (rotation.clone(), stats.clone(), rules.clone(), budget.clone());
        let (stop, tracker, ids) = (stop.clone(), tracker.clone(), ids.clone());
        async move {
            while let Some(accept::Accepted { stream, peer, slot }) =
                accept::next(&listener, &budget, &stop.accepting).await
            {
                let mut watch = rules.clone();
                let rules = watch.borrow_and_update().clone();
                let peer = Peer::new(peer.ip(), &*rules.trusted_proxy);
                let started = Instant::now();
                let client_timer = Box::pin(tokio::time::sleep_until((started + rules.header_timeout).into()));
                let upstream_timer = Box::pin(tokio::time::sleep_until((started + rules.response_timeout).into()));
                let rules_changed = Box::pin(rules.superseded.clone().cancelled_owned());
                let conn = Conn {
                    client: stream,
                    cbuf: BytesMut::with_capacity(8 * 1024),
                    scanned: 0,
                    // A connection that sends nothing is held to the head deadline from its start.
                    head_started: Some(started),
                    had_request: false,
                    peer,
                    rules,
                    watch,
                    rules_changed,
                    ids: ids.clone(),
                    rotation: rotation.clone(),
                    stats: stats.clone(),
                    pinned: None,
                    client_timer,
                    upstream_timer,
                    stop: Box::pin(stop.accepting.clone().cancelled_owned()),
                };
                let stop = stop.clone();
                tracker.spawn(async move {
                    stop.unless_closed(conn.run()).await;
                    drop(slot);
                });
            }
        }
    })
    .await;
}

/// An upstream connection and the backend it belongs to.
struct Upstream {
    stream: TcpStream,
    ubuf: BytesMut,
    pin: PinCount,
    used_at: Instant,
    reused: bool,
}

/// Counts a client connection pinned to a backend (for balancing) while it lives.
struct PinCount(Arc<Backend>);

impl PinCount {
    fn new(b: Arc<Backend>) -> PinCount {
        b.pinned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PinCount(b)
    }
}

impl Drop for PinCount {
    fn drop(&mut self) {
        self.0.pinned.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Upstream {
    fn backend(&self) -> &Arc<Backend> {
        &self.pin.0
    }

    /// Back to its backend's pool, if it carries nothing left over.
    fn release(self) {
        if self.ubuf.is_empty() {
            let backend = self.pin.0.clone();
            drop(self.pin);
            backend.put_idle(self.stream);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Body {
    pub(super) fn is_done(&self) -> bool {
        match self {
            Body::None | Body::Length(0) => true,
            Body::Chunked(c) => c.is_done(),
            _ => false,
        }
    }

    /// How many of `buf`'s leading bytes belong to this body; advances the framing.
    pub(super) fn take(&mut self, buf: &[u8]) -> Result<usize, Failure> {
        self.take_counting(buf).map(|(n, _)| n)
    }

    /// [`Body::take`], and how many of those bytes are the body's content (not chunked framing):
    /// what `max_body` counts.
    fn take_counting(&mut self, buf: &[u8]) -> Result<(usize, u64), Failure> {
        Ok(match self {
            Body::None => (0, 0),
            Body::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                (n as usize, n)
            }
            Body::Chunked(c) => {
                let before = c.data();
                let n = c.advance(buf).map_err(|_| Failure::Malformed)?;
                (n, c.data() - before)
            }
            Body::UntilClose => (buf.len(), buf.len() as u64),
        })
    }
}

/// A parsed request head, with the bytes to send upstream already built.
pub(super) struct Request {
    pub(super) head: Vec<u8>,
    /// Kept only for the access log.
    log: Option<Box<LogLine>>,
    pub(super) body: Body,
    idempotent: bool,
    is_head: bool,
    /// An HTTP/1.0 client, which must never get an interim `1xx` answer (RFC 9110 §15.2).
    http10: bool,
    client_close: bool,
    upgrade: bool,
}

/// What the access log says of a request beside its outcome.
struct LogLine {
    method: String,
    path: String,
    /// `X-Request-Id`: the client's, or the one the front made.
    id: String,
}

struct Response {
    head_len: usize,
    status: u16,
    body: Body,
    upstream_close: bool,
    /// A replacement head when the client must be told `Connection: close`.
    rewritten: Option<Vec<u8>>,
    /// How many bytes after the head, read with it, belong to the body (`body` is past them).
    first: usize,
    /// The answer came before the client's whole body: what the client still sends is read and
    /// dropped for a moment before its connection closes (closing on unread bytes resets the
    /// connection, and the client could lose the answer).
    unread_body: bool,
}

#[derive(Debug)]
pub(super) enum Failure {
    /// The client went away: close without an answer.
    Client,
    /// The client fell silent in the middle of its body for `body_timeout`: 408.
    ClientSilent,
    /// The client's body broke its framing (a chunk size that is not one): 400.
    BadBody,
    /// A worker failed before a final answer reached the client (an interim one may have);
    /// `retry` when the request may be sent again.
    Upstream {
        retry: bool,
    },
    /// A worker did not start its answer within `response_timeout`.
    Timeout,
    /// The client's body is larger than `max_body`.
    TooLarge,
    Malformed,
}

struct Conn {
    client: TcpStream,
    cbuf: BytesMut,
    /// How much of `cbuf` is known not to hold the end of a head: each byte is searched once,
    /// however the head is cut into reads.
    scanned: usize,
    /// When the head being read started: at accept for the first request, at its first byte
    /// for later ones (between requests a connection is idle, not slow).
    head_started: Option<Instant>,
    /// Whether a request has been read from this connection (a stop closes it between requests).
    had_request: bool,
    peer: Peer,
    rules: Arc<ClientRules>,
    /// Where `rules` come from: looked at for a change once per request head.
    watch: tokio::sync::watch::Receiver<Arc<ClientRules>>,
    /// `rules` were replaced: a wait for a head starts again by the new ones.
    rules_changed: Pin<Box<WaitForCancellationFutureOwned>>,
    ids: Arc<RequestIds>,
    rotation: Arc<Rotation>,
    stats: Arc<FrontStats>,
    pinned: Option<Upstream>,
    /// The client side's deadline (head, idle keep-alive) and the worker's (`response_timeout`):
    /// one timer each for the connection's life, moved on per request. A moved-on timer stays
    /// in the timer wheel; a new one per request would take the wheel's lock twice.
    client_timer: Pin<Box<Sleep>>,
    upstream_timer: Pin<Box<Sleep>>,
    /// The agent's stop, listened for once per connection rather than once per request.
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

enum Flow {
    Continue,
    /// Close; what the client sent beyond what was answered (a pipelined request) is read and
    /// dropped for a moment first, if there is any ([`Conn::part`]).
    Close,
    /// Close after reading and dropping what the client still sends for a moment, whether or not
    /// anything has come yet: the rest of a body that was not taken.
    Linger,
}

/// How one request went, for the access log.
struct Served {
    flow: Flow,
    status: u16,
    /// Bytes of the answer sent to the client.
    bytes: u64,
    worker: Option<u32>,
    /// Why an answer that had started reached the client only in part.
    cut: Option<Cut>,
}

/// Why an answer was cut short after its head went out, when its status can no longer say so
/// (the access log's `cut`; nginx logs the worker's status alone, HAProxy a termination state).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    /// The client stopped taking it, or left.
    Client,
    /// The worker closed, or sent what is not HTTP, in the middle of the body.
    Worker,
    /// The worker fell silent in the middle of the body for `response_timeout`.
    WorkerTimeout,
}

impl Cut {
    fn as_str(self) -> &'static str {
        match self {
            Cut::Client => "client",
            Cut::Worker => "worker",
            Cut::WorkerTimeout => "worker_timeout",
        }
    }
}

impl Served {
    /// The front's own answer (or none), no worker's.
    fn front(flow: Flow, status: u16) -> Served {
        Served { flow, status, bytes: 0, worker: None, cut: None }
    }
}

impl Conn {
    async fn run(mut self) {
        loop {
            let req = match self.read_request().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(status) => {
                    // the client may be gone; the connection closes either way
                    let _ = respond(&mut self.client, status).await;
                    // A head refused by the front is a request in the access log too, unless
                    // nothing of it came (a connection opened and never used).
                    if !self.cbuf.is_empty() {
                        self.log(Instant::now(), None, &Served::front(Flow::Close, status));
                    }
                    crate::linger::drain(&mut self.client).await;
                    break;
                }
            };
            self.stats.requests.fetch_add(1, Relaxed);
            match self.forward(req).await {
                Flow::Continue => shrink(&mut self.cbuf),
                Flow::Close => {
                    self.part(false).await;
                    break;
                }
                Flow::Linger => {
                    self.part(true).await;
                    break;
                }
            }
        }
        if let Some(up) = self.pinned.take() {
            up.release();
        }
    }

    /// The next request head, `None` when the client closed (or the agent stops, or it stayed
    /// idle past `idle_timeout`) between requests. `Err(status)`: answer that and close.
    async fn read_request(&mut self) -> Result<Option<Request>, u16> {
        // The head's deadline runs from its first byte (or the connection's start); before that
        // a keep-alive connection is idle, since now. Both are counted by the rules of the
        // moment: a change that lowers a timeout applies to a wait already under way.
        if !self.cbuf.is_empty() {
            self.head_started.get_or_insert_with(Instant::now);
        }
        let idle_since = Instant::now();
        let mut head_from = self.head_started.take();
        // Set once a stop is seen while the first request has not come yet: read on until then,
        // or until this grace ends.
        let mut grace: Option<Instant> = None;
        loop {
            // Before each wait and each look at a head: a connection opened before a change
            // waits, times out and logs by the new rules as soon as anything comes on it.
            self.follow_rules();
            if let Some(end) = head_end(&self.cbuf, self.scanned) {
                let keep_line = self.rules.access_log.is_some();
                let parsed = parse_head(&self.cbuf[..end], &self.peer, &self.ids, keep_line);
                self.scanned = 0;
                return match parsed {
                    Ok(Some((len, req))) => {
                        self.cbuf.advance(len);
                        self.had_request = true;
                        Ok(Some(req))
                    }
                    // The terminator was found, so httparse has the whole head.
                    Ok(None) => Err(400),
                    Err(status) => Err(status),
                };
            }
            // Nothing from here on can end the head but bytes not read yet (a terminator is at
            // most 4 bytes, its start may already be here).
            self.scanned = self.cbuf.len().saturating_sub(3);
            if self.cbuf.len() > MAX_HEAD {
                return Err(431);
            }
            self.cbuf.reserve(8 * 1024);
            let idle = self.cbuf.is_empty();
            let deadline = match head_from {
                Some(t) => t + self.rules.header_timeout,
                None => idle_since + self.rules.idle_timeout,
            };
            let deadline = grace.map_or(deadline, |g| g.min(deadline));
            self.client_timer.as_mut().reset(deadline.into());
            let read = tokio::select! {
                biased;
                r = self.client.read_buf(&mut self.cbuf) => Ok(r),
                () = self.client_timer.as_mut() => Err(()),
                // New rules: wait again, by them. Rules replaced by ones that could not be taken
                // up are not waited on: that wait would end at once, for ever, and hold the front
                // loop (`follow_rules` makes this a second line of defence).
                () = self.rules_changed.as_mut(), if !self.rules.superseded.is_cancelled() => continue,
                () = self.stop.as_mut(), if idle && grace.is_none() => {
                    if !self.had_request {
                        // Accepted just before the stop: its first request is on its way.
                        grace = Some(Instant::now() + FIRST_REQUEST_GRACE);
                        continue;
                    }
                    // A lingering close, as nginx does: the client may be sending its next
                    // request right now; closing with it unread would reset the connection
                    // (a failed request), half-closing makes it read an end and retry.
                    let _ = self.client.shutdown().await; // the client may have gone already
                    crate::linger::drain(&mut self.client).await;
                    return Ok(None);
                }
            };
            match read {
                // A stop's grace ran out on a connection that sent nothing: close it quietly.
                Err(_) if grace.is_some() && self.cbuf.is_empty() => return Ok(None),
                Err(_) if head_from.is_some() => return Err(408),
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
            head_from.get_or_insert_with(Instant::now);
        }
    }

    /// Send one request to a worker and its answer back, retrying on another connection or worker
    /// while nothing of the answer has reached the client.
    async fn forward(&mut self, mut req: Request) -> Flow {
        let started = self.rules.access_log.as_ref().map(|_| Instant::now());
        let served = self.serve_one(&mut req).await;
        if let Some(started) = started {
            self.log(started, req.log.as_deref(), &served);
        }
        served.flow
    }

    /// The access log's line for a request (`line`: what its head said), if the log is on.
    fn log(&self, started: Instant, line: Option<&LogLine>, served: &Served) {
        if let Some(log) = &self.rules.access_log {
            let (method, path, id) = line.map_or(("", "", ""), |l| (&*l.method, &*l.path, &*l.id));
            let line = serde_json::json!({
                "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "peer": self.peer.text,
                "method": method,
                "path": path,
                "status": served.status,
                "bytes": served.bytes,
                "ms": started.elapsed().as_millis() as u64,
                "worker": served.worker,
                "id": id,
                "cut": served.cut.map(Cut::as_str),
            });
            // the access log is bounded: a full queue drops the line rather than slow the proxy (lossy by design)
            let _ = log.try_send(line.to_string());
        }
    }

    /// Take up the app's `front:` config if it changed since this connection last looked.
    fn follow_rules(&mut self) {
        // Rules are cancelled only once their successor is in the watch, so new rules are here
        // whenever `rules_changed` has fired. The watch may be closed (the app is gone) with
        // them still unseen: they are taken all the same, or `rules_changed`, fired for good,
        // would end every wait at once, without end, and hold the front loop.
        let changed = self.watch.has_changed().unwrap_or_else(|_| self.watch.borrow().has_changed());
        if changed {
            self.rules = self.watch.borrow_and_update().clone();
            self.peer.trusted = (self.rules.trusted_proxy)(self.peer.ip);
            self.rules_changed = Box::pin(self.rules.superseded.clone().cancelled_owned());
        }
    }

    /// Before the connection closes after an answer: a client that sent more than was answered
    /// (a pipelined request, the rest of a body) would get a reset for it, and a reset destroys
    /// whatever of the answer is still on its way. The front's side is shut, and what the client
    /// sends is read and dropped for a moment (nginx's lingering close). `sure`: even when
    /// nothing more has come yet.
    async fn part(&mut self, sure: bool) {
        if sure || !self.cbuf.is_empty() || !is_quiet(&self.client) {
            // the client may have gone already; its connection closes either way
            let _ = self.client.shutdown().await;
            crate::linger::drain(&mut self.client).await;
        }
    }

    /// [`Conn::forward`] without the access log.
    async fn serve_one(&mut self, req: &mut Request) -> Served {
        let front = Served::front;
        if matches!(req.body, Body::Length(n) if n > self.rules.max_body) {
            // the client may be gone; the connection closes either way
            let _ = respond(&mut self.client, 413).await;
            return front(Flow::Linger, 413);
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut fresh_only = false;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Relaxed);
            }
            let Some((lease, mut up)) = self.checkout(&mut tried, fresh_only).await else {
                self.stats.errors.fetch_add(1, Relaxed);
                let status = if self.rotation.snapshot().is_empty() { 503 } else { 502 };
                // the client may be gone; the connection closes either way
                let _ = respond(&mut self.client, status).await;
                return front(Flow::Close, status);
            };
            let worker = Some(up.backend().worker);
            match self.exchange(req, &mut up).await {
                Ok(res) => {
                    let status = res.status;
                    let (flow, bytes, cut) = self.finish(req, res, lease, up).await;
                    return Served { flow, status, bytes, worker, cut };
                }
                Err(Failure::Upstream { retry: true }) => {
                    tracing::debug!(worker = up.backend().worker, "upstream failed before answering; retrying");
                    if !up.reused {
                        tried.push(up.backend().addr);
                    }
                    fresh_only = true;
                    continue;
                }
                Err(Failure::Upstream { .. } | Failure::Malformed) => {
                    tracing::warn!(worker = up.backend().worker, "worker failed a request");
                    self.stats.errors.fetch_add(1, Relaxed);
                    // the client may be gone; the connection closes either way
                    let _ = respond(&mut self.client, 502).await;
                    return Served { worker, ..front(Flow::Close, 502) };
                }
                Err(Failure::Timeout) => {
                    let after = self.rules.response_timeout;
                    tracing::warn!(worker = up.backend().worker, ?after, "worker did not answer in time; 504");
                    self.stats.timeouts.fetch_add(1, Relaxed);
                    self.stats.errors.fetch_add(1, Relaxed);
                    self.rotation.failed(up.backend());
                    // the client may be gone; the connection closes either way
                    let _ = respond(&mut self.client, 504).await;
                    return Served { worker, ..front(Flow::Close, 504) };
                }
                Err(Failure::TooLarge) => {
                    // The worker got part of the body: its connection cannot carry another request.
                    drop(up);
                    // the client may be gone; the connection closes either way
                    let _ = respond(&mut self.client, 413).await;
                    return Served { worker, ..front(Flow::Linger, 413) };
                }
                // The client went away: nginx's 499.
                Err(Failure::Client) => return Served { worker, ..front(Flow::Close, 499) },
                // The client's fault, as nginx tells it (`client_body_timeout`, a bad chunk): the
                // worker got part of the body, so its connection goes.
                Err(failure @ (Failure::ClientSilent | Failure::BadBody)) => {
                    drop(up);
                    let status = if matches!(failure, Failure::ClientSilent) { 408 } else { 400 };
                    // the client may be gone; the connection closes either way
                    let _ = respond(&mut self.client, status).await;
                    return Served { worker, ..front(Flow::Linger, status) };
                }
            }
        }
        self.stats.errors.fetch_add(1, Relaxed);
        // the client may be gone; the connection closes either way
        let _ = respond(&mut self.client, 502).await;
        front(Flow::Close, 502)
    }

    /// A lease on a worker and a connection to it: the pinned one while its worker is in
    /// rotation, else a pooled or new one to the least busy worker.
    async fn checkout(&mut self, tried: &mut Vec<SocketAddr>, fresh_only: bool) -> Option<(Lease, Upstream)> {
        // The pinned connection is taken in any case: unless it is reused here, it is dropped.
        if let Some(up) = self.pinned.take()
            && !fresh_only
            && up.used_at.elapsed() < UPSTREAM_IDLE
            && is_quiet(&up.stream)
            && let Some(lease) = up.backend().try_acquire()
        {
            return Some((lease, Upstream { reused: true, ..up }));
        }
        while tried.len() < MAX_ATTEMPTS {
            let lease = self.rotation.pick_wait(tried, NO_WORKER_PATIENCE).await?;
            let backend = lease.backend().clone();
            if !fresh_only && let Some(stream) = backend.take_idle() {
                let up = Upstream {
                    stream,
                    ubuf: BytesMut::new(),
                    pin: PinCount::new(backend),
                    used_at: Instant::now(),
                    reused: true,
                };
                return Some((lease, up));
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await {
                Ok(Ok(stream)) => {
                    // Nagle's algorithm only delays small writes: a socket that refuses the option still works
                    let _ = stream.set_nodelay(true);
                    let up = Upstream {
                        stream,
                        ubuf: BytesMut::with_capacity(8 * 1024),
                        pin: PinCount::new(backend),
                        used_at: Instant::now(),
                        reused: false,
                    };
                    return Some((lease, up));
                }
                Ok(Err(e)) => tracing::debug!(worker = backend.worker, error = %e, "connect to worker failed"),
                Err(_) => tracing::debug!(worker = backend.worker, "connect to worker timed out"),
            }
            self.rotation.failed(&backend);
            tried.push(backend.addr);
        }
        None
    }

    /// Write the request (head and body) and read the answer's head, passing interim `1xx`
    /// answers on to the client.
    async fn exchange(&mut self, req: &mut Request, up: &mut Upstream) -> Result<Response, Failure> {
        // Sent again only when that cannot do anything twice: an idempotent request without a body.
        let retry = req.idempotent && req.body == Body::None;
        let (n, content) = req.body.take_counting(&self.cbuf).map_err(|_| Failure::BadBody)?;
        // What is left of `max_body` (a `Content-Length` was checked with the head).
        let mut body_left = self.rules.max_body.checked_sub(content).ok_or(Failure::TooLarge)?;
        // The head is kept as it is for a retry; it goes in one write with the body bytes
        // already read (copied only when there are some).
        let written = if n == 0 {
            up.stream.write_all(&req.head).await
        } else {
            let mut out = Vec::with_capacity(req.head.len() + n);
            out.extend_from_slice(&req.head);
            out.extend_from_slice(&self.cbuf[..n]);
            up.stream.write_all(&out).await
        };
        self.cbuf.advance(n);
        if written.is_err() {
            return Err(Failure::Upstream { retry });
        }
        let Conn { client, cbuf, rules, rotation, upstream_timer, .. } = self;
        let answer = if req.body.is_done() {
            upstream_timer.as_mut().reset((Instant::now() + rules.response_timeout).into());
            let (mut cr, mut cw) = client.split();
            let read = read_response(&mut up.stream, &mut up.ubuf, &mut cw, rules.body_timeout, req, retry);
            let answer = tokio::select! {
                biased;
                r = read => r,
                () = upstream_timer.as_mut() => Err(Failure::Timeout),
                () = gone(&mut cr) => Err(Failure::Client),
            };
            (answer, true)
        } else {
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.stream.split();
            let mut body = req.body;
            // The worker's time to answer runs from the end of the body (or from when it stopped
            // taking it).
            let sent_all = tokio::sync::Notify::new();
            let body_sent = std::sync::atomic::AtomicBool::new(false);
            // Ends only in a failure: once the whole body is sent, when the client goes away
            // while the worker prepares the answer, as without a body.
            let send = async {
                let (read_idle, write_idle) = (rules.body_timeout, rules.response_timeout);
                if let Err(e) =
                    relay(&mut cr, cbuf, &mut uw, &mut body, read_idle, write_idle, Some(&mut body_left)).await
                {
                    return match e {
                        Relay::Src => Failure::Client,
                        Relay::Idle => Failure::ClientSilent,
                        Relay::Malformed => Failure::BadBody,
                        Relay::TooLarge => Failure::TooLarge,
                        Relay::Dst => Failure::Upstream { retry: false },
                    };
                }
                body_sent.store(true, Relaxed);
                sent_all.notify_one();
                gone(&mut cr).await;
                Failure::Client
            };
            let ubuf = &mut up.ubuf;
            let answer = async {
                let read = read_response(&mut ur, ubuf, &mut cw, rules.body_timeout, req, false);
                tokio::pin!(read);
                tokio::select! {
                    r = &mut read => r,
                    () = sent_all.notified() => within(rules.response_timeout, read).await,
                }
            };
            tokio::pin!(send, answer);
            // A final answer may come before the whole body (`Expect: 100-continue` refused, an
            // upload turned away): it is the client's at once, not after a body it may never send.
            let mut sending = true;
            let answer = loop {
                tokio::select! {
                    failed = &mut send, if sending => match failed {
                        // The worker stopped taking the body: it may have answered and closed,
                        // or hung; its time to answer runs from now.
                        Failure::Upstream { .. } => {
                            sending = false;
                            sent_all.notify_one();
                        }
                        failure => return Err(failure),
                    },
                    answer = &mut answer => break answer,
                }
            };
            (answer, body_sent.load(Relaxed))
        };
        let answer = match answer {
            (Ok(_), false) => {
                // The client may still send the rest of its body: it is told to close, and the
                // worker's connection, which got part of the body, carries nothing more. Parsed
                // again because the head sent to the client depends on `client_close` (rare path).
                req.client_close = true;
                let mut res = parse_response(&up.ubuf, req)?.ok_or(Failure::Malformed)?;
                res.upstream_close = true;
                res.unread_body = true;
                Ok(res)
            }
            (answer, _) => answer,
        };
        // The body bytes that came with the head: malformed there, nothing has reached the
        // client yet and it can still be told 502.
        let answer = answer.and_then(|mut res| {
            res.first = res.body.take(&up.ubuf[res.head_len..]).map_err(|_| Failure::Malformed)?;
            Ok(res)
        });
        if answer.is_ok() {
            rotation.answered(up.backend());
        }
        answer
    }

    /// Pass the answer on, then keep, pool or drop the upstream connection.
    async fn finish(
        &mut self,
        req: &Request,
        res: Response,
        lease: Lease,
        mut up: Upstream,
    ) -> (Flow, u64, Option<Cut>) {
        let (mut body, n) = (res.body, res.first);
        let mut sent = (res.rewritten.as_ref().map_or(res.head_len, Vec::len) + n) as u64;
        let written = match res.rewritten {
            Some(mut out) => {
                out.extend_from_slice(&up.ubuf[res.head_len..res.head_len + n]);
                write_within(self.rules.body_timeout, &mut self.client, &out).await
            }
            None => write_within(self.rules.body_timeout, &mut self.client, &up.ubuf[..res.head_len + n]).await,
        };
        up.ubuf.advance(res.head_len + n);
        if written.is_err() {
            return (Flow::Close, 0, Some(Cut::Client));
        }
        if !body.is_done() {
            let (read_idle, write_idle) = (self.rules.response_timeout, self.rules.body_timeout);
            match relay(&mut up.stream, &mut up.ubuf, &mut self.client, &mut body, read_idle, write_idle, None).await {
                Ok(relayed) => sent += relayed,
                Err(Relay::Dst) => return (Flow::Close, sent, Some(Cut::Client)),
                Err(Relay::Idle) => {
                    tracing::warn!(worker = up.backend().worker, "worker fell silent in the middle of a response body");
                    self.stats.timeouts.fetch_add(1, Relaxed);
                    self.stats.errors.fetch_add(1, Relaxed);
                    self.rotation.failed(up.backend());
                    return (Flow::Close, sent, Some(Cut::WorkerTimeout));
                }
                Err(Relay::Src | Relay::Malformed | Relay::TooLarge) => {
                    tracing::warn!(worker = up.backend().worker, "worker closed in the middle of a response body");
                    self.stats.errors.fetch_add(1, Relaxed);
                    return (Flow::Close, sent, Some(Cut::Worker));
                }
            }
        }
        if res.status == 101 && req.upgrade {
            self.tunnel(up).await;
            drop(lease);
            return (Flow::Close, sent, None);
        }
        drop(lease);
        let keep_client = !req.client_close && !res.upstream_close;
        // Bytes after the answer were not asked for: whatever read them next would take them for
        // its answer. A worker that declined an upgrade is not asked anything more on that
        // connection: Node then leaves a head it refuses (one over its 16 KB limit) unanswered,
        // where it would have answered 431 and closed.
        if res.upstream_close || !up.ubuf.is_empty() || req.upgrade {
            drop(up);
        } else if keep_client {
            up.used_at = Instant::now();
            shrink(&mut up.ubuf);
            self.pinned = Some(up);
        } else {
            up.release();
        }
        let flow = if res.unread_body {
            Flow::Linger
        } else if keep_client {
            Flow::Continue
        } else {
            Flow::Close
        };
        (flow, sent, None)
    }

    /// After `101 Switching Protocols`: bytes both ways until either side closes. The lease is held
    /// meanwhile, so a draining worker waits for its websockets (up to `drain_timeout`).
    async fn tunnel(&mut self, mut up: Upstream) {
        let limit = self.rules.body_timeout;
        if !up.ubuf.is_empty() && write_within(limit, &mut self.client, &up.ubuf).await.is_err() {
            return;
        }
        if !self.cbuf.is_empty() && write_within(limit, &mut up.stream, &self.cbuf).await.is_err() {
            return;
        }
        self.cbuf.clear();
        if super::tunnel::relay(&mut self.client, &mut up.stream, self.rules.tunnel_idle_timeout).await {
            tracing::debug!(worker = up.backend().worker, "upgraded connection idle; closed");
        }
    }
}

/// Read the final response head into `ubuf`, passing interim `1xx` heads on to the client.
async fn read_response<R, W>(
    up: &mut R,
    ubuf: &mut BytesMut,
    client: &mut W,
    client_write: Duration,
    req: &Request,
    retry: bool,
) -> Result<Response, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut got_any = false;
    // `scanned`: where a head's end may start in what has come of it. A head is parsed when its first bytes
    // come (one that is not HTTP is refused at once) and then only once its end is there: parsed
    // at every read, a head a worker sends a byte at a time cost the front time quadratic in its
    // size (a second per 64 KiB).
    let (mut fresh, mut scanned) = (true, 0);
    loop {
        if !ubuf.is_empty() && (fresh || head_end(ubuf, scanned).is_some()) {
            fresh = false;
            match parse_response(ubuf, req)? {
                Some(res) if (100..200).contains(&res.status) && res.status != 101 => {
                    // Passed on, except to an HTTP/1.0 client (which would take it as the answer).
                    if !req.http10 {
                        write_within(client_write, client, &ubuf[..res.head_len]).await.map_err(|_| Failure::Client)?;
                    }
                    ubuf.advance(res.head_len);
                    got_any = true;
                    fresh = true;
                    continue;
                }
                Some(res) => return Ok(res),
                None => {}
            }
        }
        if ubuf.len() > MAX_HEAD {
            return Err(Failure::Malformed);
        }
        // A terminator is at most 4 bytes: its start may already be here.
        scanned = ubuf.len().saturating_sub(3);
        ubuf.reserve(8 * 1024);
        match up.read_buf(ubuf).await {
            Ok(0) | Err(_) if ubuf.is_empty() && !got_any => return Err(Failure::Upstream { retry }),
            // In the middle of a head, or after an interim answer: the worker had the request, and
            // nothing final has reached the client, which can still be told 502.
            Ok(0) | Err(_) => return Err(Failure::Upstream { retry: false }),
            Ok(_) => {}
        }
    }
}

/// Resolves once the client has closed or reset its connection, never while it is there or has
/// sent more (a pipelined request, a websocket's first frame). While a worker prepares an answer
/// for a client that is gone, the front drops the worker's connection (Node's `req.on('close')`
/// can stop the work) and logs 499, as nginx does; the check costs no syscall while the socket
/// has nothing new (tokio's cached readiness).
async fn gone(client: &mut tokio::net::tcp::ReadHalf<'_>) {
    let mut probe = [0u8; 1];
    match client.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Between requests, an empty buffer that a large head or body grew is given back: a keep-alive
/// connection would otherwise hold its largest moment (up to twice `MAX_HEAD`) while idle.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 32 * 1024 {
        *buf = BytesMut::new();
    }
}

/// Write all of `buf` to `dst` within `limit`: a peer that stops reading is a peer gone.
async fn write_within<W: AsyncWrite + Unpin>(limit: Duration, dst: &mut W, buf: &[u8]) -> io::Result<()> {
    let mut write = std::pin::pin!(dst.write_all(buf));
    // Most writes complete at once: only one that has to wait gets a timer.
    if let Poll::Ready(written) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return written;
    }
    match tokio::time::timeout(limit, write).await {
        Ok(written) => written,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// `fut`, or [`Failure::Timeout`] after `limit`.
async fn within<T>(limit: Duration, fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(limit, fut).await.unwrap_or(Err(Failure::Timeout))
}

enum Relay {
    Src,
    Dst,
    /// `src` sent nothing for the idle limit.
    Idle,
    /// More than the body limit.
    TooLarge,
    Malformed,
}

/// Copy the rest of a body from `src` (bytes already read sit in `buf`) to `dst`; `src` may not
/// fall silent for longer than `idle`, nor send more than `limit` bytes of body, and `dst` must
/// take each piece within `write_idle`.
async fn relay<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    body: &mut Body,
    idle: Duration,
    write_idle: Duration,
    mut limit: Option<&mut u64>,
) -> Result<u64, Relay>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut copied = 0u64;
    loop {
        if !buf.is_empty() {
            let (n, content) = body.take_counting(buf).map_err(|_| Relay::Malformed)?;
            if let Some(left) = limit.as_deref_mut() {
                *left = left.checked_sub(content).ok_or(Relay::TooLarge)?;
            }
            if n > 0 {
                write_within(write_idle, dst, &buf[..n]).await.map_err(|_| Relay::Dst)?;
                buf.advance(n);
                copied += n as u64;
            }
        }
        if body.is_done() {
            return Ok(copied);
        }
        buf.reserve(16 * 1024);
        match tokio::time::timeout(idle, src.read_buf(buf)).await {
            Err(_) => return Err(Relay::Idle),
            Ok(Ok(0)) if *body == Body::UntilClose => return Ok(copied),
            Ok(Ok(0) | Err(_)) => return Err(Relay::Src),
            Ok(Ok(_)) => {}
        }
    }
}

/// Request ids for requests that come without one: a random prefix per agent and a counter,
/// unique enough to join log lines, cheap enough for every request.
pub(super) struct RequestIds {
    prefix: u32,
    next: std::sync::atomic::AtomicU32,
}

impl RequestIds {
    pub(super) fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // std's hasher keys are random per process: a seed without another dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        RequestIds { prefix: h.finish() as u32, next: std::sync::atomic::AtomicU32::new(0) }
    }

    /// Ids `0000000000000000`, `0000000000000001`... (tests).
    #[cfg(test)]
    pub(super) fn counting() -> RequestIds {
        RequestIds { prefix: 0, next: std::sync::atomic::AtomicU32::new(0) }
    }

    /// Append the next id, 16 hex digits, to `out`.
    fn write_next(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let id = (u64::from(self.prefix) << 32) | u64::from(self.next.fetch_add(1, Relaxed));
        out.extend((0..16).rev().map(|digit| HEX[((id >> (digit * 4)) & 0xf) as usize]));
    }
}

/// Where the head in `buf` ends (just past its empty line), searching from `from`. A line may
/// end in CRLF or a bare LF (RFC 9112 lets a recipient accept it); the worker always gets CRLF.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + p;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// `value` as an RFC 7230 quoted-string (a `Host` may hold `:`, which a bare token may not).
/// A client's `X-Request-Id` is kept when it is 1 to 200 bytes of visible ASCII, as Heroku's
/// router does (which allows fewer characters still): logs and the access log show it exactly.
fn valid_request_id(id: &[u8]) -> bool {
    (1..=200).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

fn quoted(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A `Content-Length` value: digits only (no sign, no list), at most 18 of them.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Headers through which a client says who it is or how it connected: believed only from a
/// trusted proxy, otherwise dropped and set by the front from what it saw.
/// Beyond the standard ones, the spellings frameworks read to decide a request came over https
/// (Rack: `X-Forwarded-Ssl`, `X-Forwarded-Scheme`, `Front-End-Https`, `X-Url-Scheme`) or on
/// which port.
const FORWARDING: [&str; 10] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "front-end-https",
    "x-url-scheme",
    "x-forwarded-port",
];

/// A forwarding header or `X-Request-Id` spelled with `_` for `-` (`X_Forwarded_Proto`): CGI, WSGI
/// and Rack servers read it as the dashed one (both become `HTTP_X_FORWARDED_PROTO`, joined), so a
/// client could claim https or another address through it, or give the app another request id
/// than the access log shows. No proxy sends such names: always dropped.
fn underscored_forwarding(name: &str) -> bool {
    name.contains('_')
        && FORWARDING.iter().chain(&["x-request-id"]).any(|f| {
            f.len() == name.len()
                && f.bytes().zip(name.bytes()).all(|(f, n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
        })
}

/// The client of a connection as its requests' heads name it, worked out once per connection
/// rather than per request.
pub(super) struct Peer {
    ip: IpAddr,
    text: String,
    /// The address as `Forwarded: for=` takes it: an IPv6 one bracketed and quoted.
    forwarded_for: String,
    /// In `trusted_proxies`: its forwarding headers are believed.
    trusted: bool,
}

impl Peer {
    pub(super) fn new(ip: IpAddr, trusted_proxy: &(dyn Fn(IpAddr) -> bool + Send + Sync)) -> Peer {
        let forwarded_for = if ip.is_ipv6() { format!("\"[{ip}]\"") } else { ip.to_string() };
        Peer { ip, text: ip.to_string(), forwarded_for, trusted: trusted_proxy(ip) }
    }
}

/// Parse a complete request head. `Ok(None)`: incomplete. `Err(status)`: answer that and close.
pub(super) fn parse_request(
    buf: &[u8],
    peer: IpAddr,
    trusted_proxy: &(dyn Fn(IpAddr) -> bool + Send + Sync),
    ids: &RequestIds,
    keep_line: bool,
) -> Result<Option<(usize, Request)>, u16> {
    parse_head(buf, &Peer::new(peer, trusted_proxy), ids, keep_line)
}

/// [`parse_request`] for a connection's known [`Peer`].
fn parse_head(buf: &[u8], peer: &Peer, ids: &RequestIds, keep_line: bool) -> Result<Option<(usize, Request)>, u16> {
    // Left uninitialised: httparse writes the ones it finds (no 3 KB cleared per request).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut headers)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    // Exact, however the head arrived: a read may bring it past the limit in one go.
    if len > MAX_HEAD {
        return Err(431);
    }
    let method = parsed.method.unwrap_or("GET");
    let version = parsed.version.unwrap_or(1);
    let trusted = peer.trusted;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive, mut upgrade_token) = (false, false, false);
    let mut websocket = false;
    let mut has_connection = false;
    let mut has_forwarding = false;
    let mut forwarded_for: Option<&[u8]> = None;
    let mut forwarded_proto: Option<&[u8]> = None;
    let mut forwarded_host: Option<&[u8]> = None;
    // A trusted proxy's `Forwarded` lines (RFC 7239), this hop's element appended after them.
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut host: Option<&[u8]> = None;
    let mut request_id: Option<&[u8]> = None;
    let mut bad_request_id = false;
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = content_length(h.value).ok_or(400u16)?;
            if length.is_some_and(|l| l != v) {
                return Err(400);
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                return Err(501);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            has_connection = true;
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // Only websockets: after `101` the front relays bytes, so a worker that speaks h2c
            // would take HTTP/2 requests past the front's forwarding headers and limits.
            websocket = h.value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case("host") {
            // Two: a worker keeps one, `X-Forwarded-Host` would name the other (RFC 9112: 400).
            if host.replace(h.value).is_some() {
                return Err(400);
            }
        } else if name.eq_ignore_ascii_case("x-request-id") {
            // An id that is empty, overlong or more than visible ASCII (which no log could show
            // as the worker got it) is replaced by one of the front's, never sent beside it.
            if valid_request_id(h.value) && request_id.is_none() {
                request_id = Some(h.value);
            } else {
                has_forwarding = true;
                bad_request_id = true;
            }
        } else if underscored_forwarding(name) {
            has_forwarding = true;
        } else if FORWARDING.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            has_forwarding = true;
            if trusted && name.eq_ignore_ascii_case("x-forwarded-for") {
                forwarded_for = Some(h.value);
            } else if trusted && name.eq_ignore_ascii_case("x-forwarded-proto") {
                forwarded_proto = Some(h.value);
            } else if trusted && name.eq_ignore_ascii_case("x-forwarded-host") {
                forwarded_host = Some(h.value);
            } else if trusted && name.eq_ignore_ascii_case("forwarded") {
                forwarded.push(h.value);
            }
        }
    }
    if chunked && length.is_some() {
        // Both framings at once is how requests are smuggled: refuse.
        return Err(400);
    }
    let upgrade = websocket && upgrade_token;
    let client_close = if version == 0 { !keep_alive } else { close };

    // The head for the worker: hop-by-hop `Connection` removed (the front keeps its upstream
    // connections alive whatever the client does), the forwarding headers set by the front. The
    // client's bytes are passed as they are only when nothing needs to change and every line
    // ends in CRLF; otherwise the head is rebuilt, always with CRLF.
    let crlf_only = memchr::memchr_iter(b'\n', &buf[..len]).all(|i| i > 0 && buf[i - 1] == b'\r');
    // Room for the forwarding headers and the request id the front adds.
    let mut head = Vec::with_capacity(len + 192 + 2 * (peer.text.len() + host.map_or(0, <[u8]>::len)));
    if !has_connection && !has_forwarding && crlf_only && version == 1 {
        head.extend_from_slice(&buf[..len - 2]);
    } else {
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(parsed.path.unwrap_or("/").as_bytes());
        head.extend_from_slice(if version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        for h in parsed.headers.iter() {
            let set_by_front = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"]
                .iter()
                .any(|f| h.name.eq_ignore_ascii_case(f));
            let dropped = (!trusted && FORWARDING.iter().any(|f| h.name.eq_ignore_ascii_case(f)))
                || set_by_front
                || underscored_forwarding(h.name)
                || (bad_request_id && h.name.eq_ignore_ascii_case("x-request-id"))
                || (h.name.eq_ignore_ascii_case("connection") && !upgrade);
            if dropped {
                continue;
            }
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value);
            head.extend_from_slice(b"\r\n");
        }
        if version == 0 && !upgrade {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    head.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = forwarded_for {
        head.extend_from_slice(prev);
        head.extend_from_slice(b", ");
    }
    head.extend_from_slice(peer.text.as_bytes());
    head.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    head.extend_from_slice(forwarded_proto.unwrap_or(b"http"));
    if let Some(h) = forwarded_host.or(host) {
        head.extend_from_slice(b"\r\nX-Forwarded-Host: ");
        head.extend_from_slice(h);
    }
    head.extend_from_slice(b"\r\nForwarded: ");
    for element in &forwarded {
        head.extend_from_slice(element);
        head.extend_from_slice(b", ");
    }
    head.extend_from_slice(b"for=");
    head.extend_from_slice(peer.forwarded_for.as_bytes());
    head.extend_from_slice(b";proto=http");
    if let Some(h) = host {
        head.extend_from_slice(b";host=");
        quoted(&mut head, h);
    }
    // The client's request id travels on (httparse checked it holds no control bytes); a
    // request without one gets one, so the app's logs and the access log can be joined.
    let given_id = request_id.filter(|_| !bad_request_id);
    if given_id.is_none() {
        head.extend_from_slice(b"\r\nX-Request-Id: ");
        ids.write_next(&mut head);
    }
    let log = keep_line.then(|| {
        // The id just written is the head's last 16 bytes.
        let id = given_id.unwrap_or(&head[head.len().saturating_sub(16)..]);
        let id = String::from_utf8_lossy(id).into_owned();
        Box::new(LogLine { method: method.to_string(), path: parsed.path.unwrap_or("/").to_string(), id })
    });
    head.extend_from_slice(b"\r\n\r\n");

    let body = match (chunked, length) {
        (true, _) => Body::Chunked(Chunked::default()),
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::None,
    };
    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE");
    let is_head = method == "HEAD";
    Ok(Some((len, Request { head, log, body, idempotent, is_head, http10: version == 0, client_close, upgrade })))
}

/// The headers an answer may have: apps that set many cookies pass 100 easily, and the head's
/// size bounds them anyway.
const MAX_RESPONSE_HEADERS: usize = 1000;

fn parse_response(buf: &[u8], req: &Request) -> Result<Option<Response>, Failure> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    match parse_response_into(buf, req, &mut headers) {
        Ok(parsed) => parsed,
        // Rare: parsed again with room for all (on the heap, not in every call's frame).
        Err(TooManyHeaders) => {
            let mut headers = Vec::with_capacity(MAX_RESPONSE_HEADERS);
            headers.resize_with(MAX_RESPONSE_HEADERS, std::mem::MaybeUninit::uninit);
            parse_response_into(buf, req, &mut headers).unwrap_or(Err(Failure::Malformed))
        }
    }
}

/// More headers than the array given to [`parse_response_into`] holds.
struct TooManyHeaders;

fn parse_response_into<'b>(
    buf: &'b [u8],
    req: &Request,
    headers: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<Result<Option<Response>, Failure>, TooManyHeaders> {
    let mut parsed = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, headers)
    {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) => return Ok(Ok(None)),
        Err(httparse::Error::TooManyHeaders) => return Err(TooManyHeaders),
        // Over the head limit however it arrived, or not HTTP.
        Ok(httparse::Status::Complete(_)) | Err(_) => return Ok(Err(Failure::Malformed)),
    };
    Ok(response(buf, req, &parsed, head_len))
}

fn response(
    buf: &[u8],
    req: &Request,
    parsed: &httparse::Response<'_, '_>,
    head_len: usize,
) -> Result<Option<Response>, Failure> {
    let status = parsed.code.unwrap_or(502);
    if status == 101 && !req.upgrade {
        // A switch nobody asked for: the connection would carry something that is not HTTP.
        return Err(Failure::Malformed);
    }
    let version = parsed.version.unwrap_or(1);
    let mut length = None;
    let (mut chunked, mut has_te) = (false, false);
    let (mut close, mut keep_alive) = (false, false);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(Failure::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Malformed);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                close |= token.trim_ascii().eq_ignore_ascii_case(b"close");
                keep_alive |= token.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if has_te && length.is_some() {
        // Two framings: whoever reads the answer after the front (a cache, the client) may pick
        // the other one. RFC 9112 forbids passing it on as it is; nginx answers 502 too.
        return Err(Failure::Malformed);
    }
    let body = if req.is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if chunked {
        Body::Chunked(Chunked::default())
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let upstream_close = close || (version == 0 && !keep_alive) || body == Body::UntilClose;
    let rewritten = (req.client_close && !close && status != 101).then(|| {
        // The status line as the worker sent it, ended in CRLF like every line after it (httparse
        // accepts a bare LF, and found one since the head is complete).
        let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(0);
        let status_line = &buf[..line_end];
        // Room for the body bytes read with the head, which go out in the same write.
        let mut head = Vec::with_capacity(buf.len().min(head_len + 16 * 1024) + 24);
        head.extend_from_slice(status_line.strip_suffix(b"\r").unwrap_or(status_line));
        head.extend_from_slice(b"\r\n");
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Connection: close\r\n\r\n");
        head
    });
    Ok(Some(Response { head_len, status, body, upstream_close, rewritten, first: 0, unread_body: false }))
}

/// The front's own answer, when no worker could give one.
async fn respond(client: &mut TcpStream, status: u16) -> io::Result<()> {
    let (reason, text) = match status {
        400 => ("Bad Request", "bad request\n"),
        408 => ("Request Timeout", "the request did not arrive in time\n"),
        413 => ("Content Too Large", "the request body is larger than the app's `front.max_body`\n"),
        431 => ("Request Header Fields Too Large", "request head too large\n"),
        501 => ("Not Implemented", "transfer-encoding not supported\n"),
        504 => ("Gateway Timeout", "the worker did not answer in time\n"),
        503 => ("Service Unavailable", "no worker is ready\n"),
        _ => ("Bad Gateway", "the worker failed to answer\n"),
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    // A client that does not read (its earlier answers fill the buffers) is not waited for.
    write_within(RESPOND_TIMEOUT, client, msg.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untrusted(_: IpAddr) -> bool {
        false
    }

    fn req(raw: &str) -> Request {
        parse_request(raw.as_bytes(), "10.0.0.9".parse().unwrap(), &untrusted, &RequestIds::counting(), false)
            .unwrap()
            .unwrap()
            .1
    }

    /// The status `raw` is refused with, if it is.
    fn refused(raw: &str) -> Option<u16> {
        parse_request(raw.as_bytes(), "127.0.0.1".parse().unwrap(), &untrusted, &RequestIds::counting(), false).err()
    }

    fn head_of(raw: &str, trusted: bool) -> String {
        let trust = move |_: IpAddr| trusted;
        let r = parse_request(raw.as_bytes(), "10.0.0.9".parse().unwrap(), &trust, &RequestIds::counting(), false)
            .unwrap()
            .unwrap()
            .1;
        String::from_utf8(r.head).unwrap()
    }

    #[test]
    fn a_bare_lf_head_reaches_the_worker_in_crlf_with_the_forwarded_headers_on_their_own_lines() {
        let raw = "GET /x HTTP/1.1\nHost: app\nAccept: */*\n\n";
        assert_eq!(head_end(raw.as_bytes(), 0), Some(raw.len()));
        assert_eq!(
            head_of(raw, false),
            "GET /x HTTP/1.1\r\nHost: app\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: app\r\nForwarded: for=10.0.0.9;proto=http;host=\"app\"\r\nX-Request-Id: 0000000000000000\r\n\r\n"
        );
    }

    #[test]
    fn a_clients_own_forwarding_headers_are_replaced_unless_it_is_a_trusted_proxy() {
        let raw = "GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 1.1.1.1\r\n\
                   X-Forwarded-Host: evil\r\nForwarded: for=1.1.1.1;proto=https\r\nX-Real-IP: 1.1.1.1\r\n\
                   X-Forwarded-Ssl: on\r\nFront-End-Https: on\r\nX-Url-Scheme: https\r\n\r\n";
        let head = head_of(raw, false);
        assert_eq!(
            head,
            "GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: app\r\nForwarded: for=10.0.0.9;proto=http;host=\"app\"\r\nX-Request-Id: 0000000000000000\r\n\r\n"
        );
        let head = head_of(raw, true);
        assert!(head.contains("X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\n"), "{head}");
        assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
        assert!(head.contains("X-Forwarded-Host: evil\r\n"), "{head}");
        assert!(
            head.contains("\r\nForwarded: for=1.1.1.1;proto=https, for=10.0.0.9;proto=http;host=\"app\"\r\n"),
            "{head}"
        );
        assert_eq!(head.matches("Forwarded:").count(), 1, "{head}");
        assert!(head.contains("X-Real-IP: 1.1.1.1\r\n"), "{head}");
        assert_eq!(head.matches("X-Forwarded-Proto").count(), 1, "{head}");
    }

    #[test]
    fn forwarded_names_an_ipv6_client_in_brackets_and_quotes_the_host() {
        let raw = "GET / HTTP/1.1\r\nHost: a\"b:80\r\n\r\n";
        let r = parse_request(raw.as_bytes(), "::1".parse().unwrap(), &untrusted, &RequestIds::counting(), false);
        let head = String::from_utf8(r.unwrap().unwrap().1.head).unwrap();
        assert!(head.contains("\r\nForwarded: for=\"[::1]\";proto=http;host=\"a\\\"b:80\"\r\n"), "{head}");
        let head = head_of("GET / HTTP/1.0\r\n\r\n", false);
        assert!(head.contains("\r\nForwarded: for=10.0.0.9;proto=http\r\n"), "no Host, no host=: {head}");
    }

    #[test]
    fn forwarding_headers_spelled_with_underscores_are_dropped_even_from_a_trusted_proxy() {
        let raw = "GET / HTTP/1.1\r\nHost: app\r\nX_Forwarded_Proto: https\r\nx-forwarded_for: 1.1.1.1\r\n\
                   X_REAL_IP: 1.1.1.1\r\nX_Custom: kept\r\n\r\n";
        for trusted in [false, true] {
            let head = head_of(raw, trusted);
            assert!(!head.contains("1.1.1.1") && !head.contains("https"), "{head}");
            assert!(head.contains("X_Custom: kept\r\n"), "{head}");
        }
    }

    /// A request parsed with its access-log line kept.
    fn logged(raw: &[u8], ids: &RequestIds) -> Request {
        parse_request(raw, "10.0.0.9".parse().unwrap(), &untrusted, ids, true).unwrap().unwrap().1
    }

    /// The request id its access-log line shows.
    fn id(r: &Request) -> String {
        r.log.as_ref().map(|l| l.id.clone()).unwrap_or_default()
    }

    #[test]
    fn a_request_id_is_added_when_absent_and_kept_when_present() {
        let ids = RequestIds::counting();
        let parse = |raw: &str| logged(raw.as_bytes(), &ids);
        let first = parse("GET / HTTP/1.1\r\n\r\n");
        let second = parse("GET / HTTP/1.1\r\n\r\n");
        assert_eq!((id(&first).as_str(), id(&second).as_str()), ("0000000000000000", "0000000000000001"));
        assert!(String::from_utf8(second.head).unwrap().contains("X-Request-Id: 0000000000000001\r\n"));
        for bad in ["X-Request-Id: \r\n".to_string(), format!("X-Request-Id: {}\r\n", "x".repeat(300))] {
            let r = parse(&format!("GET / HTTP/1.1\r\n{bad}\r\n"));
            let head = String::from_utf8(r.head.clone()).unwrap();
            assert_eq!(head.matches("X-Request-Id").count(), 1, "one id reaches the worker: {head}");
            assert!(head.contains(&format!("X-Request-Id: {}\r\n", id(&r))), "{head}");
        }
        let given = parse("GET / HTTP/1.1\r\nX-Request-Id: abc-123\r\n\r\n");
        assert_eq!(id(&given), "abc-123");
        let head = String::from_utf8(given.head).unwrap();
        assert_eq!(head.matches("X-Request-Id").count(), 1, "{head}");
        // Bytes a log could not show as the worker got them: replaced, so the access log's id
        // and the app's are the same string.
        for bad in [&b"a\xffb"[..], b"caf\xc3\xa9", b"two words", b"tab\there"] {
            let mut raw = b"GET / HTTP/1.1\r\nX-Request-Id: ".to_vec();
            raw.extend_from_slice(bad);
            raw.extend_from_slice(b"\r\n\r\n");
            let r = logged(&raw, &ids);
            let head = String::from_utf8(r.head.clone()).expect("the worker gets an ASCII head");
            assert_eq!(head.matches("X-Request-Id").count(), 1, "{head}");
            assert!(head.contains(&format!("X-Request-Id: {}\r\n", id(&r))), "{head}");
            assert_eq!(id(&r).len(), 16, "one of the front's ids");
        }
    }

    /// CGI, WSGI and Rack servers read `X_Request_Id` as `X-Request-Id` (both become
    /// `HTTP_X_REQUEST_ID`): the app would get another id than the access log shows, or two.
    #[test]
    fn a_request_id_spelled_with_underscores_is_dropped() {
        let ids = RequestIds::counting();
        let parse = |raw: &str| logged(raw.as_bytes(), &ids);
        let alone = parse("GET / HTTP/1.1\r\nX_Request_Id: evil\r\n\r\n");
        let head = String::from_utf8(alone.head.clone()).unwrap();
        assert!(!head.contains("evil"), "{head}");
        assert!(head.contains(&format!("X-Request-Id: {}\r\n", id(&alone))), "{head}");
        let beside = parse("GET / HTTP/1.1\r\nX-Request-Id: abc\r\nx_request-id: evil\r\n\r\n");
        let head = String::from_utf8(beside.head.clone()).unwrap();
        assert!(!head.contains("evil") && head.contains("X-Request-Id: abc\r\n"), "{head}");
        assert_eq!(id(&beside), "abc");
    }

    #[test]
    fn content_length_is_digits_only() {
        for bad in ["+5", "-1", "5, 5", "0x5", "", " ", "1e3", "99999999999999999999"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(refused(&raw), Some(400), "{bad}");
        }
        assert_eq!(req("POST / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n").body, Body::Length(7));
        let get = req("GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", &get),
            Err(Failure::Malformed)
        ));
    }

    #[test]
    fn the_end_of_a_head_is_found_however_it_is_cut() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        let end = raw.len() - 4;
        for cut in 0..raw.len() {
            // What a connection does: search what arrived, remember how far, search on.
            let scanned = head_end(&raw[..cut], 0).map_or(cut.saturating_sub(3), |_| 0);
            let found = head_end(&raw[..cut], 0).or_else(|| head_end(raw, scanned));
            assert_eq!(found, Some(end), "cut at {cut}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
    }

    #[test]
    fn adds_forwarded_headers_without_touching_the_rest() {
        let r = req("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\
             Forwarded: for=10.0.0.9;proto=http;host=\"x\"\r\nX-Request-Id: 0000000000000000\r\n\r\n"
        );
        assert!(!r.client_close);
        assert_eq!(r.body, Body::None);
    }

    #[test]
    fn strips_connection_close_and_sets_forwarded_for() {
        let r = req(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 5\r\n\r\nhello",
        );
        let head = String::from_utf8(r.head).unwrap();
        assert!(!head.to_ascii_lowercase().contains("connection"), "{head}");
        assert!(head.contains("X-Forwarded-For: 10.0.0.9\r\n"), "an untrusted peer's own value is dropped: {head}");
        assert!(r.client_close);
        assert!(!r.idempotent);
        assert_eq!(r.body, Body::Length(5));
    }

    #[test]
    fn only_a_websocket_upgrade_is_an_upgrade() {
        let ws = req("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n");
        assert!(ws.upgrade);
        assert!(String::from_utf8(ws.head).unwrap().contains("Connection: Upgrade\r\n"));
        let h2c = req("GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n");
        assert!(!h2c.upgrade);
        assert!(!String::from_utf8(h2c.head).unwrap().contains("Connection"), "the worker is not asked to switch");
    }

    #[test]
    fn refuses_two_hosts() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
        assert_eq!(refused(raw), Some(400));
    }

    #[test]
    fn refuses_smuggling_shapes() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(raw), Some(400));
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(refused(raw), Some(400));
    }

    #[test]
    fn tells_a_closing_client_connection_close() {
        let r = req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok";
        let res = parse_response(raw, &r).unwrap().unwrap();
        let head = String::from_utf8(res.rewritten.unwrap()).unwrap();
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        assert!(!res.upstream_close, "the upstream connection stays reusable");
    }

    #[test]
    fn an_answer_framed_two_ways_is_malformed() {
        let get = req("GET / HTTP/1.1\r\n\r\n");
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        ] {
            assert!(matches!(parse_response(raw, &get), Err(Failure::Malformed)), "{}", String::from_utf8_lossy(raw));
        }
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse_response(same, &get).unwrap().unwrap().body, Body::Length(3));
    }

    #[test]
    fn a_switch_to_another_protocol_is_taken_only_when_the_client_asked_for_one() {
        let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let get = req("GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(parse_response(switch, &get), Err(Failure::Malformed)));
        let upgrade = req("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(parse_response(switch, &upgrade).unwrap().unwrap().status, 101);
    }

    #[test]
    fn a_bare_lf_answer_is_rewritten_in_crlf_for_a_closing_client() {
        let r = req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let res = parse_response(b"HTTP/1.1 404 Not Found\nContent-Length: 2\n\nno", &r).unwrap().unwrap();
        let head = String::from_utf8(res.rewritten.unwrap()).unwrap();
        assert_eq!(head, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn an_idle_connection_gives_back_what_a_large_head_grew() {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(&[b'x'; 60 * 1024]);
        shrink(&mut buf);
        assert_eq!(buf.len(), 60 * 1024, "a buffer in use is left alone");
        buf.advance(buf.len());
        shrink(&mut buf);
        assert!(buf.capacity() <= 32 * 1024, "{}", buf.capacity());
        let mut small = BytesMut::with_capacity(8 * 1024);
        let before = small.as_ptr();
        shrink(&mut small);
        assert_eq!(small.as_ptr(), before, "the usual 8 KiB buffer is kept");
    }

    #[test]
    fn the_head_limit_is_exact_however_the_head_arrives() {
        // One read can bring a whole head past the limit: it is refused all the same.
        let pad = |n: usize| format!("X-Pad: {}\r\n", "p".repeat(n));
        let fits = format!("GET / HTTP/1.1\r\n{}\r\n", pad(MAX_HEAD - 64));
        assert!(fits.len() <= MAX_HEAD && req(&fits).head.len() > MAX_HEAD - 64);
        let over = format!("GET / HTTP/1.1\r\n{}\r\n", pad(MAX_HEAD));
        assert_eq!(refused(&over), Some(431));
        let get = req("GET / HTTP/1.1\r\n\r\n");
        let answer = format!("HTTP/1.1 200 OK\r\n{}Content-Length: 0\r\n\r\n", pad(MAX_HEAD));
        assert!(matches!(parse_response(answer.as_bytes(), &get), Err(Failure::Malformed)));
    }

    /// A worker that sends its answer's head a byte at a time (by design or by a slow pipe) costs
    /// the front time in proportion to the head, not to its square: the head was parsed again
    /// at every read, and twice (the second with room for 1,000 headers) once it had more than 100.
    #[tokio::test]
    async fn a_head_dribbled_a_byte_at_a_time_costs_time_in_proportion_to_its_size() {
        /// Gives one byte per read.
        struct Dribble(Vec<u8>, usize);
        impl AsyncRead for Dribble {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if let Some(&b) = self.0.get(self.1) {
                    buf.put_slice(&[b]);
                    self.1 += 1;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        let get = req("GET / HTTP/1.1\r\n\r\n");
        let cookies: String =
            (0..600).map(|i| format!("Set-Cookie: c{i}=vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n")).collect();
        let head = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n{cookies}Content-Length: 2\r\n\r\nok"
        );
        let mut up = Dribble(head.clone().into_bytes(), 0);
        let mut ubuf = BytesMut::new();
        let started = std::time::Instant::now();
        let read = read_response(&mut up, &mut ubuf, &mut tokio::io::sink(), Duration::from_secs(1), &get, false).await;
        let Ok(res) = read else { panic!("no answer") };
        assert_eq!((res.status, res.head_len), (200, head.len() - 2 - head.find("\r\n\r\n").unwrap() - 4));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?} for a {} byte head", started.elapsed(), head.len());
        // A worker that does not speak HTTP is still told at its first bytes.
        let mut up = Dribble(b"SSH-2.0-OpenSSH\r\n".to_vec(), 0);
        let mut ubuf = BytesMut::new();
        let read = read_response(&mut up, &mut ubuf, &mut tokio::io::sink(), Duration::from_secs(1), &get, false).await;
        assert!(matches!(read, Err(Failure::Malformed)));
    }

    /// Rules replaced while a connection is busy elsewhere (a long request), then the app gone
    /// (its rules' sender dropped) before the connection waits for its next head: the watch,
    /// closed, said "no change", so the connection kept the old rules and their fired
    /// `superseded`, and its wait for a head ended at once, again and again, never yielding:
    /// its front loop (every connection on it, and its timers) hung at 100% CPU.
    #[tokio::test]
    async fn rules_replaced_then_closed_are_taken_up_without_spinning() {
        let slow = Arc::new(ClientRules { header_timeout: Duration::from_secs(60), ..ClientRules::default() });
        let (tx, rx) = tokio::sync::watch::channel(slow);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, tracker) = (crate::front::Stop::default(), TaskTracker::new());
        let budget = accept::Budget {
            all_fronts: Arc::new(tokio::sync::Semaphore::new(8)),
            this_front: Arc::new(tokio::sync::Semaphore::new(8)),
        };
        let stats = Arc::new(FrontStats::default());
        tokio::spawn(serve(listener, Arc::default(), stats, rx, budget, stop.clone(), tracker.clone()));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio::time::timeout(Duration::from_secs(10), async {
            while tracker.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        accepted.await.expect("the connection is accepted");
        // The connection holds the first rules; new ones come, then the sender goes, and only
        // then is the old token cancelled (as when the connection was busy meanwhile).
        let quick = ClientRules { header_timeout: Duration::from_secs(1), ..ClientRules::default() };
        let old = tx.send_replace(Arc::new(quick));
        drop(tx);
        old.superseded.cancel();
        // The new header_timeout (1 s from the connection's start) ends the silent connection.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer)).await;
        stop.accepting.cancel();
        assert!(read.is_ok(), "the connection was never ended: its front loop is stuck");
        assert!(answer.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn an_answer_may_carry_many_more_headers_than_a_request() {
        let get = req("GET / HTTP/1.1\r\n\r\n");
        let cookies: String = (0..300).map(|i| format!("Set-Cookie: c{i}=v\r\n")).collect();
        let answer = format!("HTTP/1.1 200 OK\r\n{cookies}Content-Length: 2\r\n\r\nok");
        let res = parse_response(answer.as_bytes(), &get).ok().flatten().expect("parsed");
        assert_eq!((res.status, res.body), (200, Body::Length(2)));
        assert_eq!(res.head_len, answer.len() - 2);
        let too_many: String = (0..MAX_RESPONSE_HEADERS + 1).map(|i| format!("H{i}: v\r\n")).collect();
        let answer = format!("HTTP/1.1 200 OK\r\n{too_many}\r\n");
        assert!(matches!(parse_response(answer.as_bytes(), &get), Err(Failure::Malformed)));
        let requested: String = (0..MAX_HEADERS + 1).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{requested}\r\n")), Some(431));
    }

    #[test]
    fn response_framing() {
        let get = req("GET / HTTP/1.1\r\n\r\n");
        let head = req("HEAD / HTTP/1.1\r\n\r\n");
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(parse_response(raw, &get).unwrap().unwrap().body, Body::Length(10));
        assert_eq!(parse_response(raw, &head).unwrap().unwrap().body, Body::None);
        let raw = b"HTTP/1.1 200 OK\r\n\r\n";
        let res = parse_response(raw, &get).unwrap().unwrap();
        assert_eq!(res.body, Body::UntilClose);
        assert!(res.upstream_close);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-", &get).unwrap().is_none());
    }
}
