//! The `deployer` CLI against a running agent: ls, scale, stop, start, restart, logs.

use deployer_tests::{TestEnv, http, pid_alive};
use deployer_wire::AppStatus;

fn ls(agent: &deployer_tests::Agent) -> Vec<AppStatus> {
    let out = agent.cli(&["ls", "--json"]).success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("`ls --json` is not a list of apps ({e})\n{out}"))
}

#[test]
fn ls_lists_every_worker() {
    let agent = TestEnv::new().start();
    let apps = ls(&agent);
    assert_eq!(apps.len(), 1, "{apps:#?}");
    let web = &apps[0];
    assert_eq!((web.name.as_str(), web.mode.as_str(), web.state.as_str()), ("web", "http", "running"));
    assert_eq!(web.port, Some(agent.port("web")));
    assert_eq!(web.workers.iter().map(|w| w.id).collect::<Vec<_>>(), [0, 1]);
    assert!(web.workers.iter().all(|w| w.state == "online"), "{web:#?}");
    assert_eq!(web.workers.iter().map(|w| w.pid.expect("a pid")).collect::<Vec<_>>(), agent.pids("web"));

    let table = agent.cli(&["ls"]).success();
    for pid in agent.pids("web") {
        assert!(table.stdout.contains(&pid.to_string()), "pid {pid} not in the table\n{table}");
    }
    assert!(table.stdout.contains("online"), "{table}");
}

#[test]
fn scale_adds_and_retires_workers() {
    let agent = TestEnv::new().start();
    let first = agent.pids("web");

    agent.cli(&["scale", "web", "3"]).success();
    let web = &ls(&agent)[0];
    assert_eq!(web.instances, 3);
    assert_eq!(web.workers.len(), 3, "{web:#?}");
    assert!(web.workers.iter().all(|w| w.state == "online"), "{web:#?}");
    assert_eq!(
        web.workers[..2].iter().map(|w| w.pid.expect("a pid")).collect::<Vec<_>>(),
        first,
        "scaling up keeps the running workers"
    );

    let third = web.workers[2].pid.expect("a pid");
    let out = agent.cli(&["scale", "web", "1", "--json"]).success();
    let web: AppStatus = serde_json::from_str(&out.stdout).expect("scale --json answers the app");
    assert_eq!(web.workers.len(), 1, "{web:#?}");
    assert_eq!(web.workers[0].pid, Some(first[0]), "scaling down retires the highest ids");
    assert!(!pid_alive(first[1]) && !pid_alive(third), "retired workers still run");
    assert_eq!(http::get(agent.port("web"), "/").expect("GET /").status, 200);
}

#[test]
fn stop_stops_every_worker_and_start_brings_them_back() {
    let agent = TestEnv::new().start();
    let first = agent.pids("web");

    agent.cli(&["stop", "web"]).success();
    let web = &ls(&agent)[0];
    assert_eq!(web.state, "stopped", "{web:#?}");
    assert!(web.workers.is_empty(), "{web:#?}");
    assert!(first.iter().all(|p| !pid_alive(*p)), "stopped workers still run");

    agent.cli(&["start", "web"]).success();
    let web = &ls(&agent)[0];
    assert_eq!(web.state, "running");
    assert_eq!(web.workers.len(), 2, "{web:#?}");
    assert!(web.workers.iter().all(|w| w.state == "online"), "{web:#?}");
    let r = http::get(agent.port("web"), "/").expect("GET /");
    assert_eq!(r.status, 200, "{}", r.body);

    let started = agent.pids("web");
    agent.cli(&["restart", "web"]).success();
    let restarted = agent.pids("web");
    assert_eq!(restarted.len(), 2);
    assert!(restarted.iter().all(|p| !started.contains(p)), "restart kept a worker: {started:?} -> {restarted:?}");
}

#[test]
fn logs_shows_the_last_lines_the_workers_wrote() {
    let agent = TestEnv::new().start();
    let out = agent.cli(&["logs", "web", "-n", "5"]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 5, "{out}");
    let listening = lines.iter().filter(|l| l.contains("Server listening")).count();
    assert_eq!(listening, 2, "one `Server listening` line per worker\n{out}");
    assert!(
        lines.iter().all(|l| l.starts_with("web-0") || l.starts_with("web-1")),
        "lines are prefixed by worker\n{out}"
    );
}

#[test]
fn status_acts_on_the_agent_when_no_environment_is_named() {
    let agent = TestEnv::new().start();
    // The agent's temp dir holds no deployer.yaml: `web` is an app of `--agent`.
    let out = agent.cli(&["status", "web", "--json"]).success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{out}"));
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!((rows[0]["app"].as_str(), rows[0]["reachable"].as_bool()), (Some("web"), Some(true)), "{out}");
    assert_eq!(rows[0]["workers_up"], 2, "{out}");
    let text = agent.cli(&["status", "web"]).success();
    assert!(text.stdout.contains("127.0.0.1"), "{text}");
    // `--app` goes with an environment: without one, the error says so.
    let wrong = agent.cli(&["status", "prod", "--app", "web"]).failure(1);
    assert!(wrong.stderr.contains("deployer.yaml"), "{wrong}");
}
