//! Fleet mode (issue 14): agents that join their environment on a real `nats-server -js`, the CLI
//! that talks to the engine only, and rollouts the agents carry out among themselves.

use deployer_tests::{
    AppSpec, Load, NatsCluster, NatsServer, TestEnv, TestFleet, TestRepo, fake_nats_server, fixture, run_to_end,
    wait_until,
};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

/// How long a rollout may take to reach every host once the CLI is gone.
const ROLLOUT: Duration = Duration::from_secs(90);

fn json(out: &deployer_tests::CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{out}"))
}

/// The example app without an install step (nothing to install; keeps the tests fast).
fn plain(_: usize, app: AppSpec) -> AppSpec {
    app.set("install", "\"true\"")
}

/// An agent whose worker never gets ready once the repository holds a file `broken`.
fn breaks_on_marker(_: usize, app: AppSpec) -> AppSpec {
    let script = format!("if [ -e broken ]; then exec node {}; else exec node app.js; fi", fixture("never-ready.js"));
    app.set("install", "\"true\"").start(&["sh", "-c", &script]).ready_timeout("2s")
}

fn all_live(fleet: &TestFleet, sha: &str, timeout: Duration) -> bool {
    wait_until(timeout, || (0..fleet.agents.len()).all(|i| fleet.live_sha(i).as_deref() == Some(sha)))
}

/// How many deploys of `sha` the fleet asked of agent `i`.
fn fleet_deploys(fleet: &TestFleet, i: usize, sha: &str) -> usize {
    fleet.agents[i].history("web").iter().filter(|d| d.trigger == "fleet" && d.sha.as_deref() == Some(sha)).count()
}

#[test]
fn the_test_engine_restarts_on_its_port_and_store() {
    let mut nats = NatsServer::start();
    let port = nats.port();
    nats.stop();
    nats.start_again();
    assert_eq!(nats.port(), port);
    assert!(nats.store_dir().join("jetstream").is_dir(), "JetStream keeps its store in the store dir");
}

#[test]
fn a_push_on_the_engine_moves_every_host_without_failing_a_request() {
    const HOSTS: usize = 10;
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), HOSTS, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 4 }");
    // Every host is present before the push (presence is written once connected).
    assert!(
        wait_until(Duration::from_secs(20), || {
            json(&fleet.cli(&["status", "prod", "--json"]).success()).as_array().is_some_and(|a| a.len() == HOSTS)
        }),
        "the hosts did not join"
    );

    let loads: Vec<Load> = fleet.agents.iter().map(|a| Load::start(a.port("web"), 2, true)).collect();
    for l in &loads {
        assert!(l.wait_for_more(3, Duration::from_secs(20)), "the load got no answers before the push");
    }
    let out = fleet.cli(&["push", "prod", "--who", "fleet-test"]).success();
    let reports: Vec<_> = loads.into_iter().map(Load::stop).collect();
    assert!(out.stdout.contains("live on") && out.stdout.contains(&format!("all {HOSTS} hosts of prod")), "{out}");
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report.failed, 0, "host {i} failed requests during the push: {report:?}");
        assert!(report.saw("v2 from worker"), "host {i} never served v2: {report:?}");
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v2.as_str()), "host {i}");
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i} deployed once");
        let deploy = &fleet.agents[i].history("web")[0];
        assert_eq!(deploy.who.as_deref(), Some("fleet-test"), "host {i}");
    }

    // status: from presence, no host list in a file.
    let status = json(&fleet.cli(&["status", "prod", "--json"]).success());
    let mut hosts: Vec<&str> = status.as_array().expect("an array").iter().filter_map(|h| h["host"].as_str()).collect();
    hosts.sort_unstable();
    let expected: Vec<String> = (0..HOSTS).map(|i| format!("h{i}")).collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(hosts, expected);
    for h in status.as_array().expect("an array") {
        assert_eq!(h["apps"][0]["sha"].as_str(), Some(v2.as_str()), "{h:#}");
        assert_eq!(h["last_deploy"]["state"], "live", "{h:#}");
    }
    // history: the desired state's revisions.
    let history = json(&fleet.cli(&["history", "prod", "--json"]).success());
    assert_eq!(history[0]["sha"].as_str(), Some(v2.as_str()), "{history:#}");
    assert_eq!(history[0]["who"], "fleet-test");
    assert_eq!(history[0]["rollout"]["max_parallel"], 4);

    // The same commit again: every host says it is already live, nothing deploys.
    let again = json(&fleet.cli(&["push", "prod", "--json"]).success());
    assert_eq!(again.as_array().map(Vec::len), Some(HOSTS), "{again:#}");
    for i in 0..HOSTS {
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i} deployed the same commit again");
    }
}

