//! `deployer push` and the fleet commands against several real agents on loopback, each with
//! its own state dir, ports and copy of the app, all deploying from one git repository.

use deployer_tests::{Load, TestFleet, TestRepo, fixture};
use serde_json::Value;
use std::time::{Duration, Instant};

fn json(out: &deployer_tests::CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{out}"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("`{key}` is not a string in {v:#}"))
}

/// An agent whose worker never gets ready once the repository holds a file `broken`.
/// The URL of a loopback port nothing listens on (connections are refused).
fn nobody_listens() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn breaks_on_marker(app: deployer_tests::AppSpec) -> deployer_tests::AppSpec {
    let script = format!("if [ -e broken ]; then exec node {}; else exec node app.js; fi", fixture("never-ready.js"));
    app.start(&["sh", "-c", &script]).ready_timeout("2s")
}

#[test]
fn push_moves_every_host_to_the_commit_without_failing_a_request() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 5, |_, app| app.set("install", "\"true\""));
    let v1 = fleet.repo.head();
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_file("prod", &fleet.hosts(), "{ canary: 1, max_parallel: 2, halt_on_failure: true }");

    let loads: Vec<Load> = fleet.agents.iter().map(|a| Load::start(a.port("web"), 2, true)).collect();
    for l in &loads {
        assert!(l.wait_for_more(3, Duration::from_secs(20)), "the load got no answers before the push");
    }
    let out = fleet.cli(&["push", "prod", "--who", "fleet-test"]).success();
    let reports: Vec<_> = loads.into_iter().map(Load::stop).collect();

    assert!(out.stderr.contains("is on no remote branch"), "the test repo has no remote: a warning\n{out}");
    assert!(out.stdout.contains("live on") && out.stdout.contains("all 5 hosts of prod"), "{out}");
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report.failed, 0, "host {i} failed requests during the push: {report:?}");
        assert!(report.saw("v2 from worker"), "host {i} never served v2: {report:?}");
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v2.as_str()), "host {i}");
    }
    // The canary went first: its deploy ended before any other host's began.
    let canary_end = fleet.agents[0].history("web")[0].finished_at_ms.expect("final");
    for (i, a) in fleet.agents.iter().enumerate().skip(1) {
        assert!(a.history("web")[0].queued_at_ms >= canary_end, "host {i} started before the canary ended");
    }

    // status --json, field by field.
    let status = json(&fleet.cli(&["status", "prod", "--json"]).success());
    let rows = status.as_array().expect("an array");
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(str_of(row, "host"), fleet.host(i));
        assert_eq!(str_of(row, "app"), "web");
        assert_eq!(row["reachable"], true);
        assert_eq!(row["error"], Value::Null);
        assert_eq!(str_of(row, "app_state"), "running");
        assert_eq!(str_of(row, "sha"), v2);
        assert_eq!(Some(str_of(row, "release").to_string()), fleet.agents[i].current_release("web"));
        assert_eq!((row["workers_up"].as_u64(), row["workers_total"].as_u64()), (Some(2), Some(2)), "{row:#}");
        let last = &row["last_deploy"];
        assert_eq!(str_of(last, "state"), "live");
        assert_eq!(str_of(last, "sha"), v2);
        assert_eq!(str_of(last, "ref"), v2);
        assert_eq!(last["id"].as_u64(), Some(fleet.agents[i].history("web")[0].id));
        assert!(last["finished_at_ms"].as_u64() >= last["queued_at_ms"].as_u64(), "{last:#}");
        assert!(last["age_ms"].as_u64().is_some_and(|a| a < 600_000), "{last:#}");
    }

    // history --json, field by field: the push, then the first deploy at startup.
    let history = json(&fleet.cli(&["history", "prod", "--json", "-n", "5"]).success());
    let hosts = history.as_array().expect("an array");
    assert_eq!(hosts.len(), 5);
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(str_of(h, "host"), fleet.host(i));
        assert_eq!(str_of(h, "app"), "web");
        assert_eq!(h["error"], Value::Null);
        let deploys = h["deploys"].as_array().expect("deploys");
        assert_eq!(deploys.len(), 2, "{h:#}");
        let (push, first) = (&deploys[0], &deploys[1]);
        assert_eq!(
            (str_of(push, "state"), str_of(push, "sha"), str_of(push, "ref")),
            ("live", v2.as_str(), v2.as_str())
        );
        assert_eq!((str_of(push, "trigger"), str_of(push, "who")), ("api", "fleet-test"));
        assert_eq!(Some(str_of(push, "release").to_string()), fleet.agents[i].current_release("web"));
        assert_eq!(
            (str_of(first, "state"), str_of(first, "sha"), str_of(first, "trigger")),
            ("live", v1.as_str(), "startup")
        );
        assert!(push["id"].as_u64() > first["id"].as_u64());
    }

    // The table for people names every host.
    let table = fleet.cli(&["status", "prod"]).success();
    for host in fleet.hosts() {
        assert!(table.stdout.contains(host.trim_start_matches("http://")), "{table}");
    }

    // Pushing the live commit again changes nothing and succeeds.
    let again = json(&fleet.cli(&["push", "prod", "--json"]).success());
    for r in again.as_array().expect("an array") {
        assert_eq!(str_of(r, "state"), "live", "{r:#}");
    }
}

