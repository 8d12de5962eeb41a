//! Apps written for PM2 run unchanged: readiness and shutdown over Node's IPC channel
//! (`ready: { message: true }`, `ipc: true`), and fork-mode apps (`proxy: none` with a `port`)
//! reload.

use deployer_tests::{Agent, Load, Proxy, TestEnv, fixture, http, pid_alive, poll};
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

/// `ipc: true` alone: readiness stays the default tcp probe, and the worker still gets
/// `'shutdown'` before its reload signal.
#[test]
fn ipc_alone_sends_the_shutdown_message_with_any_readiness() {
    let agent = TestEnv::new()
        .start_command(&["node", &fixture("pm2-app.js")])
        .set("ipc", "true")
        .reload("kill_timeout", "8s")
        .start();
    let (retired, report) = reloads_under_load(&agent, 1);
    assert_eq!(report.failed, 0, "{report}");
    let logs = agent.cli(&["logs", "web", "-n", "200"]).success();
    for pid in &retired {
        assert!(logs.stdout.contains(&format!("pid {pid}: shutdown message received")), "{logs}");
    }
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

/// One fork-mode worker of the example app: it binds `PORT` itself, with no front.
fn fork_mode() -> TestEnv {
    TestEnv::new().proxy(Proxy::None).instances(1).ready_check("tcp: true")
}

/// The pid in the app's answer on its own port, once it answers.
fn answering_pid(agent: &Agent) -> u32 {
    let answer = poll(Duration::from_secs(15), || {
        let r = http::get(agent.port("web"), "/").ok()?;
        (r.status == 200).then_some(r.body)
    })
    .expect("the app answers on its port");
    let pid = answer.trim().rsplit_once("pid ").expect("a pid in the answer").1;
    pid.parse().expect("a pid")
}

#[test]
fn a_fork_mode_reload_stops_then_starts_and_says_so() {
    let agent = fork_mode().start();
    let first = agent.pids("web");
    assert_eq!(answering_pid(&agent), first[0]);

    let r = agent.reload("web", false);
    assert_eq!(r.status, 200, "{}", r.body);
    let outcome: ReloadOutcome = r.json();
    assert!(outcome.ok && outcome.replaced == 1, "{outcome:?}");
    assert!(outcome.gap_ms.is_some(), "the gap is not said: {outcome:?}");
    let second = agent.pids("web");
    assert_ne!(second, first);
    assert!(!pid_alive(first[0]));
    assert_eq!(answering_pid(&agent), second[0]);

    let cli = agent.cli(&["reload", "web"]).success();
    assert!(cli.stdout.contains("reloaded web: 1 worker replaced"), "{cli}");
    assert!(cli.stderr.contains("stop-then-start: `web` did not serve for"), "{cli}");
    assert!(cli.stderr.contains("reuse_port: true"), "{cli}");
    assert_eq!(answering_pid(&agent), agent.pids("web")[0]);
}

/// A release that never gets ready: the old spec's worker is started again in its slot.
#[test]
fn a_failed_fork_mode_reload_starts_the_previous_worker_again() {
    let mut agent = fork_mode().start();
    let first = agent.pids("web");
    agent.reconfigure(|env| env.start_command(&["node", &fixture("never-ready.js")]).ready_timeout("2s"));
    let r = agent.reload("web", true);
    assert_eq!(r.status, 409, "{}", r.body);
    let err: ApiError = r.json();
    assert!(err.message.contains("not ready within"), "{err:?}");
    let workers = agent.wait_online("web", 1);
    assert_ne!(workers[0].pid, Some(first[0]), "stopped first, so a new process of the old release");
    assert_eq!(answering_pid(&agent), workers[0].pid.expect("a pid"));
}

/// `reload: { reuse_port: true }`: the new worker starts beside the old one, so nothing stops
/// serving and the outcome has no gap.
#[test]
fn a_fork_mode_app_with_reuse_port_reloads_start_then_stop() {
    let agent = TestEnv::new()
        .proxy(Proxy::None)
        .instances(1)
        .start_command(&["/usr/bin/python3", &fixture("reuseport.py")])
        // A tcp probe could reach the old worker on the shared port: wait for the new one to live.
        .ready_check("alive: 1s")
        .reload("reuse_port", "true")
        .start();
    let first = agent.pids("web");
    for _ in 0..2 {
        let before = agent.pids("web");
        let r = agent.reload("web", false);
        assert_eq!(r.status, 200, "{}", r.body);
        let outcome: ReloadOutcome = r.json();
        assert!(outcome.ok && outcome.replaced == 1 && outcome.gap_ms.is_none(), "{outcome:?}");
        assert!(!pid_alive(before[0]));
    }
    let now = agent.pids("web");
    assert_ne!(now, first);
    assert_eq!(answering_pid(&agent), now[0]);
}

/// Two `sh` workers without a front that say which signal they got.
fn trapping_workers() -> TestEnv {
    let script = "trap 'echo \"pid $$ got USR1\"' USR1; while :; do sleep 0.05; done";
    TestEnv::new().proxy(Proxy::None).start_command(&["sh", "-c", script]).ready_check("alive: 200ms")
}

#[test]
fn signal_reaches_every_worker_by_name() {
    let agent = trapping_workers().start();
    let pids = agent.pids("web");
    let out = agent.cli(&["signal", "web", "SIGUSR1", "--json"]).success();
    let outcome: deployer_wire::SignalOutcome = serde_json::from_str(&out.stdout).expect("signal --json");
    assert_eq!(outcome.signal, "SIGUSR1");
    let mut sent: Vec<u32> = outcome.workers.iter().map(|w| w.pid).collect();
    sent.sort();
    let mut want = pids.clone();
    want.sort();
    assert_eq!(sent, want);
    let out = agent.cli(&["signal", "web", "usr1"]).success();
    assert!(out.stdout.contains("sent SIGUSR1 to 2 workers of web"), "{out}");
    let both = poll(Duration::from_secs(10), || {
        let logs = agent.cli(&["logs", "web", "-n", "100"]).success().stdout;
        pids.iter().all(|p| logs.matches(&format!("pid {p} got USR1")).count() == 2).then_some(())
    });
    assert!(both.is_some(), "{}", agent.cli(&["logs", "web", "-n", "100"]));
    assert_eq!(agent.pids("web"), pids, "a signal is not a restart");

    let bad = agent.cli(&["signal", "web", "SIGFOO"]).failure(1);
    assert!(bad.stderr.contains("unknown signal `SIGFOO`"), "{bad}");
    let none = agent.cli(&["signal", "nope", "USR1"]).failure(1);
    assert!(none.stderr.contains("no app named `nope`"), "{none}");
}

#[test]
fn scale_by_more_or_fewer_than_now() {
    let agent = TestEnv::new().start();
    let out = agent.cli(&["scale", "web", "+2", "--json"]).success();
    let web: deployer_wire::AppStatus = serde_json::from_str(&out.stdout).expect("scale --json");
    assert_eq!(web.instances, 4);
    agent.wait_online("web", 4);
    let out = agent.cli(&["scale", "web", "-3"]).success();
    assert!(out.stdout.contains("scaled web to 1 instance"), "{out}");
    agent.wait_online("web", 1);
    let refused = agent.cli(&["scale", "web", "-1"]).failure(1);
    assert!(refused.stderr.contains("scaling by -1 from 1 would make 0 workers"), "{refused}");
    assert!(refused.stderr.contains("`stop`"), "{refused}");
    let bad = agent.cli(&["scale", "web", "two"]).failure(1);
    assert!(bad.stderr.contains("invalid worker count `two`"), "{bad}");
    assert_eq!(agent.app("web").instances, 1);
}

#[test]
fn reload_all_reloads_every_app_one_after_the_other() {
    let agent = TestEnv::new().instances(1).app(deployer_tests::AppSpec::new("api").instances(1)).start();
    agent.wait_online("api", 1);
    let before = [agent.pids("web"), agent.pids("api")];
    let out = agent.cli(&["reload", "all", "--json"]).success();
    let outcomes: Vec<ReloadOutcome> = serde_json::from_str(&out.stdout).expect("reload all --json");
    let names: Vec<&str> = outcomes.iter().map(|o| o.app.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    assert!(outcomes.iter().all(|o| o.ok && o.replaced == 1), "{outcomes:?}");
    assert_ne!(agent.pids("web"), before[0]);
    assert_ne!(agent.pids("api"), before[1]);
    let out = agent.cli(&["reload", "all"]).success();
    assert!(out.stdout.contains("reloaded api: 1 worker replaced"), "{out}");
    assert!(out.stdout.contains("reloaded web: 1 worker replaced"), "{out}");
}

/// `cron_restart` every 3 seconds (six fields: seconds first): the workers are replaced on the
/// schedule, through the rolling reload, and no request fails.
#[test]
fn cron_restart_reloads_on_schedule_without_failing_a_request() {
    let agent = TestEnv::new().set("cron_restart", "\"*/3 * * * * *\"").start();
    let first = agent.pids("web");
    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    // Two scheduled reloads: every worker replaced, then replaced again.
    let mut seen = vec![first.clone()];
    let twice = poll(Duration::from_secs(40), || {
        let now = agent.pids("web");
        let last = seen.last().expect("one");
        let replaced = now.len() == 2 && now.iter().all(|p| !last.contains(p));
        let online = agent.app("web").workers.iter().all(|w| w.state == "online");
        if replaced && online {
            seen.push(now);
        }
        (seen.len() >= 3).then_some(())
    });
    let report = load.stop();
    assert!(twice.is_some(), "not reloaded twice on schedule: {seen:?}");
    assert_eq!(report.failed, 0, "{report}");
    let log = agent.log();
    assert!(log.contains("scheduled reload"), "{log}");
}

/// `env_sets` and `reload --env`: the set goes on top of `env`, and stays chosen for later
/// reloads that re-read the config.
#[test]
fn reload_with_a_named_env_set_puts_it_on_top_and_keeps_it() {
    let agent = TestEnv::new()
        .instances(1)
        .env("GREETING", "hello")
        .set("env_sets", "{ production: { GREETING: bonjour }, staging: { GREETING: hallo } }")
        .start();
    let greets = |word: &str| {
        poll(Duration::from_secs(10), || http::get(agent.port("web"), "/").ok().filter(|r| r.body.starts_with(word)))
            .is_some()
    };
    assert!(greets("hello"));
    let out = agent.cli(&["reload", "web", "--env", "production"]).success();
    assert!(out.stdout.contains("reloaded web"), "{out}");
    assert!(greets("bonjour"), "the env set is not applied");
    agent.cli(&["reload", "web", "--update-env"]).success();
    assert!(greets("bonjour"), "the env set did not stay chosen");
    agent.cli(&["reload", "web", "--env", "staging"]).success();
    assert!(greets("hallo"));

    let bad = agent.cli(&["reload", "web", "--env", "prod"]).failure(1);
    assert!(bad.stderr.contains("no env set `prod` in the app's `env_sets` (it has: production, staging)"), "{bad}");
    assert!(greets("hallo"), "a refused env set changed something");
}

/// `deploy --env NAME`: the release runs with the env set on top, even when the commit is live
/// already, and later deploys keep it.
#[test]
fn deploy_with_a_named_env_set_runs_the_release_with_it() {
    let repo = deployer_tests::TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("env_sets", "{ production: { GREETING: bonjour } }")).start();
    let answer = || http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_default();
    assert!(answer().starts_with("hello"), "{}", answer());
    let first = agent.pids("web");

    agent.cli(&["deploy", "web", "--env", "production", "--wait"]).success();
    assert!(answer().starts_with("bonjour"), "{}", answer());
    assert!(agent.pids("web").iter().all(|p| !first.contains(p)), "the live commit was not rolled onto the set");

    let before = agent.current_release("web");
    repo.commit_greeting("v2");
    agent.cli(&["deploy", "web", "--wait"]).success();
    assert_ne!(agent.current_release("web"), before);
    assert!(answer().starts_with("bonjour"), "the set was not kept: {}", answer());

    let bad = agent.cli(&["deploy", "web", "--env", "prod"]).failure(1);
    assert!(bad.stderr.contains("no env set `prod` in the `env_sets` of app `web`"), "{bad}");
}