#[test]
fn the_rollout_finishes_with_the_cli_killed() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 4, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    // One host at a time, each baking 1 s: the CLI is killed long before the end.
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 1, bake: 1s }");
    let mut cli =
        fleet.cli_command(&["push", "prod"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("push");
    assert!(wait_until(ROLLOUT, || (0..4).any(|i| fleet_deploys(&fleet, i, &v2) > 0)), "no host started deploying");
    cli.kill().expect("kill -9 the CLI");
    cli.wait().expect("reap the CLI");
    assert!((0..4).any(|i| fleet.live_sha(i).as_deref() != Some(v2.as_str())), "the push ended before the kill");

    assert!(all_live(&fleet, &v2, ROLLOUT), "the hosts did not finish the rollout without the CLI");
    for i in 0..4 {
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i}");
    }
    // Reattach: the whole push replayed, every host live.
    let watched = fleet.cli(&["watch", "prod"]).success();
    assert!(watched.stdout.contains("all 4 hosts of prod"), "{watched}");
    // The killed CLI's lock is held until its TTL lapses: a new push is refused meanwhile, then
    // goes. --detach returns once the desired state is written; watch follows it to the end.
    let v3 = fleet.repo.commit_greeting("v3");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 4 }");
    let mut refused = false;
    let detached = deployer_tests::poll(Duration::from_secs(25), || {
        let out = fleet.cli(&["push", "prod", "--detach"]);
        refused |= out.stderr.contains("lapses in");
        out.status.success().then_some(out)
    })
    .expect("the killed CLI's lock lapsed");
    assert!(refused, "the killed CLI's lock must hold until its TTL lapses");
    assert!(detached.stdout.contains("detached"), "{detached}");
    fleet.cli(&["watch", "prod"]).success();
    assert!(all_live(&fleet, &v3, Duration::from_secs(5)));
}

/// A push stopped with SIGTERM (a cancelled CI job, `timeout`) gives its lock back at once: the
/// next push goes without waiting for the lock's TTL, and the hosts finish the first one.
#[test]
fn a_push_stopped_with_sigterm_gives_its_lock_back() {
    use nix::sys::signal::{Signal, kill};
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 2, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 1, bake: 1s }");
    let cli = fleet.cli_command(&["push", "prod"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("push");
    assert!(wait_until(ROLLOUT, || (0..2).any(|i| fleet_deploys(&fleet, i, &v2) > 0)), "no host started deploying");
    kill(nix::unistd::Pid::from_raw(cli.id() as i32), Signal::SIGTERM).expect("SIGTERM the CLI");
    let out = cli.wait_with_output().expect("the CLI's end");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped (SIGTERM) following the push"), "{stderr}");
    // The lock is free at once (its TTL is 15 s).
    let again = fleet.cli(&["push", "prod", "--detach"]);
    assert!(again.status.success(), "the lock was not given back: {again}");
    assert!(all_live(&fleet, &v2, ROLLOUT), "the hosts did not finish the rollout");
}

#[test]
fn a_failed_canary_halts_and_nothing_else_moves() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 4, &urls, "prod", breaks_on_marker);
    let v1 = fleet.repo.head();
    let bad = fleet.repo.commit_file("broken", "yes\n", "break readiness");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 3, halt_on_failure: true }");

    let out = fleet.cli(&["push", "prod", "--json"]).failure(1);
    let results = json(&out);
    let states: Vec<&str> = results.as_array().expect("an array").iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(states.iter().filter(|s| **s == "failed").count(), 1, "{results:#}");
    assert_eq!(states.iter().filter(|s| **s == "halted").count(), 3, "{results:#}");
    let tried: Vec<usize> = (0..4).filter(|i| fleet_deploys(&fleet, *i, &bad) > 0).collect();
    assert_eq!(tried.len(), 1, "only the canary may try the commit");
    for i in 0..4 {
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v1.as_str()), "host {i} must keep the old version");
    }
}

