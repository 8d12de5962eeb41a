//! The `http` front: an HTTP/1.1 reverse proxy that parses only message boundaries.
//!
//! Every CPU cycle the front spends is taken from the app on a small host, so it does not build
//! request objects: `httparse` finds where a head ends and how long the body is, and bytes are
//! passed through otherwise. A keep-alive client connection is pinned to one upstream connection
//! and moves to another worker only at a request boundary, when its worker has left the rotation.
//! Upstream connections are pooled per worker, so a client that opens a connection per request
//! still reuses warm connections to the app.

use super::chunked::Chunked;
use super::{Backend, Lease, Rotation, UPSTREAM_IDLE};
use bytes::{Buf, BytesMut};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const CLIENT_IDLE: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for a worker when none is in rotation (all restarting).
const NO_WORKER_PATIENCE: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: usize = 4;

/// Counters of one front, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct FrontStats {
    pub requests: AtomicU64,
    /// Requests answered by the front itself with 502/503 (a worker failed them).
    pub errors: AtomicU64,
    /// Requests sent again to another connection or worker after a failure before any answer.
    pub retries: AtomicU64,
}

/// Accept client connections until `shutdown`; each one is served on `tracker`.
pub async fn serve(
    listener: TcpListener,
    rotation: Arc<Rotation>,
    stats: Arc<FrontStats>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            client: stream,
            cbuf: BytesMut::with_capacity(8 * 1024),
            peer: peer.ip(),
            rotation: rotation.clone(),
            stats: stats.clone(),
            pinned: None,
        };
        tracker.spawn(conn.run(shutdown.clone()));
    }
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
enum Body {
    None,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Body {
    fn is_done(&self) -> bool {
        match self {
            Body::None | Body::Length(0) => true,
            Body::Chunked(c) => c.is_done(),
            _ => false,
        }
    }

    /// How many of `buf`'s leading bytes belong to this body; advances the framing.
    fn take(&mut self, buf: &[u8]) -> Result<usize, Failure> {
        Ok(match self {
            Body::None => 0,
            Body::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                n as usize
            }
            Body::Chunked(c) => c.advance(buf).map_err(|_| Failure::Malformed)?,
            Body::UntilClose => buf.len(),
        })
    }
}

/// A parsed request head, with the bytes to send upstream already built.
struct Request {
    head: Vec<u8>,
    body: Body,
    idempotent: bool,
    is_head: bool,
    client_close: bool,
    upgrade: bool,
}

