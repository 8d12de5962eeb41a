//! What the agent answers and the CLI makes of it: every error is `{code, message, hint}` with
//! the hint in its own field (never a line of the message), the CLI prints that field as its
//! `hint:` line, exit codes say whether what a command shows is fine, and a CLI older than its
//! agent still reads names (states, triggers, codes) it does not know.

use deployer_tests::{Mode, Receiver, TestEnv, TestRepo, bin, fixture, poll, run_to_end};
use deployer_wire::{ApiError, ErrorCode};
use std::time::{Duration, Instant};

/// The body of an error answer, with its status checked.
#[track_caller]
fn error_of(r: deployer_tests::http::Response, status: u16) -> ApiError {
    assert_eq!(r.status, status, "{}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not the documented JSON ({e}): {}", r.body))
}

/// The hint travels as a field: the message says what is wrong, once, with no `hint:` inside.
#[track_caller]
fn hint_is_a_field(e: &ApiError) -> &str {
    assert!(!e.message.contains("hint"), "the hint is inside the message: {e:?}");
    e.hint.as_deref().unwrap_or_else(|| panic!("no hint: {e:?}"))
}

/// Before: `check` of an app without a repo answered 502 `git_unreachable` (then a bare 409
/// `conflict`): a script could not tell "this app is not deployed from git" from an outage.
#[test]
fn an_app_without_a_repo_answers_409_no_repo_with_its_hint_from_the_api_to_the_cli() {
    let agent = TestEnv::new().instances(1).start();

    for path in ["/v1/apps/web/check", "/v1/apps/web/deploys", "/v1/apps/web/rollback"] {
        let e = error_of(agent.api_request("POST", path, Some(&agent.token("admin")), None), 409);
        assert_eq!(e.code, ErrorCode::NoRepo, "{path}: {e:?}");
        assert!(e.message.contains("has no `repo`") && !e.message.contains("git remote"), "{path}: {e:?}");
        assert!(hint_is_a_field(&e).contains("add `repo:`"), "{path}: {e:?}");
    }

    // The CLI prints the agent's message, then its hint from the field, once.
    for args in [&["pull", "web"][..], &["deploy", "web"], &["rollback", "web"]] {
        let out = agent.cli(args).failure(1);
        assert!(out.stderr.contains("error: app `web` has no `repo`"), "{args:?}\n{out}");
        assert_eq!(out.stderr.matches("hint:").count(), 1, "{args:?}\n{out}");
        assert!(out.stderr.contains("hint: add `repo:` and `branch:`"), "{args:?}\n{out}");
    }
    // `--json` gives a script the body, code and hint as fields.
    let out = agent.cli(&["pull", "web", "--json"]).failure(1);
    let body: ApiError = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(body.code, ErrorCode::NoRepo, "{out}");
    assert!(body.hint.is_some(), "{out}");
}

/// Before: a git error's hint came inside its message (`...\n  hint: ...`), so the CLI printed
/// it as part of the error and scripts could not read it.
#[test]
fn a_git_remote_that_does_not_answer_is_a_502_with_the_hint_as_a_field() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://127.0.0.1:{}/app.git", closed.local_addr().expect("addr").port());
    drop(closed);
    let agent = TestEnv::new().web(|a| a.repo_url(&url).instances(1)).dont_wait_for_workers().start();

    let e = error_of(agent.api_request("POST", "/v1/apps/web/check", Some(&agent.token("admin")), None), 502);
    assert_eq!(e.code, ErrorCode::GitUnreachable, "{e:?}");
    assert!(e.message.contains("cannot fetch branch `main`"), "{e:?}");
    hint_is_a_field(&e);

    let out = agent.cli(&["pull", "web"]).failure(1);
    assert!(out.stderr.contains("error: cannot fetch branch `main`"), "{out}");
    assert_eq!(out.stderr.matches("hint:").count(), 1, "the hint once, on its own line:\n{out}");
}

/// A ref the agent refuses: the problem in the message, what to write instead in the hint.
#[test]
fn a_bad_ref_says_what_is_wrong_and_what_to_write_in_two_fields() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).instances(1)).start();
    let r = agent.api_post("/v1/apps/web/deploys", serde_json::json!({ "ref": "-rf" }));
    let e = error_of(r, 400);
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert!(e.message.starts_with("invalid ref `-rf`"), "{e:?}");
    assert!(hint_is_a_field(&e).contains("commit sha"), "{e:?}");

    let out = agent.cli(&["deploy", "web", "--ref=-rf"]).failure(1);
    assert!(out.stderr.contains("error: invalid ref `-rf`"), "{out}");
    assert_eq!(out.stderr.matches("hint:").count(), 1, "{out}");
}