#[test]
fn a_canary_that_fails_readiness_halts_the_push_and_the_others_keep_the_old_version() {
    let fleet =
        TestFleet::start(TestRepo::with_example_app(), 5, |i, app| if i == 0 { breaks_on_marker(app) } else { app });
    let v1 = fleet.repo.head();
    let bad = fleet.repo.commit_file("broken", "yes\n", "break readiness on the canary");
    fleet.write_file("prod", &fleet.hosts(), "{ canary: 1, max_parallel: 2, halt_on_failure: true }");

    let out = fleet.cli(&["push", "prod", "--json"]).failure(1);
    let results = json(&out);
    let results = results.as_array().expect("an array");
    assert_eq!(results.len(), 5);
    assert_eq!(str_of(&results[0], "host"), fleet.host(0));
    assert_eq!(str_of(&results[0], "state"), "rolled_back", "{:#}", results[0]);
    assert_eq!(results[0]["canary"], true);
    assert_eq!(str_of(&results[0], "sha"), bad);
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(str_of(r, "state"), "skipped", "host {i}: {r:#}");
        assert!(str_of(r, "message").contains("canary"), "{r:#}");
        assert_eq!(r["deploy_id"], Value::Null);
    }
    for i in 0..5 {
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v1.as_str()), "host {i} must keep the old version");
    }
    for (i, a) in fleet.agents.iter().enumerate().skip(1) {
        assert_eq!(a.history("web").len(), 1, "host {i} was asked to deploy");
    }

    // In words: the halt and a summary that says which host.
    let words = fleet.cli(&["push", "prod"]).failure(1);
    assert!(words.stdout.contains("halting: canary"), "{words}");
    assert!(words.stdout.contains("rolled_back") && words.stdout.contains("skipped"), "{words}");
}

#[test]
fn rollback_on_failure_puts_the_moved_hosts_back() {
    let fleet =
        TestFleet::start(TestRepo::with_example_app(), 3, |i, app| if i == 1 { breaks_on_marker(app) } else { app });
    let v1 = fleet.repo.head();
    fleet.repo.commit_file("broken", "yes\n", "break readiness on host 1");
    fleet.write_file(
        "prod",
        &fleet.hosts(),
        "{ canary: 1, max_parallel: 1, halt_on_failure: true, rollback_on_failure: true }",
    );

    let results = json(&fleet.cli(&["push", "prod", "--json"]).failure(1));
    let states: Vec<&str> = results.as_array().expect("an array").iter().map(|r| str_of(r, "state")).collect();
    assert_eq!(states, ["reverted", "rolled_back", "skipped"], "{results:#}");
    for i in 0..3 {
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v1.as_str()), "host {i} must be back on the old version");
    }
    let back = &fleet.agents[0].history("web")[0];
    assert_eq!((back.trigger.as_str(), back.state.as_str()), ("rollback", "live"));
}

