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

    let started = Instant::now();
    let served = wait_until(Duration::from_secs(20), || {
        http::raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200)
    });
    assert!(served, "a normal client was not served within {:?} of 45 clients not reading", started.elapsed());
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
    let started = Instant::now();
    let healthy = wait_until(Duration::from_secs(30), || {
        http::raw(api, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200)
    });
    assert!(healthy, "/healthz did not answer within {:?} of 25 unfinished webhook bodies", started.elapsed());
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
    let started = Instant::now();
    let healthy = wait_until(Duration::from_secs(30), || {
        http::raw(api, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200)
    });
    assert!(healthy, "/healthz did not answer within {:?} of {} idle connections", started.elapsed(), held.len());
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
    let started = Instant::now();
    let served = wait_until(Duration::from_secs(30), || {
        http::raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200)
    });
    assert!(served, "a client was not served within {:?} of 45 idle tcp connections", started.elapsed());
    drop(idle);
}