struct Response {
    head_len: usize,
    status: u16,
    body: Body,
    upstream_close: bool,
    /// A replacement head when the client must be told `Connection: close`.
    rewritten: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Failure {
    /// The client went away or broke the protocol: close without an answer.
    Client,
    /// A worker failed before answering anything; `retry` when the request may be sent again.
    Upstream {
        retry: bool,
    },
    /// A worker failed after part of its answer was passed on: nothing to do but close.
    UpstreamMidResponse,
    Malformed,
}

struct Conn {
    client: TcpStream,
    cbuf: BytesMut,
    peer: IpAddr,
    rotation: Arc<Rotation>,
    stats: Arc<FrontStats>,
    pinned: Option<Upstream>,
}

enum Flow {
    Continue,
    Close,
}

impl Conn {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let req = match self.read_request(&shutdown).await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(status) => {
                    let _ = respond(&mut self.client, status).await;
                    break;
                }
            };
            self.stats.requests.fetch_add(1, Relaxed);
            match self.forward(req).await {
                Flow::Continue => {}
                Flow::Close => break,
            }
        }
        if let Some(up) = self.pinned.take() {
            up.release();
        }
    }

    /// The next request head, `None` when the client closed (or the agent stops) between requests.
    async fn read_request(&mut self, shutdown: &CancellationToken) -> Result<Option<Request>, u16> {
        loop {
            if !self.cbuf.is_empty() {
                match parse_request(&self.cbuf, self.peer) {
                    Ok(Some((len, req))) => {
                        self.cbuf.advance(len);
                        return Ok(Some(req));
                    }
                    Ok(None) if self.cbuf.len() > MAX_HEAD => return Err(431),
                    Ok(None) => {}
                    Err(status) => return Err(status),
                }
            }
            self.cbuf.reserve(8 * 1024);
            let idle = self.cbuf.is_empty();
            let read = tokio::select! {
                r = tokio::time::timeout(CLIENT_IDLE, self.client.read_buf(&mut self.cbuf)) => r,
                _ = shutdown.cancelled(), if idle => return Ok(None),
            };
            match read {
                Ok(Ok(0)) | Err(_) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(None),
            }
        }
    }

    /// Send one request to a worker and its answer back, retrying on another connection or worker
    /// while nothing of the answer has reached the client.
    async fn forward(&mut self, mut req: Request) -> Flow {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut fresh_only = false;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Relaxed);
            }
            let Some((lease, mut up)) = self.checkout(&mut tried, fresh_only).await else {
                self.stats.errors.fetch_add(1, Relaxed);
                let status = if self.rotation.snapshot().is_empty() { 503 } else { 502 };
                let _ = respond(&mut self.client, status).await;
                return Flow::Close;
            };
            match self.exchange(&mut req, &mut up).await {
                Ok(res) => return self.finish(req, res, lease, up).await,
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
                    let _ = respond(&mut self.client, 502).await;
                    return Flow::Close;
                }
                Err(Failure::UpstreamMidResponse) => {
                    tracing::warn!(worker = up.backend().worker, "worker closed in the middle of a response");
                    self.stats.errors.fetch_add(1, Relaxed);
                    return Flow::Close;
                }
                Err(Failure::Client) => return Flow::Close,
            }
        }
        self.stats.errors.fetch_add(1, Relaxed);
        let _ = respond(&mut self.client, 502).await;
        Flow::Close
    }

    /// A lease on a worker and a connection to it: the pinned one while its worker is in
    /// rotation, else a pooled or new one to the least busy worker.
    async fn checkout(&mut self, tried: &mut Vec<SocketAddr>, fresh_only: bool) -> Option<(Lease, Upstream)> {
        // The pinned connection is taken in any case: unless it is reused here, it is dropped.
        if let Some(up) = self.pinned.take()
            && !fresh_only
            && up.used_at.elapsed() < UPSTREAM_IDLE
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
            tried.push(backend.addr);
        }
        None
    }

    /// Write the request (head and body) and read the answer's head, passing interim `1xx`
    /// answers on to the client.
    async fn exchange(&mut self, req: &mut Request, up: &mut Upstream) -> Result<Response, Failure> {
        // Sent again only when that cannot do anything twice: an idempotent request without a body.
        let retry = req.idempotent && req.body == Body::None;
        let mut out = req.head.clone();
        let n = req.body.take(&self.cbuf)?;
        out.extend_from_slice(&self.cbuf[..n]);
        self.cbuf.advance(n);
        if up.stream.write_all(&out).await.is_err() {
            return Err(Failure::Upstream { retry });
        }
        let Conn { client, cbuf, .. } = self;
        if req.body.is_done() {
            read_response(&mut up.stream, &mut up.ubuf, client, req, retry).await
        } else {
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.stream.split();
            let mut body = req.body;
            let send = async {
                relay(&mut cr, cbuf, &mut uw, &mut body).await.map_err(|e| match e {
                    Relay::Src => Failure::Client,
                    Relay::Dst => Failure::Upstream { retry: false },
                    Relay::Malformed => Failure::Client,
                })
            };
            let ubuf = &mut up.ubuf;
            let (sent, res) = tokio::join!(send, read_response(&mut ur, ubuf, &mut cw, req, false));
            sent?;
            res
        }
    }

    /// Pass the answer on, then keep, pool or drop the upstream connection.
    async fn finish(&mut self, req: Request, res: Response, lease: Lease, mut up: Upstream) -> Flow {
        let mut body = res.body;
        let n = match body.take(&up.ubuf[res.head_len..]) {
            Ok(n) => n,
            Err(_) => return Flow::Close,
        };
        let written = match &res.rewritten {
            Some(head) => {
                let mut out = Vec::with_capacity(head.len() + n);
                out.extend_from_slice(head);
                out.extend_from_slice(&up.ubuf[res.head_len..res.head_len + n]);
                self.client.write_all(&out).await
            }
            None => self.client.write_all(&up.ubuf[..res.head_len + n]).await,
        };
        up.ubuf.advance(res.head_len + n);
        if written.is_err() {
            return Flow::Close;
        }
        if !body.is_done() {
            match relay(&mut up.stream, &mut up.ubuf, &mut self.client, &mut body).await {
                Ok(()) => {}
                Err(Relay::Dst) => return Flow::Close,
                Err(Relay::Src | Relay::Malformed) => {
                    tracing::warn!(worker = up.backend().worker, "worker closed in the middle of a response body");
                    self.stats.errors.fetch_add(1, Relaxed);
                    return Flow::Close;
                }
            }
        }
        if res.status == 101 && req.upgrade {
            self.tunnel(up).await;
            drop(lease);
            return Flow::Close;
        }
        drop(lease);
        let keep_client = !req.client_close && !res.upstream_close;
        if res.upstream_close {
            drop(up);
        } else if keep_client {
            up.used_at = Instant::now();
            self.pinned = Some(up);
        } else {
            up.release();
        }
        if keep_client {
            Flow::Continue
        } else {
            let _ = self.client.shutdown().await;
            Flow::Close
        }
    }

    /// After `101 Switching Protocols`: bytes both ways until either side closes. The lease is held
    /// meanwhile, so a draining worker waits for its websockets (up to `drain_timeout`).
    async fn tunnel(&mut self, mut up: Upstream) {
        if !up.ubuf.is_empty() && self.client.write_all(&up.ubuf).await.is_err() {
            return;
        }
        if !self.cbuf.is_empty() && up.stream.write_all(&self.cbuf).await.is_err() {
            return;
        }
        self.cbuf.clear();
        let _ = tokio::io::copy_bidirectional(&mut self.client, &mut up.stream).await;
    }
}

