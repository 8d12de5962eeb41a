//! The trigger numbers of issue 4, against the real agent:
//!   1. webhook -> 202 latency over 1000 signed GitHub push deliveries (median, p99), and over
//!      1000 deliveries for another branch (verified and ignored, no deploy);
//!   2. `git commit` in the app's repo -> first new worker spawned, with `poll: 1s` (and -> live).
//!
//! Run: `cargo run -p deployer-tests --example bench_triggers [--release]`. The agent is built
//! in the same profile as this example.

use deployer_tests::{AppSpec, GithubPush, TestEnv, TestRepo, wait_until};
use std::time::{Duration, Instant, SystemTime};

const SECRET: &str = "bench-secret";

fn main() {
    webhook_latency();
    poll_latency();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{label}: n={} median={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

fn webhook_latency() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new()
        .web(|a: AppSpec| {
            a.repo(&repo).instances(2).set("webhook", "{ provider: github, secret_env: BENCH_GH_SECRET }")
        })
        .agent_env("BENCH_GH_SECRET", SECRET)
        .start();
    let head = repo.head();
    // Warm up the connection path.
    for i in 0..20 {
        GithubPush::new(Some(SECRET), "other", &head, &format!("warm-{i}"), "bench").send(&agent, "web");
    }
    let mut ignored = Vec::new();
    for i in 0..1000 {
        let push = GithubPush::new(Some(SECRET), "other", &head, &format!("other-{i}"), "bench");
        let t = Instant::now();
        let r = push.send(&agent, "web");
        ignored.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    report("webhook -> 202, push to another branch (ignored)", ignored);
    let mut pushes = Vec::new();
    for i in 0..1000 {
        if i % 100 == 0 {
            repo.commit_greeting(&format!("bench-{i}"));
        }
        let push = GithubPush::new(Some(SECRET), "main", &repo.head(), &format!("push-{i}"), "bench");
        let t = Instant::now();
        let r = push.send(&agent, "web");
        pushes.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    report("webhook -> 202, push to the branch (deploy queued or joined, deploys running meanwhile)", pushes);
    let deploys = agent.history("web").iter().filter(|d| d.trigger == "webhook").count();
    println!("  1000 pushes of 10 commits made {deploys} deploys");
}

/// Milliseconds since the epoch of a log line's RFC 3339 timestamp.
fn log_time_ms(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?;
    let t = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(t.timestamp_millis() as u64)
}

fn poll_latency() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(2).set("poll", "1s")).start();
    let (mut to_spawn, mut to_live) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let seen = agent.log().matches("worker started").count();
        let t0 = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let sha = repo.commit_greeting(&format!("poll-{i}"));
        let spawned = || agent.log().lines().filter(|l| l.contains("worker started")).nth(seen).and_then(log_time_ms);
        assert!(wait_until(Duration::from_secs(30), || spawned().is_some()), "no new worker:\n{}", agent.log());
        to_spawn.push((spawned().unwrap().saturating_sub(t0)) as f64);
        let live =
            || agent.history("web").into_iter().find(|d| d.sha.as_deref() == Some(sha.as_str()) && d.state == "live");
        assert!(wait_until(Duration::from_secs(60), || live().is_some()), "not live: {:#?}", agent.history("web"));
        to_live.push((live().unwrap().finished_at_ms.unwrap_or(t0).saturating_sub(t0)) as f64);
    }
    report("git commit -> first new worker spawned (poll: 1s)", to_spawn);
    report("git commit -> deploy live, 2 workers rolled (poll: 1s)", to_live);
}
