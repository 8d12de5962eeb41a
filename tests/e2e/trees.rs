//! Every process the agent starts ends with what started it: a worker's children, an install
//! step's daemons (even one that left the process group with `setsid`), and whatever a killed
//! agent left behind; a worker's CPU and memory are its whole tree's. Each holds both ways the
//! agent tracks trees: in cgroups where the host gives it a writable cgroup v2 hierarchy (this
//! machine, as root, and systemd hosts with `Delegate=yes`; elsewhere that case says so and checks
//! nothing), and by the `DEPLOYER_TREE` tag in the environment where it has none
//! (`DEPLOYER_CGROUPS=off` makes this machine such a host).

use deployer_tests::abuse::is_root;
use deployer_tests::{Agent, TestEnv, TestRepo, wait_until};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the agent tracks process trees in a test.
#[derive(Clone, Copy)]
enum Tracking {
    Cgroups,
    Tagged,
}

impl Tracking {
    /// The test's environment, or `None` when this machine cannot track trees that way.
    fn env(self) -> Option<TestEnv> {
        match self {
            Tracking::Cgroups => cgroups_here().then(TestEnv::new),
            Tracking::Tagged => Some(TestEnv::new().agent_env("DEPLOYER_CGROUPS", "off")),
        }
    }

    /// The agent tracks trees the way the test means.
    #[track_caller]
    fn check(self, agent: &Agent) {
        let tagged = agent.log().contains("tracked by the `DEPLOYER_TREE` entry");
        assert_eq!(tagged, matches!(self, Tracking::Tagged), "{}", agent.log());
    }
}

/// A test of each way of tracking trees: `<name>::in_cgroups` and `<name>::by_tag`.
macro_rules! both_ways {
    ($($name:ident),+ $(,)?) => {
        $(mod $name {
            #[test]
            fn in_cgroups() {
                super::$name(super::Tracking::Cgroups)
            }
            #[test]
            fn by_tag() {
                super::$name(super::Tracking::Tagged)
            }
        })+
    };
}

both_ways!(
    an_install_step_leaves_no_process_behind_and_is_over_when_its_command_is,
    what_an_install_step_started_ends_when_the_agent_is_killed_during_it,
    a_workers_memory_is_its_whole_tree_and_max_memory_sees_it,
    a_workers_setsid_child_does_not_outlive_it,
);

fn cgroups_here() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let has =
        is_root() && mountinfo.lines().any(|l| l.split_once(" - ").is_some_and(|(_, r)| r.starts_with("cgroup2 ")));
    if !has {
        eprintln!("no writable cgroup v2 here (or not root): nothing to check");
    }
    has
}

/// A name no other process on the machine has in its command line.
fn marker(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("deployer-test-{what}-{}-{nanos}", std::process::id())
}

/// The pids whose command line mentions `marker`.
fn running(marker: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// A shell line starting a Node process that runs for ever, with `marker` in its command line.
fn forever(marker: &str) -> String {
    format!("node -e 'setInterval(() => {{}}, 1000)' {marker}")
}

fn deploys_install(repo: &TestRepo) -> impl FnOnce(deployer_tests::AppSpec) -> deployer_tests::AppSpec + '_ {
    move |app| app.repo(repo).set("install", "sh install.sh").set("install_timeout", "2m")
}