/// Read the final response head into `ubuf`, passing interim `1xx` heads on to the client.
async fn read_response<R, W>(
    up: &mut R,
    ubuf: &mut BytesMut,
    client: &mut W,
    req: &Request,
    retry: bool,
) -> Result<Response, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut got_any = false;
    loop {
        if !ubuf.is_empty() {
            match parse_response(ubuf, req)? {
                Some(res) if (100..200).contains(&res.status) && res.status != 101 => {
                    client.write_all(&ubuf[..res.head_len]).await.map_err(|_| Failure::Client)?;
                    ubuf.advance(res.head_len);
                    got_any = true;
                    continue;
                }
                Some(res) => return Ok(res),
                None if ubuf.len() > MAX_HEAD => return Err(Failure::Malformed),
                None => {}
            }
        }
        ubuf.reserve(8 * 1024);
        match up.read_buf(ubuf).await {
            Ok(0) | Err(_) if ubuf.is_empty() && !got_any => return Err(Failure::Upstream { retry }),
            Ok(0) | Err(_) => return Err(Failure::UpstreamMidResponse),
            Ok(_) => {}
        }
    }
}

enum Relay {
    Src,
    Dst,
    Malformed,
}

/// Copy the rest of a body from `src` (bytes already read sit in `buf`) to `dst`.
async fn relay<R, W>(src: &mut R, buf: &mut BytesMut, dst: &mut W, body: &mut Body) -> Result<(), Relay>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !buf.is_empty() {
            let n = body.take(buf).map_err(|_| Relay::Malformed)?;
            if n > 0 {
                dst.write_all(&buf[..n]).await.map_err(|_| Relay::Dst)?;
                buf.advance(n);
            }
        }
        if body.is_done() {
            return Ok(());
        }
        buf.reserve(16 * 1024);
        match src.read_buf(buf).await {
            Ok(0) if *body == Body::UntilClose => return Ok(()),
            Ok(0) | Err(_) => return Err(Relay::Src),
            Ok(_) => {}
        }
    }
}

