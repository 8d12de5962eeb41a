//! Closed-loop HTTP/1.1 load that counts every failed request: the Rust twin of the repository's
//! `bench/loadcheck.py`, with the same rules.
//!
//! Each of `conns` clients sends `GET /` back to back, over one keep-alive connection or a new
//! connection per request (`Connection: close`). A request fails when the connection cannot be
//! made, is reset or closed before a full response, times out, or answers other than 200. A
//! keep-alive connection that the server closes *between* requests (EOF before the first byte of
//! the answer, on a connection that already carried a request) is not a failure: the client
//! reconnects and sends the request again, as HTTP clients do for idempotent requests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Per-request timeout: an answer slower than this counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A load nobody stops ends by itself.
const MAX_DURATION: Duration = Duration::from_secs(90);

/// What a load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed, all kinds.
    pub failed: u64,
    /// Failures by kind: `refused`, `reset`, `broken_pipe`, `closed_early`, `timeout`,
    /// `status_502`...
    pub by_kind: BTreeMap<String, u64>,
    /// Idle keep-alive connections the server closed between requests (not failures).
    pub reconnects: u64,
    /// The bodies of the 200 answers, each with how often it was seen.
    pub bodies: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Whether some 200 answer's body contains `needle` (e.g. `pid 1234`).
    pub fn saw(&self, needle: &str) -> bool {
        self.bodies.keys().any(|b| b.contains(needle))
    }

    fn merge(&mut self, other: LoadReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.reconnects += other.reconnects;
        for (k, n) in other.by_kind {
            *self.by_kind.entry(k).or_default() += n;
        }
        for (b, n) in other.bodies {
            *self.bodies.entry(b).or_default() += n;
        }
    }

    fn fail(&mut self, kind: impl Into<String>) {
        self.failed += 1;
        *self.by_kind.entry(kind.into()).or_default() += 1;
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok {}, failed {} {:?}, reconnects {}, bodies:",
            self.ok, self.failed, self.by_kind, self.reconnects
        )?;
        for (b, n) in &self.bodies {
            write!(f, "\n  {n:>6} x {}", b.trim_end())?;
        }
        Ok(())
    }
}

/// A load running in the background until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<JoinHandle<LoadReport>>,
}

impl Load {
    /// Start `conns` clients against `127.0.0.1:port`.
    pub fn start(port: u16, conns: usize, keepalive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let shared = Shared {
            port,
            keepalive,
            stop: stop.clone(),
            ok: ok.clone(),
            failed: failed.clone(),
            until: Instant::now() + MAX_DURATION,
        };
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the load");
            rt.block_on(async move {
                let shared = Arc::new(shared);
                let clients: Vec<_> = (0..conns).map(|_| tokio::spawn(client(shared.clone()))).collect();
                let mut report = LoadReport::default();
                for c in clients {
                    report.merge(c.await.expect("a load client panicked"));
                }
                report
            })
        });
        Load { stop, ok, failed, thread: Some(thread) }
    }

    /// Requests answered 200 so far.
    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(SeqCst)
    }

    /// Requests failed so far.
    pub fn failed_so_far(&self) -> u64 {
        self.failed.load(SeqCst)
    }

    /// Wait until `n` more requests than now have been answered 200 (at most `timeout`).
    pub fn wait_for_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.ok_so_far() + n;
        crate::wait_until(timeout, || self.ok_so_far() >= target)
    }

    /// Let every client finish the request it is on, then answer what the load saw.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, SeqCst);
        self.thread.take().expect("stopped once").join().expect("the load thread panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

struct Shared {
    port: u16,
    keepalive: bool,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    until: Instant,
}

/// Why one exchange did not produce a response.
enum Failure {
    /// EOF before any byte of the answer.
    ClosedBeforeAnswer,
    /// EOF in the middle of the answer.
    ClosedEarly,
    Io(io::Error),
}

struct Answer {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

async fn client(sh: Arc<Shared>) -> LoadReport {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n",
        sh.port,
        if sh.keepalive { "" } else { "Connection: close\r\n" }
    );
    let mut report = LoadReport::default();
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    while !sh.stop.load(SeqCst) && Instant::now() < sh.until {
        let failed_before = report.failed;
        let mut fresh = false;
        if conn.is_none() {
            match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(("127.0.0.1", sh.port))).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some((s, Vec::with_capacity(1024)));
                    fresh = true;
                }
                Ok(Err(e)) => {
                    report.fail(io_kind(&e));
                    sh.failed.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    report.fail("timeout");
                    sh.failed.fetch_add(1, SeqCst);
                    continue;
                }
            }
        }
        let (stream, buf) = conn.as_mut().expect("connected");
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, buf, req.as_bytes())).await {
            Ok(Ok(answer)) => {
                if answer.status == 200 {
                    report.ok += 1;
                    sh.ok.fetch_add(1, SeqCst);
                    *report.bodies.entry(String::from_utf8_lossy(&answer.body).into_owned()).or_default() += 1;
                } else {
                    report.fail(format!("status_{}", answer.status));
                }
                if answer.close || !sh.keepalive {
                    conn = None;
                }
            }
            Ok(Err(Failure::ClosedBeforeAnswer)) if !fresh => {
                report.reconnects += 1;
                conn = None;
            }
            Ok(Err(Failure::ClosedBeforeAnswer | Failure::ClosedEarly)) => {
                report.fail("closed_early");
                conn = None;
            }
            Ok(Err(Failure::Io(e))) => {
                report.fail(io_kind(&e));
                conn = None;
            }
            Err(_) => {
                report.fail("timeout");
                conn = None;
            }
        }
        if report.failed > failed_before {
            sh.failed.fetch_add(report.failed - failed_before, SeqCst);
        }
    }
    report
}

fn io_kind(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        io::ErrorKind::UnexpectedEof => "closed_early".into(),
        other => format!("io_{other:?}"),
    }
}

/// Send one request and read its complete answer. `buf` carries bytes read past an answer.
async fn exchange(s: &mut TcpStream, buf: &mut Vec<u8>, req: &[u8]) -> Result<Answer, Failure> {
    s.write_all(req).await.map_err(Failure::Io)?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if read_more(s, buf).await? == 0 {
            return Err(if buf.is_empty() { Failure::ClosedBeforeAnswer } else { Failure::ClosedEarly });
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Io(io::Error::new(io::ErrorKind::InvalidData, "bad status line")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" if v.contains("chunked") => chunked = true,
            "connection" if v == "close" => close = true,
            _ => {}
        }
    }
    let body = if chunked {
        loop {
            if let Some(body) = crate::http::dechunk(&buf[head_end..]) {
                break body;
            }
            if read_more(s, buf).await? == 0 {
                return Err(Failure::ClosedEarly);
            }
        }
    } else if let Some(len) = length {
        while buf.len() < head_end + len {
            if read_more(s, buf).await? == 0 {
                return Err(Failure::ClosedEarly);
            }
        }
        buf[head_end..head_end + len].to_vec()
    } else {
        while read_more(s, buf).await? > 0 {}
        close = true;
        buf[head_end..].to_vec()
    };
    Ok(Answer { status, close, body })
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Failure> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await.map_err(Failure::Io)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
