//! A security review of the front and the API at the edge (issue 10), as a hostile client: each
//! test here is an attack tried on `main`; those that worked say so.

use deployer_tests::{TestEnv, http, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A worker with a large answer at `/big` (8 MB) and a small one elsewhere.
const BIG_ANSWER: &str = r#"
const http = require('http');
const big = Buffer.alloc(8 << 20, 120);
http.createServer((req, res) => {
  if (req.url === '/big') { res.writeHead(200, { 'content-length': big.length }); res.end(big); return; }
  res.writeHead(200, { 'content-length': 2 }); res.end('ok');
}).listen(Number(process.env.PORT));
"#;

/// Whether `GET path` on `port` is answered 200 (polled, each try on a new connection) within
/// `limit`, and after how long it was (or the wait gave up).
fn answers_ok(port: u16, path: &str, limit: Duration) -> (bool, Duration) {
    let started = Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let ok = wait_until(limit, || {
        http::raw(port, request.as_bytes(), Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
    });
    (ok, started.elapsed())
}

/// Clients that ask for a large answer and then never read it hold their connection (and a
/// lease on the worker) for ever: nothing bounds how long the front waits to write to a client.
/// With the fronts' budget filled by such clients, nobody else is served.
#[test]
fn clients_that_never_read_their_answers_are_cut_and_do_not_lock_the_front_out() {
    let agent = TestEnv::new()
        .fd_limit(160)
        .web(|a| {
            a.start(&["node", "-e", BIG_ANSWER])
                .set("front", "{ response_timeout: 2s, body_timeout: 2s, idle_timeout: 2s, header_timeout: 2s }")
        })
        .start();
    let port = agent.port("web");
    // The budget at fd limit 160 is 40 client connections (`limits.rs`): take them all.
    let stuck: Vec<TcpStream> = (0..45)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(stuck.len(), 45);
    // Let the front write what the socket buffers take and block.
    std::thread::sleep(Duration::from_secs(1));

    let (served, after) = answers_ok(port, "/", Duration::from_secs(20));
    assert!(served, "a normal client was not served within {:?} of 45 clients not reading", after);
    drop(stuck);
}

/// The API's head deadline covers the head only: a `POST /hooks/<app>` (no token needed) whose
/// body never comes holds an API connection for ever. With the API's connection cap taken by
/// such requests, `/healthz`, the webhooks and every CLI command wait for ever.
#[test]
fn unfinished_webhook_bodies_do_not_lock_out_healthz() {
    // At fd limit 160 the API serves 20 connections at once (`limits.rs`).
    let agent = TestEnv::new().fd_limit(160).start();
    let api = agent.api_port();
    let held: Vec<TcpStream> = (0..25)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", api)).ok()?;
            s.write_all(b"POST /hooks/web HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(held.len(), 25);
    let (healthy, after) = answers_ok(api, "/healthz", Duration::from_secs(30));
    assert!(healthy, "/healthz did not answer within {:?} of 25 unfinished webhook bodies", after);
    drop(held);
}

/// Keep-alive connections to the API that sent one request and then stay silent.
#[test]
fn idle_keep_alive_connections_do_not_lock_out_healthz() {
    let agent = TestEnv::new().fd_limit(160).start();
    let api = agent.api_port();
    let held: Vec<TcpStream> = (0..25)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", api)).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            Some(s)
        })
        .collect();
    let (healthy, after) = answers_ok(api, "/healthz", Duration::from_secs(30));
    assert!(healthy, "/healthz did not answer within {:?} of {} idle connections", after, held.len());
    drop(held);
}

/// Node (with no `upgrade` listener) answers a request that asks for an upgrade like any other and
/// drops whatever arrived with it in the same read. The front sends one request at a time and
/// keeps that upstream connection: neither the next client handed it from the pool nor the same
/// client's next request may be left unanswered (this attack held when it was tried).
#[test]
fn an_upgrade_request_that_got_no_101_does_not_poison_the_upstream_pool() {
    let agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &deployer_tests::fixture("echo-head.js")])
                .set("front", "{ response_timeout: 2s, unhealthy_after: 3 }")
        })
        .start();
    let port = agent.port("web");
    let workers_before = agent.pids("web");
    for _ in 0..10 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").expect("send");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("an answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        // Hang up: the front keeps its upstream connection for the next client.
    }
    let mut slow = 0;
    for i in 0..10 {
        let started = Instant::now();
        let r = http::raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(10))
            .expect("an answer");
        if r.status != 200 || started.elapsed() > Duration::from_secs(1) {
            slow += 1;
            eprintln!("request {i}: {} after {:?}", r.status, started.elapsed());
        }
    }
    assert_eq!(slow, 0, "innocent requests were handed a dead upstream connection");
    assert_eq!(agent.pids("web"), workers_before, "healthy workers were replaced as unhealthy");

    // The same on one client connection: the request after the upgrade one is answered.
    let raw = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
                GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
}

