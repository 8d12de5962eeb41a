//! Abuse: a reviewer's attacks on the trust boundary after issue 9 landed, one test each.

use deployer_tests::abuse::{BYSTANDER, is_root, nobody_uid, open_to_nobody};
use deployer_tests::{Bystander, Decoy, TestEnv, TestRepo};
use std::os::unix::process::CommandExt;

/// An operator keeps the app under the app user's home (`path: /home/deploy/apps/web`, the
/// capistrano layout). The app's user owns the parent of the app dir, so it can rename the app
/// dir away and put a link in its place: the agent (root) must not then create, chmod, chown or
/// write a release through that link.
#[test]
fn an_app_dir_swapped_for_a_link_by_the_app_user_is_not_followed() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    let home = tempfile::Builder::new().prefix("deployer-home-").tempdir().expect("a home dir");
    std::os::unix::fs::chown(home.path(), Some(nobody_uid()), None).expect("chown the home dir");
    let path = home.path().join("web");
    let setup = TestEnv::new()
        .web(|a| a.repo(&repo).set("user", "nobody").set("path", &format!("\"{}\"", path.display())))
        .app(Bystander::app())
        .dont_wait_for_workers()
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    agent.wait_online(BYSTANDER, 2);
    let bystander = Bystander::start(&agent);

    // The app's user (nobody) swaps its app dir for a link to somewhere else.
    let swap = format!("mv {0}/web {0}/web.old && ln -s {1} {0}/web", home.path().display(), decoy.path().display());
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", &swap])
        .uid(nobody_uid())
        .status()
        .expect("run the swap as nobody");
    assert!(status.success(), "nobody could not swap its app dir");
    repo.commit_greeting("through the link");
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(d.state, "failed", "{d:#?}");
    let message = d.message.clone().unwrap_or_default();
    assert!(
        message.contains("who could swap") || message.contains("a link is not followed"),
        "the error says why: {d:#?}"
    );
    // The app dir's parent is nobody's: even before the swap, the agent refuses to work there.
    let first = agent.history("web").into_iter().last().expect("the first deploy");
    assert!(first.message.unwrap_or_default().contains("who could swap"), "the first deploy names the risk");

    decoy.assert_untouched();
    bystander.finish();
}

/// A file descriptor the agent inherited from whoever started it (a wrapper script's lock, a
/// file opened by a process manager) is not passed on to app code: a worker run as `nobody`
/// could read a root-only file through it.
#[test]
fn an_fd_the_agent_inherited_does_not_reach_the_workers() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    // Opened by this test (root) without close-on-exec, so the agent starts with it.
    let secret = std::fs::File::open(decoy.secret_file()).expect("open the decoy's secret");
    nix::fcntl::fcntl(&secret, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).expect("clear FD_CLOEXEC");
    let repo = TestRepo::with_example_app();
    let setup = TestEnv::new().web(|a| a.repo(&repo).set("user", "nobody")).setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let pids = agent.pids("web");
    assert!(!pids.is_empty());
    for pid in pids {
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the worker's fds").flatten() {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            assert!(
                target != decoy.secret_file(),
                "worker {pid} (nobody) holds fd {:?} on the root-only {}",
                entry.file_name(),
                target.display()
            );
        }
    }
    drop(secret);
}

/// `root:` names the repository's subdirectory that holds the app (a monorepo): the workers
/// and the install step run there and its `.env` is read, whatever else the repo holds.
#[test]
fn an_app_in_a_monorepo_subdirectory_deploys_and_runs_there() {
    let repo = TestRepo::with_example_app();
    let app_js = std::fs::read_to_string(repo.path().join("app.js")).expect("the example's app.js");
    repo.commit_file("services/web/app.js", &app_js, "the app in a subdirectory");
    repo.commit_file("services/web/.env", "GREETING=from-the-subdirectory\n", "its env file");
    let setup = TestEnv::new().web(|a| a.repo(&repo).set("root", "services/web")).dont_wait_for_workers().setup();
    let agent = setup.start();
    let d = agent.wait_deploy(1);
    assert_eq!(d.state, "live", "{d:#?}");
    let answer = deployer_tests::http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_default();
    assert!(answer.starts_with("from-the-subdirectory"), "{answer}");
}
