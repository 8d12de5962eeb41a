//! The agent's streaming routes (Server-Sent Events) and `/metrics`, over raw HTTP.

use deployer_tests::{TestEnv, TestRepo, http};
use deployer_wire::{DeployStreamItem, LogLine};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `data:` of every SSE message of `event` in `body`, in order.
fn sse_data<'a>(body: &'a str, event: &str) -> Vec<&'a str> {
    body.split("\n\n")
        .filter(|m| m.lines().any(|l| l == format!("event: {event}")))
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect()
}

fn items(body: &str) -> Vec<DeployStreamItem> {
    body.split("\n\n")
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("not an item ({e}): {d}")))
        .collect()
}

#[test]
fn deploy_events_follow_a_deploy_to_its_end_then_replay_it() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let v2 = repo.commit_greeting("v2");
    let id = agent.deploy("web", &v2);

    // Followed live: the request returns when the deploy is final, because the stream ends.
    let auth = format!("Bearer {}", agent.token("admin"));
    let path = format!("/v1/deploys/{id}/events");
    let live =
        http::request(agent.api_port(), "GET", &path, &[("Authorization", &auth)], None, Duration::from_secs(30))
            .expect("the stream");
    assert_eq!(live.status, 200, "{}", live.body);
    assert!(live.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{:?}", live.headers);
    let got = items(&live.body);
    let states: Vec<&str> = got
        .iter()
        .filter_map(|i| match i {
            DeployStreamItem::Event(e) if e.state != "log" => Some(e.state.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["queued", "fetching", "building", "rolling", "live"], "{}", live.body);
    let seqs: Vec<u64> =
        got.iter().filter_map(|i| if let DeployStreamItem::Event(e) = i { Some(e.seq) } else { None }).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    match got.last() {
        Some(DeployStreamItem::End(d)) => {
            assert_eq!((d.id, d.state.as_str(), d.sha.as_deref()), (id, "live", Some(v2.as_str())))
        }
        other => panic!("the stream must end with `end`: {other:?}"),
    }
    assert_eq!(sse_data(&live.body, "end").len(), 1);

    // Asked again once final: the same events, replayed, and the end.
    let replay =
        http::request(agent.api_port(), "GET", &path, &[("Authorization", &auth)], None, Duration::from_secs(10))
            .expect("the replay");
    assert_eq!(items(&replay.body), got);

    let missing = agent.api_get("/v1/deploys/9999/events");
    assert_eq!(missing.status, 404, "{}", missing.body);
    let anonymous = agent.api_request("GET", &path, None, None);
    assert_eq!(anonymous.status, 401);
}

#[test]
fn logs_follow_streams_new_lines() {
    let agent = TestEnv::new().start();
    let mut s = TcpStream::connect(("127.0.0.1", agent.api_port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let req = format!(
        "GET /v1/apps/web/logs?lines=0&follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        agent.token("admin")
    );
    s.write_all(req.as_bytes()).expect("send");
    // The lines of workers started after the stream opened: a reload starts two.
    let reloaded = std::thread::scope(|scope| {
        let reload = scope.spawn(|| agent.reload("web", false));
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && seen.matches("Server listening").count() < 2 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        assert_eq!(reload.join().expect("reload").status, 200);
        seen
    });
    assert!(reloaded.starts_with("HTTP/1.1 200"), "{reloaded}");
    let lines: Vec<LogLine> = reloaded
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("a log line"))
        .collect();
    let listening: Vec<&LogLine> = lines.iter().filter(|l| l.line.starts_with("Server listening")).collect();
    assert_eq!(listening.len(), 2, "{reloaded}");
    assert!(listening.iter().all(|l| l.stream == "out"));
}

#[test]
fn metrics_count_deploys_workers_and_front_requests() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    for _ in 0..3 {
        assert_eq!(http::get(agent.port("web"), "/").expect("a request").status, 200);
    }
    assert_eq!(agent.reload("web", false).status, 200);
    let r = agent.api_get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    let value = |series: &str| -> f64 {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no `{series}` in\n{}", r.body))
    };
    assert_eq!(value("deployer_deploys{app=\"web\",state=\"live\"}"), 1.0);
    assert_eq!(value("deployer_workers{app=\"web\",state=\"online\"}"), 2.0);
    assert!(value("deployer_front_requests_total{app=\"web\"}") >= 3.0);
    assert_eq!(value("deployer_front_errors_total{app=\"web\"}"), 0.0);
    assert_eq!(value("deployer_reload_duration_seconds_count{app=\"web\",ok=\"true\"}"), 1.0);
    assert!(r.body.contains("# TYPE deployer_webhook_rejections_total counter"));
    assert_eq!(agent.api_request("GET", "/metrics", None, None).status, 401);
}
