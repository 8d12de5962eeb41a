//! Rolling reloads: new workers first, old ones drained and retired, no request failed.

use deployer_tests::{Agent, Load, LoadReport, TestEnv, fixture, pid_alive};
use deployer_wire::{ApiError, ReloadOutcome};
use std::time::Duration;

/// Clients hitting the app during a reload, as in `shared/bench/loadcheck.py --conns 50`.
const CONNS: usize = 50;
/// At 50 clients and a 200 ms answer the app serves ~250 requests a second: a load that made
/// fewer than this did not really run through the reload.
const MIN_OK: u64 = 300;

/// Reload `web` while [`CONNS`] clients hammer its public port; check that the reload answered
/// 200, replaced every worker, and that the new workers served the load afterwards.
pub(crate) fn reload_under_load(agent: &Agent, keepalive: bool) -> (ReloadOutcome, LoadReport) {
    let before = agent.pids("web");
    let load = Load::start(agent.port("web"), CONNS, keepalive);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the load did not get going");

    let r = agent.reload("web", false);
    assert_eq!(r.status, 200, "reload: {}", r.body);
    let outcome: ReloadOutcome = r.json();
    let after = agent.pids("web");
    assert!(load.wait_for_more(150, Duration::from_secs(15)), "the new workers did not serve");
    let report = load.stop();

    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.replaced as usize, before.len(), "{outcome:?}");
    assert_eq!(after.len(), before.len(), "as many workers after as before");
    assert!(after.iter().all(|p| !before.contains(p)), "every worker replaced: before {before:?}, after {after:?}");
    for pid in &before {
        assert!(!pid_alive(*pid), "old worker {pid} still runs after the reload");
    }
    for pid in &after {
        assert!(report.saw(&format!("pid {pid}\n")), "new worker {pid} served nothing: {report}");
    }
    assert!(report.ok >= MIN_OK, "too few requests to mean anything: {report}");
    (outcome, report)
}

// The example app installs no signal handler, so SIGUSR2 kills it at once: these two tests are
// also the case of an app that does nothing to help a reload. The front takes an old worker out
// of rotation and drains it before the signal, so its sudden death fails nothing.

#[test]
fn reload_under_50_clients_with_a_connection_per_request_fails_nothing() {
    let agent = TestEnv::new().start();
    let (_, report) = reload_under_load(&agent, false);
    assert_eq!(report.failed, 0, "{report}");
}

#[test]
fn reload_under_50_keep_alive_clients_fails_nothing() {
    let agent = TestEnv::new().start();
    let (_, report) = reload_under_load(&agent, true);
    assert_eq!(report.failed, 0, "{report}");
}

#[test]
fn reload_kills_workers_that_ignore_the_signal_after_kill_timeout() {
    let agent = TestEnv::new()
        .start_command(&["node", &fixture("ignores-usr2.js")])
        .reload("kill_timeout", "1s")
        .start();
    let (outcome, report) = reload_under_load(&agent, false);
    assert_eq!(report.failed, 0, "{report}");
    // Two workers, one at a time, each given the full kill_timeout before SIGKILL.
    assert!(outcome.duration_ms >= 2000, "the old workers did not wait out kill_timeout: {outcome:?}");
    let logs = agent.cli(&["logs", "web", "-n", "200"]).success();
    assert!(logs.stdout.contains("SIGUSR2 ignored"), "the signal never reached them:\n{logs}");
}

#[test]
fn a_release_that_never_gets_ready_fails_the_reload_and_the_old_workers_keep_serving() {
    let mut agent = TestEnv::new().start();
    let before = agent.pids("web");
    agent.reconfigure(|env| env.start_command(&["node", &fixture("never-ready.js")]).ready_timeout("1s"));

    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the load did not get going");
    let r = agent.reload("web", true);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the old workers stopped serving");
    let report = load.stop();

    assert_eq!(r.status, 409, "{}", r.body);
    let err: ApiError = r.json();
    assert_eq!(err.code, "reload_failed", "{err:?}");
    assert!(err.message.contains("not ready"), "{err:?}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(before.iter().all(|p| report.saw(&format!("pid {p}\n"))), "the old workers served throughout: {report}");
    let status = agent.app("web");
    assert_eq!(status.state, "running");
    assert!(status.workers.iter().all(|w| w.state == "online"), "{status:#?}");
    assert_eq!(agent.pids("web"), before, "the old workers are the same processes");
    assert!(!node_runs(&fixture("never-ready.js")), "a never-ready worker was left running");

    // The CLI says so with its exit code.
    let cli = agent.cli(&["reload", "web", "--update-env"]).failure(1);
    assert!(cli.stderr.contains("reload of `web` failed"), "{cli}");
    assert_eq!(agent.pids("web"), before);
}

#[test]
fn plain_reload_keeps_the_env_and_reload_update_env_reads_the_new_env_file() {
    let agent = TestEnv::new().env_file("GREETING=hello\n").start();
    let port = agent.port("web");
    let first_hash = agent.app("web").workers[0].env_hash.clone();
    assert!(greetings(port).iter().all(|g| g == "hello"));

    agent.write_env_file("web", "GREETING=bonjour\n");
    let plain = agent.reload("web", false);
    assert_eq!(plain.status, 200, "{}", plain.body);
    let status = agent.app("web");
    assert!(status.workers.iter().all(|w| w.env_hash == first_hash), "a plain reload changed the env: {status:#?}");
    assert!(greetings(port).iter().all(|g| g == "hello"), "a plain reload read the new env_file");

    let cli = agent.cli(&["reload", "web", "--update-env"]).success();
    let status = agent.app("web");
    let new_hash = &status.workers[0].env_hash;
    assert_ne!(*new_hash, first_hash, "the env hash did not change");
    assert!(status.workers.iter().all(|w| w.env_hash == *new_hash), "{status:#?}");
    assert!(cli.stdout.contains("reloaded web") && cli.stdout.contains(new_hash.as_str()), "{cli}");
    assert!(greetings(port).iter().all(|g| g == "bonjour"), "the new workers did not get the new GREETING");
}

/// The greeting of a few answers in a row (enough to reach every worker).
fn greetings(port: u16) -> Vec<String> {
    (0..4)
        .map(|_| {
            let r = deployer_tests::http::get(port, "/").expect("GET /");
            assert_eq!(r.status, 200, "{}", r.body);
            r.body.split(" from worker").next().unwrap_or_default().to_string()
        })
        .collect()
}

/// Whether some live process runs `node <script>`.
fn node_runs(script: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { return false };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.iter().any(|a| *a == script.as_bytes()) && pid_alive(pid)
    })
}