/// A WSGI (or CGI, or Rack) worker reads header names with `-` and `_` as one: `X_Forwarded_Proto`
/// becomes `HTTP_X_FORWARDED_PROTO` like `X-Forwarded-Proto`, and the two are joined. The front
/// dropped only the dashed spellings, so a client could still claim https (Django reads the first
/// value) or another address. nginx drops every header with `_` in its name by default.
#[test]
fn forwarding_headers_spelled_with_underscores_do_not_reach_a_wsgi_worker() {
    const WSGI: &str = r#"
import os, json
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *a): pass
def app(environ, start):
    body = json.dumps({k: v for k, v in environ.items() if k.startswith('HTTP_')}).encode()
    start('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]
make_server('127.0.0.1', int(os.environ['PORT']), app, handler_class=Quiet).serve_forever()
"#;
    let agent = TestEnv::new().web(|a| a.start(&["/usr/bin/python3", "-c", WSGI])).start();
    let spoof = "GET / HTTP/1.1\r\nHost: app.example\r\nX_Forwarded_Proto: https\r\nX_Forwarded_For: 6.6.6.6\r\n\
                 X-Forwarded_Host: bank.example\r\nX_Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n";
    let r = http::raw(agent.port("web"), spoof.as_bytes(), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let env: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(env["HTTP_X_FORWARDED_PROTO"], "http", "{env:#}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{env:#}");
    assert_eq!(env["HTTP_X_FORWARDED_HOST"], "app.example", "{env:#}");
    assert!(env.get("HTTP_X_REAL_IP").is_none(), "{env:#}");
}

/// The `tcp` front (and a websocket after `101` on the `http` front) relays until a side closes or
/// both are silent for `tunnel_idle_timeout`: connections that connect and then stay silent hold
/// the fronts' budget only that long.
#[test]
fn idle_tcp_relays_do_not_lock_the_front_out() {
    let agent = TestEnv::new()
        .fd_limit(160)
        .proxy(deployer_tests::Proxy::Tcp)
        .web(|a| a.set("front", "{ tunnel_idle_timeout: 2s }"))
        .start();
    let port = agent.port("web");
    let idle: Vec<TcpStream> = (0..45).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert_eq!(idle.len(), 45);
    let (served, after) = answers_ok(port, "/", Duration::from_secs(30));
    assert!(served, "a client was not served within {:?} of 45 idle tcp connections", after);
    drop(idle);
}

/// A worker that speaks HTTP by hand over `net`, so it can misbehave in ways Node's `http` never
/// does. It answers each request head with its path, and on some paths breaks the protocol:
/// `/late` sends a second, unasked-for answer a moment after the real one, `/glued` sends it in
/// the same write, `/both` frames its answer with `Content-Length` and `Transfer-Encoding` at
/// once, `/lf` ends its head's lines in bare LF, `/badchunk` sends a chunked body that is not.
const BROKEN_WORKER: &str = r#"
const net = require('net');
const answer = (path) => 'HTTP/1.1 200 OK\r\nContent-Length: ' + path.length + '\r\n\r\n' + path;
const stale = 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSTALE!';
net.createServer((sock) => {
  let buf = '';
  sock.on('error', () => {});
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
      const path = buf.slice(0, i).split(' ')[1];
      buf = buf.slice(i + 4);
      if (path === '/glued') sock.write(answer(path) + stale);
      else if (path === '/both') sock.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
      else if (path === '/lf') sock.write('HTTP/1.1 200 OK\nContent-Length: 3\nX-A: 1\n\n/lf');
      else if (path === '/badchunk') sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
      else if (path === '/halfhead') sock.end('HTTP/1.1 200 OK\r\nContent-Len');
      else if (path === '/interim') sock.end('HTTP/1.1 100 Continue\r\n\r\n');
      else sock.write(answer(path));
      if (path === '/late') setTimeout(() => sock.write(stale), 50);
    }
  });
}).listen(Number(process.env.PORT));
"#;

