//! Keeping workers running: restarts after crashes, giving up on a crash loop, the environment
//! a worker gets.

use deployer_tests::{Load, TestEnv, environ, fixture, http, pid_alive, poll, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn a_worker_killed_with_sigkill_is_restarted_with_a_new_pid() {
    let agent = TestEnv::new().start();
    let before = agent.wait_online("web", 2);
    let victim = before[1].pid.expect("a pid");
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill -9 the worker");

    let after = poll(Duration::from_secs(15), || {
        let workers = agent.app("web").workers;
        (workers[1].state == "online" && workers[1].pid.is_some_and(|p| p != victim)).then_some(workers)
    })
    .unwrap_or_else(|| panic!("worker 1 was not restarted: {:#?}", agent.app("web")));
    assert_eq!(after[1].restarts, 1, "{after:#?}");
    assert_eq!(after[0].pid, before[0].pid, "the other worker was left alone");
    assert_eq!(after[0].restarts, 0);
    assert!(!pid_alive(victim));
    let r = http::get(agent.port("web"), "/").expect("GET /");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_worker_that_keeps_crashing_is_errored_after_max_restarts_and_the_others_keep_serving() {
    let agent = TestEnv::new()
        .start_command(&["node", &fixture("crashes.js")])
        .env("CRASH_INSTANCE", "1")
        .restart(3, "5s", "100ms")
        .dont_wait_for_workers()
        .start();

    let workers = poll(Duration::from_secs(20), || {
        let workers = agent.app("web").workers;
        (workers.len() == 2 && workers[1].state == "errored").then_some(workers)
    })
    .unwrap_or_else(|| panic!("worker 1 did not become errored: {:#?}", agent.app("web")));
    // Three exits in a row, each within min_uptime: the third one makes it errored.
    assert_eq!(workers[1].restarts, 3, "{workers:#?}");
    assert_eq!(workers[1].pid, None, "an errored worker runs no process");
    assert_eq!(workers[0].state, "online", "{workers:#?}");
    assert_eq!(workers[0].restarts, 0);

    for _ in 0..3 {
        let r = http::get(agent.port("web"), "/").expect("GET /");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("from worker 0 "), "{}", r.body);
    }
    let logs = agent.cli(&["logs", "web", "-n", "100"]).success();
    assert!(logs.stdout.contains("crashing on purpose"), "{logs}");
    assert!(logs.stdout.contains("exited 3 times in a row"), "{logs}");
}

#[test]
fn workers_get_their_port_and_instance_id_but_never_the_api_tokens() {
    let agent = TestEnv::new().token("reader", &["read"]).start();
    for w in agent.wait_online("web", 2) {
        let env = environ(w.pid.expect("a pid"));
        let var = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(var("PORT"), w.port.map(|p| p.to_string()), "worker {}", w.id);
        assert_eq!(var("INSTANCE_ID"), Some(w.id.to_string()));
        assert_eq!(var("NODE_APP_INSTANCE"), Some(w.id.to_string()));
        assert_eq!(var("DELAY_MS").as_deref(), Some("200"), "from the config's `env`");
        assert_eq!(var("GREETING").as_deref(), Some("hello"), "from the `env_file`");
        assert!(var("PATH").is_some(), "the agent's own environment is the base");
        assert_eq!(var("DEPLOYER_TOKEN"), None, "the admin token leaked to worker {}", w.id);
        assert_eq!(var("DEPLOYER_TEST_TOKEN_READER"), None, "the reader token leaked to worker {}", w.id);
    }
}

#[test]
fn workers_above_max_memory_are_replaced_without_failing_a_request() {
    // A Node worker needs tens of MB: with a 1 MB limit, every worker is replaced, again and again.
    let agent = TestEnv::new().set("max_memory", "1M").start();
    let first = agent.pids("web");
    let load = Load::start(agent.port("web"), 50, false);
    let replaced = wait_until(Duration::from_secs(20), || first.iter().all(|p| !pid_alive(*p)));
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the app stopped serving");
    let report = load.stop();
    assert!(replaced, "workers above max_memory were not replaced: {first:?} still run");
    assert_eq!(report.failed, 0, "{report}");
    assert!(agent.log().contains("above max_memory"), "{}", agent.log());
}
