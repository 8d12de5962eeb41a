//! Abuse: secrets. App code (workers and install steps, run as `nobody`) must not get any secret
//! the agent holds, and a secret value that reaches the agent's output anyway (an app printing a
//! value it was given) is masked in everything the agent stores or sends. The audit trail names
//! the token that asked, whatever the request says about itself; a replayed signed push makes
//! no new deploy.

use deployer_tests::abuse::{is_root, open_to_nobody};
use deployer_tests::{AppSpec, Bystander, GithubPush, Mode, Receiver, TestEnv, TestRepo, environ, wait_until};
use deployer_wire::{Deploy, HookAnswer, LogLine};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Every secret the config names through a `*_env` key, (variable, value).
const HOOK: (&str, &str) = ("TEST_HOOK_SECRET", "hook-secret-4d2a9e");
const REPORT: (&str, &str) = ("TEST_REPORT_SECRET", "report-secret-8b1c07");
const APP_REPORT: (&str, &str) = ("TEST_APP_REPORT_SECRET", "app-report-secret-51f0");
const AGENT_GH: (&str, &str) = ("TEST_AGENT_GH_TOKEN", "agent-gh-token-c3d9");
const APP_GH: (&str, &str) = ("TEST_APP_GH_TOKEN", "app-gh-token-93ce01");
const GIT: (&str, &str) = ("TEST_GIT_TOKEN", "git-token-6a7e2f");
/// Named by no key until a SIGHUP adds a report that reads it.
const LATER: (&str, &str) = ("TEST_LATER_SECRET", "later-secret-0e7d55");
/// Named by no key, but every `DEPLOYER_*` variable is the agent's own.
const DEPLOYER_OTHER: (&str, &str) = ("DEPLOYER_OTHER_SETTING", "deployer-other-2b9f");

const NAMED: [(&str, &str); 6] = [HOOK, REPORT, APP_REPORT, AGENT_GH, APP_GH, GIT];

fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("skipped: the abuse suite runs workers as `nobody`, which needs root");
    }
    !is_root()
}

/// An agent with every kind of `*_env` secret configured and in its environment, the app `web`
/// deployed from `repo` as `nobody` (changed by `f`), and the bystander.
fn with_every_secret(repo: &TestRepo, receiver: &Receiver, f: impl FnOnce(AppSpec) -> AppSpec) -> TestEnv {
    let mut env = TestEnv::new()
        .web(|a| {
            f(a.repo(repo)
                .instances(2)
                .set("user", "nobody")
                .set("auth", &format!("!token_env {}", GIT.0))
                .set("webhook", &format!("{{ provider: github, secret_env: {} }}", HOOK.0))
                .set(
                    "report",
                    &format!(
                        "[{{ url: \"{}\", secret_env: {} }}, {{ github_status: {{ token_env: {}, api_url: \"{}\", repo: acme/web }} }}]",
                        receiver.url("/app-events"),
                        APP_REPORT.0,
                        APP_GH.0,
                        receiver.url("/gh-app"),
                    ),
                ))
        })
        .app(Bystander::app())
        .agent_set(
            "report",
            &format!(
                "[{{ url: \"{}\", secret_env: {} }}, {{ github_status: {{ token_env: {}, api_url: \"{}\", repo: acme/web }} }}]",
                receiver.url("/events"),
                REPORT.0,
                AGENT_GH.0,
                receiver.url("/gh"),
            ),
        );
    for (k, v) in NAMED.iter().chain([&LATER, &DEPLOYER_OTHER]) {
        env = env.agent_env(k, v);
    }
    env
}

/// What must not be in a child's environment: a named variable, or any `DEPLOYER_*` one.
fn assert_clean_env(what: &str, vars: &[(String, String)], also: &[(&str, &str)]) {
    assert!(vars.iter().any(|(k, _)| k == "PATH"), "{what}: no PATH, so this is not an environment: {vars:?}");
    for (k, v) in vars {
        assert!(!k.starts_with("DEPLOYER_"), "{what} has `{k}`");
        for (name, value) in NAMED.iter().chain(also) {
            assert!(k != name, "{what} has the secret variable `{k}`");
            assert!(!v.contains(value), "{what} has the value of `{name}` in `{k}`");
        }
    }
}