#[test]
fn a_host_that_refuses_connections_fails_quickly_with_the_reason() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 2, |_, app| app);
    let v2 = fleet.repo.commit_greeting("v2");
    let refused = nobody_listens();
    let mut hosts = fleet.hosts();
    hosts.push(refused.clone());
    fleet.write_file("prod", &hosts, "{ max_parallel: 3, halt_on_failure: false }");

    let started = Instant::now();
    let out = fleet.cli(&["push", "prod", "--json"]).failure(1);
    let results = json(&out);
    let r = &results[2];
    assert_eq!(str_of(r, "host"), refused);
    assert_eq!(str_of(r, "state"), "unreachable", "{r:#}");
    assert!(
        str_of(r, "message").contains("cannot reach the agent")
            && str_of(r, "message").to_lowercase().contains("refused"),
        "{r:#}"
    );
    assert!(r["duration_ms"].as_u64().is_some_and(|d| d < 6_000), "{r:#}");
    for i in 0..2 {
        assert_eq!(str_of(&results[i], "state"), "live");
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v2.as_str()));
    }
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());

    // status shows the host as unreachable, the others as they are, and fails: not all is fine.
    let status = json(&fleet.cli(&["status", "prod", "--json"]).failure(1));
    assert_eq!(status[2]["reachable"], false);
    assert!(str_of(&status[2], "error").contains("cannot reach"), "{status:#}");
    assert_eq!(status[0]["reachable"], true);
    // So do history and logs: what the others answered is shown, and the command fails.
    let history = json(&fleet.cli(&["history", "prod", "--json"]).failure(1));
    assert!(history[0]["deploys"].as_array().is_some_and(|d| !d.is_empty()) && !history[2]["error"].is_null());
    fleet.cli(&["logs", "prod", "-n", "5"]).failure(1);
}

#[test]
fn a_host_that_accepts_but_never_answers_fails_within_the_request_timeout() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 1, |_, app| app);
    let v2 = fleet.repo.commit_greeting("v2");
    // Accepts connections (the kernel's backlog does) and never reads or answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let silent_url = format!("http://127.0.0.1:{}", silent.local_addr().expect("addr").port());
    let mut hosts = fleet.hosts();
    hosts.push(silent_url.clone());
    fleet.write_file("prod", &hosts, "{ max_parallel: 2, halt_on_failure: false }");

    let out = fleet.cli(&["push", "prod", "--json"]).failure(1);
    let results = json(&out);
    let r = &results[1];
    assert_eq!(str_of(r, "host"), silent_url);
    assert_ne!(str_of(r, "state"), "live", "{r:#}");
    assert!(r["duration_ms"].as_u64().is_some_and(|d| d < 30_000), "a hung host held the push: {r:#}");
    assert_eq!(str_of(&results[0], "state"), "live", "{results:#}");
    assert_eq!(fleet.live_sha(0).as_deref(), Some(v2.as_str()));
    drop(silent);
}

#[test]
fn a_second_push_waits_for_the_lock_or_fails_at_once_with_no_wait() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 1, |_, app| app);
    fleet.repo.commit_greeting("v2");
    fleet.write_file("staging", &fleet.hosts(), "{ max_parallel: 1 }");
    let agent = &fleet.agents[0];
    let lock = |holder: &str, ttl_ms: u64| {
        let r = agent.api_post(
            "/v1/locks/push-staging",
            serde_json::json!({ "holder": holder, "lease": holder, "ttl_ms": ttl_ms }),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json::<Value>()["acquired"], true);
    };

    lock("ci job 42", 60_000);
    let busy = fleet.cli(&["push", "staging", "--no-wait"]).failure(1);
    assert!(busy.stderr.contains("another push of `staging` is running: held by ci job 42 since"), "{busy}");
    assert_eq!(agent.history("web").len(), 1, "nothing deployed");
    let r =
        agent.api_request("DELETE", "/v1/locks/push-staging?lease=ci%20job%2042", Some(&agent.token("admin")), None);
    assert_eq!(r.status, 204, "{}", r.body);

    // A holder that vanished: its lease lapses and the waiting push goes on.
    lock("gone laptop", 2_000);
    let started = Instant::now();
    let waited = fleet.cli(&["push", "staging"]).success();
    assert!(waited.stderr.contains("waiting for the push lock of `staging`: held by gone laptop"), "{waited}");
    assert!(started.elapsed() >= Duration::from_millis(1_000), "it did not wait: {:?}", started.elapsed());

    // The push gave the lock back: another one takes it at once.
    let free = fleet.cli(&["push", "staging", "--no-wait"]).success();
    assert!(!free.stderr.contains("waiting"), "{free}");
}

