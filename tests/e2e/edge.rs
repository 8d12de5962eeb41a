//! The `http` front at the edge (issue 10): what a hostile or broken client sends reaches the
//! worker as a clean CRLF head with forwarding headers the front set itself, and a client that
//! trickles its head is cut at the deadline while everyone else is served.

use deployer_tests::{Load, TestEnv, fixture, http, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn echo_app(agent_env: TestEnv) -> TestEnv {
    agent_env.web(|a| a.start(&["node", &fixture("echo-head.js")]))
}

/// What the worker saw of a request sent as `raw` bytes.
fn seen(port: u16, raw: &str) -> Value {
    let r = http::raw(port, raw.as_bytes(), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn a_bare_lf_head_reaches_node_in_crlf_with_the_clients_address_in_its_own_header() {
    let agent = echo_app(TestEnv::new()).start();
    let port = agent.port("web");
    let got = seen(port, "GET /lf HTTP/1.1\nHost: app.example\nX-Custom: kept\nConnection: close\n\n");
    assert_eq!(got["url"], "/lf");
    assert_eq!(got["headers"]["x-custom"], "kept", "{got:#}");
    assert_eq!(got["headers"]["x-forwarded-for"], "127.0.0.1", "{got:#}");
    assert_eq!(got["headers"]["x-forwarded-proto"], "http", "{got:#}");
    assert_eq!(got["headers"]["x-forwarded-host"], "app.example", "{got:#}");
}

#[test]
fn a_clients_own_forwarding_headers_are_replaced_unless_it_is_a_trusted_proxy() {
    let spoof = "GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 6.6.6.6\r\n\
                 X-Forwarded-Host: bank.example\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n\
                 Connection: close\r\n\r\n";
    let agent = echo_app(TestEnv::new()).start();
    let got = seen(agent.port("web"), spoof);
    let h = &got["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "plain http must not pass for https: {got:#}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{got:#}");
    assert_eq!(h["x-forwarded-host"], "app.example", "{got:#}");
    assert_eq!(h["forwarded"], r#"for=127.0.0.1;proto=http;host="app.example""#, "{got:#}");
    assert!(h.get("x-real-ip").is_none(), "{got:#}");
    drop(agent);

    // Behind a load balancer on loopback, its headers are believed and the chain extended.
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ trusted_proxies: [127.0.0.0/8] }")).start();
    let got = seen(agent.port("web"), spoof);
    let h = &got["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{got:#}");
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{got:#}");
    assert_eq!(h["x-forwarded-host"], "bank.example", "{got:#}");
    assert_eq!(h["x-real-ip"], "6.6.6.6", "{got:#}");
    assert_eq!(h["forwarded"], r#"for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host="app.example""#, "{got:#}");
}

#[test]
fn a_sloppy_content_length_is_refused_before_the_worker_sees_it() {
    let agent = echo_app(TestEnv::new()).start();
    for bad in ["+5", "5, 5", "-1"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\nhello");
        let r = http::raw(agent.port("web"), raw.as_bytes(), Duration::from_secs(10)).expect("an answer");
        assert_eq!(r.status, 400, "Content-Length: {bad}: {}", r.body);
    }
}

/// A client that sends a head one byte at a time, slower than the deadline allows: the front
/// answers 408 and closes at `header_timeout`, while 200 others that never finish their heads
/// are cut too, and clients that behave see no failure.
#[test]
fn trickling_and_unfinished_heads_are_cut_at_the_header_deadline_while_others_are_served() {
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ header_timeout: 2s }")).start();
    let port = agent.port("web");
    let load = Load::start(port, 10, true);
    assert!(load.wait_for_more(20, Duration::from_secs(15)), "the load did not get going");

    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").expect("half a head");
            s
        })
        .collect();
    let started = Instant::now();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Trickle: 0123456789012345678901234567890123456789\r\n\r\n";
    let mut answer = Vec::new();
    for b in head.iter() {
        if slow.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let cut_after = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "the trickler got {answer:?} after {cut_after:?}");
    assert!(cut_after < Duration::from_secs(5), "cut only after {cut_after:?}");

    // Every unfinished head is closed by now or soon (each had the same deadline).
    let closed = wait_until(Duration::from_secs(5), || idle.iter_mut().all(is_closed));
    assert!(closed, "some unfinished heads are still open after the deadline");
    let report = load.stop();
    assert_eq!(report.failed, 0, "{report}");
}

/// Whether the server closed `s`: its answer (if any) read, then end of file or a reset.
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The front's own counter of requests it answered 504.
fn timeouts_metric(agent: &deployer_tests::Agent) -> u64 {
    let metrics = agent.api_get("/metrics").body;
    metrics
        .lines()
        .find(|l| l.starts_with("deployer_front_timeouts_total{app=\"web\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no timeouts counter in:\n{metrics}"))
}

/// Under load, one of two workers stops (`SIGSTOP`) or hangs. The requests already on it are
/// answered 504 at `response_timeout`, it leaves the rotation and is replaced (the replacement
/// ready first), and nothing else fails.
fn a_hung_worker_costs_only_the_requests_already_on_it(hang_instance: &str, hang: impl FnOnce(u32)) {
    let marker = tempfile::tempdir().expect("a temp dir");
    let once = marker.path().join("hung");
    let agent = TestEnv::new()
        .web(|a| {
            a.start(&["node", &fixture("hangs.js")])
                .env("HANG_ONCE_FILE", &once.display().to_string())
                .env("HANG_INSTANCE", hang_instance)
                .env("DELAY_MS", "20")
                .set("front", "{ response_timeout: 2s, unhealthy_after: 3 }")
                .reload("drain_timeout", "30s")
        })
        .start();
    let victim = agent.wait_online("web", 2)[1].pid.expect("a pid");
    let load = Load::start(agent.port("web"), 20, true);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");

    hang(victim);
    let replaced = wait_until(Duration::from_secs(30), || {
        let pids = agent.pids("web");
        pids.len() == 2 && !pids.contains(&victim) && agent.app("web").workers.iter().all(|w| w.state == "online")
    });
    assert!(replaced, "the hung worker was not replaced: {:#?}", agent.app("web").workers);
    // Retired: out of rotation, its stuck requests answered 504, then killed.
    assert!(wait_until(Duration::from_secs(15), || !deployer_tests::pid_alive(victim)), "the hung worker still runs");
    let failed_when_replaced = load.failed_so_far();
    assert!(load.wait_for_more(200, Duration::from_secs(15)), "nothing served after the replacement");
    let report = load.stop();
    eprintln!("load: {report}");

    assert_eq!(report.failed, failed_when_replaced, "requests failed after the replacement: {report}");
    assert!(report.by_kind.keys().all(|k| k == "status_504"), "only the stuck requests may fail: {report}");
    assert_eq!(timeouts_metric(&agent), report.failed, "every 504 is counted in /metrics");
    assert!(report.failed <= 20, "more requests failed than the 20 clients could have had on it: {report}");
}

#[test]
fn a_stopped_worker_is_cut_off_at_the_response_timeout_and_replaced() {
    a_hung_worker_costs_only_the_requests_already_on_it("none", |pid| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP)
            .expect("SIGSTOP the worker");
    });
}

#[test]
fn a_worker_that_accepts_and_never_answers_is_cut_off_and_replaced() {
    a_hung_worker_costs_only_the_requests_already_on_it("1", |_| {});
}

/// With the fd limit at 160, 300 connections that send nothing fill the fronts' budget, not the
/// fd table: the API still answers `/healthz` and a reload, the log shows no error storm, and
/// once the flood goes away the app serves again at once.
#[test]
fn a_connection_flood_under_a_low_fd_limit_leaves_the_api_and_reloads_working() {
    let agent = TestEnv::new().fd_limit(160).web(|a| a.set("front", "{ header_timeout: 3s }")).start();
    let port = agent.port("web");
    let flood: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(flood.len() >= 200, "only {} connections could be opened", flood.len());

    let health = agent.api_get("/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let reload = agent.reload("web", false);
    assert_eq!(reload.status, 200, "a reload during the flood: {}", reload.body);
    let storm = agent.log().matches("accept failed").count();
    assert!(storm <= 3, "{storm} accept errors logged");

    drop(flood);
    let served = wait_until(Duration::from_secs(10), || http::get(port, "/").is_ok_and(|r| r.status == 200));
    assert!(served, "the app did not serve again after the flood");
}

/// The API has a head deadline too: partial heads are closed, and `/healthz` answers meanwhile.
#[test]
fn partial_heads_on_the_api_are_closed_at_its_head_deadline() {
    let agent = TestEnv::new().start();
    let mut partial: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", agent.api_port())).expect("connect to the API");
            s.write_all(b"GET /v1/apps HTTP/1.1\r\nHost: a\r\n").expect("half a head");
            s
        })
        .collect();
    let health = http::get(agent.api_port(), "/healthz").expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let closed = wait_until(Duration::from_secs(20), || partial.iter_mut().all(is_closed));
    assert!(closed, "partial heads are still open on the API");
}

/// A client that pipelines requests to the API and then sends one it cannot parse gets the
/// answers to all the earlier ones before the connection closes. The API closed at once with the
/// client's bytes unread, the kernel reset the connection, and the reset destroyed the answers
/// still on their way (here, hundreds of KB of them).
#[test]
fn pipelined_api_requests_are_all_answered_before_a_malformed_one_closes_the_connection() {
    let agent = TestEnv::new().start();
    const N: usize = 300;
    let mut s = TcpStream::connect(("127.0.0.1", agent.api_port())).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let request = format!("GET /v1/apps HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\r\n", agent.token("admin"));
    let mut sent = request.repeat(N).into_bytes();
    sent.extend_from_slice(b"BAD\x01 / HTTP/1.1\r\n\r\n");
    sent.extend(std::iter::repeat_n(b'x', 256 << 10));
    // Everything is sent before anything is read, as a client busy writing does: the answers wait
    // in the sockets meanwhile. The API stops reading at the bad request, so the write may fail.
    let _ = s.write_all(&sent);
    // The client reads only once the API is done with the connection: a reset shows at once;
    // a close cannot (its end waits behind answers not read yet), so a moment is given instead.
    let mut ends = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&s), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut ends, 1, 2_000) };
    let mut answers = Vec::new();
    let ended = s.read_to_end(&mut answers);
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 200").count(), N, "{ended:?} after {} bytes", answers.len());
    assert!(ended.is_ok(), "the connection ended in {ended:?}, not a close");
}