/// `KEY=VALUE` lines as `env` prints them.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn log_lines(agent: &deployer_tests::Agent, app: &str) -> Vec<LogLine> {
    let r = agent.api_get(&format!("/v1/apps/{app}/logs?lines=2000"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = r.json();
    serde_json::from_value(v["lines"].clone()).unwrap_or_else(|e| panic!("log lines ({e}): {}", r.body))
}

#[test]
fn no_secret_the_agent_holds_reaches_a_worker_or_an_install_step() {
    if skip_unless_root() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let receiver = Receiver::start(Mode::Status(200));
    let setup = with_every_secret(&repo, &receiver, |a| {
        a.start(&["/bin/sh", "-c", "env; exec node app.js"])
            .set("install", "\"/bin/sh -c 'env > install-env.txt'\"")
            .set("hooks", "{ post_install: \"/bin/sh -c 'env > post-install-env.txt'\" }")
    })
    .setup();
    open_to_nobody(&setup);
    let mut agent = setup.start();
    let bystander = Bystander::start(&agent);

    // The workers' environments, as the kernel holds them.
    let pids = agent.pids("web");
    assert_eq!(pids.len(), 2);
    for pid in &pids {
        assert_clean_env(&format!("worker {pid}"), &environ(*pid), &[DEPLOYER_OTHER]);
    }
    // What `env` printed in the workers (their log) and in the install step and a hook.
    let printed: Vec<String> = log_lines(&agent, "web").into_iter().map(|l| l.line).collect();
    assert_clean_env("the workers' `env`", &env_lines(&printed.join("\n")), &[DEPLOYER_OTHER]);
    let current = agent.app_dir("web").join("current");
    for file in ["install-env.txt", "post-install-env.txt"] {
        let text = std::fs::read_to_string(current.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let vars = env_lines(&text);
        assert_clean_env(file, &vars, &[DEPLOYER_OTHER]);
        assert!(vars.iter().any(|(k, _)| k == "DEPLOY_SHA"), "{file}: the deploy variables are missing");
    }

    // A SIGHUP that makes another variable a secret: workers started after it do not get it.
    agent.reconfigure(|env| {
        env.agent_set(
            "report",
            &format!(
                "[{{ url: \"{}\", secret_env: {} }}, {{ github_status: {{ token_env: {}, api_url: \"{}\", repo: acme/web }} }}, {{ url: \"{}\", secret_env: {} }}]",
                receiver.url("/events"),
                REPORT.0,
                AGENT_GH.0,
                receiver.url("/gh"),
                receiver.url("/later"),
                LATER.0
            ),
        )
    });
    agent.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || agent.log().contains("SIGHUP: applying")), "no SIGHUP applied");
    let r = agent.reload("web", true);
    assert_eq!(r.status, 200, "{}", r.body);
    let after = agent.pids("web");
    assert!(after.iter().all(|p| !pids.contains(p)), "the reload replaced no worker: {pids:?} -> {after:?}");
    for pid in &after {
        assert_clean_env(&format!("worker {pid} after SIGHUP"), &environ(*pid), &[DEPLOYER_OTHER, LATER]);
    }
    bystander.finish();
}

/// The install script of the attacking commit: it prints a value it was given (equal to the
/// webhook secret) on both streams, then fails.
const LEAKING_INSTALL: &str = "echo \"install says $ECHO_ME\"\necho \"stderr says $ECHO_ME\" >&2\nexit 3\n";