/// The lock lives on the first host: with that host down a push is refused, and nothing moves,
/// unless `--no-lock` says to go on unguarded.
#[test]
fn a_push_whose_lock_cannot_be_taken_is_refused_unless_no_lock_is_given() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 1, |_, app| app);
    let v2 = fleet.repo.commit_greeting("v2");
    let down = nobody_listens();
    let mut hosts = vec![down];
    hosts.extend(fleet.hosts());
    fleet.write_file("prod", &hosts, "{ max_parallel: 2, halt_on_failure: false }");
    let refused = fleet.cli(&["push", "prod"]).failure(1);
    assert!(refused.stderr.contains("cannot take the push lock of `prod`"), "{refused}");
    assert!(refused.stderr.contains("nothing was pushed") && refused.stderr.contains("--no-lock"), "{refused}");
    assert_eq!(fleet.agents[0].history("web").len(), 1, "nothing deployed");
    let unguarded = fleet.cli(&["push", "prod", "--no-lock"]).failure(1);
    assert!(unguarded.stderr.contains("pushing without it (--no-lock)"), "{unguarded}");
    assert_eq!(fleet.live_sha(0).as_deref(), Some(v2.as_str()), "{unguarded}");
}

/// A fleet command holds a connection per host: it raises its own fd limit to the hard limit,
/// and a limit it cannot raise fails hosts as this machine's error, not as unreachable hosts.
#[test]
fn a_low_fd_limit_is_raised_and_one_that_cannot_be_is_not_blamed_on_the_hosts() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 1, |_, app| app);
    // Hosts that accept, hold the connection a second and close it: every request is in flight
    // at once.
    let mut hosts = fleet.hosts();
    let mut listeners = Vec::new();
    for _ in 0..40 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        hosts.push(format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port()));
        listeners.push(l);
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holding = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut held = Vec::new();
            for l in &listeners {
                l.set_nonblocking(true).expect("nonblocking");
            }
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for l in &listeners {
                    if let Ok((c, _)) = l.accept() {
                        held.push((Instant::now(), c));
                    }
                }
                held.retain(|(at, _)| at.elapsed() < Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    fleet.write_file("prod", &hosts, "{ max_parallel: 1 }");
    let status = |limit: &str| {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}")).arg(deployer_tests::bin("deployer"));
        let cli = fleet.cli_command(&["status", "prod", "--json"]);
        cmd.args(cli.get_args()).current_dir(fleet.repo.path()).env("NO_COLOR", "1");
        for (k, v) in cli.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = deployer_tests::run_to_end(cmd, Duration::from_secs(60));
        (json(&out), out)
    };
    // Soft limit 20, hard 4096: raised, so only the hosts themselves fail.
    let (raised, out) = status("20:4096");
    let hosts = raised.as_array().expect("a host list");
    assert_eq!(hosts.len(), 41, "{out}");
    assert_eq!(hosts[0]["reachable"], true, "{out}");
    assert!(hosts.iter().all(|h| !h["error"].as_str().unwrap_or("").contains("file descriptors")), "{out}");
    // Hard limit 20: the hosts it could not ask are this machine's error.
    let (capped, out) = status("20:20");
    let local: Vec<&Value> =
        capped.as_array().expect("a host list").iter().filter(|h| h["reachable"].is_null()).collect();
    assert!(!local.is_empty(), "no host failed for the fd limit: {out}");
    assert!(local.iter().all(|h| str_of(h, "error").contains("out of file descriptors")), "{out}");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    holding.join().expect("the holding thread");
}