/// Send `POST path` with a 24 MiB body to `port` whole, as a client that reads only once it has
/// written everything (Python's `http.client`, most scripts, a forge's webhook sender) does, then
/// read the answer: whether the whole body could be written, and the answer's first line.
fn send_whole_body_then_read(port: u16, path: &str) -> (std::io::Result<()>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = vec![b'a'; 24 << 20];
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sent = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body));
    let mut answer = Vec::new();
    // what came before an error is what the caller looks at
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    (sent, answer.lines().next().unwrap_or_default().to_string())
}

/// A sender refused before the API reads its body (here a webhook over its 1 MiB limit: 413)
/// must be able to finish writing it and read the refusal. The API's lingering close gave up
/// after 1 MiB of the body and closed with the rest unread: the kernel reset the connection, and
/// the sender's write failed with a broken pipe, so a client that stops there (Python's) never
/// read the 413 (GitHub's webhooks go up to 25 MB).
#[test]
fn a_sender_refused_before_its_large_body_was_read_still_gets_the_refusal() {
    let agent = TestEnv::new().start();
    let (sent, answer) = send_whole_body_then_read(agent.api_port(), "/hooks/web");
    assert!(sent.is_ok() && answer.starts_with("HTTP/1.1 413"), "sent: {sent:?}, answer: {answer:?}");
}

