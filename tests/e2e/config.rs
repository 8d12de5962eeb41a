//! The config file: checked before anything starts, errors at `file:line:col` with a hint.

use deployer_tests::{TestEnv, TestRepo};

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("`{needle}` is not in:\n{text}"))
}

#[test]
fn check_accepts_a_valid_config_and_describes_its_apps() {
    let setup = TestEnv::new().setup();
    let out = setup.run_agent(&["check", "--config", "agent.yaml"]).success();
    assert!(out.stdout.contains("agent.yaml: ok"), "{out}");
    assert!(out.stdout.contains("web: 2 x `node app.js`"), "{out}");
}

#[test]
fn a_misspelt_key_is_reported_at_its_line_and_column_with_a_did_you_mean_hint() {
    let setup = TestEnv::new().setup();
    setup.edit_config(|c| c.replacen("    instances: 2", "    instanes: 2", 1));
    let (line, col) = position(&setup.config_text(), "instanes:");
    let at = format!("agent.yaml:{line}:{col}: ");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]).failure(1);
    assert!(check.stderr.starts_with("error: "), "{check}");
    assert!(check.stderr.contains(&at), "expected `{at}`\n{check}");
    assert!(check.stderr.contains("unknown field `instanes`"), "{check}");
    assert!(check.stderr.contains("hint: did you mean `instances`?"), "{check}");

    // Starting the agent on it fails the same way, before anything runs.
    let config = setup.config_path();
    let run = setup.run_agent(&["--config", config.to_str().expect("utf-8 path")]);
    assert!(!run.status.success(), "the agent started on a bad config\n{run}");
    assert!(run.stderr.contains(&at), "expected `{at}`\n{run}");
    assert!(run.stderr.contains("did you mean `instances`?"), "{run}");
    assert!(!setup.dir().join("state").join("run").join("workers.pids").exists(), "a worker was started");
}

#[test]
fn a_misspelt_value_is_reported_at_its_line_with_a_did_you_mean_hint() {
    let setup = TestEnv::new().setup();
    setup.edit_config(|c| c.replacen("proxy: http", "proxy: htpp", 1));
    let (line, _) = position(&setup.config_text(), "htpp");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]).failure(1);
    assert!(check.stderr.contains(&format!("agent.yaml:{line}:")), "expected line {line}\n{check}");
    assert!(check.stderr.contains("unknown variant `htpp`"), "{check}");
    assert!(check.stderr.contains("hint: did you mean `http`?"), "{check}");
}

#[test]
fn a_token_whose_variable_is_unset_is_an_error_that_names_the_variable() {
    let setup = TestEnv::new().setup();
    let mut cmd = setup.agent_command();
    cmd.env_remove("DEPLOYER_TOKEN").args(["check", "--config", "agent.yaml"]);
    let out = cmd.output().expect("run deployer-agent check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`DEPLOYER_TOKEN`, which is not set"), "{stderr}");
    assert!(stderr.contains("hint: export DEPLOYER_TOKEN="), "{stderr}");
}

// The examples write `reload:` and `ready:` as flow maps on one line; a mistake inside one must be
// located like any other.

#[test]
fn a_bad_value_inside_a_flow_map_is_reported_at_its_key() {
    let setup = TestEnv::new().setup();
    setup.edit_config(|c| c.replacen("max_surge: 1", "max_surge: 0", 1));
    let (line, col) = position(&setup.config_text(), "max_surge: 0");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]).failure(1);
    assert!(check.stderr.contains("`max_surge: 0` would never replace a worker"), "{check}");
    assert!(
        check.stderr.contains(&format!("agent.yaml:{line}:{col}: ")),
        "expected line {line}, column {col}\n{check}"
    );
}

#[test]
fn an_explicit_tcp_readiness_check_is_refused_for_the_fd_front() {
    let setup = TestEnv::new().setup();
    setup.edit_config(|c| {
        c.replacen("proxy: http", "proxy: fd", 1).replacen(
            "ready: { timeout: 10s }",
            "ready: { tcp: true, timeout: 10s }",
            1,
        )
    });
    let (line, _) = position(&setup.config_text(), "ready: { tcp: true");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]);
    assert_eq!(check.code(), Some(1), "`tcp: true` was silently dropped for an fd front\n{check}");
    assert!(check.stderr.contains("cannot be probed one by one"), "{check}");
    assert!(check.stderr.contains(&format!("agent.yaml:{line}:")), "expected line {line}\n{check}");
}