#[test]
fn deployer_yaml_mistakes_name_the_place_and_the_fix() {
    let repo = TestRepo::with_example_app();
    let yaml = "app: web\nenvironments:\n  prod:\n    hosts: [http://127.0.0.1:1]\n    rollout: { canary: 0, max_paralel: 2 }\n";
    std::fs::write(repo.path().join("deployer.yaml"), yaml).expect("write");
    let mut cmd = std::process::Command::new(deployer_tests::bin("deployer"));
    cmd.current_dir(repo.path()).env("NO_COLOR", "1").args(["push", "prod"]);
    let out = cmd.output().expect("run deployer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("deployer.yaml:5:") && stderr.contains("unknown field `max_paralel`"), "{stderr}");
    assert!(stderr.contains("hint: did you mean `max_parallel`?"), "{stderr}");
}

#[test]
fn reload_logs_and_rollback_act_on_every_host_of_an_environment() {
    let fleet = TestFleet::start(TestRepo::with_example_app(), 2, |_, app| app);
    let v1 = fleet.repo.head();
    let v2 = fleet.repo.commit_greeting("v2");
    fleet.write_file("prod", &fleet.hosts(), "{ max_parallel: 2 }");
    fleet.cli(&["push", "prod"]).success();

    // logs -f: every host's lines, prefixed with the host, until stopped. The tail (-n 50) makes
    // it independent of when the streams connect: lines written before are in it.
    let mut follow = fleet
        .cli_command(&["logs", "prod", "-f", "-n", "50", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start logs -f");
    let stdout = follow.stdout.take().expect("piped");
    let reload_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let since = reload_at.clone();
    let hosts: Vec<String> = fleet.hosts().iter().map(|h| h.trim_start_matches("http://").to_string()).collect();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        use std::sync::atomic::Ordering::SeqCst;
        let mut lines: Vec<Value> = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")));
            // Two new workers per host came up after the reload began.
            let new_workers = |host: &str| {
                lines
                    .iter()
                    .filter(|l| {
                        l["host"] == host && l["line"].as_str().is_some_and(|t| t.starts_with("Server listening"))
                    })
                    .filter(|l| l["ts_ms"].as_u64().is_some_and(|t| t >= since.load(SeqCst)))
                    .count()
            };
            if hosts.iter().all(|h| new_workers(h) >= 2) {
                return (lines, true);
            }
        }
        (lines, false)
    });
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    reload_at.store(now_ms(), std::sync::atomic::Ordering::SeqCst);
    let reloaded = json(&fleet.cli(&["reload", "prod", "--json"]).success());
    for (i, r) in reloaded.as_array().expect("an array").iter().enumerate() {
        assert_eq!(str_of(r, "host"), fleet.host(i));
        assert_eq!((r["ok"].as_bool(), r["replaced"].as_u64()), (Some(true), Some(2)), "{r:#}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let (lines, saw_all) = reader.join().expect("reader");
    assert!(saw_all, "logs -f did not show every host's new workers within 30 s: {lines:#?}");
    for host in fleet.hosts() {
        assert!(
            lines.iter().any(|l| l["host"] == host.trim_start_matches("http://") && l["stream"] == "out"),
            "no line of {host}: {lines:#?}"
        );
    }

    // logs (a tail): merged, every line names its host.
    let tail = json(&fleet.cli(&["logs", "prod", "-n", "5", "--json"]).success());
    let tail = tail.as_array().expect("an array");
    assert!(!tail.is_empty());
    let stamps: Vec<u64> = tail.iter().map(|l| l["ts_ms"].as_u64().expect("ts_ms")).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "merged in time order: {stamps:?}");

    // rollback: every host back on the previous release.
    let back = json(&fleet.cli(&["rollback", "prod", "--json"]).success());
    for (i, r) in back.as_array().expect("an array").iter().enumerate() {
        assert_eq!(str_of(r, "state"), "live", "{r:#}");
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v1.as_str()));
    }
    let to_v2 = json(&fleet.cli(&["rollback", "prod", "--to", &v2[..12], "--json"]).success());
    assert_eq!(to_v2.as_array().map(Vec::len), Some(2));
    for i in 0..2 {
        assert_eq!(fleet.live_sha(i).as_deref(), Some(v2.as_str()));
    }
}