/// The same at the front: a body over `max_body` is refused with 413 before the worker sees it,
/// and the front's lingering close gave up after 1 MiB of it too.
#[test]
fn a_body_refused_by_the_front_can_be_sent_whole_and_its_413_read() {
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ max_body: 1M }")).start();
    let (sent, answer) = send_whole_body_then_read(agent.port("web"), "/upload");
    assert!(sent.is_ok() && answer.starts_with("HTTP/1.1 413"), "sent: {sent:?}, answer: {answer:?}");
}

#[test]
fn a_body_over_max_body_is_refused_with_413() {
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ max_body: 1K }")).start();
    let port = agent.port("web");
    let big = "x".repeat(5000);
    let r = http::request(port, "POST", "/", &[], Some(&big), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_body"), "{}", r.body);

    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let r = http::raw(port, chunked.as_bytes(), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 413, "{}", r.body);

    let small = "y".repeat(900);
    let r = http::request(port, "POST", "/", &[], Some(&small), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 200, "a body under the limit passes: {}", r.body);
}

/// `access_log: true`: one JSON line per request, with the request id the worker saw.
#[test]
fn the_access_log_has_a_line_per_request_with_the_id_the_worker_saw() {
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ access_log: true, max_body: 10 }")).start();
    let port = agent.port("web");
    let got = seen(port, "GET /one?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let id = got["headers"]["x-request-id"].as_str().expect("the front added an X-Request-Id").to_string();
    let got = seen(port, "GET /two HTTP/1.1\r\nHost: a\r\nX-Request-Id: mine-42\r\nConnection: close\r\n\r\n");
    assert_eq!(got["headers"]["x-request-id"], "mine-42", "a client's id travels on");
    let r = http::request(port, "POST", "/big", &[], Some("0123456789abcdef"), Duration::from_secs(10)).expect("413");
    assert_eq!(r.status, 413);

    let path = agent.dir().join("state/logs/web.access.log");
    let lines = deployer_tests::poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (lines.len() >= 2).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no access log lines in {}", path.display()));
    let one = lines.iter().find(|l| l["path"] == "/one?x=1").expect("a line for /one");
    assert_eq!(one["method"], "GET");
    assert_eq!(one["status"], 200);
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["peer"], "127.0.0.1");
    assert!(one["bytes"].as_u64().is_some_and(|b| b > 0) && one["ms"].is_u64() && one["worker"].is_u64(), "{one}");
    assert!(lines.iter().any(|l| l["path"] == "/two" && l["id"] == "mine-42"), "{lines:#?}");
}

