//! The agent's stop, in order: triggers, running deploys (ended and recorded), reports
//! (flushed), fronts (drained), workers (stopped), each step bounded by the configured
//! timeouts; and the supervisor's events, which the bake window and the reports follow.

use deployer_tests::{Agent, Mode, Receiver, TestEnv, TestRepo, http, pid_alive, poll, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a stop may take beyond its configured timeouts: the process's own exit, the API's
/// last answers, a loaded test machine.
const MARGIN: Duration = Duration::from_secs(3);

/// The state and message of deploy `id` as the agent's database holds them (read with the
/// agent stopped: what a restarted agent, or an operator with `sqlite3`, finds).
fn stored_deploy(agent: &Agent, id: u64) -> (String, String) {
    let db = rusqlite::Connection::open(agent.dir().join("state").join("agent.db")).expect("open agent.db");
    db.query_row("SELECT state, COALESCE(message, '') FROM deploys WHERE id = ?1", [id as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .expect("the deploy's row")
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker) && pid_alive(*pid)
        })
        .collect()
}

/// An install step that writes its pid next to the gate (a file), then waits until the test
/// opens the gate, so `building` lasts as long as the test wants without a sleep of its own.
fn gated_install(gate: &Path) -> String {
    format!(
        "echo $$ > {}.pid; echo installing; while [ ! -e {} ]; do sleep 0.05; done; echo installed\n",
        gate.display(),
        gate.display()
    )
}

/// SIGTERM while a deploy installs: the install is ended, the deploy's final state is in the
/// database before the process exits (not left `building` for the next agent to guess at),
/// and its report went out during the stop.
#[test]
fn sigterm_during_an_install_records_the_deploy_as_interrupted_before_the_agent_exits() {
    let receiver = Receiver::start(Mode::Status(200));
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo fast\n", "an install step");
    let mut agent = TestEnv::new()
        .web(|a| a.repo(&repo).set("install", "sh install.sh"))
        .agent_set("report", &format!("[{{ url: \"{}\" }}]", receiver.url("/events")))
        .agent_set("report_retry", "{ first: 100ms, max: 1s }")
        .start();
    let before = agent.current_release("web").expect("current");
    repo.commit_file("install.sh", &gated_install(&gate), "a slow install");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "building");
    let pid_file = gate.with_extension("pid");
    let install = poll(Duration::from_secs(20), || std::fs::read_to_string(&pid_file).ok()?.trim().parse::<u32>().ok())
        .expect("the install step never started");

    let stopping = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(20)).expect("the agent did not exit after SIGTERM");
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert_eq!(status.code(), Some(0), "{status}");

    let (state, message) = stored_deploy(&agent, id);
    assert!(state == "interrupted" || state == "cancelled", "deploy #{id} is stored as `{state}`: {message}");
    assert!(message.contains("stop"), "the message says the agent stopped: {message}");
    assert!(!pid_alive(install), "the install step outlived the agent");
    let reported = receiver
        .received()
        .into_iter()
        .any(|r| r.json()["deploy"] == id && r.json()["event"] == format!("deploy.{state}"));
    assert!(reported, "the final state was not reported during the stop: {:#?}", receiver.received());

    std::fs::write(&gate, "").expect("open the gate");
    agent.start_again();
    let d = agent.deploy_status(id);
    assert_eq!(d.state, state.as_str(), "the next agent keeps what the stop recorded: {d:#?}");
    assert_eq!(agent.current_release("web"), Some(before), "nothing of the interrupted deploy went live");
}

/// SIGTERM during a SIGHUP reload whose new worker is slow to start: the reload is interrupted
/// (the new worker ended, the old one stopped like any other), and the agent is gone long before
/// the new worker's `ready.timeout` would have ended the reload.
#[test]
fn sigterm_during_a_sighup_reload_onto_a_slow_worker_exits_without_waiting_for_it() {
    let ready_timeout = Duration::from_secs(60);
    let mut agent = TestEnv::new().instances(1).ready_timeout("60s").reload("drain_timeout", "5s").start();
    let old = agent.pids("web");
    let marker = format!("slow-start-{}", agent.dir().display());
    // The new worker runs, but never listens on its port: never ready.
    agent.edit_config(|c| {
        c.replacen("start: [\"node\", \"app.js\"]", &format!("start: [\"sh\", \"-c\", \"sleep 600\", \"{marker}\"]"), 1)
    });
    agent.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || !processes_with(&marker).is_empty()),
        "the reload never started the new worker"
    );
    assert_eq!(agent.app("web").state, "reloading");

    let stopping = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(ready_timeout / 2);
    let took = stopping.elapsed();
    eprintln!("stopped in {took:?} (ready.timeout {ready_timeout:?}, drain_timeout 5s, kill_timeout 3s)");
    let status = status.unwrap_or_else(|| panic!("the agent waited for the reload: still running after {took:?}"));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < Duration::from_secs(5 + 3) + MARGIN, "the stop took {took:?}");
    assert!(
        wait_until(Duration::from_secs(5), || processes_with(&marker).is_empty()),
        "the half-started worker outlived the agent"
    );
    assert!(old.iter().all(|p| !pid_alive(*p)), "the old worker outlived the agent");
    assert!(agent.log().contains("interrupted"), "the log says the reload was interrupted");
}