#[test]
fn rollback_on_failure_reverts_the_moved_hosts_without_the_cli() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    // h0 breaks; the others do not. No canary: h1..h3 move, h0 fails, the moved ones go back.
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 3, &urls, "prod", |i, app| {
        if i == 0 { breaks_on_marker(i, app) } else { plain(i, app) }
    });
    let v1 = fleet.repo.head();
    fleet.repo.commit_file("broken", "yes\n", "break readiness on h0");
    fleet.write_nats_file("prod", &urls, "{ canary: 0, max_parallel: 3, rollback_on_failure: true }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    assert!(all_live(&fleet, &v1, ROLLOUT), "the moved hosts did not go back by themselves");
    assert!(
        wait_until(Duration::from_secs(10), || (1..3).all(|i| fleet.agents[i].history("web")[0].trigger == "fleet"
            && fleet.agents[i].history("web")[0].state == "live")),
        "the revert is a fleet deploy"
    );
}

#[test]
fn a_second_push_meanwhile_gets_a_clear_conflict() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 2, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 1, bake: 2s }");
    let first = fleet.cli_command(&["push", "prod", "--who", "first"]);
    let first = std::thread::spawn(move || run_to_end(first, ROLLOUT));
    assert!(wait_until(ROLLOUT, || (0..2).any(|i| fleet_deploys(&fleet, i, &v2) > 0)), "the first push did not start");
    let second = fleet.cli(&["push", "prod", "--who", "second"]).failure(1);
    assert!(second.stderr.contains("another push of `prod` is running: held by first"), "{second}");
    first.join().expect("the first push").success();
    assert!(all_live(&fleet, &v2, Duration::from_secs(5)));
}

#[test]
fn a_host_that_joins_later_gets_the_desired_sha() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let mut fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 2, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 2 }");
    fleet.cli(&["push", "prod"]).success();
    let late = TestFleet::nats_env(&fleet.repo, fleet.token(), &urls, "prod", 2, plain).start();
    fleet.agents.push(late);
    assert!(all_live(&fleet, &v2, ROLLOUT), "the late host did not deploy the desired commit");
}

/// A host of the environment whose `web` is not deployed from git takes no part in its pushes:
/// the push does not wait for it, and it does not count as a canary that never comes.
#[test]
fn a_host_whose_app_is_not_from_git_is_not_waited_for() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 2, &urls, "prod", plain);
    let fleet_key = format!("{{ nats: [{}], env: prod, host: in-place }}", urls.join(", "));
    let in_place = TestEnv::new().admin_token(fleet.token()).agent_set("fleet", &fleet_key).start();
    // Three canaries asked for, two hosts able to be one.
    fleet.write_nats_file("prod", &urls, "{ canary: 3, max_parallel: 2 }");
    assert!(
        wait_until(Duration::from_secs(20), || {
            json(&fleet.cli(&["status", "prod", "--json"]).success()).as_array().is_some_and(|a| a.len() == 3)
        }),
        "the hosts did not join"
    );
    let v2 = fleet.repo.commit_greeting("v2");
    let out = run_to_end(fleet.cli_command(&["push", "prod", "--json"]), Duration::from_secs(60));
    assert_eq!(out.code(), Some(0), "{out}");
    let results = json(&out);
    let hosts: Vec<&str> = results.as_array().expect("a list").iter().filter_map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts, ["h0", "h1"], "{results:#}");
    for i in 0..2 {
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v2.as_str()), "host {i}");
    }
    assert_eq!(in_place.history("web").len(), 0, "the in-place app was asked to deploy");
}

#[test]
fn a_push_without_the_engine_is_refused() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 0, |_, app| app);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
    fleet.write_nats_file("prod", &[format!("nats://127.0.0.1:{port}")], "{ canary: 1 }");
    let out = fleet.cli(&["push", "prod"]).failure(1);
    assert!(out.stderr.contains("cannot reach the fleet engine"), "{out}");
    assert!(out.stderr.contains("hint:") && out.stderr.contains("never runs without it"), "{out}");
    // An app name the engine's keys cannot hold is refused before anything is asked of it.
    let out = fleet.cli(&["push", "prod", "--app", "web.*"]).failure(1);
    assert!(out.stderr.contains("`web.*` cannot be an app of a fleet-mode environment"), "{out}");
}

#[test]
fn an_agent_keeps_serving_while_the_engine_is_down_and_joins_when_it_is_back() {
    let mut nats = NatsServer::start();
    let urls = [nats.url()];
    nats.stop();
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 1, &urls, "prod", plain);
    assert!(fleet.agents[0].log().contains("fleet: engine down, the apps keep serving"), "{}", fleet.agents[0].log());
    nats.start_again();
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1 }");
    assert!(
        wait_until(Duration::from_secs(20), || fleet.cli(&["status", "prod", "--json"]).stdout.contains("\"h0\"")),
        "the agent did not join once the engine was back"
    );
    fleet.cli(&["push", "prod"]).success();
    assert_eq!(fleet.live_sha(0).as_deref(), Some(v2.as_str()));
}

