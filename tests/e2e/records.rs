//! One record per fact: the release an app runs and its runtime scale and stop are the
//! supervisor's, kept in the agent's database, and survive a restart of the agent; the `current`
//! symlink mirrors the release and never disagrees with what serves.

use deployer_tests::{Agent, TestEnv, TestRepo, http, wait_until};
use deployer_wire::AppStatus;
use std::time::Duration;

fn answer(agent: &Agent) -> String {
    http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

/// Wait until `web` is running exactly `n` online workers; answers its status.
#[track_caller]
fn running(agent: &Agent, n: usize) -> AppStatus {
    agent.wait_online("web", n);
    let status = agent.app("web");
    assert_eq!((status.state.as_str(), status.instances), ("running", n as u32), "{status:#?}");
    status
}

#[test]
fn a_runtime_scale_and_stop_survive_a_restart_of_the_agent() {
    let mut agent = TestEnv::new().instances(1).start();

    agent.cli(&["scale", "web", "3"]).success();
    running(&agent, 3);
    agent.restart();
    let status = running(&agent, 3);
    // `deployer ls` says the count is a runtime scale, the config's count, and the way back.
    assert_eq!(status.configured, Some(1), "{status:#?}");
    let ls = agent.cli(&["ls"]).success();
    assert!(ls.stdout.contains("web: 3 instances by `deployer scale` (the config says 1)"), "{}", ls.stdout);

    agent.cli(&["stop", "web"]).success();
    agent.restart();
    let status = agent.app("web");
    assert_eq!((status.state.as_str(), status.workers.len()), ("stopped", 0), "{status:#?}");
    assert!(agent.log().contains("stopped by `deployer stop`: not started"), "{}", agent.log());
    assert!(http::get(agent.port("web"), "/").map_or(true, |r| r.status != 200), "a stopped app serves nothing");

    agent.cli(&["start", "web"]).success();
    running(&agent, 3);
    agent.restart();
    running(&agent, 3);
}

#[test]
fn a_changed_instances_in_the_config_ends_a_runtime_scale() {
    let mut agent = TestEnv::new().instances(1).start();
    agent.cli(&["scale", "web", "3"]).success();
    running(&agent, 3);
    // A reload that leaves `instances` as it was keeps the scale.
    assert!(agent.reload("web", true).status == 200);
    running(&agent, 3);

    agent.reconfigure(|env| env.instances(2));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eq!(running(&agent, 2).configured, None, "the config's count applies again");
    agent.restart();
    running(&agent, 2);

    // Changed while the agent was down: the config's count applies at the start.
    agent.cli(&["scale", "web", "3"]).success();
    running(&agent, 3);
    agent.stop();
    agent.reconfigure(|env| env.instances(1));
    agent.start_again();
    running(&agent, 1);
}

#[test]
fn after_a_crash_between_switching_current_and_recording_the_release_the_record_wins() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a| a.repo(&repo).instances(1)).start();
    let first = agent.current_release("web").expect("the first release");
    let sha = repo.commit_greeting("v2");
    assert_eq!(agent.wait_deploy(agent.deploy("web", "main")).state, "live");
    let second = agent.current_release("web").expect("the second release");
    assert!(second.ends_with(short(&sha)), "{second}");
    agent.stop();

    // What a crash in the middle of a rollback to `first` leaves: `current` switched, the
    // record not written yet (the mirror is written first, the record is the commit).
    let current = agent.app_dir("web").join("current");
    std::fs::remove_file(&current).expect("remove current");
    std::os::unix::fs::symlink(std::path::Path::new("releases").join(&first), &current).expect("point current back");

    agent.start_again();
    assert!(answer(&agent).starts_with("v2 from worker"), "the recorded release serves: {}", answer(&agent));
    assert_eq!(agent.current_release("web").as_deref(), Some(second.as_str()), "`current` mirrors the record again");
    assert!(agent.log().contains("`current` disagrees with the recorded release"), "{}", agent.log());
}

#[test]
fn a_current_that_cannot_be_switched_puts_the_previous_workers_back() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a| a.repo(&repo).instances(2)).start();
    let first = agent.current_release("web").expect("the first release");
    // `current` becomes a directory: renaming a link over it fails (EISDIR).
    let current = agent.app_dir("web").join("current");
    std::fs::remove_file(&current).expect("remove current");
    std::fs::create_dir(&current).expect("a directory in its place");

    repo.commit_greeting("v2");
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(d.state, "rolled_back", "{d:#?}");
    let why = d.message.clone().unwrap_or_default();
    assert!(why.contains("cannot switch `current`") && why.contains(&first), "{d:#?}");
    agent.wait_online("web", 2);
    assert!(
        wait_until(Duration::from_secs(5), || answer(&agent).starts_with("hello from worker")),
        "the previous release serves: {}",
        answer(&agent)
    );
    let releases = agent.cli(&["releases", "web", "--json"]).success().stdout;
    let releases: Vec<deployer_wire::Release> = serde_json::from_str(&releases).expect("releases as JSON");
    let live: Vec<&str> = releases.iter().filter(|r| r.current).map(|r| r.name.as_str()).collect();
    assert_eq!(live, [first.as_str()], "{releases:#?}");

    // The record still says `first`: a restart runs it.
    std::fs::remove_dir(&current).expect("the directory goes");
    agent.restart();
    agent.wait_online("web", 2);
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    assert_eq!(agent.current_release("web").as_deref(), Some(first.as_str()), "`current` mirrors the record");
}

#[test]
fn a_stopped_app_stays_stopped_through_a_deploy_a_sighup_and_a_restart() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a| a.repo(&repo).instances(1)).start();
    agent.cli(&["stop", "web"]).success();

    let sha = repo.commit_greeting("v2");
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha))));
    agent.reconfigure(|env| env.env("EXTRA", "1"));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let moved = || agent.log().matches("it starts on this with").count();
    assert!(wait_until(Duration::from_secs(10), || moved() >= 2), "the deploy, then SIGHUP: {}", agent.log());
    agent.restart();
    let status = agent.app("web");
    assert_eq!((status.state.as_str(), status.workers.len()), ("stopped", 0), "{status:#?}");

    agent.cli(&["start", "web"]).success();
    running(&agent, 1);
    assert!(answer(&agent).starts_with("v2 from worker"), "the deployed release runs: {}", answer(&agent));
}
