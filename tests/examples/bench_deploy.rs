//! The agent's own overhead in a deploy: from the deploy request to the first new worker spawned,
//! with no install step, for a commit of the example app.
//!
//! `cargo run --release -p deployer-tests --example bench_deploy [-- --runs N]`
//!
//! Starts a release build of the agent on a git repository made with the git CLI, then per run:
//! commit, `POST /v1/apps/web/deploys`, and poll the app's workers until one of the new release
//! shows up. Its spawn time is the answer's time minus its uptime, on the agent's clock, so the
//! polling interval does not count. Goal: < 200 ms. What it covers: the API call, the queue, the
//! fetch of the branch (git2, from a local path), materialising the release, the shared links, the
//! roll's first spawn.

use deployer_tests::{TestEnv, TestRepo, poll};
use deployer_wire::AppStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut runs = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--runs", Some(n)) => runs = n,
            _ => panic!("usage: bench_deploy [--runs N]"),
        }
    }

    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).env("DELAY_MS", "0")).start();
    let mut to_spawn = Vec::new();
    let mut to_live = Vec::new();
    for run in 0..runs {
        let before = agent.app("web").workers.first().map(|w| w.release.clone()).unwrap_or_default();
        repo.commit_greeting(&format!("run{run}"));
        let asked = now_ms();
        let id = agent.deploy("web", "main");
        let spawned = poll(Duration::from_secs(30), || {
            let r = agent.api_get("/v1/apps/web");
            let seen = now_ms();
            let status: AppStatus = r.json();
            let w = status.workers.iter().find(|w| w.release != before && w.pid.is_some())?;
            Some(seen - w.uptime_ms as f64)
        })
        .expect("a new worker within 30 s");
        let d = agent.wait_deploy(id);
        assert_eq!(d.state, "live", "{d:#?}");
        to_spawn.push(spawned - asked);
        to_live.push(d.finished_at_ms.unwrap_or(0) as f64 - d.queued_at_ms as f64);
    }
    drop(agent);
    report("request -> first new worker spawned", &mut to_spawn);
    report("request -> live (2 workers, node startup, readiness)", &mut to_live);
}

fn report(what: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} deploys",
        at(0.5),
        at(0.9),
        at(1.0),
        ms.len()
    );
}
