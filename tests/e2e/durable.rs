//! A deploy's state is never lost, and a deploy is final only when it is: a full disk ends a
//! deploy `failed` with the reason while the running release keeps serving, and `deploy --wait`
//! follows a deploy through its bake window to the state that window decides.

use deployer_tests::abuse::is_root;
use deployer_tests::{Load, TestEnv, TestRepo, http};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small tmpfs mounted on `dir` for the test's life: the agent's `state_dir`, so the test can
/// fill the disk the agent writes its releases, logs and database to.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount `size` (`40M`) on `dir`; None (with the reason printed) where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!("skipped: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Some(Tmpfs { dir: dir.to_path_buf() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the agent may still hold files open when a failed test unwinds.
        match Command::new("umount").arg("-l").arg(&self.dir).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("cannot unmount {}: {other:?}", self.dir.display()),
        }
        // The agent's temp dir went first and could not remove the mount point: now it can.
        let _ = std::fs::remove_dir(&self.dir); // best effort: a leftover empty dir in /tmp
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent); // only when empty
        }
    }
}

/// Run `deployer <args>` and time it.
fn timed(agent: &deployer_tests::Agent, args: &[&str]) -> (deployer_tests::CliOutput, Duration) {
    let t = Instant::now();
    let out = agent.cli(args);
    (out, t.elapsed())
}

#[test]
fn a_full_disk_during_the_install_fails_the_deploy_with_the_reason_and_the_old_release_serves() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo installed\n", "an install step");
    let setup = TestEnv::new().web(|a| a.repo(&repo).set("install", "sh install.sh").set("keep_releases", "2")).setup();
    let Some(_disk) = Tmpfs::mount(&setup.dir().join("state"), "40M") else { return };
    let mut agent = setup.start();
    let before = agent.current_release("web").expect("a first release");
    let releases = agent.dir().join("state/apps/web/releases");

    // A failed release, kept for inspection while there is room.
    repo.commit_file("install.sh", "exit 3\n", "a broken install");
    let (out, _) = timed(&agent, &["deploy", "web", "--wait"]);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let broken = newest(&agent).release.expect("the broken deploy's release");
    assert!(releases.join(&broken).is_dir(), "a failed release is kept while there is room");

    // The install step writes until the disk is full, and fails on it.
    let load = Load::start(agent.port("web"), 4, false);
    assert!(load.wait_for_more(20, Duration::from_secs(15)), "the load did not get going");
    repo.commit_file("install.sh", "echo filling; head -c 200000000 /dev/zero > big\n", "fill the disk");
    let (out, took) = timed(&agent, &["deploy", "web", "--wait", "--timeout", "3m"]);
    eprintln!("deploy --wait took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(1), "a failed deploy exits 1: {}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(60), "deploy --wait ended only after {took:?}");
    let failed = newest(&agent);
    assert_eq!(failed.state, "failed", "{failed:#?}");
    let why = failed.message.clone().unwrap_or_default();
    assert!(why.contains("disk full"), "the reason names the full disk: {why}");
    assert!(out.stdout.contains("disk full"), "and --wait says it: {}", out.stdout);
    assert!(why.contains(&broken) && !releases.join(&broken).exists(), "the older failed release is pruned: {why}");
    assert_eq!(agent.current_release("web").as_deref(), Some(before.as_str()), "current did not move");

    // Again, with the disk nearly full from the start: the newest failure is kept, the one
    // before it (and its big file) pruned, and the deploy still ends with the reason.
    repo.commit_file("install.sh", "echo filling again; head -c 200000000 /dev/zero > big\n", "fill it again");
    let (out, took) = timed(&agent, &["deploy", "web", "--wait", "--timeout", "3m"]);
    eprintln!("deploy --wait on a full disk took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(60), "deploy --wait ended only after {took:?}");
    let again = newest(&agent);
    assert_eq!(again.state, "failed", "{again:#?}");
    let why = again.message.clone().unwrap_or_default();
    let first_full = failed.release.clone().expect("the failed deploy's release");
    assert!(why.contains("disk full") && why.contains(&first_full), "{why}");
    assert!(!releases.join(&first_full).exists(), "the older failed release went");

    assert!(load.wait_for_more(50, Duration::from_secs(15)), "nothing served on the full disk");
    let report = load.stop();
    eprintln!("load: {report}");
    assert_eq!(report.failed, 0, "the old release kept serving: {report}");
    assert!(http::get(agent.port("web"), "/").is_ok_and(|r| r.status == 200), "the app answers");
    let log = agent.log();
    for line in log.lines().filter(|l| l.contains("disk") || l.contains("final state") || l.contains("room")) {
        eprintln!("agent: {line}");
    }

    // The operator frees the space; a restart reads what happened (not `interrupted`), and the
    // next deploy goes live.
    let big = releases.join(again.release.as_deref().expect("the failed deploy's release")).join("big");
    std::fs::remove_file(&big).unwrap_or_else(|e| panic!("remove {}: {e}", big.display()));
    agent.restart();
    for id in [failed.id, again.id] {
        assert_eq!(agent.deploy_status(id).state, "failed", "a restart reads what happened");
    }
    let fixed = repo.commit_file("install.sh", "echo installed again\n", "a fixed install");
    let (out, took) = timed(&agent, &["deploy", "web", "--wait"]);
    assert_eq!(out.code(), Some(0), "after {took:?}: {}{}", out.stdout, out.stderr);
    let live = newest(&agent);
    assert_eq!((live.state.as_str(), live.sha.as_deref()), ("live", Some(fixed.as_str())), "{live:#?}");
    agent.wait_online("web", 2);
}