/// One answer read from a keep-alive connection: its head (as text) and its body, framed by its
/// `Content-Length`.
fn read_answer(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!("the answer's head ended early ({other:?}): {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).expect("the answer's body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A worker that writes an answer nobody asked for on a keep-alive connection (after its real
/// answer, or glued to it): those bytes must never reach a request sent later on that upstream
/// connection, whether the same client's next request (a CDN in front carries many users on one
/// connection) or another client's, handed the connection from the pool. nginx closes a pooled
/// upstream connection that becomes readable while idle.
#[test]
fn unasked_for_bytes_from_a_worker_never_answer_a_later_request() {
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", BROKEN_WORKER])).start();
    let port = agent.port("web");
    for first in ["/late", "/glued"] {
        // The same client's next request on its keep-alive connection.
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        for path in [first, "/next", "/after"] {
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).expect("send");
            let (head, body) = read_answer(&mut s);
            assert_eq!(body, path, "after {first}, the answer to {path} was another's: {head}{body}");
            // The unasked-for answer leaves the worker after the real one.
            std::thread::sleep(Duration::from_millis(200));
        }
        // Other clients, after one that hung up (its upstream connection went to the pool).
        let r = http::raw(
            port,
            format!("GET {first} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!(r.body, first);
        // The unasked-for answer leaves the worker after the real one.
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..3 {
            let path = format!("/other{i}");
            let r = http::raw(
                port,
                format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
                Duration::from_secs(10),
            )
            .expect("an answer");
            assert_eq!(r.body, path, "after {first}, another client got a stale answer");
        }
    }
}

/// The answer the front passes on when a [`BROKEN_WORKER`] answers `GET path`.
fn broken_answer(path: &str) -> http::Response {
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", BROKEN_WORKER])).start();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    http::raw(agent.port("web"), request.as_bytes(), Duration::from_secs(10)).expect("an answer")
}

/// A worker's answer framed both by `Content-Length` and `Transfer-Encoding` means two readers may
/// disagree on where it ends (a cache between the client and the front, the client itself): RFC
/// 9112 calls it an error a proxy must not pass on as it is; nginx answers 502.
#[test]
fn an_answer_framed_two_ways_is_not_passed_on() {
    let r = broken_answer("/both");
    assert_eq!(r.status, 502, "{:?} {}", r.headers, r.body);
}

/// A worker whose answer's body is malformed from its first byte: nothing of it has reached the
/// client yet, so the client gets a 502 (and the access log says so), not an empty reply.
#[test]
fn an_answer_malformed_from_its_first_body_byte_is_a_502() {
    let r = broken_answer("/badchunk");
    assert_eq!(r.status, 502, "{:?} {}", r.headers, r.body);
}

/// A worker that closes in the middle of its answer's head (it crashed, it was killed) has passed
/// nothing of a final answer on, an interim `100 Continue` at most: the client can still be told
/// 502, as nginx does, and the access log said 502. The front closed without a word instead, so
/// the client saw an empty reply and the log a status nobody got.
#[test]
fn a_worker_that_closes_in_the_middle_of_its_answers_head_is_a_502() {
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", BROKEN_WORKER])).start();
    let port = agent.port("web");
    let ask = |path: &str| {
        all_bytes_of_the_answer(port, &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    };
    let answer = ask("/halfhead");
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer:?}");
    let answer = ask("/interim");
    assert!(answer.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 "), "{answer:?}");
}

/// Every byte the front sends back for `request` (which asks to close), as text: interim heads
/// and framing included, which `http::raw` would parse away.
fn all_bytes_of_the_answer(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    // a timeout ends the read too: whatever came is what the assertions look at
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A worker whose head lines end in bare LF, to a client that asked to close: the front rewrites
/// the head to say `Connection: close`, and the status line must survive that.
#[test]
fn a_bare_lf_answer_to_a_closing_client_keeps_its_status_line() {
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", BROKEN_WORKER])).start();
    let answer = all_bytes_of_the_answer(agent.port("web"), "GET /lf HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.contains("\r\nConnection: close\r\n") && answer.ends_with("\r\n\r\n/lf"), "{answer:?}");
}

/// A worker that answers before the request body has come (`Expect: 100-continue` refused with
/// 417, an upload turned away with 401): the client, which waits for that answer before it
/// sends its body (or sends no more), must get it, not wait for a body that never comes.
#[test]
fn an_answer_before_the_request_body_reaches_the_client_at_once() {
    const REFUSES: &str = r#"
const http = require('http');
const s = http.createServer((req, res) => {
  if (req.url === '/deny') { res.writeHead(401, { 'content-length': 6, connection: 'close' }); res.end('denied'); return; }
  let n = 0;
  req.on('data', (d) => (n += d.length));
  req.on('end', () => res.end('got ' + n));
});
s.on('checkContinue', (req, res) => {
  if (req.url === '/refuse') { res.writeHead(417, { 'content-length': 7 }); res.end('refused'); return; }
  res.writeContinue();
  s.emit('request', req, res);
});
s.listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .instances(1)
        .web(|a| a.start(&["node", "-e", REFUSES]).set("front", "{ body_timeout: 30s }"))
        .start();
    let port = agent.port("web");

    // Accepted: 100 Continue, then the body, then the answer.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"POST /ok HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").expect("send");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("100 Continue");
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"hello").expect("the body");
    let (_, body) = read_answer(&mut s);
    assert_eq!(body, "got 5");

    // Refused: the 417 comes without the body.
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"POST /refuse HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .expect("send");
    let n = s.read(&mut buf).unwrap_or_else(|e| panic!("no answer after {:?}: {e}", started.elapsed()));
    assert!(buf[..n].starts_with(b"HTTP/1.1 417"), "{:?}", String::from_utf8_lossy(&buf[..n]));

    // Turned away in the middle of a large upload, by a worker that then closes: its 401, not a 502.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let size = 8 << 20;
    s.write_all(format!("POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n").as_bytes()).expect("send");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(size / chunk.len()) {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
}

/// Interim answers (`103 Early Hints` here) reach an HTTP/1.1 client, never an HTTP/1.0 one,
/// which has no such thing and would take the 103 for the answer (RFC 9110 §15.2).
#[test]
fn an_interim_answer_reaches_an_http11_client_only() {
    const HINTS: &str = r#"
require('http').createServer((req, res) => {
  res.writeEarlyHints({ link: '</a.css>; rel=preload' });
  res.end('final');
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", HINTS])).start();
    let port = agent.port("web");
    for (version, hints) in [("1.1", true), ("1.0", false)] {
        let answer =
            all_bytes_of_the_answer(port, &format!("GET / HTTP/{version}\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert_eq!(answer.starts_with("HTTP/1.1 103"), hints, "HTTP/{version}: {answer:?}");
        assert!(answer.contains(" 200 OK\r\n") && answer.ends_with("final"), "HTTP/{version}: {answer:?}");
    }
}

/// Clients that pipeline many requests to the API and never read the answers: each connection's
/// answers fill the socket buffers, then hyper waits for ever to write the next one (it has no
/// write timeout). With the API's connection cap taken by such clients, `/healthz`, the webhooks
/// and every CLI command wait for ever. No token is needed: `/healthz` answers anyone.
#[test]
fn api_clients_that_never_read_their_answers_do_not_lock_out_healthz() {
    // At fd limit 160 the API serves 20 connections at once (`limits.rs`).
    let agent = TestEnv::new().fd_limit(160).start();
    let api = agent.api_port();
    // About 5 MB of answers (401 and a hint) per connection: more than loopback's socket buffers hold.
    let pipeline = b"GET /v1/apps HTTP/1.1\r\nHost: a\r\n\r\n".repeat(16_000);
    let held: Vec<TcpStream> = (0..25)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", api)).ok()?;
            s.set_write_timeout(Some(Duration::from_millis(500))).ok()?;
            // Whatever the API takes before it stops reading (it may not take it all).
            let _ = s.write_all(&pipeline);
            Some(s)
        })
        .collect();
    assert_eq!(held.len(), 25);
    let (healthy, after) = answers_ok(api, "/healthz", Duration::from_secs(40));
    assert!(healthy, "/healthz did not answer within {:?} of 25 clients not reading", after);
    drop(held);
}

/// h2c smuggling: a client asks to upgrade to `h2c` (cleartext HTTP/2), a worker that speaks it
/// agrees with `101`, and from then on the front only relays bytes: the client's next requests
/// reach the worker with no forwarding header set by the front (`X-Forwarded-For`, `-Proto`
/// spoofed at will) and past `max_body` and the access log. Only websocket upgrades are passed on.
#[test]
fn an_h2c_upgrade_does_not_smuggle_requests_past_the_front() {
    // Agrees to any upgrade it is asked for (as h2c servers do), then answers each request it
    // reads with the `X-Forwarded-For` it got.
    const H2C: &str = r#"
const net = require('net');
net.createServer((sock) => {
  let buf = '';
  let switched = false;
  sock.on('error', () => {});
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
      const head = buf.slice(0, i);
      buf = buf.slice(i + 4);
      if (!switched && /\r\nconnection:[^\r]*upgrade/i.test(head) && /\r\nupgrade: *h2c/i.test(head)) {
        switched = true;
        sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
        continue;
      }
      const xff = (head.match(/\r\nx-forwarded-for: *([^\r]*)/i) || [])[1] || '';
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: ' + xff.length + '\r\n\r\n' + xff);
    }
  });
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", H2C])).start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if let Some(length) = head.to_ascii_lowercase().split("content-length: ").nth(1) {
        let length: usize = length.split("\r\n").next().and_then(|l| l.parse().ok()).expect("a length");
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).expect("the body");
    }
    // The next request, with a forged client address.
    s.write_all(b"GET /admin HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n").expect("send");
    let (_, body) = read_answer(&mut s);
    assert_eq!(body, "127.0.0.1", "the worker got a forged address after {head:?}");
}

/// A websocket still goes through: the worker's `101`, then bytes both ways, including those the
/// client sent right behind its upgrade request, before the `101` came.
#[test]
fn a_websocket_upgrade_relays_bytes_sent_before_and_after_the_101() {
    const ECHO_WS: &str = r#"
const http = require('http');
const s = http.createServer((req, res) => res.end('plain'));
s.on('upgrade', (req, sock, head) => {
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  if (head.length) sock.write(head);
  sock.on('data', (d) => sock.write(d));
  sock.on('end', () => sock.end());
  sock.on('error', () => {});
});
s.listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new().instances(1).web(|a| a.start(&["node", "-e", ECHO_WS])).start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let expected = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly";
    while got.len() < expected.len() {
        let n = s.read(&mut buf).expect("the 101 and the echo");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
    s.write_all(b"later").expect("send");
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).expect("the echo");
    assert_eq!(&echo, b"later");
}

/// A pipelining client's next request arrives while the front passes on an 8 MB answer that
/// closes the connection (`Connection: close`, as a worker that stops keeping connections alive
/// sends). The front closed with that request unread, and Linux resets a connection closed on
/// unread bytes: the reset threw away the 3-4 MB of the answer still on its way.
/// nginx reads and drops what the client still sends before it closes (lingering close).
#[test]
fn a_pipelined_request_does_not_cut_short_an_answer_that_closes_the_connection() {
    const CLOSING: &str = r#"
const http = require('http');
const big = Buffer.alloc(8 << 20, 120);
http.createServer((req, res) => {
  res.writeHead(200, { 'content-length': big.length, connection: 'close' }); res.end(big);
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new().web(|a| a.start(&["node", "-e", CLOSING])).start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    // A small receive buffer, as a client on a slow link has: most of the answer waits in the
    // front's socket when it closes.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(64 * 1024)).expect("SO_RCVBUF");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).expect("the answer starts");
    s.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n").expect("pipeline the next request");
    // The front writes what the sockets take and closes meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let mut answer = first[..n].to_vec();
    let end = s.read_to_end(&mut answer);
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert_eq!(answer.len() - head_end, 8 << 20, "the answer was cut short ({end:?})");
    assert!(end.is_ok(), "the connection ended in {end:?}, not a close");
}

/// Node, after it answered a request that asked for an upgrade it does not do (no `upgrade`
/// listener) like any other, no longer answers a head it refuses on that connection (one over
/// its 16 KB header limit): it keeps the connection silent instead of answering 431. The front
/// kept that upstream connection, so the next such request waited `response_timeout`, got a
/// 504, and counted against the worker's health: a client could get healthy workers replaced.
#[test]
fn a_declined_upgrade_does_not_leave_the_next_request_unanswered() {
    let agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &deployer_tests::fixture("echo-head.js")])
                .set("front", "{ response_timeout: 3s, unhealthy_after: 1 }")
        })
        .instances(1)
        .start();
    let workers_before = agent.pids("web");
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").expect("send");
    let (head, _) = read_answer(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = Instant::now();
    let big = format!("GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "y".repeat(20_000));
    s.write_all(big.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "after {:?}: {answer}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "answered only after {:?}", started.elapsed());
    assert_eq!(agent.pids("web"), workers_before, "a healthy worker was replaced as unhealthy");
}

/// A SIGHUP that takes a peer out of `trusted_proxies` (or changes `max_body`, the timeouts, the
/// access log) must reach the keep-alive connections already open: a load balancer's may never
/// close. The front read its rules once per connection, so a proxy no longer trusted kept
/// setting `X-Forwarded-For` on the connections it had.
#[test]
fn a_config_change_reaches_keep_alive_connections_already_open() {
    let mut agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &deployer_tests::fixture("echo-head.js")])
                .set("front", "{ trusted_proxies: [127.0.0.0/8], idle_timeout: 60s }")
        })
        .start();
    let port = agent.port("web");
    let request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    let forwarded_for = |s: &mut TcpStream| {
        s.write_all(request).expect("send");
        let (_, body) = read_answer(s);
        let seen: serde_json::Value = serde_json::from_str(&body).expect("json");
        seen["headers"]["x-forwarded-for"].as_str().unwrap_or_default().to_string()
    };
    let mut open = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(forwarded_for(&mut open), "6.6.6.6, 127.0.0.1", "trusted at first");

    agent.reconfigure(|env| env.web(|a| a.set("front", "{ idle_timeout: 60s, max_body: 10 }")));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let applied = wait_until(Duration::from_secs(20), || {
        let mut new = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        new.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        forwarded_for(&mut new) == "127.0.0.1"
    });
    assert!(applied, "the new config never applied to new connections");
    assert_eq!(forwarded_for(&mut open), "127.0.0.1", "the connection opened before the change still trusts");
    open.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world").expect("send");
    let (head, _) = read_answer(&mut open);
    assert!(head.starts_with("HTTP/1.1 413"), "the new max_body: {head}");
}

/// A SIGHUP that lowers `idle_timeout` or `header_timeout` must reach the connections already
/// waiting under the old values: an operator lowers them because idle or slow connections are
/// piling up, and those are exactly the ones waiting. A connection waiting between requests, or
/// for the rest of a head, waited out its old deadline (here 60 s) before taking up the new one.
#[test]
fn a_lowered_timeout_reaches_connections_already_waiting() {
    let mut agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &deployer_tests::fixture("echo-head.js")])
                .set("front", "{ idle_timeout: 60s, header_timeout: 60s }")
        })
        .start();
    let port = agent.port("web");
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    let (head, _) = read_answer(&mut idle);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").expect("send the start of a head");

    agent.reconfigure(|env| env.web(|a| a.set("front", "{ idle_timeout: 1s, header_timeout: 1s }")));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    // Well under the old 60 s, whatever the machine's speed.
    for s in [&mut idle, &mut slow] {
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    }
    let mut rest = Vec::new();
    let ended = idle.read_to_end(&mut rest);
    assert!(matches!(ended, Ok(0)), "the idle connection was not closed by the new idle_timeout: {ended:?}");
    let mut answer = Vec::new();
    let ended = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(ended.is_ok() && answer.starts_with("HTTP/1.1 408"), "the slow head: {ended:?} {answer}");
}