#[test]
fn an_invalid_instance_count_is_reported_at_its_own_line() {
    let setup = TestEnv::new().setup();
    setup.edit_config(|c| c.replacen("instances: 2", "instances: 0", 1));
    let (line, _) = position(&setup.config_text(), "instances: 0");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]).failure(1);
    assert!(check.stderr.contains("`instances: 0` is out of range"), "{check}");
    assert!(check.stderr.contains(&format!("agent.yaml:{line}:")), "expected line {line}\n{check}");
}

#[test]
fn check_fails_like_the_agent_when_the_env_file_is_missing() {
    let setup = TestEnv::new().setup();
    std::fs::remove_file(setup.app_dir("web").join(".env")).expect("remove .env");

    let run = setup.run_agent(&["--config", "agent.yaml"]);
    assert_eq!(run.code(), Some(1), "the agent started without its env_file\n{run}");
    assert!(run.stderr.contains(".env: cannot read"), "{run}");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]);
    assert_eq!(check.code(), Some(1), "`check` passed a config the agent refuses to start on\n{check}");
    assert!(check.stderr.contains(".env: cannot read"), "{check}");
}

#[test]
fn check_reports_a_malformed_env_file_at_its_line() {
    let setup = TestEnv::new().env_file("# greeting\nGREETING hello\n").setup();
    let check = setup.run_agent(&["check", "--config", "agent.yaml"]);
    assert_eq!(check.code(), Some(1), "`check` passed a malformed env_file\n{check}");
    assert!(check.stderr.contains(".env:2:1: expected `KEY=VALUE`"), "{check}");
}

#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let setup = TestEnv::new().setup();
    // `deployer-agent check | head -0`: the reader is gone before anything is written.
    let (read, write) = nix::unistd::pipe().expect("a pipe");
    drop(read);
    let out = setup
        .agent_command()
        .args(["check", "--config", "agent.yaml"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success() || out.status.signal() == Some(libc_sigpipe()), "{:?} {stderr}", out.status);
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

/// `check` resolves an app's `env_file` in the release the agent would start (the recorded live
/// release), not in whatever `current` points at: a crash between switching `current` and
/// recording the release leaves `current` on a release that never went live.
#[test]
fn check_reads_the_env_file_of_the_recorded_release_not_of_current() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let live = agent.current_release("web").expect("the first release is live");
    agent.stop();

    let app = agent.app_dir("web");
    let never = app.join("releases").join("9-0000000");
    std::fs::create_dir_all(&never).expect("a release dir");
    std::fs::write(never.join(".env"), "GREETING hello\n").expect("a malformed .env");
    let link = app.join("current.test");
    std::os::unix::fs::symlink("releases/9-0000000", &link).expect("a link");
    std::fs::rename(&link, app.join("current")).expect("`current` to the release that never went live");

    let check = agent.run_agent(&["check", "--config", "agent.yaml"]);
    assert_eq!(check.code(), Some(0), "`check` read a release the agent does not run\n{check}");
    assert_eq!(agent.current_release("web").as_deref(), Some("9-0000000"), "`check` wrote nothing");

    // The agent agrees: it starts the recorded release (and points `current` back at it).
    agent.start_again();
    assert_eq!(agent.current_release("web"), Some(live));
}

// A key that takes several commands takes a list of them, each a line or an argv list; one
// command's argv written there is refused at its line with both ways to write it.

#[test]
fn one_argv_written_where_a_list_of_commands_goes_is_refused_with_the_fix() {
    let setup = TestEnv::new().web(|w| w.set("install", "[sh, -c, \"sleep 1.5\"]")).setup();
    let (line, _) = position(&setup.config_text(), "install: [sh, -c");

    let check = setup.run_agent(&["check", "--config", "agent.yaml"]).failure(1);
    assert!(check.stderr.contains(&format!("agent.yaml:{line}:")), "expected line {line}\n{check}");
    assert!(check.stderr.contains("apps.web.install: "), "{check}");
    assert!(check.stderr.contains("`-c` is not a command"), "{check}");
    assert!(check.stderr.contains("`[[sh, -c, \"sleep 1.5\"]]`"), "{check}");
    assert!(check.stderr.contains("`sh -c 'sleep 1.5'`"), "{check}");

    // Either fix is accepted, as is an argv list among lines.
    for fixed in ["[[sh, -c, \"sleep 1.5\"]]", "sh -c 'sleep 1.5'", "[[sh, -c, \"exit 0\"], true]"] {
        setup.edit_config(|c| {
            let start = c.find("install: ").expect("install is written");
            let end = start + c[start..].find('\n').expect("a line");
            format!("{}install: {fixed}{}", &c[..start], &c[end..])
        });
        setup.run_agent(&["check", "--config", "agent.yaml"]).success();
    }
}
