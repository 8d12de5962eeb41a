//! The fleet-mode push benchmark (issue 14): N agents on loopback joined to one `nats-server
//! -js` (started by the test support), each deploying the example app (1 worker, empty install)
//! from one git repository; `deployer push` with `canary: 0, max_parallel: M` over the engine.
//! Prints the push's total wall time, the slowest host's own deploy (queued to live, as the agent
//! recorded it), how long after the push the first and last host's deploy was queued (the
//! coordination's latency), and the overhead: total - (the waves' critical path).
//!
//! Run: `cargo run -p deployer-tests --example fleet_bench [-- HOSTS [MAX_PARALLEL]]`

use deployer_tests::{NatsServer, TestFleet, TestRepo, wait_until};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let m: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(25);
    let nats = NatsServer::start();
    let urls = [nats.url()];
    eprintln!("starting {n} agents…");
    let t = Instant::now();
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), n, &urls, "bench", |_, app| {
        app.instances(1).set("install", "\"true\"")
    });
    eprintln!("{n} agents up in {:.1}s", t.elapsed().as_secs_f64());
    fleet.write_nats_file("bench", &urls, &format!("{{ canary: 0, max_parallel: {m} }}"));
    let joined = wait_until(Duration::from_secs(60), || {
        let out = fleet.cli(&["status", "bench", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout).ok().and_then(|v| v.as_array().map(Vec::len)) == Some(n)
    });
    assert!(joined, "not every agent joined");
    let sha = fleet.repo.commit_greeting("bench");

    let (t, pushed_at) = (Instant::now(), now_ms());
    let out = fleet.cli(&["push", "bench", "--json"]);
    let total = t.elapsed().as_millis() as u64;
    assert!(out.status.success(), "the push failed\n{out}");

    let mut deploys: Vec<(u64, u64)> = fleet
        .agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let d = &agent.history("web")[0];
            assert_eq!((d.state.as_str(), d.sha.as_deref()), ("live", Some(sha.as_str())), "host {i}");
            (d.queued_at_ms, d.finished_at_ms.expect("final"))
        })
        .collect();
    deploys.sort_unstable();
    let took: Vec<u64> = deploys.iter().map(|(q, f)| f - q).collect();
    let slowest = took.iter().copied().max().unwrap_or(0);
    // The waves' critical path: hosts in start order, `m` at a time, each wave as long as its slowest.
    let path: u64 = took.chunks(m.max(1)).map(|w| w.iter().copied().max().unwrap_or(0)).sum();
    let first_queued = deploys.first().map_or(0, |(q, _)| q.saturating_sub(pushed_at));
    let last_queued = deploys.last().map_or(0, |(q, _)| q.saturating_sub(pushed_at));
    let s = |ms: u64| ms as f64 / 1000.0;
    println!("hosts:                         {n} (canary 0, max_parallel {m}, empty install, 1 worker each)");
    println!("total wall time of the push:   {:.2}s", s(total));
    println!("slowest host's deploy:         {:.2}s", s(slowest));
    println!("first / last deploy queued at: {:.2}s / {:.2}s after the push began", s(first_queued), s(last_queued));
    println!("waves' critical path:          {:.2}s", s(path));
    println!("coordination overhead:         {:.2}s (total - critical path)", s(total.saturating_sub(path)));
}
