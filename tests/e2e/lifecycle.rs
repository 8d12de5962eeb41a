//! The agent's own life: SIGTERM, `kill -9`, SIGHUP, and what a new agent finds.

use deployer_tests::{AppSpec, Load, TestEnv, http, pid_alive, port_is_free, wait_until};
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn sigterm_lets_in_flight_requests_finish_then_stops_every_worker_and_exits_0() {
    let mut agent = TestEnv::new().env("DELAY_MS", "1500").start();
    let pids = agent.pids("web");
    let port = agent.port("web");
    let in_flight = std::thread::spawn(move || http::get(port, "/"));
    assert!(
        wait_until(Duration::from_secs(10), || agent.app("web").workers.iter().any(|w| w.inflight > 0)),
        "the request never reached a worker"
    );

    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(20)).expect("the agent did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    let answer = in_flight.join().expect("the request thread").expect("the in-flight request was cut");
    assert_eq!(answer.status, 200, "{}", answer.body);
    for pid in pids {
        assert!(!pid_alive(pid), "worker {pid} outlived the agent");
    }
    assert!(port_is_free(port), "the public port is still bound");
    assert!(agent.log().contains("stopped"), "{}", agent.log());
}

#[test]
fn after_kill_9_the_workers_die_too_and_a_new_agent_serves_on_the_same_config() {
    let mut agent = TestEnv::new().start();
    let pids = agent.pids("web");

    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10)).expect("the agent did not die");
    assert!(
        wait_until(Duration::from_secs(10), || pids.iter().all(|p| !pid_alive(*p))),
        "workers outlived a killed agent: {:?}",
        pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );

    assert!(port_is_free(agent.port("web")), "nothing may hold the public port once the agent is dead");

    agent.start_again();
    let new_pids = agent.pids("web");
    assert!(new_pids.iter().all(|p| !pids.contains(p)));
    let r = http::get(agent.port("web"), "/").expect("GET / from the new agent");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_new_agent_kills_the_worker_children_a_killed_agent_left_behind() {
    // `sh` is the worker and `node` its child: PR_SET_PDEATHSIG kills `sh` with the agent, but
    // not its child. The pid record in `state_dir/run` lets the next agent find the group.
    let mut agent = TestEnv::new().instances(1).start_command(&["sh", "-c", "node app.js; exit 1"]).start();
    let shell = agent.pids("web")[0];
    let body = http::get(agent.port("web"), "/").expect("GET /").body;
    let node: u32 =
        body.trim().rsplit(' ').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid in `{body}`"));
    assert_ne!(node, shell);

    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10)).expect("the agent did not die");
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(shell)), "the worker outlived the agent");
    let left_behind = pid_alive(node);

    agent.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(node)),
        "the new agent left the old worker's child running"
    );
    if left_behind {
        assert!(agent.log().contains("left by a previous agent"), "{}", agent.log());
    }
    assert_eq!(http::get(agent.port("web"), "/").expect("GET /").status, 200);
}

#[test]
fn the_api_answers_while_an_app_is_still_starting_and_the_other_apps_serve() {
    // `stuck` never listens: its workers stay `starting` until `ready.timeout`. An agent that
    // answered only once its apps were up would show it past that, not `starting`.
    let never_ready = AppSpec::new("stuck").start(&["node", "-e", "setInterval(() => {}, 1000)"]).ready_timeout("60s");
    let agent = TestEnv::new().instances(1).app(never_ready).dont_wait_for_workers().start();
    assert_eq!(agent.app("stuck").state.as_str(), "starting");
    assert!(
        wait_until(Duration::from_secs(15), || http::get(agent.port("web"), "/").is_ok_and(|r| r.status == 200)),
        "`web` did not serve while `stuck` was starting"
    );
    let ls = agent.cli(&["ls", "--json"]).success();
    let apps: Vec<deployer_wire::AppStatus> = serde_json::from_str(&ls.stdout).expect("ls --json");
    let state = |name: &str| apps.iter().find(|a| a.name == name).map(|a| a.state.as_str().to_owned());
    assert_eq!((state("web").as_deref(), state("stuck").as_deref()), (Some("running"), Some("starting")), "{apps:#?}");
    assert!(!agent.log().contains("apps started"), "the boot ended early: {}", agent.log());
}