/// A client that goes away while its worker prepares the answer (a page reloaded, a script
/// killed) left the front holding the worker's connection until the answer was ready: the worker
/// did all the work for nobody, and a client could queue any amount of it at the cost of a
/// connect and a close. nginx drops the upstream connection when the client closes and logs 499.
#[test]
fn a_client_that_goes_away_cancels_its_request_at_the_worker() {
    clients_that_leave_cancel_their_requests(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", 10);
}

/// The same with a body too large to come with the head (an upload, a big form): the front
/// relayed it, then waited for the answer without looking at the client, so the worker did the
/// work for a client that had left, as long as the work took.
#[test]
fn a_client_that_goes_away_after_sending_a_body_cancels_its_request_too() {
    // Far more than the front reads with a head: most of it is relayed.
    let body = vec![b'x'; 1 << 20];
    let mut request =
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    clients_that_leave_cancel_their_requests(&request, 5);
}

/// `n` clients send `request` whole and close: the worker (which would answer each after 10 s)
/// sees each request aborted, and the access log has a 499 for each.
fn clients_that_leave_cancel_their_requests(request: &[u8], n: usize) {
    const COUNTS_ABORTS: &str = r#"
const http = require('http');
let aborted = 0, whole = 0;
http.createServer((req, res) => {
  if (req.url === '/aborted') { res.end(`${aborted} of ${whole}`); return; }
  let later;
  req.on('data', () => {});
  req.on('end', () => { whole++; later = setTimeout(() => res.end('late'), 10000); });
  res.on('close', () => { if (!res.writableEnded) { aborted++; clearTimeout(later); } });
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .web(|a| a.start(&["node", "-e", COUNTS_ABORTS]).set("front", "{ access_log: true }"))
        .instances(1)
        .start();
    let port = agent.port("web");
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(request).expect("send the request");
        // Dropped: the client closes once its whole request is sent.
    }
    let expected = format!("{n} of {n}");
    let aborted = deployer_tests::poll(Duration::from_secs(5), || {
        let r = http::get(port, "/aborted").ok()?;
        (r.body == expected).then_some(())
    });
    assert!(aborted.is_some(), "the worker still works for clients that left: {:?}", http::get(port, "/aborted"));
    let path = agent.dir().join("state/logs/web.access.log");
    let logged = deployer_tests::poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).ok()?;
        (text.matches("\"status\":499").count() == n).then_some(())
    });
    assert!(logged.is_some(), "{}", std::fs::read_to_string(&path).unwrap_or_default());
}