/// An answer cut short after its head went out keeps the worker's status in the access log (the
/// client got that status line), so the line says why it was cut: the worker broke off, or the
/// client stopped taking it. Before, such a line could not be told from a complete answer.
#[test]
fn the_access_log_says_when_and_by_whom_an_answer_was_cut_short() {
    const CUTS: &str = r#"
const http = require('http');
http.createServer((req, res) => {
  if (req.url === '/broken') {
    res.writeHead(200, { 'content-length': '100000' });
    res.write('only the start');
    setTimeout(() => req.socket.destroy(), 50);
  } else if (req.url === '/huge') {
    res.writeHead(200, { 'content-length': String(64 << 20) });
    const chunk = Buffer.alloc(1 << 20, 120);
    let left = 64;
    const more = () => { while (left > 0) { left--; if (!res.write(chunk)) { res.once('drain', more); return; } } res.end(); };
    more();
  } else {
    res.end('whole');
  }
}).listen(Number(process.env.PORT));
"#;
    let agent = TestEnv::new()
        .web(|a| a.start(&["node", "-e", CUTS]).set("front", "{ access_log: true }"))
        .instances(1)
        .start();
    let port = agent.port("web");
    let whole = http::get(port, "/whole").expect("an answer");
    assert_eq!(whole.body, "whole");
    let mut broken = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    broken.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    broken.write_all(b"GET /broken HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    let mut got = Vec::new();
    let _ = broken.read_to_end(&mut got);
    let mut huge = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    huge.write_all(b"GET /huge HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    let mut start = [0u8; 4096];
    let n = huge.read(&mut start).expect("the answer starts");
    assert!(String::from_utf8_lossy(&start[..n]).starts_with("HTTP/1.1 200"));
    // Leaves with 64 MB still to come.
    drop(huge);

    let path = agent.dir().join("state/logs/web.access.log");
    let lines = deployer_tests::poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (lines.len() >= 3).then_some(lines)
    })
    .unwrap_or_else(|| panic!("not 3 access log lines: {:?}", std::fs::read_to_string(&path)));
    let cut_of = |p: &str| {
        let line = lines.iter().find(|l| l["path"] == p).unwrap_or_else(|| panic!("no line for {p}: {lines:#?}"));
        assert_eq!(line["status"], 200, "{line}");
        line["cut"].clone()
    };
    assert_eq!(cut_of("/whole"), Value::Null);
    assert_eq!(cut_of("/broken"), "worker");
    assert_eq!(cut_of("/huge"), "client");
}