/// The app's newest deploy, with its events.
fn newest(agent: &deployer_tests::Agent) -> deployer_wire::Deploy {
    let id = agent.history("web").first().expect("a deploy").id;
    agent.deploy_status(id)
}

#[test]
fn deploy_wait_follows_a_crashing_release_through_its_bake_window_and_exits_non_zero() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "20s")).start();
    let before = agent.current_release("web").expect("a first release");

    // Gets ready, serves, then dies a second later, every time.
    repo.commit_crash_after(1000);
    let (out, took) = timed(&agent, &["deploy", "web", "--wait"]);
    eprintln!("deploy --wait took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(1), "a deploy the bake rolled back exits 1: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rolled_back") || out.stdout.contains("rolled back"), "{}", out.stdout);
    assert!(out.stdout.contains("baking"), "the wait shows the bake window: {}", out.stdout);
    let deploy = agent.history("web").into_iter().find(|d| d.trigger == "api").expect("the deploy");
    assert_eq!(deploy.state, "rolled_back", "{deploy:#?}");
    let events = agent.deploy_status(deploy.id).events;
    assert!(!events.iter().any(|e| e.state == "live"), "never reported live: {events:#?}");
    assert!(
        deployer_tests::wait_until(Duration::from_secs(60), || agent.current_release("web").as_deref()
            == Some(before.as_str())),
        "the bake's rollback put {before} back"
    );
}

#[test]
fn deploy_wait_on_a_healthy_release_exits_zero_only_after_its_bake_window() {
    let repo = TestRepo::with_example_app();
    let window = Duration::from_secs(4);
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "4s")).start();
    let sha = repo.commit_greeting("baked");
    let (out, took) = timed(&agent, &["deploy", "web", "--wait"]);
    eprintln!("deploy --wait took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(took >= window, "--wait returned after {took:?}, within the bake window of {window:?}");
    let deploy = agent.history("web").into_iter().next().expect("the deploy");
    let deploy = agent.deploy_status(deploy.id);
    assert_eq!((deploy.state.as_str(), deploy.sha.as_deref()), ("live", Some(sha.as_str())), "{deploy:#?}");
    let at = |state: &str| deploy.events.iter().find(|e| e.state == state).map(|e| e.at_ms);
    let (baking, live) = (at("baking").expect("a baking event"), at("live").expect("a live event"));
    assert!(live >= baking + window.as_millis() as u64, "live {live} came before the window from {baking} passed");
    assert!(deploy.message.unwrap_or_default().contains("bake window"), "the message says the window passed");
}

