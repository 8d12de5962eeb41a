//! An HTTP receiver the test starts, for the agent's reports: it records every request and
//! answers as told (refuse connections, answer 500, answer 200). A std `TcpListener` on a thread,
//! one request per connection.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing listens on the port: connections are refused.
    Refuse,
    /// Every request is answered with this status.
    Status(u16),
    /// Every request is answered with this status and this JSON body (a fake agent's answer).
    Json(u16, &'static str),
}

/// One request as received, and what it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

struct Shared {
    ip: IpAddr,
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

/// The running receiver; dropping it stops it.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver answering `mode` on a port of its own.
    pub fn start(mode: Mode) -> Receiver {
        Receiver::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), mode)
    }

    /// A receiver listening on `ip` (one of this machine's addresses, not only loopback).
    pub fn start_on(ip: IpAddr, mode: Mode) -> Receiver {
        let probe = TcpListener::bind((ip, 0)).expect("bind the receiver");
        let port = probe.local_addr().expect("its address").port();
        let shared = Arc::new(Shared {
            ip,
            mode: Mutex::new(mode),
            received: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let listener = (mode != Mode::Refuse).then_some(probe);
        let s = shared.clone();
        std::thread::spawn(move || serve(port, listener, &s));
        Receiver { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>` (or the address it listens on).
    pub fn url(&self, path: &str) -> String {
        match self.shared.ip {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}{path}", self.port),
            ip => format!("http://{ip}:{}{path}", self.port),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(port: u16, mut listener: Option<TcpListener>, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let mode = *shared.mode.lock().unwrap();
        let answer = match mode {
            Mode::Refuse => {
                listener = None;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Mode::Status(s) => (s, None),
            Mode::Json(s, body) => (s, Some(body)),
        };
        if listener.is_none() {
            // std sets SO_REUSEADDR, so the port can be bound again at once.
            listener = TcpListener::bind((shared.ip, port)).ok();
            if let Some(l) = &listener {
                l.set_nonblocking(true).expect("nonblocking listener");
            } else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        if let Some(l) = &listener {
            l.set_nonblocking(true).expect("nonblocking listener");
            match l.accept() {
                Ok((stream, _)) => {
                    if let Some(r) = handle(stream, answer) {
                        shared.received.lock().unwrap().push(r);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

fn handle(mut s: TcpStream, (status, json): (u16, Option<&str>)) -> Option<Received> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let reply = match json {
        Some(body) => format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
    };
    let _ = s.write_all(reply.as_bytes());
    Some(Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned(), answered: status })
}