/// The app with `health:` probes every 200 ms, whose worker 1 answers `/healthz` with 500 once
/// `marker` exists; answers the agent and the sick worker's pid.
pub(crate) fn sickening_app(env: TestEnv, dir: &std::path::Path) -> (deployer_tests::Agent, u32) {
    let agent = env
        .web(|a| {
            a.start(&["node", &fixture("sickens.js")])
                .env("SICK_ONCE_FILE", &dir.join("sick-once").display().to_string())
                .env("SICK_MARKER", &dir.join("sick-now").display().to_string())
                .env("DELAY_MS", "20")
                .set("health", "{ http: /healthz, interval: 200ms, timeout: 1s, failures: 3 }")
        })
        .start();
    let sick = agent.wait_online("web", 2)[1].pid.expect("a pid");
    (agent, sick)
}

/// Active health: a worker whose own `/healthz` starts failing while it still serves `/` leaves
/// the rotation after `failures` probes and is replaced through the reload path, its replacement
/// ready first: clients on `/` see no failure at all.
#[test]
fn a_worker_failing_its_health_probes_is_replaced_without_failing_a_request() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (agent, sick) = sickening_app(TestEnv::new(), dir.path());
    let load = Load::start(agent.port("web"), 20, true);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    // Healthy probes do nothing: the same two workers serve.
    assert!(!wait_until(Duration::from_secs(1), || !agent.pids("web").contains(&sick)), "replaced while healthy");

    std::fs::write(dir.path().join("sick-now"), "").expect("the marker");
    let replaced = wait_until(Duration::from_secs(20), || {
        let pids = agent.pids("web");
        pids.len() == 2 && !pids.contains(&sick) && agent.app("web").workers.iter().all(|w| w.state == "online")
    });
    assert!(replaced, "the sick worker was not replaced: {:#?}", agent.app("web").workers);
    assert!(wait_until(Duration::from_secs(15), || !deployer_tests::pid_alive(sick)), "the sick worker still runs");
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "nothing served after the replacement");
    let report = load.stop();
    eprintln!("load: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(agent.log().contains("failed health probes in a row"), "{}", agent.log());
}

/// A flood of silent connections on one app's port takes at most its share of the fronts'
/// budget: another app on the same agent is still served.
#[test]
fn a_flood_on_one_apps_port_leaves_another_app_served() {
    let agent = TestEnv::new()
        .fd_limit(160)
        .web(|a| a.set("front", "{ header_timeout: 60s }"))
        .app(deployer_tests::AppSpec::new("other"))
        .start();
    let flood: Vec<TcpStream> =
        (0..100).filter_map(|_| TcpStream::connect(("127.0.0.1", agent.port("web"))).ok()).collect();
    assert!(flood.len() >= 50, "only {} connections could be opened", flood.len());
    // The flooded front has taken all it may (its share of a 40-connection budget).
    let other = agent.port("other");
    let served = wait_until(Duration::from_secs(10), || {
        http::request(other, "GET", "/", &[], None, Duration::from_secs(3)).is_ok_and(|r| r.status == 200)
    });
    assert!(served, "the other app was not served while web was flooded");
    drop(flood);
}

/// Two `Host` lines: Node keeps the first as `Host`, the front named the last in
/// `X-Forwarded-Host`, so an app behind `trust proxy` checked one name and built its links from the
/// other (a host-header attack past an allow-list). RFC 9112 says 400; nginx answers 400.
#[test]
fn a_request_with_two_hosts_is_refused() {
    let agent = echo_app(TestEnv::new()).start();
    let raw = "GET / HTTP/1.1\r\nHost: app.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let r = http::raw(agent.port("web"), raw.as_bytes(), Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 400, "{}", r.body);
}