#[test]
fn an_agent_restarted_on_a_full_disk_serves_its_release_and_refuses_deploys_with_the_reason() {
    let repo = TestRepo::with_example_app();
    let setup = TestEnv::new().web(|a| a.repo(&repo)).setup();
    let Some(_disk) = Tmpfs::mount(&setup.dir().join("state"), "40M") else { return };
    let mut agent = setup.start();
    let before = agent.current_release("web").expect("a first release");
    let filler = agent.dir().join("state/filler");
    fill(&filler);

    agent.restart();
    agent.wait_online("web", 2);
    assert_eq!(agent.current_release("web").as_deref(), Some(before.as_str()));
    assert!(http::get(agent.port("web"), "/").is_ok_and(|r| r.status == 200), "the app answers");
    repo.commit_greeting("on a full disk");
    let (out, took) = timed(&agent, &["deploy", "web", "--wait"]);
    eprintln!("deploy --wait on a full disk took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_ne!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(60), "deploy --wait ended only after {took:?}");
    assert!(out.stderr.contains("full") || out.stdout.contains("full"), "the reason: {}{}", out.stdout, out.stderr);

    std::fs::remove_file(&filler).expect("free the disk");
    let (out, _) = timed(&agent, &["deploy", "web", "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
}

/// Write zeros to `file` until the disk is full.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("create the filler");
    let chunk = vec![0u8; 1 << 16];
    while f.write_all(&chunk).is_ok() {}
    // The last bytes a whole chunk did not fit in.
    while f.write_all(&[0u8; 512]).is_ok() {}
}

/// The deploy's state as its row in the agent's database says, read beside the agent.
fn row_state(conn: &rusqlite::Connection, id: u64) -> String {
    conn.query_row("SELECT state FROM deploys WHERE id = ?1", [id as i64], |r| r.get(0)).expect("the deploy's row")
}

#[test]
fn a_final_state_the_database_refuses_still_ends_deploy_wait_and_is_written_once_it_can_be() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo installed\n", "an install step");
    let mut agent = TestEnv::new().web(|a| a.repo(&repo).set("install", "sh install.sh")).start();
    let gate = agent.dir().join("gate");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; echo broken; exit 4\n", gate.display());
    repo.commit_file("install.sh", &script, "a gated, broken install");
    let db = agent.dir().join("state/agent.db");

    let (out, took, id) = std::thread::scope(|s| {
        let wait = s.spawn(|| {
            let t = Instant::now();
            (agent.cli(&["deploy", "web", "--wait", "--timeout", "2m"]), t.elapsed())
        });
        let id = deployer_tests::poll(Duration::from_secs(30), || {
            agent.history("web").into_iter().find(|d| d.state == "building").map(|d| d.id)
        })
        .expect("the deploy reaches its install step");
        // Another process holds the database's write lock while the install ends: every write
        // of the agent is refused (busy) until it lets go; reads go on (WAL).
        let conn = rusqlite::Connection::open(&db).expect("open the agent's database");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        std::fs::write(&gate, "").expect("open the gate");
        let (out, took) = wait.join().expect("the CLI thread");
        assert_eq!(row_state(&conn, id), "building", "the row was not written while locked");
        conn.execute_batch("ROLLBACK").expect("let go of the lock");
        (out, took, id)
    });
    eprintln!("deploy --wait took {took:?}:\n{}{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(1), "the failure is told from memory: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("exit status: 4"), "{}", out.stdout);

    let conn = rusqlite::Connection::open(&db).expect("open the agent's database");
    assert!(
        deployer_tests::wait_until(Duration::from_secs(20), || row_state(&conn, id) == "failed"),
        "the final state was written once the database let the agent write: {}",
        row_state(&conn, id)
    );
    drop(conn);
    agent.restart();
    assert_eq!(agent.deploy_status(id).state, "failed", "a restart reads what happened, not `interrupted`");
}