#[test]
fn a_restart_of_the_engine_mid_rollout_misses_nothing_and_deploys_no_host_twice() {
    let mut nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 3, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 1, bake: 1s }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    assert!(wait_until(ROLLOUT, || (0..3).any(|i| fleet.live_sha(i).as_deref() == Some(v2.as_str()))), "no host moved");
    nats.stop();
    nats.start_again();
    assert!(all_live(&fleet, &v2, ROLLOUT), "the rollout did not resume after the engine's restart");
    for i in 0..3 {
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i} deployed the push twice");
    }
    fleet.cli(&["watch", "prod"]).success();
}

#[test]
fn a_node_of_a_three_node_engine_restarting_mid_rollout_misses_nothing() {
    let mut cluster = NatsCluster::start();
    let urls = cluster.urls();
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 3, &urls, "prod", plain);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 1, bake: 1s }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    assert!(wait_until(ROLLOUT, || (0..3).any(|i| fleet.live_sha(i).as_deref() == Some(v2.as_str()))), "no host moved");
    cluster.nodes[0].stop();
    assert!(all_live(&fleet, &v2, ROLLOUT), "the rollout did not go on with a node down");
    cluster.nodes[0].start_again();
    for i in 0..3 {
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i} deployed the push twice");
    }
    fleet.cli(&["watch", "prod"]).success();
    let status = json(&fleet.cli(&["status", "prod", "--json"]).success());
    assert_eq!(status.as_array().map(Vec::len), Some(3), "{status:#}");
}

#[test]
fn an_engine_too_old_for_per_key_ttl_is_refused_by_the_cli_and_the_agent() {
    let port = fake_nats_server("2.9.10");
    let urls = [format!("nats://127.0.0.1:{port}")];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 1, &urls, "prod", plain);
    fleet.write_nats_file("prod", &urls, "{ canary: 1 }");
    let out = fleet.cli(&["push", "prod"]).failure(1);
    assert!(out.stderr.contains("is nats-server 2.9.10; fleet mode needs 2.11 or later (per-key TTL)"), "{out}");
    assert!(out.stderr.contains("hint: install nats-server 2.11 or later"), "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || fleet.agents[0]
            .log()
            .contains("fleet: engine refused, the apps keep serving")),
        "{}",
        fleet.agents[0].log()
    );
    assert!(fleet.live_sha(0).is_some(), "the agent serves its app all the same");
}

#[test]
fn an_agent_killed_mid_wave_frees_its_slot_after_the_ttl_and_the_rollout_goes_on() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let marks = tempfile::tempdir().expect("a temp dir");
    // The first host to install this push hangs there (mkdir is atomic: exactly one does).
    let mark = marks.path().join("first");
    let install = format!("\"sh -c 'mkdir {} 2>/dev/null && sleep 30 || true'\"", mark.display());
    std::fs::create_dir(&mark).expect("the mark, so the startup deploys go through");
    let fleet =
        TestFleet::start_on_nats(TestRepo::with_example_app(), 3, &urls, "prod", |_, app| app.set("install", &install));
    std::fs::remove_dir(&mark).expect("remove the mark");
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 0, max_parallel: 1 }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    let stuck = deployer_tests::poll(ROLLOUT, || {
        (0..3).find(|&i| {
            let d = &fleet.agents[i].history("web")[0];
            d.trigger == "fleet" && !d.is_final()
        })
    })
    .expect("a host took the slot");
    assert!(wait_until(Duration::from_secs(10), || mark.is_dir()), "the slot's holder is installing");
    let mut fleet = fleet;
    fleet.agents[stuck].signal(nix::sys::signal::Signal::SIGKILL);
    assert!(fleet.agents[stuck].wait_exit(Duration::from_secs(10)).is_some());
    let others: Vec<usize> = (0..3).filter(|&i| i != stuck).collect();
    assert!(
        wait_until(ROLLOUT, || others.iter().all(|&i| fleet.live_sha(i).as_deref() == Some(v2.as_str()))),
        "the other hosts did not get the slot once the killed host's lapsed"
    );
}