/// A worker that stops reading a request body and never answers (its event loop blocked, a
/// handler that paused the request and forgot it) is a worker that does not answer: the client
/// gets 504 after `response_timeout`, as for a request without a body. Once the front's write of
/// the body to the worker timed out, it waited for an answer with no deadline at all, holding the
/// client (and a lease on the worker) until the worker closed, which a hung one never does.
#[test]
fn a_worker_that_stops_taking_a_body_and_never_answers_gets_504() {
    const STUCK: &str = r#"
require('http').createServer((req, res) => {
  if (req.url === '/stuck') { req.pause(); return; }
  res.end('ok');
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .web(|a| a.start(&["node", "-e", STUCK]).set("front", "{ response_timeout: 1s }"))
        .instances(1)
        .start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    // Far more than the sockets between the client and the worker hold.
    let body = vec![b'x'; 64 << 20];
    let head = format!("POST /stuck HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut writer = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        // the front stops reading at some point: the write fails or blocks until the socket closes
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let started = Instant::now();
    let mut answer = [0u8; 12];
    let read = s.read_exact(&mut answer);
    assert!(
        read.is_ok() && answer.starts_with(b"HTTP/1.1 504"),
        "after {:?}: {read:?} {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&answer)
    );
}

/// A client that falls silent in the middle of its body is cut at `body_timeout` and told 408,
/// as nginx's `client_body_timeout` does. The front closed without a word and logged 499 ("the
/// client closed"), which it had not: an operator looking for slow uploaders found clients that
/// left instead.
#[test]
fn a_client_silent_in_the_middle_of_its_body_is_told_408() {
    const WHOLE_BODY_FIRST: &str = r#"
require('http').createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => res.end('whole'));
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .web(|a| a.start(&["node", "-e", WHOLE_BODY_FIRST]).set("front", "{ body_timeout: 1s, access_log: true }"))
        .instances(1)
        .start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n").expect("send the head");
    // More than comes with the head, then nothing.
    s.write_all(&[b'x'; 200_000]).expect("send part of the body");
    let mut answer = String::new();
    let ended = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{ended:?} {answer:?}");
    let path = agent.dir().join("state/logs/web.access.log");
    let logged = deployer_tests::poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains("\"status\":408").then_some(())
    });
    assert!(logged.is_some(), "{}", std::fs::read_to_string(&path).unwrap_or_default());
}