#[test]
fn a_secret_value_printed_by_app_code_is_masked_everywhere_the_agent_keeps_or_sends_it() {
    if skip_unless_root() {
        return;
    }
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo install ok\n", "an install script");
    let receiver = Receiver::start(Mode::Status(200));
    let setup = with_every_secret(&repo, &receiver, |a| {
        a.instances(1)
            // The config hands the app a value equal to a secret, as configs do.
            .env("ECHO_ME", HOOK.1)
            .start(&["/bin/sh", "-c", "echo \"worker says $ECHO_ME\"; exec node app.js"])
            .set("install", "\"/bin/sh install.sh\"")
    })
    .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let bystander = Bystander::start(&agent);
    let secret = HOOK.1;

    // Logs --follow from before the new workers print.
    let mut follow = TcpStream::connect(("127.0.0.1", agent.api_port())).expect("connect");
    follow.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let req = format!(
        "GET /v1/apps/web/logs?lines=0&follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        agent.token("admin")
    );
    follow.write_all(req.as_bytes()).expect("send");

    repo.commit_file("install.sh", LEAKING_INSTALL, "print a secret");
    let failed = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(failed.state, "failed", "{failed:#?}");
    // A ref (and a `who`) that equal a secret: both end up in the deploy's record.
    let r = agent.api_post("/v1/apps/web/deploys", serde_json::json!({ "ref": secret, "who": secret }));
    assert_eq!(r.status, 202, "{}", r.body);
    let odd = agent.wait_deploy(r.json::<deployer_wire::DeployAccepted>().id);
    assert_eq!(odd.state, "failed", "{odd:#?}");

    // The deploy as the API answers it: tail, message, events, who.
    let tail = failed.output_tail.join("\n");
    assert!(tail.contains("install says ***") && tail.contains("stderr says ***"), "{tail}");
    for d in [&failed, &odd] {
        let json = serde_json::to_string(d).expect("json");
        assert!(!json.contains(secret), "deploy #{} shows the secret: {json}", d.id);
    }
    assert!(odd.message.as_deref().is_some_and(|m| m.contains("***")), "{odd:#?}");
    assert_eq!(odd.who.as_deref(), Some("***"));
    let history = agent.api_get("/v1/apps/web/deploys").body;
    assert!(!history.contains(secret), "{history}");
    // The event stream (SSE) of each.
    for d in [&failed, &odd] {
        let events = agent.api_get(&format!("/v1/deploys/{}/events", d.id)).body;
        assert!(events.contains("event: end"), "{events}");
        assert!(!events.contains(secret), "{events}");
    }
    // The deploy's log file.
    let log_file = agent.app_dir("web").join("logs").join(format!("deploy-{}.log", failed.id));
    let log_text = std::fs::read_to_string(&log_file).expect("the deploy log");
    assert!(log_text.contains("install says ***"), "{log_text}");
    assert!(!log_text.contains(secret), "{log_text}");

    // The worker's output: ring buffer, log file, the CLI, and the follower.
    let r = agent.reload("web", false);
    assert_eq!(r.status, 200, "{}", r.body);
    let lines: Vec<String> = log_lines(&agent, "web").into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l == "worker says ***"), "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains(secret)), "{lines:#?}");
    let file = std::fs::read_to_string(agent.dir().join("state/logs/web.log")).expect("web.log");
    assert!(file.contains("worker says ***") && !file.contains(secret), "{file}");
    let cli = agent.cli(&["logs", "web", "--lines", "100"]).success();
    assert!(cli.stdout.contains("worker says ***") && !cli.stdout.contains(secret), "{}", cli.stdout);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !seen.contains("worker says") {
        if let Ok(n) = follow.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("worker says ***") && !seen.contains(secret), "{seen}");

    // The reports: the failure carries the output tail, masked; no body holds the secret.
    let failure_report = deployer_tests::poll(Duration::from_secs(20), || {
        receiver
            .received()
            .into_iter()
            .find(|r| r.path == "/events" && r.json()["event"] == "deploy.failed" && r.json()["deploy"] == failed.id)
    })
    .expect("a deploy.failed report");
    let tail = failure_report.json()["output_tail"].to_string();
    assert!(tail.contains("install says ***"), "{tail}");
    assert!(
        wait_until(Duration::from_secs(20), || receiver
            .received()
            .iter()
            .any(|r| r.path == "/events" && r.json()["deploy"] == odd.id && r.json()["event"] == "deploy.failed")),
        "no report of the second deploy"
    );
    for r in receiver.received() {
        assert!(!r.body.contains(secret), "a report to {} holds the secret: {}", r.path, r.body);
    }

    // What the agent stores and logs.
    for name in ["agent.db", "agent.db-wal"] {
        let bytes = std::fs::read(agent.dir().join("state").join(name)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{name} holds the secret");
    }
    assert!(!agent.log().contains(secret), "the agent's log holds the secret");
    bystander.finish();
}

#[test]
fn the_audit_trail_names_the_token_that_asked_whatever_the_request_says() {
    if skip_unless_root() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let setup = TestEnv::new()
        .web(|a| a.repo(&repo).instances(1).set("user", "nobody"))
        .app(Bystander::app())
        .token("ci", &["deploy"])
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let bystander = Bystander::start(&agent);

    // The `ci` token claims to be the admin.
    let sha = repo.commit_greeting("v2");
    let body = serde_json::json!({ "ref": sha, "who": "admin" }).to_string();
    let r = agent.api_request("POST", "/v1/apps/web/deploys", Some(&agent.token("ci")), Some(&body));
    assert_eq!(r.status, 202, "{}", r.body);
    let d = agent.wait_deploy(r.json::<deployer_wire::DeployAccepted>().id);
    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!((d.token.as_deref(), d.who.as_deref()), (Some("ci"), Some("admin")), "{d:#?}");
    // The CLI shows both: the token is the actor, `who` what it said.
    let shown = agent.cli(&["history", "web"]).success().stdout;
    assert!(shown.contains("admin (token ci)"), "{shown}");

    // Without `who`, the token's name stands alone; a rollback records its token too.
    let r = agent.api_request("POST", "/v1/apps/web/rollback", Some(&agent.token("ci")), Some("{}"));
    assert_eq!(r.status, 202, "{}", r.body);
    let d = agent.wait_deploy(r.json::<deployer_wire::DeployAccepted>().id);
    assert_eq!((d.token.as_deref(), d.who.as_deref()), (Some("ci"), None), "{d:#?}");
    bystander.finish();
}

fn webhook_deploys(agent: &deployer_tests::Agent) -> Vec<Deploy> {
    agent.history("web").into_iter().filter(|d| d.trigger == "webhook").collect()
}

#[test]
fn a_replayed_signed_push_makes_no_new_deploy_and_no_new_report() {
    if skip_unless_root() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let receiver = Receiver::start(Mode::Status(200));
    let setup = TestEnv::new()
        .web(|a| {
            a.repo(&repo)
                .instances(1)
                .set("user", "nobody")
                .set("webhook", &format!("{{ provider: github, secret_env: {} }}", HOOK.0))
                // Long enough to replay a push while its deploy runs.
                .set("install", "\"sleep 3\"")
        })
        .app(Bystander::app())
        .agent_env(HOOK.0, HOOK.1)
        .agent_set("report", &format!("[{{ url: \"{}\" }}]", receiver.url("/events")))
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let bystander = Bystander::start(&agent);
    let send = |sha: &str, delivery: &str| -> HookAnswer {
        let r = GithubPush::new(Some(HOOK.1), "main", sha, delivery, "ana").send(&agent, "web");
        assert!(r.status == 200 || r.status == 202, "{delivery}: {}", r.body);
        r.json()
    };

    // A push, replayed under new delivery ids while its deploy runs: they join it.
    let v2 = repo.commit_greeting("v2");
    let first = send(&v2, "d-1");
    let id = first.deploy.expect("a deploy");
    agent.wait_deploy_state(id, "building");
    let joined = send(&v2, "d-1-replayed-while-running");
    assert_eq!(joined.deploy, Some(id), "{joined:?}");
    assert_eq!(agent.wait_deploy(id).state, "live");
    let reported_live = |id: u64| {
        wait_until(Duration::from_secs(10), || {
            receiver.received().iter().any(|r| r.json()["event"] == "deploy.live" && r.json()["deploy"] == id)
        })
    };
    assert!(reported_live(id), "no deploy.live report for #{id}");

    // Replayed after it went live: nothing new.
    let reports = receiver.received().len();
    let live = send(&v2, "d-1-replayed-later");
    assert_eq!(live.deploy, None, "{live:?}");
    assert!(live.ignored.as_deref().is_some_and(|r| r.contains("already live")), "{live:?}");
    assert!(!wait_until(Duration::from_secs(2), || receiver.received().len() > reports), "a replay was reported");

    // A newer push goes live; then the older one is replayed: still nothing.
    let v3 = repo.commit_greeting("v3");
    let third = send(&v3, "d-3").deploy.expect("a deploy");
    assert_eq!(agent.wait_deploy(third).state, "live");
    assert!(reported_live(third), "no deploy.live report for #{third}");
    let reports = receiver.received().len();
    let stale = send(&v2, "d-1-replayed-much-later");
    assert_eq!(stale.deploy, None, "{stale:?}");
    assert!(!wait_until(Duration::from_secs(2), || receiver.received().len() > reports), "a replay was reported");

    let deploys = webhook_deploys(&agent);
    assert_eq!(deploys.iter().map(|d| d.id).collect::<Vec<_>>(), [third, id], "{deploys:#?}");
    assert!(agent.current_release("web").is_some_and(|r| r.ends_with(&v3[..7])));
    bystander.finish();
}