#[test]
fn one_host_polls_git_for_the_environment_and_every_host_deploys_the_new_head() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 3, &urls, "prod", |i, app| {
        plain(i, app).set("poll", "300ms")
    });
    fleet.write_nats_file("prod", &urls, "{ canary: 1, max_parallel: 2 }");
    let leader = |fleet: &TestFleet| {
        (0..3)
            .filter(|&i| fleet.agents[i].log().contains("this host pulls git for the environment"))
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(20), || leader(&fleet).len() == 1), "no single poller");
    let v2 = fleet.repo.commit_greeting("v2");
    assert!(all_live(&fleet, &v2, ROLLOUT), "the new head did not reach every host");
    let polled_by = format!("poll:h{}", leader(&fleet)[0]);
    let history = json(&fleet.cli(&["history", "prod", "--json"]).success());
    assert_eq!(history[0]["sha"].as_str(), Some(v2.as_str()), "{history:#}");
    assert_eq!(history[0]["who"].as_str(), Some(polled_by.as_str()), "{history:#}");
    for i in 0..3 {
        assert!(!fleet.agents[i].log().contains("pull mode on"), "host {i} polls on its own");
        assert_eq!(fleet_deploys(&fleet, i, &v2), 1, "host {i}");
    }
    assert_eq!(leader(&fleet).len(), 1, "one poller for the environment");
}

/// A desired state as anyone with the engine's account can write it by hand.
fn desired_json(sha: &str, git_ref: &str, push_id: &str, who: &str) -> String {
    serde_json::json!({
        "sha": sha, "ref": git_ref, "push_id": push_id, "who": who,
        "rollout": { "canary": 0, "max_parallel": 2, "bake_ms": 0, "halt_on_failure": true, "rollback_on_failure": false },
        "at_ms": 1_700_000_000_000u64,
    })
    .to_string()
}

#[test]
fn what_the_engine_holds_reaches_the_terminal_without_its_escape_sequences() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start(TestRepo::with_example_app(), 0, |_, app| app);
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    let hostile = desired_json(&fleet.repo.head(), "\u{1b}]0;pwned\u{7}main", "p1", "\u{1b}[2Jmallory");
    let ack = nats.publish("$KV.deployer_prod_desired.web", hostile.as_bytes());
    assert!(ack.contains("\"seq\""), "{ack}");
    // Colours on, as on a terminal: the CLI's own styling passes, the engine's escapes do not.
    let mut history = fleet.cli_command(&["history", "prod"]);
    history.env_remove("NO_COLOR").env("CLICOLOR_FORCE", "1");
    let out = run_to_end(history, Duration::from_secs(30)).success();
    assert!(out.stdout.contains("mallory") && out.stdout.contains("pwned"), "{out}");
    assert!(!out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{7}'), "escapes reached the terminal: {out:?}");
    assert!(out.stdout.contains(" ago") && !out.stdout.contains("ago ago"), "{out}");
}

#[test]
fn a_desired_state_this_cli_cannot_read_does_not_block_the_next_push() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start(TestRepo::with_example_app(), 0, |_, app| app);
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    fleet.cli(&["push", "prod", "--detach"]).success();
    // A newer CLI's value (a rollout field this one does not know), or garbage.
    for value in [r#"{"sha":"x","rollout":{"canary":0,"surge":3}}"#, "not JSON"] {
        assert!(nats.publish("$KV.deployer_prod_desired.web", value.as_bytes()).contains("\"seq\""));
        let out = fleet.cli(&["push", "prod", "--detach", "--json"]).success();
        assert_eq!(json(&out)["sha"].as_str(), Some(fleet.repo.head().as_str()), "{out}");
    }
}

#[test]
fn a_desired_state_naming_no_commit_or_no_key_is_refused_and_nothing_deploys() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 1, &urls, "prod", plain);
    let v1 = fleet.repo.head();
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    assert!(
        wait_until(Duration::from_secs(20), || fleet.cli(&["status", "prod", "--json"]).stdout.contains("\"h0\"")),
        "the host did not join"
    );
    // A branch instead of a commit (each host would deploy what it names when it fetches), and a
    // push id with the engine's wildcards.
    for (sha, push_id, why) in [("main", "p1", "not a full commit sha"), (v2.as_str(), "a.>", "push id `a.>`")] {
        let ack =
            nats.publish("$KV.deployer_prod_desired.web", desired_json(sha, "main", push_id, "mallory").as_bytes());
        assert!(ack.contains("\"seq\""), "{ack}");
        let out = fleet.cli(&["watch", "prod", "--json"]).failure(1);
        let results = json(&out);
        assert_eq!(results[0]["state"], "failed", "{results:#}");
        let message = results[0]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("refused: ") && message.contains(why), "{message}");
        assert_eq!(fleet.live_sha(0).as_deref(), Some(v1.as_str()));
        assert!(fleet.agents[0].history("web").iter().all(|d| d.trigger != "fleet"), "the fleet deployed something");
        assert!(fleet.agents[0].log().contains("fleet: desired state refused"), "{}", fleet.agents[0].log());
    }
}