/// A chunked body whose framing breaks (a chunk size that is not one) is the client's error: 400,
/// as nginx answers. It was a 502 with "worker failed a request" in the agent's log and the
/// front's error count when the break came with the head, so any client could make a healthy
/// app look failing; and a silent close, logged 499, when it came later.
#[test]
fn a_malformed_chunked_body_is_the_clients_400_not_a_worker_failure() {
    let agent = TestEnv::new()
        .web(|a| a.start(&["node", "-e", "require('http').createServer((q, s) => { q.resume(); q.on('end', () => s.end('whole')); }).listen(Number(process.env.PORT))"]))
        .instances(1)
        .start();
    let port = agent.port("web");
    let good_chunks: Vec<u8> =
        (0..100).flat_map(|_| [b"400\r\n".as_slice(), &[b'x'; 1024], b"\r\n"].concat()).collect();
    for early in [true, false] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut sent = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        if !early {
            // More than comes with the head: the break comes while the body is relayed.
            sent.extend_from_slice(&good_chunks);
        }
        sent.extend_from_slice(b"zz\r\nnot a chunk\r\n");
        // the front may stop reading at the break
        let _ = s.write_all(&sent);
        let mut answer = String::new();
        let ended = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "early: {early}: {ended:?} {answer:?}");
    }
}