#[test]
fn a_second_agent_on_the_same_config_refuses_to_start_and_leaves_the_first_alone() {
    let agent = TestEnv::new().start();
    let pids = agent.pids("web");

    let second = agent.run_agent(&["--config", "agent.yaml"]);
    assert_eq!(second.code(), Some(1), "{second}");
    assert!(second.stderr.contains("cannot bind the API"), "{second}");
    assert_eq!(agent.pids("web"), pids, "the second agent touched the first one's workers");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    assert_eq!(http::get(agent.port("web"), "/").expect("GET /").status, 200);
}

#[test]
fn sighup_starts_an_app_added_to_the_config() {
    let mut agent = TestEnv::new().instances(1).start();
    let web = agent.pids("web");
    agent.reconfigure(|env| env.app(AppSpec::new("api").instances(1).env("GREETING", "hi from api")));

    agent.signal(Signal::SIGHUP);
    agent.wait_online("api", 1);
    let r = http::get(agent.port("api"), "/").expect("GET / on the new app's port");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("hi from api from worker 0"), "{}", r.body);
    assert_eq!(agent.pids("web"), web, "an unchanged app was touched");
    assert_eq!(agent.apps().len(), 2);
}

#[test]
fn sighup_reloads_a_changed_app_without_failing_a_request_and_stops_a_removed_one() {
    let mut agent = TestEnv::new().app(AppSpec::new("api").instances(1)).start();
    let web = agent.pids("web");
    let api = agent.pids("api");
    let api_port = agent.port("api");
    agent.reconfigure(|env| env.env("GREETING", "hola").without_app("api"));

    let load = Load::start(agent.port("web"), 50, false);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the load did not get going");
    agent.signal(Signal::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(20), || {
        let now = agent.pids("web");
        now.len() == 2 && now.iter().all(|p| !web.contains(p))
    });
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "the app stopped serving");
    let report = load.stop();

    assert!(reloaded, "the changed app was not reloaded: {:#?}", agent.app("web"));
    assert_eq!(report.failed, 0, "{report}");
    let r = http::get(agent.port("web"), "/").expect("GET /");
    assert!(r.body.starts_with("hola from worker"), "{}", r.body);
    let apps = agent.apps();
    assert_eq!(apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["web"], "the removed app is still listed");
    assert!(api.iter().all(|p| !pid_alive(*p)), "the removed app's workers still run");
    assert!(wait_until(Duration::from_secs(10), || port_is_free(api_port)), "the removed app's port is still bound");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let agent = TestEnv::new().instances(1).start();
    let web = agent.pids("web");
    agent.edit_config(|c| c.replacen("    instances: 1", "    instances: lots", 1));

    agent.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || agent.log().contains("the config has an error")),
        "the agent did not say the config is broken"
    );
    assert!(agent.log().contains("agent.yaml:"), "the error has no location");
    assert_eq!(agent.pids("web"), web);
    assert_eq!(http::get(agent.port("web"), "/").expect("GET /").status, 200);
}