#[test]
fn a_push_to_an_environment_without_hosts_ends_with_a_clear_error_and_frees_the_lock() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start(TestRepo::with_example_app(), 0, |_, app| app);
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    let out = fleet.cli(&["push", "prod"]).failure(1);
    assert!(out.stderr.contains("no host of `prod` with `web` deployed from git is present"), "{out}");
    assert!(out.stderr.contains("deploy it when they join"), "{out}");
    // The lock went with the CLI: the next push does not wait for its TTL.
    let again = fleet.cli(&["push", "prod", "--detach"]).success();
    assert!(again.stdout.contains("detached"), "{again}");
    let watched = fleet.cli(&["watch", "prod"]).failure(1);
    assert!(watched.stderr.contains("no host of `prod` with `web` deployed from git is present"), "{watched}");
}

#[test]
fn a_second_agent_with_a_host_name_in_use_stays_out_of_the_fleet_and_says_why() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let mut fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 1, &urls, "prod", plain);
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    assert!(
        wait_until(Duration::from_secs(20), || fleet.cli(&["status", "prod", "--json"]).stdout.contains("\"h0\"")),
        "the host did not join"
    );
    // Another agent, also `host: h0` (a copied config).
    let twin = TestFleet::nats_env(&fleet.repo, fleet.token(), &urls, "prod", 0, plain).start();
    assert!(
        wait_until(Duration::from_secs(20), || twin.log().contains("another agent is host `h0` of `prod`")),
        "{}",
        twin.log()
    );
    assert!(!twin.log().contains("fleet: joined the environment"), "{}", twin.log());
    fleet.agents.push(twin);
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.cli(&["push", "prod"]).success();
    assert_eq!(fleet.live_sha(0).as_deref(), Some(v2.as_str()));
    // The twin's app keeps serving what it ran; the fleet's rollout is not its.
    assert!(fleet.agents[1].history("web").iter().all(|d| d.trigger != "fleet"));
}

#[test]
fn an_event_published_on_another_hosts_subject_is_not_believed() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let fleet = TestFleet::start_on_nats(TestRepo::with_example_app(), 1, &urls, "prod", plain);
    fleet.write_nats_file("prod", &urls, "{ canary: 0 }");
    assert!(
        wait_until(Duration::from_secs(20), || fleet.cli(&["status", "prod", "--json"]).stdout.contains("\"h0\"")),
        "the host did not join"
    );
    // A host that is there but will fail; h0 (or anyone with the account) claims it went live.
    let ghost = serde_json::json!({ "host": "ghost", "at_ms": 1,
        "apps": [{ "app": "web", "sha": null, "release": null, "state": "running", "rolls": true }] })
    .to_string();
    assert!(nats.publish("$KV.deployer_prod_hosts.ghost", ghost.as_bytes()).contains("\"seq\""));
    let v2 = fleet.repo.commit_greeting("v2");
    let pushed = json(&fleet.cli(&["push", "prod", "--detach", "--json"]).success());
    let push_id = pushed["push_id"].as_str().expect("a push id");
    assert!(all_live(&fleet, &v2, ROLLOUT), "h0 did not deploy");
    let event = |host: &str, state: &str| {
        serde_json::json!({ "host": host, "app": "web", "push_id": push_id, "sha": v2, "state": state,
                            "message": state, "at_ms": 1 })
        .to_string()
    };
    assert!(nats.publish("deployer.prod.events.h0", event("ghost", "live").as_bytes()).contains("\"seq\""));
    assert!(nats.publish("deployer.prod.events.ghost", event("ghost", "failed").as_bytes()).contains("\"seq\""));
    let out = fleet.cli(&["watch", "prod", "--json"]).failure(1);
    let results = json(&out);
    let ghost = results.as_array().expect("an array").iter().find(|r| r["host"] == "ghost").expect("ghost's result");
    assert_eq!(ghost["state"], "failed", "{results:#}");
}