/// Parse a request head. `Ok(None)`: incomplete. `Err(status)`: answer that and close.
fn parse_request(buf: &[u8], peer: IpAddr) -> Result<Option<(usize, Request)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let method = parsed.method.unwrap_or("GET");
    let version = parsed.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive, mut upgrade_token) = (false, false, false);
    let mut has_upgrade = false;
    let mut has_connection = false;
    let mut forwarded_for: Option<&[u8]> = None;
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or(400u16)?;
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
            has_upgrade = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(h.value);
        }
    }
    if chunked && length.is_some() {
        // Both framings at once is how requests are smuggled: refuse.
        return Err(400);
    }
    let upgrade = has_upgrade && upgrade_token;
    let client_close = if version == 0 { !keep_alive } else { close };
    let peer = peer.to_string();

    // The head for the worker: hop-by-hop `Connection` removed (the front keeps its upstream
    // connections alive whatever the client does), X-Forwarded-* added.
    let mut head = Vec::with_capacity(len + 64);
    if !has_connection && forwarded_for.is_none() {
        head.extend_from_slice(&buf[..len - 2]);
    } else {
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(parsed.path.unwrap_or("/").as_bytes());
        head.extend_from_slice(if version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") || (h.name.eq_ignore_ascii_case("connection") && !upgrade)
            {
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
    head.extend_from_slice(peer.as_bytes());
    head.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n\r\n");

    let body = match (chunked, length) {
        (true, _) => Body::Chunked(Chunked::default()),
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::None,
    };
    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE");
    Ok(Some((len, Request { head, body, idempotent, is_head: method == "HEAD", client_close, upgrade })))
}

fn parse_response(buf: &[u8], req: &Request) -> Result<Option<Response>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Malformed),
    };
    let status = parsed.code.unwrap_or(502);
    let version = parsed.version.unwrap_or(1);
    let mut length = None;
    let mut chunked = false;
    let (mut close, mut keep_alive) = (false, false);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
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
        let status_line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
        let mut head = Vec::with_capacity(head_len + 24);
        head.extend_from_slice(&buf[..status_line_end]);
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
    Ok(Some(Response { head_len, status, body, upstream_close, rewritten }))
}

/// The front's own answer, when no worker could give one.
async fn respond(client: &mut TcpStream, status: u16) -> io::Result<()> {
    let (reason, text) = match status {
        400 => ("Bad Request", "bad request\n"),
        431 => ("Request Header Fields Too Large", "request head too large\n"),
        501 => ("Not Implemented", "transfer-encoding not supported\n"),
        503 => ("Service Unavailable", "no worker is ready\n"),
        _ => ("Bad Gateway", "the worker failed to answer\n"),
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Request {
        parse_request(raw.as_bytes(), "10.0.0.9".parse().unwrap()).unwrap().unwrap().1
    }

    #[test]
    fn adds_forwarded_headers_without_touching_the_rest() {
        let r = req("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        assert!(!r.client_close);
        assert_eq!(r.body, Body::None);
    }

    #[test]
    fn strips_connection_close_and_appends_to_forwarded_for() {
        let r = req(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 5\r\n\r\nhello",
        );
        let head = String::from_utf8(r.head).unwrap();
        assert!(!head.to_ascii_lowercase().contains("connection"), "{head}");
        assert!(head.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"), "{head}");
        assert!(r.client_close);
        assert!(!r.idempotent);
        assert_eq!(r.body, Body::Length(5));
    }

    #[test]
    fn refuses_smuggling_shapes() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(raw.as_bytes(), "127.0.0.1".parse().unwrap()).err(), Some(400));
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(parse_request(raw.as_bytes(), "127.0.0.1".parse().unwrap()).err(), Some(400));
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
