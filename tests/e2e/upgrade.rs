//! `deployer-agent upgrade`: the agent hands its sockets to a new agent started from the binary
//! on disk, which starts its own workers; then the old one drains and exits. No request fails,
//! and a new agent that cannot start leaves the old one serving.

use deployer_tests::{Agent, Load, http, pid_alive, run_to_end, wait_until};
use deployer_tests::{AppSpec, TestEnv};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

/// Agents started by an upgrade are not children of the test: stopped here, whatever happens.
struct Upgraded(Vec<u32>);

impl Drop for Upgraded {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM); // ESRCH: it exited already
        }
        for &pid in &self.0 {
            wait_until(Duration::from_secs(20), || !pid_alive(pid));
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Run `deployer-agent upgrade` on `config` to its end.
fn ask_upgrade(config: &std::path::Path) -> deployer_tests::CliOutput {
    // The build's binary asks: the agent's own may be broken on purpose.
    let mut cmd = std::process::Command::new(deployer_tests::bin("deployer-agent"));
    cmd.arg("--config").arg(config).arg("upgrade");
    run_to_end(cmd, Duration::from_secs(180))
}

/// The new agent's pid in an upgrade's output or the agent's log.
fn new_pid(text: &str) -> Option<u32> {
    text.split("new agent (pid ").nth(1)?.split(')').next()?.parse().ok()
}

/// Run `deployer-agent upgrade`; answers its exit code, its output and the new agent's pid.
fn upgrade(agent: &Agent) -> (Option<i32>, String, Option<u32>) {
    let out = ask_upgrade(&agent.config_path());
    let text = format!("{}{}", out.stdout, out.stderr);
    let pid = new_pid(&text);
    (out.code(), text, pid)
}

#[test]
fn upgrades_under_load_fail_no_request() {
    let agent = TestEnv::new().env("DELAY_MS", "100").start();
    let mut upgraded = Upgraded(Vec::new());
    let port = agent.port("web");
    let keepalive = Load::start(port, 20, true);
    let fresh = Load::start(port, 20, false);
    assert!(fresh.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let mut previous = agent.pid();
    for round in 0..3 {
        let started = std::time::Instant::now();
        let (code, text, pid) = upgrade(&agent);
        eprintln!("upgrade {round} took {:?}:\n{text}", started.elapsed());
        assert_eq!(code, Some(0), "round {round}: {text}");
        let pid = pid.unwrap_or_else(|| panic!("round {round}: no new pid in {text}"));
        upgraded.0.push(pid);
        assert!(wait_until(Duration::from_secs(20), || !pid_alive(previous)), "round {round}: the old agent runs on");
        previous = pid;
        assert!(fresh.wait_for_more(50, Duration::from_secs(15)), "round {round}: nothing served after the upgrade");
        let health = http::get(agent.api_port(), "/healthz");
        assert!(health.is_ok_and(|r| r.status == 200), "round {round}: the API does not answer");
    }
    let (k, f) = (keepalive.stop(), fresh.stop());
    eprintln!("3 upgrades under load: keep-alive {k}; new connection per request {f}");
    assert_eq!(k.failed, 0, "keep-alive clients: {k}");
    assert_eq!(f.failed, 0, "a connection per request: {f}");
    let log = agent.log();
    assert!(log.contains("listening socket handed over by the previous agent"), "{log}");
    assert!(log.contains("upgrade complete: the previous agent has exited"), "{log}");
}

/// A client that connected just before the old agent stopped accepting has not sent its request
/// yet: the old agent still answers it (closing it would fail a request no client retries).
#[test]
fn a_connection_accepted_before_the_handover_is_answered_by_the_old_agent() {
    use std::io::{Read, Write};
    let agent = TestEnv::new().start();
    let mut upgraded = Upgraded(Vec::new());
    let mut early = std::net::TcpStream::connect(("127.0.0.1", agent.port("web"))).expect("connect");
    early.set_read_timeout(Some(Duration::from_secs(20))).expect("a read timeout");
    let config = agent.config_path();
    let asker = std::thread::spawn(move || ask_upgrade(&config));
    assert!(
        wait_until(Duration::from_secs(60), || agent.log().contains("front stopped accepting")),
        "the old agent did not stop accepting: {}",
        agent.log()
    );
    early.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut answer = String::new();
    let read = early.read_to_string(&mut answer);
    let out = asker.join().expect("the upgrade's thread");
    upgraded.0.extend(new_pid(&format!("{}{}", out.stdout, out.stderr)));
    assert!(read.is_ok() && answer.starts_with("HTTP/1.1 200"), "{read:?}: {answer:?}\n{}", agent.log());
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
}

#[test]
fn a_new_agent_that_cannot_start_leaves_the_old_one_serving() {
    let agent = TestEnv::new().env("DELAY_MS", "20").own_binary().start();
    let mut upgraded = Upgraded(Vec::new());
    let binary = agent.agent_binary();
    let good = std::fs::read(&binary).expect("the agent's binary");
    let load = Load::start(agent.port("web"), 10, false);
    assert!(load.wait_for_more(20, Duration::from_secs(15)), "the load did not get going");
    // The binary on disk is broken: the new agent exits at once.
    write_executable(&binary, b"#!/bin/sh\necho this build is broken >&2\nexit 3\n");
    let (code, text, _) = upgrade(&agent);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("exited") && text.contains("keeps serving"), "{text}");
    assert!(pid_alive(agent.pid()), "the old agent stopped");
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the old agent does not serve after the failed upgrade");
    // Fixed, the upgrade goes through.
    write_executable(&binary, &good);
    let (code, text, pid) = upgrade(&agent);
    assert_eq!(code, Some(0), "{text}");
    upgraded.0.extend(pid);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "nothing served after the upgrade");
    let report = load.stop();
    assert_eq!(report.failed, 0, "{report}");
}