fn answer(agent: &Agent) -> String {
    deployer_tests::http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

fn an_install_step_leaves_no_process_behind_and_is_over_when_its_command_is(tracking: Tracking) {
    let Some(env) = tracking.env() else { return };
    let (daemon, holder) = (marker("setsid-daemon"), marker("stdout-holder"));
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo first\n", "an install step");
    let agent = env.web(deploys_install(&repo)).start();
    tracking.check(&agent);

    // A daemon that leaves the process group, and a background child that keeps stdout open.
    let script = format!("setsid {} >/dev/null 2>&1 &\n{} &\necho installed\n", forever(&daemon), forever(&holder));
    repo.commit_file("install.sh", &script, "an install step that leaves processes");
    repo.commit_greeting("v2");
    let started = Instant::now();
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    let took = started.elapsed();
    assert_eq!(d.state, "live", "{d:#?}");
    // Not held until install_timeout (2 min) by the child that keeps stdout open.
    assert!(took < Duration::from_secs(60), "the deploy took {took:?}: the install step looked hung");
    assert!(answer(&agent).starts_with("v2 from worker"), "{}", answer(&agent));
    let said = d.output_tail.iter().any(|l| l.contains("process(es) `sh install.sh` left running"));
    assert!(said, "the deploy does not say what the install step left running: {:#?}", d.output_tail);
    assert!(
        wait_until(Duration::from_secs(10), || running(&daemon).is_empty() && running(&holder).is_empty()),
        "processes the install step started outlived it: daemon {:?}, stdout holder {:?}",
        running(&daemon),
        running(&holder)
    );
}

fn what_an_install_step_started_ends_when_the_agent_is_killed_during_it(tracking: Tracking) {
    let Some(env) = tracking.env() else { return };
    let daemon = marker("install-of-a-killed-agent");
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", "echo first\n", "an install step");
    let mut agent = env.web(deploys_install(&repo)).start();
    tracking.check(&agent);

    let script = format!(
        "setsid {} >/dev/null 2>&1 &\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
        forever(&daemon),
        gate.display()
    );
    repo.commit_file("install.sh", &script, "a slow install that starts a daemon");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "building");
    assert!(wait_until(Duration::from_secs(10), || !running(&daemon).is_empty()), "the daemon never started");
    agent.signal(Signal::SIGKILL);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some(), "the agent survived SIGKILL");
    assert!(!running(&daemon).is_empty(), "the kernel ended the daemon by itself: the test proves nothing");

    agent.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || running(&daemon).is_empty()),
        "the next agent left the killed agent's install daemon running: {:?}",
        running(&daemon)
    );
    std::fs::write(&gate, "").expect("open the gate");
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
}

fn a_workers_memory_is_its_whole_tree_and_max_memory_sees_it(tracking: Tracking) {
    let Some(env) = tracking.env() else { return };
    // `sh` stays the worker's process (a second command follows node), node is its child: the
    // worker's own process is ~1 MB, node tens of MB.
    let start = ["sh", "-c", "node app.js; exit 0"];
    let again = tracking.env().expect("the same machine");
    let agent = env.start_command(&start).start();
    tracking.check(&agent);
    let seen = deployer_tests::poll(Duration::from_secs(15), || {
        let ws = agent.app("web").workers;
        let min = ws.iter().map(|w| w.rss_bytes).min()?;
        (ws.len() == 2 && min > 20 << 20).then_some(min)
    });
    assert!(seen.is_some(), "the workers' memory is not node's: {:#?}", agent.app("web").workers);
    drop(agent);

    // With a limit below node's size, the workers are replaced: the limit sees node under sh.
    let agent = again.start_command(&start).set("max_memory", "15M").start();
    tracking.check(&agent);
    let first = agent.pids("web");
    assert!(
        wait_until(Duration::from_secs(20), || agent.pids("web").iter().all(|p| !first.contains(p))),
        "workers whose node is above max_memory were not replaced: {first:?} still run"
    );
    assert!(agent.log().contains("above max_memory"), "{}", agent.log());
}

fn a_workers_setsid_child_does_not_outlive_it(tracking: Tracking) {
    let Some(env) = tracking.env() else { return };
    let daemon = marker("worker-daemon");
    let script = format!("setsid {} >/dev/null 2>&1 & exec node app.js", forever(&daemon));
    let mut agent = env.start_command(&["sh", "-c", &script]).instances(1).start();
    tracking.check(&agent);
    assert!(wait_until(Duration::from_secs(10), || !running(&daemon).is_empty()), "the daemon never started");
    let out = agent.cli(&["restart", "web"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    // One daemon at a time: the old worker's ended with it.
    assert!(
        wait_until(Duration::from_secs(10), || running(&daemon).len() == 1),
        "a retired worker's daemon is still running: {:?}",
        running(&daemon)
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).is_some(), "the agent did not stop");
    assert!(
        wait_until(Duration::from_secs(10), || running(&daemon).is_empty()),
        "a worker's daemon outlived the agent's stop: {:?}",
        running(&daemon)
    );
}
