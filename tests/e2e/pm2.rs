//! Apps written for PM2 run unchanged: readiness and shutdown over Node's IPC channel
//! (`ready: { message: true }`, `ipc: true`).

use deployer_tests::{Agent, Load, TestEnv, fixture, pid_alive};
use deployer_wire::{ApiError, ReloadOutcome};
use std::time::Duration;

/// Clients hitting the app during reloads.
const CONNS: usize = 30;

/// The PM2 app behind the `http` front, ready by message, 2 workers.
fn pm2_app() -> TestEnv {
    TestEnv::new()
        .start_command(&["node", &fixture("pm2-app.js")])
        .ready_check("message: true")
        // Long: a worker that missed its 'shutdown' would make each reload this slow, not fail it.
        .reload("kill_timeout", "8s")
}

/// `n` reloads of `web` under load; answers the pids each reload retired and the load's report.
fn reloads_under_load(agent: &Agent, n: usize) -> (Vec<u32>, deployer_tests::LoadReport) {
    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let mut retired = Vec::new();
    for i in 0..n {
        let before = agent.pids("web");
        let r = agent.reload("web", false);
        assert_eq!(r.status, 200, "reload {i}: {}", r.body);
        let outcome: ReloadOutcome = r.json();
        assert!(outcome.ok && outcome.replaced == 2, "reload {i}: {outcome:?}");
        // Each old worker closed on 'shutdown' well within kill_timeout (8 s each, one at a time).
        assert!(outcome.duration_ms < 6000, "reload {i} waited for kill_timeout: {outcome:?}");
        retired.extend(before);
    }
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the last workers did not serve");
    (retired, load.stop())
}

#[test]
fn a_pm2_app_reloads_under_load_on_its_ready_and_shutdown_messages_and_fails_nothing() {
    let agent = pm2_app().start();
    let (retired, report) = reloads_under_load(&agent, 3);
    eprintln!("load: {report}");
    assert_eq!(report.failed, 0, "{report}");
    let logs = agent.cli(&["logs", "web", "-n", "500"]).success();
    for pid in &retired {
        assert!(!pid_alive(*pid), "old worker {pid} still runs");
        assert!(
            logs.stdout.contains(&format!("pid {pid}: shutdown message received")),
            "worker {pid} never got 'shutdown':\n{logs}"
        );
    }
    assert_eq!(agent.app("web").workers.len(), 2);
}

/// The example app listens but never says `ready`: its port accepts, yet it is never put into
/// rotation, and the reload fails at the timeout with the old workers serving.
#[test]
fn a_worker_that_never_sends_ready_is_not_put_into_rotation() {
    let mut agent = pm2_app().start();
    let before = agent.pids("web");
    agent.reconfigure(|env| env.start_command(&["node", "app.js"]).ready_timeout("2s"));

    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let r = agent.reload("web", true);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the old workers stopped serving");
    let report = load.stop();

    assert_eq!(r.status, 409, "{}", r.body);
    let err: ApiError = r.json();
    assert!(err.message.contains("not ready within 2s"), "{err:?}");
    assert_eq!(report.failed, 0, "{report}");
    let served: Vec<&String> = report.bodies.keys().collect();
    assert!(
        served.iter().all(|b| before.iter().any(|p| b.contains(&format!("pid {p}\n")))),
        "a worker that never said ready served: {report}"
    );
    assert_eq!(agent.pids("web"), before);
}