/// Replace `path` as a deploy of a new build does (a new file renamed over the old one).
fn write_executable(path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write the binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename over the binary");
}

#[test]
fn a_stop_during_an_upgrade_ends_the_new_agent_and_then_the_old_one() {
    let mut agent = TestEnv::new().own_binary().start();
    let binary = agent.agent_binary();
    // A "new agent" that never says it serves.
    write_executable(&binary, b"#!/bin/sh\nexec sleep 300\n");
    let config = agent.config_path();
    let asker = std::thread::spawn(move || ask_upgrade(&config));
    let new_pid: Option<u32> = deployer_tests::poll(Duration::from_secs(20), || {
        let log = agent.log();
        let rest = log.split("upgrade: started the new agent").nth(1)?;
        rest.split("(pid ").nth(1)?.split(')').next()?.parse().ok()
    });
    let new_pid = new_pid.expect("the upgrade did not start a new agent");
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).is_some(), "the agent did not stop during its upgrade");
    assert!(!pid_alive(new_pid), "the half-started new agent outlived the stop");
    let out = asker.join().expect("the upgrade command");
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("asked to stop"), "{}", out.stderr);
}

#[test]
fn sigusr2_upgrades_as_the_command_does() {
    let agent = TestEnv::new().start();
    let mut upgraded = Upgraded(Vec::new());
    let old = agent.pid();
    agent.signal(Signal::SIGUSR2);
    let pid = deployer_tests::poll(Duration::from_secs(60), || {
        let log = agent.log();
        if !log.contains("upgrade complete: the previous agent has exited") {
            return None;
        }
        new_pid(&log)
    });
    let pid = pid.unwrap_or_else(|| panic!("no upgrade after SIGUSR2:\n{}", agent.log()));
    upgraded.0.push(pid);
    assert_ne!(pid, old);
    assert!(wait_until(Duration::from_secs(20), || !pid_alive(old)), "the old agent runs on");
    assert!(http::get(agent.port("web"), "/").is_ok_and(|r| r.status == 200), "the app does not answer");
}

/// Under systemd (`Type=notify`): `READY=1` once up, `RELOADING=1` then `READY=1` around a
/// SIGHUP, `STOPPING=1` at the stop.
#[test]
fn the_agent_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("a notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut agent = TestEnv::new().agent_env("NOTIFY_SOCKET", path.to_str().expect("utf-8")).start();
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification within 30s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert_eq!(next(), "READY=1");
    agent.signal(Signal::SIGHUP);
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1");
    agent.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(agent.wait_exit(Duration::from_secs(30)).is_some());
}

/// A new agent whose workers do not get ready (here: the config on disk now starts a worker that
/// never is) gives up, and the old agent serves on: an upgrade never trades a serving app for a
/// broken one.
#[test]
fn a_new_agent_whose_workers_do_not_start_gives_up_and_the_old_one_serves_on() {
    let mut agent = TestEnv::new().env("DELAY_MS", "20").start();
    let load = Load::start(agent.port("web"), 10, false);
    assert!(load.wait_for_more(20, Duration::from_secs(15)), "the load did not get going");
    agent.reconfigure(|env| {
        env.start_command(&["node", &deployer_tests::fixture("never-ready.js")]).ready_timeout("1s")
    });
    let (code, text, _) = upgrade(&agent);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("gave up") && text.contains("web"), "{text}");
    assert!(pid_alive(agent.pid()), "the old agent stopped");
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the old agent does not serve after the failed upgrade");
    let report = load.stop();
    assert_eq!(report.failed, 0, "{report}");
}