/// `max_body` limits the body, not its chunked framing: 1000 bytes in 10-byte chunks (1.5 KB on
/// the wire) are under a 1 KB limit, 1100 bytes in 100-byte chunks are over it.
#[test]
fn max_body_counts_a_chunked_bodys_data_not_its_framing() {
    let agent = echo_app(TestEnv::new()).web(|a| a.set("front", "{ max_body: 1K }")).start();
    let port = agent.port("web");
    let chunked = |size: usize, chunk: usize| {
        let mut raw =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
        for _ in 0..size / chunk {
            raw.push_str(&format!("{chunk:x}\r\n{}\r\n", "x".repeat(chunk)));
        }
        raw.push_str("0\r\n\r\n");
        http::raw(port, raw.as_bytes(), Duration::from_secs(10)).expect("an answer")
    };
    let r = chunked(1000, 10);
    assert_eq!(r.status, 200, "1000 bytes under a 1 KB limit: {}", r.body);
    let r = chunked(1100, 100);
    assert_eq!(r.status, 413, "1100 bytes over a 1 KB limit: {}", r.body);
}

/// The heads the front refuses itself (400, 413 on a `Content-Length`, 431, 408, 501) are
/// requests too: each gets its line in the access log with its status, which is where an
/// operator looks for them. They had none. A connection closed without sending a byte has none.
#[test]
fn the_access_log_has_a_line_for_each_request_the_front_refused() {
    let agent = echo_app(TestEnv::new())
        .web(|a| a.set("front", "{ access_log: true, max_body: 10, header_timeout: 1s }"))
        .start();
    let port = agent.port("web");
    let refused = |raw: &str| http::raw(port, raw.as_bytes(), Duration::from_secs(10)).expect("an answer").status;
    assert_eq!(refused("POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"), 400);
    assert_eq!(refused("POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"), 413);
    let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(refused(&format!("GET /many HTTP/1.1\r\nHost: a\r\n{many}\r\n")), 431);
    assert_eq!(refused("POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
    assert_eq!(refused("GET /slow HTTP/1.1\r\nHost: a\r\n"), 408);
    // A connection that never sends a byte is cut at the head deadline without a line.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = silent.read_to_end(&mut Vec::new());
    assert_eq!(refused("GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 200);

    let path = agent.dir().join("state/logs/web.access.log");
    let lines = deployer_tests::poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        lines.iter().any(|l| l["path"] == "/last").then_some(lines)
    })
    .unwrap_or_else(|| panic!("no line for /last in {}", path.display()));
    let statuses: Vec<u64> = lines.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [400, 413, 431, 501, 408, 200], "{lines:#?}");
    let large = &lines[1];
    assert_eq!((large["method"].as_str(), large["path"].as_str()), (Some("POST"), Some("/large")), "{large}");
    assert!(large["id"].as_str().is_some_and(|id| !id.is_empty()), "{large}");
}

/// A SIGHUP that turns the access log on reaches connections already open for the heads the
/// front refuses too: the rules were looked at only once a whole head had come, so a head that
/// timed out (408) or overflowed (431) on a connection opened before the change had no line.
#[test]
fn a_refused_head_on_a_connection_opened_before_the_access_log_was_turned_on_has_its_line() {
    let mut agent =
        echo_app(TestEnv::new()).web(|a| a.set("front", "{ header_timeout: 2s, idle_timeout: 60s }")).start();
    let port = agent.port("web");
    let mut open = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    open.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n").expect("send");
    let mut first = [0u8; 12];
    open.read_exact(&mut first).expect("the first answer");
    assert_eq!(&first, b"HTTP/1.1 200");

    agent.reconfigure(|env| env.web(|a| a.set("front", "{ header_timeout: 2s, idle_timeout: 60s, access_log: true }")));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let path = agent.dir().join("state/logs/web.access.log");
    let logged = |wanted: &str| {
        deployer_tests::poll(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&path).ok()?;
            text.lines().any(|l| l.contains(wanted)).then_some(())
        })
        .is_some()
    };
    let applied = wait_until(Duration::from_secs(20), || {
        http::get(port, "/new").is_ok_and(|r| r.status == 200) && logged("\"path\":\"/new\"")
    });
    assert!(applied, "the access log was never turned on");
    // The rest of the first answer, then a head that never ends on the old connection.
    let mut rest = Vec::new();
    let _ = open.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = open.read_to_end(&mut rest);
    open.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    open.write_all(b"GET /never-ends HTTP/1.1\r\nHost: a\r\n").expect("send");
    let mut answer = Vec::new();
    let _ = open.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(logged("\"status\":408"), "{}", std::fs::read_to_string(&path).unwrap_or_default());
}
