//! Rolling reloads: new workers first, old ones drained and retired, no request failed.

use deployer_tests::{Agent, Load, LoadReport, TestEnv, fixture, pid_alive};
use deployer_wire::{ApiError, ReloadOutcome};
use std::time::Duration;

/// Clients hitting the app during a reload.
const CONNS: usize = 50;
/// At 50 clients and a 200 ms answer the app serves ~250 requests a second, so ~2 s of load.
const MIN_OK: u64 = 350;

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
    assert!(load.wait_for_more(250, Duration::from_secs(15)), "the new workers did not serve");
    let report = load.stop();
    eprintln!("reload: {outcome:?}\nload: {report}");

    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.replaced as usize, before.len(), "{outcome:?}");
    assert_eq!(after.len(), before.len(), "as many workers after as before");
    assert!(after.iter().all(|p| !before.contains(p)), "every worker replaced: before {before:?}, after {after:?}");
    for pid in &before {
        assert!(!pid_alive(*pid), "old worker {pid} still runs after the reload");
    }
    for pid in before.iter().chain(&after) {
        assert!(report.saw(&format!("pid {pid}\n")), "worker {pid} served none of the load: {report}");
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
    let agent =
        TestEnv::new().start_command(&["node", &fixture("ignores-usr2.js")]).reload("kill_timeout", "1s").start();
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
    assert!(node_runs("app.js", &agent.app_dir("web")), "the old workers are not seen running");
    assert!(!node_runs(&fixture("never-ready.js"), &agent.app_dir("web")), "a never-ready worker was left running");

    // The CLI says so with its exit code.
    let cli = agent.cli(&["reload", "web", "--update-env"]).failure(1);
    assert!(cli.stderr.contains("reload of `web` failed"), "{cli}");
    assert_eq!(agent.pids("web"), before);
}

#[test]
fn a_reload_that_fails_halfway_puts_the_previous_release_back_on_the_slots_it_replaced() {
    let mut agent = TestEnv::new().start();
    let before = agent.wait_online("web", 2);
    let old_hash = before[0].env_hash.clone();
    // The new release serves on instance 0 and never gets ready on instance 1.
    agent.reconfigure(|env| {
        // Long enough for instance 0 to boot on a busy machine: it must pass for the roll to fail halfway.
        env.start_command(&["node", &fixture("never-ready.js")]).env("NEVER_READY_INSTANCE", "1").ready_timeout("3s")
    });

    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the load did not get going");
    let r = agent.reload("web", true);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the app stopped serving");
    let report = load.stop();

    assert_eq!(r.status, 409, "{}", r.body);
    let err: ApiError = r.json();
    assert_eq!(err.code, "reload_failed", "{err:?}");
    assert!(err.message.contains("worker 1"), "the roll stopped at instance 0, not halfway: {err:?}");
    assert!(err.message.contains("the previous workers are serving"), "{err:?}");
    assert_eq!(report.failed, 0, "{report}");
    let after = agent.wait_online("web", 2);
    assert!(after.iter().all(|w| w.env_hash == old_hash), "a worker of the failed release is left: {after:#?}");
    assert_eq!(after[1].pid, before[1].pid, "instance 1 was never replaced");
    let back = after[0].pid.expect("a pid");
    assert_ne!(Some(back), before[0].pid, "instance 0 was replaced, then put back with a new process");
    assert_eq!(cmdline(back)[1..], ["app.js"], "instance 0 runs the previous release again");
    assert!(!node_runs(&fixture("never-ready.js"), &agent.app_dir("web")), "a worker of the failed release still runs");
}

/// How long a reload of the 2 workers takes when each new worker is ready only after `alive`.
fn reload_time(agent: &Agent) -> Duration {
    let asked = std::time::Instant::now();
    let r = agent.reload("web", false);
    assert_eq!(r.status, 200, "{}", r.body);
    asked.elapsed()
}

#[test]
fn without_max_surge_a_small_app_replaces_every_worker_at_once_and_fails_nothing() {
    // Each new worker is ready 3 s after its start: one at a time, a reload of 2 takes 6 s or
    // more; together, one wait.
    let agent = TestEnv::new().ready_check("alive: 3s").ready_timeout("20s").reload_default("max_surge").start();
    let load = Load::start(agent.port("web"), CONNS, true);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the load did not get going");
    let together = reload_time(&agent);
    let report = load.stop();
    assert_eq!(report.failed, 0, "{report}");
    assert!(together < Duration::from_secs(6), "the workers were replaced one after the other: {together:?}");
    drop(agent);

    let agent = TestEnv::new().ready_check("alive: 3s").ready_timeout("20s").reload("max_surge", "1").start();
    let one_by_one = reload_time(&agent);
    assert!(one_by_one >= Duration::from_secs(6), "`max_surge: 1` replaced them together: {one_by_one:?}");
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

#[test]
fn reload_update_env_with_a_malformed_env_file_fails_and_keeps_the_workers() {
    let agent = TestEnv::new().start();
    let before = agent.pids("web");
    agent.write_env_file("web", "GREETING hello\n");

    let r = agent.reload("web", true);
    assert_eq!(r.status, 409, "{}", r.body);
    let err: ApiError = r.json();
    assert_eq!(err.code, "reload_failed", "{err:?}");
    assert!(err.message.contains(".env:1:1: expected `KEY=VALUE`"), "{err:?}");
    assert_eq!(agent.pids("web"), before);
    assert!(greetings(agent.port("web")).iter().all(|g| g == "hello"));
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

fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Whether some live process runs `node <script>` in `cwd` (this test's app, not another's).
fn node_runs(script: &str, cwd: &std::path::Path) -> bool {
    let cwd = cwd.canonicalize().expect("the app dir");
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        let runs_script = cmdline(pid).iter().any(|a| a == script);
        let here = std::fs::read_link(e.path().join("cwd")).is_ok_and(|d| d == cwd);
        runs_script && here && pid_alive(pid)
    })
}