/// A second agent started by mistake on the same config is refused (the state dir's lock) and
/// leaves the running agent's control socket alone: `upgrade` still reaches the running one.
#[test]
fn a_second_agent_refused_by_the_lock_leaves_the_control_socket_to_the_first() {
    let agent = TestEnv::new().start();
    let mut upgraded = Upgraded(Vec::new());
    // Same state dir, another API port: it gets as far as the state dir's lock.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
    let text = agent.config_text();
    let listen = text.lines().find(|l| l.starts_with("listen:")).expect("a listen line").to_string();
    let other = agent.dir().join("second.yaml");
    std::fs::write(&other, text.replace(&listen, &format!("listen: 127.0.0.1:{free}"))).expect("second config");
    let second = agent.run_agent(&["--config", other.to_str().expect("utf-8")]);
    assert!(second.stderr.contains("state") || second.stdout.contains("state"), "{}{}", second.stdout, second.stderr);
    assert_ne!(second.code(), Some(0), "a second agent started: {}{}", second.stdout, second.stderr);
    let (code, text, pid) = upgrade(&agent);
    assert_eq!(code, Some(0), "{text}");
    upgraded.0.extend(pid);
}

/// A deploy running when the upgrade is asked for ends first, as it would have (`live`), and
/// the upgrade says it waits for it.
#[test]
fn an_upgrade_waits_for_a_running_deploy_which_ends_live() {
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = deployer_tests::TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo fast\n", "an install step");
    let agent = TestEnv::new().web(|app| app.repo(&repo).set("install", "sh install.sh")).start();
    let mut upgraded = Upgraded(Vec::new());
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done\n", gate.display());
    repo.commit_file("install.sh", &script, "a slow install");
    repo.commit_greeting("v2");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "building");
    let config = agent.config_path();
    let asker = std::thread::spawn(move || ask_upgrade(&config));
    assert!(
        wait_until(Duration::from_secs(20), || agent.log().contains("waiting for the deploys of web")),
        "the upgrade did not say it waits: {}",
        agent.log()
    );
    std::fs::write(&gate, "").expect("open the gate");
    let out = asker.join().expect("the upgrade command");
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    upgraded.0.extend(new_pid(&text));
    let d = agent.deploy_status(id);
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(http::get(agent.port("web"), "/").is_ok_and(|r| r.body.starts_with("v2 from worker")));
}

#[test]
fn a_bake_window_begun_before_an_upgrade_is_watched_to_its_end_by_the_new_agent() {
    let repo = deployer_tests::TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "30s")).start();
    let mut upgraded = Upgraded(Vec::new());
    let before = agent.current_release("web").expect("a first release");
    // Gets ready, serves, then dies 3 s later, every time: the bake rolls it back, whichever
    // agent watches.
    repo.commit_crash_after(3000);
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "baking");

    let (code, text, pid) = upgrade(&agent);
    upgraded.0.extend(pid);
    assert_eq!(code, Some(0), "{text}");
    assert!(agent.log().contains("watching the rest of a bake window"), "{}", agent.log());
    let state = || agent.deploy_status(id).state;
    assert!(wait_until(Duration::from_secs(60), || state() == "rolled_back"), "the deploy ended {:?}", state());
    assert!(
        wait_until(Duration::from_secs(60), || agent.current_release("web").as_deref() == Some(before.as_str())),
        "the bake's rollback did not put {before} back"
    );
}

/// The baked release crash-loops while an upgrade is under way (deploys are paused: the new agent
/// is still starting a slow app). The bake's rollback must still happen, or the deploy must not
/// say `rolled_back` while the release it condemned serves on.
#[test]
fn a_bake_that_fails_while_an_upgrade_is_under_way_still_rolls_back() {
    let repo = deployer_tests::TestRepo::with_example_app();
    // Listens 10 s after it starts: the new agent's boot, and so the pause, lasts that long.
    let slow = AppSpec::new("slow").instances(1).ready_timeout("60s").start(&[
        "node",
        "-e",
        "setTimeout(() => require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT)), 10000)",
    ]);
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "60s")).app(slow).start();
    let mut upgraded = Upgraded(Vec::new());
    let before = agent.current_release("web").expect("a first release");
    repo.commit_crash_after(1000);
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "baking");

    let (code, text, pid) = upgrade(&agent);
    upgraded.0.extend(pid);
    assert_eq!(code, Some(0), "{text}");
    let state = || agent.deploy_status(id).state;
    assert!(wait_until(Duration::from_secs(60), || state() != "baking"), "the deploy stayed baking");
    let rolled_back =
        wait_until(Duration::from_secs(60), || agent.current_release("web").as_deref() == Some(before.as_str()));
    assert!(
        rolled_back || state() != "rolled_back",
        "deploy #{id} says rolled_back, but {before} was not put back: {:#?}\n{}",
        agent.deploy_status(id),
        agent.log()
    );
}
