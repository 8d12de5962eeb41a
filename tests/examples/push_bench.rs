//! The fleet push benchmark: `deployer push` to N agents on loopback (default 20), each deploying
//! the example app from one git repository with an empty install step, `max_parallel: N`.
//! Prints the push's total wall time and the slowest host's own deploy time (queued to live, as
//! the agent recorded it); the goal is total < slowest + 2 s.
//!
//! Run: `cargo run -p deployer-tests --example push_bench [-- HOSTS]`

use deployer_tests::{TestFleet, TestRepo};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    eprintln!("starting {n} agents…");
    let t = Instant::now();
    let fleet = TestFleet::start(TestRepo::with_example_app(), n, |_, app| app.instances(1));
    eprintln!("{n} agents up in {:.1}s", t.elapsed().as_secs_f64());
    let sha = fleet.repo.commit_greeting("bench");
    fleet.write_file("bench", &fleet.hosts(), &format!("{{ canary: 0, max_parallel: {n}, halt_on_failure: true }}"));

    let t = Instant::now();
    let out = fleet.cli(&["push", "bench", "--json"]);
    let total = t.elapsed();
    assert!(out.status.success(), "the push failed\n{out}");

    let results: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON results");
    let cli_slowest =
        results.as_array().expect("an array").iter().filter_map(|r| r["duration_ms"].as_u64()).max().unwrap_or(0);
    let (mut slowest, mut fastest) = (0u64, u64::MAX);
    for (i, agent) in fleet.agents.iter().enumerate() {
        let d = &agent.history("web")[0];
        assert_eq!((d.state.as_str(), d.sha.as_deref()), ("live", Some(sha.as_str())), "host {i}");
        let took = d.finished_at_ms.expect("final") - d.queued_at_ms;
        slowest = slowest.max(took);
        fastest = fastest.min(took);
    }
    let total_ms = total.as_millis() as u64;
    println!("hosts:                       {n} (max_parallel {n}, empty install, 1 worker each)");
    println!("total wall time of the push: {:.2}s", total_ms as f64 / 1000.0);
    println!("slowest host's deploy:       {:.2}s (fastest {:.2}s)", slowest as f64 / 1000.0, fastest as f64 / 1000.0);
    println!("slowest host seen by the CLI {:.2}s (request to end of stream)", cli_slowest as f64 / 1000.0);
    println!(
        "overhead (total - slowest):  {:.2}s  goal < 2 s: {}",
        (total_ms.saturating_sub(slowest)) as f64 / 1000.0,
        if total_ms < slowest + 2000 { "met" } else { "NOT met" }
    );
}
