//! Abuse: perms. The agent's state (its database with install output and report bodies, the git
//! cache, worker and deploy logs) is private to root; an app's `user:` reaches its own releases
//! and nothing else; an existing install is tightened when the agent starts.

use deployer_tests::abuse::{BYSTANDER, is_root, nobody_uid, open_to_nobody};
use deployer_tests::{Bystander, Proxy, TestEnv, TestRepo, http};
use nix::sys::signal::Signal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

#[track_caller]
fn assert_mode(p: &Path, want: u32) {
    assert_eq!(mode(p), want, "mode of {}: {:o}, want {want:o}", p.display(), mode(p));
}

/// `nobody`'s primary group.
fn nobody_gid() -> u32 {
    nix::unistd::User::from_name("nobody").expect("getpwnam").expect("a `nobody` user").gid.as_raw()
}

/// Whether `nobody` (no supplementary groups) can read `p`.
fn nobody_can_read(p: &Path) -> bool {
    let cmd = if p.is_dir() { "ls" } else { "cat" };
    Command::new(cmd)
        .arg(p)
        .uid(nobody_uid())
        .gid(nobody_gid())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn state_files_are_private_and_a_nobody_app_still_runs() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let setup = TestEnv::new()
        .web(|a| a.repo(&repo).set("user", "nobody").set("shared", "[.env]"))
        .app(Bystander::app())
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let bystander = Bystander::start(&agent);
    let body = http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_default();
    assert!(body.starts_with("hello from worker"), "the `nobody` app does not serve: {body}");

    let state = agent.dir().join("state");
    let app = agent.app_dir("web");
    // Traversable (never listable) where an app's user must reach its releases.
    assert_mode(&state, 0o711);
    assert_mode(&state.join("apps"), 0o711);
    assert_mode(&state.join("agent.db"), 0o600);
    for f in ["agent.db-wal", "agent.db-shm"] {
        if state.join(f).exists() {
            assert_mode(&state.join(f), 0o600);
        }
    }
    assert_mode(&state.join("logs"), 0o700);
    assert_mode(&state.join("logs/web.log"), 0o600);
    assert_mode(&state.join("run"), 0o711);
    // A local user holding the lock would keep the agent from starting.
    assert_mode(&state.join("run/agent.lock"), 0o600);
    assert_mode(&state.join("run/workers.pids"), 0o600);
    assert_mode(&app, 0o750);
    assert_eq!(std::fs::metadata(&app).expect("app dir").gid(), nobody_gid(), "the app dir's group");
    assert_mode(&app.join("repo.git"), 0o700);
    assert_mode(&app.join("logs"), 0o700);
    assert_mode(&app.join("logs/deploy-1.log"), 0o600);
    assert_mode(&app.join("releases"), 0o750);

    for secret in [
        state.clone(),
        state.join("agent.db"),
        state.join("logs/web.log"),
        state.join(format!("logs/{BYSTANDER}.log")),
        state.join("run/workers.pids"),
        state.join("run/agent.lock"),
        app.join("repo.git/config"),
        app.join("logs/deploy-1.log"),
    ] {
        assert!(!nobody_can_read(&secret), "`nobody` can read {}", secret.display());
    }
    // ... but its own release and its shared files.
    assert!(nobody_can_read(&app.join("current/app.js")), "`nobody` cannot read its own release");
    assert!(nobody_can_read(&app.join("shared/.env")), "`nobody` cannot read its own shared files");
    bystander.finish();
}

#[test]
fn an_existing_state_dir_is_made_private_at_start_with_a_warning() {
    if !is_root() {
        eprintln!("skipped: the modes are checked as root sees them");
        return;
    }
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some(), "the agent did not stop");

    // As an older agent left it: 0755 directories, 0644 files.
    let state = agent.dir().join("state");
    let app = agent.app_dir("web");
    let loose = [
        (state.clone(), 0o755),
        (state.join("agent.db"), 0o644),
        (state.join("logs"), 0o755),
        (state.join("logs/web.log"), 0o644),
        (state.join("run"), 0o755),
        (state.join("apps"), 0o755),
        (app.clone(), 0o755),
        (app.join("repo.git"), 0o755),
        (app.join("logs"), 0o755),
        (app.join("logs/deploy-1.log"), 0o644),
    ];
    for (p, m) in &loose {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*m)).expect("loosen a mode");
    }
    agent.start_again();

    assert!(
        agent.log().lines().any(|l| l.contains("WARN") && l.contains("state dir") && l.contains("other users")),
        "no warning about the readable state dir:\n{}",
        agent.log()
    );
    // No app runs as another user: nothing needs to traverse the state dir.
    for (p, want) in [
        (state.clone(), 0o700),
        (state.join("agent.db"), 0o600),
        (state.join("logs"), 0o700),
        (state.join("logs/web.log"), 0o600),
        (state.join("run"), 0o700),
        (state.join("apps"), 0o700),
        (app.clone(), 0o700),
        (app.join("repo.git"), 0o700),
        (app.join("logs"), 0o700),
        (app.join("logs/deploy-1.log"), 0o600),
    ] {
        assert_mode(&p, want);
    }
    let body = http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_default();
    assert!(body.starts_with("hello from worker"), "{body}");
}

#[test]
fn a_nobody_worker_reaches_its_notify_socket_through_the_private_state_dir() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    // Says READY=1 on `NOTIFY_SOCKET` (sd_notify), then idles.
    let notify = "import os, socket, time\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
                  time.sleep(600)\n";
    let setup = TestEnv::new()
        .web(|a| a.start(&["/usr/bin/python3", "-c", notify]).proxy(Proxy::None).instances(1).set("user", "nobody"))
        .setup();
    setup.edit_config(|c| c.replacen("ready: { timeout: 10s }", "ready: { notify: true, timeout: 10s }", 1));
    open_to_nobody(&setup);
    let agent = setup.start();
    let pid = agent.pids("web")[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains(&nobody_uid().to_string())), "{status}");
    let state = agent.dir().join("state");
    assert_mode(&state.join("run"), 0o711);
    assert!(!nobody_can_read(&state.join("run")), "`nobody` can list run/");
}