/// An app removed from the config (or restarted on another port) waits `drain_timeout` for its
/// connections and then says it closes those still open. It did not: a head trickling in kept its
/// connection, and a slot of the fronts' budget, until `header_timeout`, on an app that was gone.
#[test]
fn connections_still_open_when_an_apps_drain_timeout_ends_are_closed() {
    let mut agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &deployer_tests::fixture("echo-head.js")])
                .reload("drain_timeout", "1s")
                .set("front", "{ header_timeout: 60s }")
        })
        .start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").expect("send the start of a head");
    agent.reconfigure(|env| env.without_app("web"));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = s.read_to_end(&mut rest);
    assert!(
        ended.is_ok() && started.elapsed() < Duration::from_secs(15),
        "still open {:?} after the app was removed: {ended:?}",
        started.elapsed()
    );
}

/// A `tcp`-front client that sends its input, thinks, then closes its half (`nc -N`, a batch
/// protocol whose end of input asks for the result) waits for the answer. The relay counted the
/// half-closed limit from the last byte, so a client that had been quiet a while was cut the
/// moment it closed its half, and the worker's answer to the end was lost.
#[test]
fn a_tcp_client_that_closes_its_half_after_a_pause_gets_the_answer_to_its_end() {
    const ANSWERS_THE_END: &str = r#"
require('net').createServer({ allowHalfOpen: true }, (sock) => {
  let got = '';
  sock.on('data', (d) => { got += d; });
  sock.on('end', () => setTimeout(() => sock.end('answer to ' + got), 2000));
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .proxy(deployer_tests::Proxy::Tcp)
        .web(|a| a.start(&["node", "-e", ANSWERS_THE_END]).set("front", "{ tunnel_idle_timeout: 4s }"))
        .instances(1)
        .start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(b"query").expect("send");
    // Quiet, within the idle limit, before the end of input.
    std::thread::sleep(Duration::from_secs(3));
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    let end = s.read_to_string(&mut answer);
    assert_eq!(answer, "answer to query", "{end:?}");
}