/// What axum answers by itself (bad JSON, a path or query that does not parse, a wrong method,
/// a body over the limit), and the token layer's 401 and 403: the documented JSON, with a hint.
#[test]
fn framework_and_token_errors_are_the_documented_json_with_a_hint() {
    let agent = TestEnv::new().instances(1).token("reader", &["read"]).start();
    let admin = agent.token("admin");
    let cases = [
        (agent.api_request("POST", "/v1/apps/web/scale", Some(&admin), Some("{\"instances\":")), 400, "bad_request"),
        (agent.api_request("GET", "/v1/apps/web/deploys?limit=many", Some(&admin), None), 400, "bad_request"),
        (agent.api_request("GET", "/v1/deploys/not-a-number", Some(&admin), None), 400, "bad_request"),
        (agent.api_request("PUT", "/v1/apps/web/reload", Some(&admin), Some("{}")), 405, "method_not_allowed"),
        (
            agent.api_request("POST", "/v1/apps/web/reload", Some(&admin), Some(&"x".repeat(100 << 10))),
            413,
            "too_large",
        ),
        (agent.api_request("GET", "/v1/nothing/here", Some(&admin), None), 404, "not_found"),
        (agent.api_request("GET", "/v1/apps/nope", Some(&admin), None), 404, "not_found"),
        (agent.api_request("GET", "/v1/apps", None, None), 401, "unauthorized"),
        (agent.api_request("GET", "/v1/apps", Some("wrong-token"), None), 401, "unauthorized"),
        (agent.api_request("POST", "/v1/apps/web/restart", Some(&agent.token("reader")), Some("")), 403, "forbidden"),
    ];
    for (answer, status, code) in cases {
        let e = error_of(answer, status);
        assert_eq!(e.code, code, "{e:?}");
        hint_is_a_field(&e);
    }
}

/// Before: `deployer ls` exited 0 with a worker errored; a script gating on it saw nothing wrong.
#[test]
fn ls_fails_while_a_worker_keeps_crashing() {
    let agent = TestEnv::new()
        .start_command(&["node", &fixture("crashes.js")])
        .env("CRASH_INSTANCE", "1")
        .restart(2, "5s", "100ms")
        .dont_wait_for_workers()
        .start();
    poll(Duration::from_secs(20), || agent.app("web").workers.iter().any(|w| w.state == "errored").then_some(()))
        .unwrap_or_else(|| panic!("no worker became errored: {:#?}", agent.app("web")));
    let out = agent.cli(&["ls"]).failure(1);
    assert!(out.stdout.contains("errored") && out.stdout.contains("online"), "the table is still shown:\n{out}");
    agent.cli(&["ls", "--json"]).failure(1);
}

/// An agent newer than the CLI sends a deploy state, a trigger, a worker state, a mode and an
/// error code this CLI does not know: it shows them as `unknown` instead of failing to read the
/// answer, a finished deploy in an unknown state ends `--wait` at once (with 1: not live), and
/// an unknown error code still shows the message and hint.
#[test]
fn a_cli_older_than_its_agent_reads_names_it_does_not_know() {
    const DEPLOY: &str = r#"{"id":7,"app":"web","ref":"main","sha":null,"trigger":"schedule","state":"verifying","who":null,"release":null,"queued_at_ms":1,"finished_at_ms":2,"message":"checked","events":[{"seq":1,"at_ms":1,"state":"verifying","message":"m"}],"output_tail":[]}"#;
    const APPS: &str = r#"[{"name":"web","mode":"quic","port":1,"instances":1,"state":"hibernating","workers":[{"id":0,"pid":1,"port":null,"state":"paused","restarts":0,"uptime_ms":0,"cpu_percent":0.0,"rss_bytes":0,"inflight":0,"env_hash":"h","release":"r"}]}]"#;
    const ERROR: &str = r#"{"code":"quota_exceeded","message":"over the deploy quota","hint":"wait an hour"}"#;
    let dir = tempfile::tempdir().expect("a temp dir");
    let deployer = |agent: &Receiver, args: &[&str]| {
        let mut cmd = std::process::Command::new(bin("deployer"));
        cmd.current_dir(dir.path()).env("NO_COLOR", "1").arg("--agent").arg(agent.url("")).args(args);
        run_to_end(cmd, Duration::from_secs(60))
    };

    let agent = Receiver::start(Mode::Json(200, DEPLOY));
    let show = deployer(&agent, &["show", "7"]).success();
    assert!(show.stdout.contains("deploy #7 of web: unknown") && show.stdout.contains("trigger  unknown"), "{show}");
    let started = Instant::now();
    let wait = deployer(&agent, &["deploy", "web", "--wait"]).failure(1);
    assert!(started.elapsed() < Duration::from_secs(20), "--wait did not see the deploy ended: {wait}");

    let agent = Receiver::start(Mode::Json(200, APPS));
    let ls = deployer(&agent, &["ls"]).success();
    assert!(ls.stdout.contains("unknown"), "{ls}");

    let agent = Receiver::start(Mode::Json(429, ERROR));
    let out = deployer(&agent, &["ls"]).failure(1);
    assert!(out.stderr.contains("error: over the deploy quota") && out.stderr.contains("hint: wait an hour"), "{out}");
}

/// Before: a reload onto a malformed `env_file` answered the config error's `hint:` line inside
/// `message`; the CLI then printed the agent's generic hint below it.
#[test]
fn a_reload_onto_a_bad_env_file_answers_the_config_hint_as_a_field() {
    let agent = TestEnv::new().instances(1).start();
    agent.write_env_file("web", "GREETING hello\n");
    let e = error_of(agent.reload("web", true), 409);
    assert_eq!(e.code, ErrorCode::ReloadFailed, "{e:?}");
    assert!(e.message.contains(".env:1:1: expected `KEY=VALUE`"), "{e:?}");
    assert!(hint_is_a_field(&e).contains("one `KEY=VALUE` per line"), "{e:?}");

    let out = agent.cli(&["reload", "web", "--update-env"]).failure(1);
    assert!(out.stderr.contains("hint: write one `KEY=VALUE` per line"), "{out}");
    assert_eq!(out.stderr.matches("hint:").count(), 1, "{out}");
}