/// A hung worker (SIGSTOPped, a request stuck on it): the agent's stop waits `drain_timeout`
/// for that request once, then `kill_timeout`, then kills it; never `drain_timeout` twice.
#[test]
fn the_agent_stops_a_hung_worker_within_drain_timeout_plus_kill_timeout() {
    let (drain, kill_after) = (Duration::from_secs(6), Duration::from_secs(1));
    let mut agent = TestEnv::new()
        .instances(1)
        .reload("drain_timeout", "6s")
        .reload("kill_timeout", "1s")
        .set("front", "{ response_timeout: 120s }")
        .start();
    let worker = agent.pids("web")[0];
    let port = agent.port("web");
    kill(Pid::from_raw(worker as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    let stuck = std::thread::spawn(move || {
        http::request(port, "GET", "/", &[], None, Duration::from_secs(60)).map(|r| r.status)
    });
    assert!(
        wait_until(Duration::from_secs(10), || agent.app("web").workers.iter().any(|w| w.inflight > 0)),
        "the request never reached the hung worker"
    );

    let stopping = Instant::now();
    agent.signal(Signal::SIGTERM);
    // While it drains, the agent still answers, and refuses new work.
    let refused = poll(Duration::from_secs(5), || {
        let r = agent.api_post("/v1/apps/web/deploys", serde_json::json!({ "ref": "main" }));
        (r.status == 503).then_some(r)
    })
    .expect("a deploy asked for during the stop is refused with 503");
    assert_eq!(refused.json::<serde_json::Value>()["code"], "stopping", "{}", refused.body);
    assert_eq!(agent.app("web").workers.len(), 1, "the status still answers");
    let status = agent.wait_exit(2 * drain + kill_after + MARGIN);
    let took = stopping.elapsed();
    eprintln!("stopped in {took:?} (drain_timeout {drain:?}, kill_timeout {kill_after:?})");
    let status = status.unwrap_or_else(|| panic!("the agent did not exit within {took:?}"));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < drain + kill_after + MARGIN, "the stop took {took:?}: more than drain + kill + {MARGIN:?}");
    assert!(took >= drain, "the stuck request was given drain_timeout: {took:?}");
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(worker)), "the hung worker outlived the agent");
    // The stuck request ended one way or another: nobody waits on a dead agent.
    let _ = stuck.join();
}

/// A release whose worker errors in the bake window is rolled back, even when the errored worker
/// is gone a moment later (here an operator scales it away at once): the bake hears the
/// supervisor's `errored` event instead of looking at the status once in a while.
#[test]
fn a_worker_that_errors_during_the_bake_fails_the_bake_at_once() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "60s").restart(1, "5s", "100ms")).start();
    let before = agent.current_release("web").expect("current");

    // Worker 1 gets ready, then exits 700 ms later: with `max_restarts: 1` that exit errors it.
    let app_js = std::fs::read_to_string(repo.path().join("app.js")).expect("app.js");
    let crash = "if (process.env.INSTANCE_ID === '1') setTimeout(() => process.exit(1), 700);";
    repo.commit_file("app.js", &format!("{app_js}\n{crash}\n"), "worker 1 crashes");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "baking");
    let errored = || agent.app("web").workers.iter().any(|w| w.id == 1 && w.state == "errored");
    assert!(wait_until(Duration::from_secs(20), errored), "worker 1 did not error: {:#?}", agent.app("web"));
    let r = agent.api_post("/v1/apps/web/scale", serde_json::json!({ "instances": 1 }));
    assert_eq!(r.status, 200, "{}", r.body);

    let rolled_back = poll(Duration::from_secs(10), || {
        let d = agent.deploy_status(id);
        (d.state == "rolled_back").then_some(d)
    })
    .unwrap_or_else(|| panic!("the bake did not roll back: {:#?}", agent.deploy_status(id)));
    let why = rolled_back.message.clone().unwrap_or_default();
    assert!(why.contains("bake window") && why.contains("1 errored"), "{why}");
    let errored_at = agent
        .api_get("/v1/apps/web/logs?lines=1000")
        .json::<deployer_wire::LogLines>()
        .lines
        .into_iter()
        .filter(|l| l.line.contains("the worker is errored"))
        .map(|l| l.ts_ms)
        .min()
        .expect("the log says a worker errored");
    let recorded_at = rolled_back.events.iter().find(|e| e.state == "rolled_back").expect("the event").at_ms;
    eprintln!("the bake reacted {} ms after the worker errored", recorded_at.saturating_sub(errored_at));
    assert!(
        wait_until(Duration::from_secs(60), || agent.current_release("web").as_deref() == Some(before.as_str())),
        "current went back to {before}: {:?}",
        agent.current_release("web")
    );
}

/// A worker that errors and is gone a moment later (scaled away) is still reported: the report
/// watcher hears the event instead of looking at the status once a second.
#[test]
fn a_worker_that_errors_and_is_scaled_away_at_once_is_still_reported() {
    let receiver = Receiver::start(Mode::Status(200));
    let agent = TestEnv::new()
        .start_command(&["node", &deployer_tests::fixture("crashes.js")])
        .env("CRASH_INSTANCE", "1")
        // Long enough to be online when the agent's start is over: the error comes later.
        .env("CRASH_AFTER_MS", "1500")
        .restart(1, "5s", "100ms")
        .dont_wait_for_workers()
        .agent_set("report", &format!("[{{ url: \"{}\" }}]", receiver.url("/events")))
        .agent_set("report_retry", "{ first: 100ms, max: 1s }")
        .start();
    let errored = || agent.app("web").workers.iter().any(|w| w.id == 1 && w.state == "errored");
    assert!(wait_until(Duration::from_secs(20), errored), "worker 1 did not error: {:#?}", agent.app("web"));
    let r = agent.api_post("/v1/apps/web/scale", serde_json::json!({ "instances": 1 }));
    assert_eq!(r.status, 200, "{}", r.body);

    let reported =
        || receiver.received().into_iter().any(|r| r.json()["event"] == "worker.errored" && r.json()["worker"] == 1);
    assert!(wait_until(Duration::from_secs(10), reported), "no worker.errored: {:#?}", receiver.received());
}