#[test]
fn push_over_tls_to_an_agent_with_its_own_certificate() {
    let certs = tempfile::tempdir().expect("a temp dir");
    let made = std::process::Command::new("openssl")
        .current_dir(certs.path())
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));

    let repo = TestRepo::with_example_app();
    let token = "tls-fleet-secret";
    let setup = deployer_tests::TestEnv::new().admin_token(token).web(|a| a.repo(&repo)).setup();
    setup.edit_config(|text| format!("tls: {{ cert: {}, key: {} }}\n{text}", cert.display(), key.display()));
    let host = format!("https://127.0.0.1:{}", setup.api_port());
    let fleet = TestFleet::with_agents(repo, vec![setup.spawn()], token);
    let yaml = format!(
        "app: web\nenvironments:\n  prod:\n    hosts: [{host}]\n    token_env: DEPLOYER_FLEET_TOKEN\n    ca_cert: {}\n",
        cert.display()
    );
    std::fs::write(fleet.repo.path().join("deployer.yaml"), yaml).expect("write deployer.yaml");

    let serving = |sha: &str| {
        let status = json(&fleet.cli(&["status", "prod", "--json"]));
        status[0]["sha"] == sha && status[0]["workers_up"] == 2
    };
    let v1 = fleet.repo.head();
    assert!(
        deployer_tests::wait_until(Duration::from_secs(60), || serving(&v1)),
        "the agent never served over https: {}",
        fleet.agents[0].log()
    );
    let v2 = fleet.repo.commit_greeting("v2");
    let pushed = json(&fleet.cli(&["push", "prod", "--json"]).success());
    assert_eq!((str_of(&pushed[0], "state"), str_of(&pushed[0], "sha")), ("live", v2.as_str()));
    assert!(serving(&v2));

    // Without the certificate, the host is failed with the reason, not trusted.
    let yaml = format!("app: web\nenvironments:\n  prod:\n    hosts: [{host}]\n    token_env: DEPLOYER_FLEET_TOKEN\n");
    std::fs::write(fleet.repo.path().join("deployer.yaml"), yaml).expect("write deployer.yaml");
    let status = json(&fleet.cli(&["status", "prod", "--json"]).failure(1));
    assert_eq!(status[0]["reachable"], false);
    assert!(str_of(&status[0], "error").to_lowercase().contains("certificate"), "{status:#}");
}

/// A self-signed certificate as `openssl req -x509` makes it: marked as a CA (webpki alone says
/// `CaUsedAsEndEntity`). Pinned as `ca_cert`, it is trusted for its own name only.
#[test]
fn a_self_signed_certificate_marked_as_a_ca_is_trusted_when_pinned() {
    let certs = tempfile::tempdir().expect("a temp dir");
    let made = std::process::Command::new("openssl")
        .current_dir(certs.path())
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let text = std::process::Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&cert).output();
    let text = String::from_utf8_lossy(&text.expect("openssl x509").stdout).into_owned();
    assert!(text.contains("CA:TRUE"), "openssl no longer marks it as a CA:\n{text}");

    let repo = TestRepo::with_example_app();
    let token = "tls-ca-fleet-secret";
    let setup = deployer_tests::TestEnv::new().admin_token(token).web(|a| a.repo(&repo)).setup();
    setup.edit_config(|text| format!("tls: {{ cert: {}, key: {} }}\n{text}", cert.display(), key.display()));
    let port = setup.api_port();
    let fleet = TestFleet::with_agents(repo, vec![setup.spawn()], token);
    let write = |host: &str| {
        let yaml = format!(
            "app: web\nenvironments:\n  prod:\n    hosts: [{host}]\n    token_env: DEPLOYER_FLEET_TOKEN\n    ca_cert: {}\n",
            cert.display()
        );
        std::fs::write(fleet.repo.path().join("deployer.yaml"), yaml).expect("write deployer.yaml");
    };
    write(&format!("https://127.0.0.1:{port}"));
    let serving = || {
        let status = json(&fleet.cli(&["status", "prod", "--json"]));
        status[0]["reachable"] == true && status[0]["workers_up"] == 2
    };
    assert!(
        deployer_tests::wait_until(Duration::from_secs(60), serving),
        "the pinned CA-marked certificate was refused: {}",
        fleet.cli(&["status", "prod", "--json"])
    );

    // The same certificate for another name (`localhost` is not in it) is refused.
    write(&format!("https://localhost:{port}"));
    let status = json(&fleet.cli(&["status", "prod", "--json"]).failure(1));
    assert_eq!(status[0]["reachable"], false, "{status:#}");
    assert!(str_of(&status[0], "error").to_lowercase().contains("certificate"), "{status:#}");
}