/// With the listening sockets held outside the agent (systemd's socket units; here the test),
/// an agent killed with `kill -9` refuses no connection: clients wait in the kernel's queue
/// until the next agent takes the same sockets, starts its workers and answers them. Only the
/// requests the killed agent was carrying are lost.
#[test]
fn an_agent_killed_under_load_refuses_no_connection_when_its_sockets_are_held() {
    let mut agent = TestEnv::new().socket_activation().env("DELAY_MS", "20").start();
    assert!(agent.log().contains("listening socket received from systemd"), "{}", agent.log());
    let load = Load::start(agent.port("web"), 20, false);
    assert!(load.wait_for_more(200, Duration::from_secs(15)), "the load did not get going");
    agent.signal(Signal::SIGKILL);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some(), "the agent survived SIGKILL");
    let lost = load.failed_so_far();
    agent.start_again();
    assert!(load.wait_for_more(200, Duration::from_secs(20)), "the restarted agent does not serve");
    let report = load.stop();
    eprintln!("kill -9 and restart under load: {report}; lost while killed: {lost}");
    assert_eq!(report.by_kind.get("refused"), None, "connections were refused: {report}");
    // What fails is what the killed agent held: at most one request per client.
    assert!(report.failed <= 20, "more than the in-flight requests failed: {report}");
}

/// A SIGTERM while an app is still `starting` (its boot waits for `ready.timeout`): the agent stops
/// at once, and the starting worker does not outlive it.
#[test]
fn sigterm_during_the_boot_stops_promptly_and_ends_the_starting_workers() {
    let never_ready = AppSpec::new("stuck").start(&["node", "-e", "setInterval(() => {}, 1000)"]).ready_timeout("60s");
    let mut agent = TestEnv::new().instances(1).app(never_ready).dont_wait_for_workers().start();
    assert!(wait_until(Duration::from_secs(15), || !agent.pids("stuck").is_empty()), "`stuck` never spawned");
    let stuck = agent.pids("stuck");
    assert_eq!(agent.app("stuck").state.as_str(), "starting");
    let asked = std::time::Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(40)).expect("the agent did not exit after SIGTERM");
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(15), "the stop waited for the boot: {took:?}\n{}", agent.log());
    assert_eq!(status.code(), Some(0), "{status}\n{}", agent.log());
    assert!(
        wait_until(Duration::from_secs(5), || stuck.iter().all(|p| !pid_alive(*p))),
        "a starting worker outlived the agent"
    );
}

/// `deployer stop` of an app still `starting` at boot answers without waiting out its `ready.timeout`.
#[test]
fn stop_of_an_app_starting_at_boot_does_not_wait_for_its_ready_timeout() {
    let never_ready = AppSpec::new("stuck").start(&["node", "-e", "setInterval(() => {}, 1000)"]).ready_timeout("60s");
    let agent = TestEnv::new().instances(1).app(never_ready).dont_wait_for_workers().start();
    assert!(wait_until(Duration::from_secs(15), || !agent.pids("stuck").is_empty()), "`stuck` never spawned");
    let stuck = agent.pids("stuck");
    let asked = std::time::Instant::now();
    let out = agent.cli(&["stop", "stuck"]);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(20), "`deployer stop` waited for the boot: {took:?}\n{out}");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || stuck.iter().all(|p| !pid_alive(*p))),
        "the stopped worker still runs"
    );
}

/// A SIGHUP while another app is still `starting` at boot applies to the apps that are up.
#[test]
fn sighup_during_the_boot_reloads_the_apps_that_are_up() {
    let never_ready = AppSpec::new("stuck").start(&["node", "-e", "setInterval(() => {}, 1000)"]).ready_timeout("60s");
    let mut agent = TestEnv::new().instances(1).app(never_ready).dont_wait_for_workers().start();
    assert!(
        wait_until(Duration::from_secs(15), || http::get(agent.port("web"), "/").is_ok_and(|r| r.status == 200)),
        "`web` did not serve while `stuck` was starting"
    );
    assert_eq!(agent.app("stuck").state.as_str(), "starting");
    agent.reconfigure(|env| env.env("GREETING", "hola"));
    agent.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || http::get(agent.port("web"), "/")
            .is_ok_and(|r| r.body.starts_with("hola"))),
        "the SIGHUP waited for the boot of another app: {}",
        agent.log()
    );
}
