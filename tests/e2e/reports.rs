//! Every step of a deploy leaves the host over HTTP: JSON events signed with
//! `X-Deployer-Signature`, GitHub commit statuses, through an outbox in SQLite that retries until
//! the receiver answers 2xx and survives an agent restart. At least once, in order per receiver.

use deployer_tests::{AppSpec, Mode, Receiver, TestEnv, TestRepo, wait_until};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn reporting(repo: &TestRepo, receiver: &Receiver) -> TestEnv {
    TestEnv::new()
        .web(|a: AppSpec| a.repo(repo).instances(1))
        .agent_set("report", &format!("[{{ url: \"{}\", secret_env: TEST_REPORT_SECRET }}]", receiver.url("/events")))
        .agent_set("report_retry", "{ first: 100ms, max: 500ms }")
        .agent_env("TEST_REPORT_SECRET", "report-secret")
}

/// (idempotency key, event, deploy id) of each request answered `status`, in arrival order.
fn answered(receiver: &Receiver, status: u16) -> Vec<(String, String, u64)> {
    receiver
        .received()
        .iter()
        .filter(|r| r.answered == status)
        .map(|r| {
            let body = r.json();
            (
                r.header("idempotency-key").unwrap_or_default().to_string(),
                body["event"].as_str().unwrap_or_default().to_string(),
                body["deploy"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_receiver_that_is_down_gets_every_event_after_it_recovers_even_across_a_restart() {
    let repo = TestRepo::with_example_app();
    let receiver = Receiver::start(Mode::Refuse);
    let mut agent = reporting(&repo, &receiver).start();
    let sha = repo.commit_greeting("v2");
    let id = agent.deploy("web", "main");
    assert_eq!(agent.wait_deploy(id).state, "live");

    // Down, then the agent stops with its reports undelivered.
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).is_some(), "the agent did not stop");
    assert!(receiver.received().is_empty(), "nothing can have arrived while refusing");

    // A new agent finds them; the receiver answers 500 for a while, then 200.
    receiver.set_mode(Mode::Status(500));
    agent.start_again();
    assert!(wait_until(Duration::from_secs(20), || answered(&receiver, 500).len() >= 3), "{:?}", receiver.received());
    receiver.set_mode(Mode::Status(200));

    let deploys = agent.history("web");
    let expected: BTreeSet<(String, u64)> = deploys
        .iter()
        .flat_map(|d| {
            let last = format!("deploy.{}", d.state);
            [("deploy.queued".to_string(), d.id), ("deploy.started".to_string(), d.id), (last, d.id)]
        })
        .collect();
    let delivered = || answered(&receiver, 200).into_iter().map(|(_, e, d)| (e, d)).collect::<BTreeSet<_>>();
    assert!(
        wait_until(Duration::from_secs(30), || expected.is_subset(&delivered())),
        "missing: {:?}\nreceived: {:#?}",
        expected.difference(&delivered()).collect::<Vec<_>>(),
        receiver.received()
    );

    // In order for the deploy, each event once with 200 (at least once: a repeat is allowed, but
    // it carries the same key), and the keys refused with 500 came back with the same key.
    let ok = answered(&receiver, 200);
    let order: Vec<&str> = ok.iter().filter(|(_, _, d)| *d == id).map(|(_, e, _)| e.as_str()).collect();
    let mut seen = order.clone();
    seen.dedup();
    assert_eq!(seen, ["deploy.queued", "deploy.started", "deploy.live"], "{ok:#?}");
    let mut keys: BTreeMap<&str, BTreeSet<(&str, u64)>> = BTreeMap::new();
    for (k, e, d) in &ok {
        keys.entry(k.as_str()).or_default().insert((e.as_str(), *d));
    }
    assert!(keys.values().all(|v| v.len() == 1), "one key named two events: {keys:#?}");
    let refused: BTreeSet<String> = answered(&receiver, 500).into_iter().map(|(k, _, _)| k).collect();
    assert!(refused.iter().all(|k| keys.contains_key(k.as_str())), "a refused report never came back with its key");
    let live = receiver
        .received()
        .into_iter()
        .find(|r| r.answered == 200 && r.json()["event"] == "deploy.live" && r.json()["deploy"] == id)
        .expect("live");
    assert_eq!(live.json()["sha"], sha.as_str());
}

#[test]
fn github_commit_statuses_follow_the_deploy() {
    let repo = TestRepo::with_example_app();
    let github = Receiver::start(Mode::Status(201));
    let agent = TestEnv::new()
        .web(|a: AppSpec| {
            a.repo(&repo).instances(1).set(
                "report",
                &format!(
                    "[{{ github_status: {{ token_env: TEST_GH_TOKEN, api_url: \"{}\", repo: acme/web }} }}]",
                    github.url("")
                ),
            )
        })
        .agent_set("report_retry", "{ first: 100ms, max: 500ms }")
        .agent_env("TEST_GH_TOKEN", "gh-token-123")
        .start();
    let sha = repo.commit_greeting("v2");
    let id = agent.deploy("web", &sha);
    assert_eq!(agent.wait_deploy(id).state, "live");

    let path = format!("/repos/acme/web/statuses/{sha}");
    let states = || -> Vec<String> {
        github
            .received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json()["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(wait_until(Duration::from_secs(10), || states().len() >= 2), "{:#?}", github.received());
    assert_eq!(states(), ["pending", "success"]);
    let r = github.received().into_iter().find(|r| r.path == path).unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("authorization"), Some("Bearer gh-token-123"));
}

#[test]
fn a_worker_that_errors_is_reported_with_its_output() {
    let receiver = Receiver::start(Mode::Status(200));
    let _agent = TestEnv::new()
        .start_command(&["node", &deployer_tests::fixture("crashes.js")])
        .env("CRASH_INSTANCE", "1")
        .restart(2, "5s", "100ms")
        .dont_wait_for_workers()
        .agent_set("report", &format!("[{{ url: \"{}\" }}]", receiver.url("/events")))
        .start();
    let errored =
        || receiver.received().into_iter().filter(|r| r.json()["event"] == "worker.errored").collect::<Vec<_>>();
    assert!(wait_until(Duration::from_secs(20), || !errored().is_empty()), "{:#?}", receiver.received());
    let body = errored()[0].json();
    assert_eq!((body["app"].as_str(), body["worker"].as_u64()), (Some("web"), Some(1)), "{body:#}");
    assert!(body["output_tail"].to_string().contains("crashing on purpose"), "{body:#}");
    assert!(errored()[0].header("x-deployer-signature").is_none(), "no secret, no signature");
    // Once per errored worker, not once per look.
    assert!(!wait_until(Duration::from_secs(3), || errored().len() > 1), "{:#?}", errored());
}

/// A worker that health checks take out of rotation is reported once as `worker.unhealthy`,
/// saying why, with its release.
#[test]
fn a_worker_found_unhealthy_is_reported_once() {
    let receiver = Receiver::start(Mode::Status(200));
    let dir = tempfile::tempdir().expect("a temp dir");
    let env = TestEnv::new().agent_set("report", &format!("[{{ url: \"{}\" }}]", receiver.url("/events")));
    let (_agent, _sick) = crate::edge::sickening_app(env, dir.path());
    std::fs::write(dir.path().join("sick-now"), "").expect("the marker");
    let unhealthy =
        || receiver.received().into_iter().filter(|r| r.json()["event"] == "worker.unhealthy").collect::<Vec<_>>();
    assert!(wait_until(Duration::from_secs(20), || !unhealthy().is_empty()), "{:#?}", receiver.received());
    let body = unhealthy()[0].json();
    assert_eq!((body["app"].as_str(), body["worker"].as_u64()), (Some("web"), Some(1)), "{body:#}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("3 failed health probes in a row")), "{body:#}");
    assert!(body["release"].is_string(), "{body:#}");
    assert_eq!(unhealthy()[0].header("x-deployer-event"), Some("worker.unhealthy"));
    // Its replacement is healthy: no second report.
    assert!(!wait_until(Duration::from_secs(3), || unhealthy().len() > 1), "{:#?}", unhealthy());
}
