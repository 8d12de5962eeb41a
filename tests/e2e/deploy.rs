//! Git-driven deploys: a commit in a real repository (made with the git CLI) goes live through
//! fetch, release, install and a rolling reload; failures leave the running release serving.

use deployer_tests::{Agent, AppSpec, Load, LoadReport, TestEnv, TestRepo, http, wait_until};
use deployer_wire::{ApiError, Deploy};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

/// Clients hitting the app during a deploy.
const CONNS: usize = 30;

/// An install step that waits until the test opens the gate (a file next to the repo), so a
/// test controls how long `building` lasts without sleeping itself.
fn gated_install(gate: &Path) -> String {
    format!("echo installing; while [ ! -e {} ]; do sleep 0.05; done; echo installed\n", gate.display())
}

/// A repository whose app runs `sh install.sh` as its install step (the script is in the repo,
/// so each commit chooses what its install does).
fn repo_with_install(script: &str) -> TestRepo {
    let repo = TestRepo::with_example_app();
    repo.commit_file("install.sh", script, "an install step");
    repo
}

fn app_from(repo: &TestRepo) -> impl FnOnce(AppSpec) -> AppSpec + '_ {
    move |app| app.repo(repo).set("install", "sh install.sh").set("keep_releases", "2")
}

/// The body `GET /` answers on the app's public port.
fn answer(agent: &Agent) -> String {
    http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

/// Deploy `git_ref` while [`CONNS`] clients hit the app; answers the finished deploy and the
/// load's report.
fn deploy_under_load(agent: &Agent, git_ref: &str) -> (Deploy, LoadReport) {
    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let id = agent.deploy("web", git_ref);
    let deploy = agent.wait_deploy(id);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "nothing served after the deploy");
    let report = load.stop();
    eprintln!("deploy: {deploy:#?}\nload: {report}");
    (deploy, report)
}

fn states(d: &Deploy) -> Vec<&str> {
    let mut s: Vec<&str> = d.events.iter().map(|e| e.state.as_str()).filter(|s| *s != "log").collect();
    s.dedup();
    s
}

#[test]
fn a_new_commit_goes_live_without_a_failed_request() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let first = agent.current_release("web").expect("the first release is live after start");
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));

    let sha = repo.commit_greeting("v2");
    let (deploy, report) = deploy_under_load(&agent, "main");

    assert_eq!(deploy.state, "live", "{deploy:#?}");
    assert_eq!(deploy.sha.as_deref(), Some(sha.as_str()));
    assert_eq!(states(&deploy), ["queued", "fetching", "building", "rolling", "live"]);
    assert_eq!(report.failed, 0, "{report}");
    assert!(report.saw("v2 from worker"), "the new release served none of the load: {report}");
    let current = agent.current_release("web").expect("current");
    assert_ne!(current, first);
    assert!(current.ends_with(&sha[..7]), "current is {current}, the deploy was {sha}");
    assert_eq!(deploy.release.as_deref(), Some(current.as_str()));
    assert!(answer(&agent).starts_with("v2 from worker"), "{}", answer(&agent));
}

#[test]
fn deploying_the_live_commit_again_changes_nothing() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let pids = agent.pids("web");
    let deploy = agent.wait_deploy(agent.deploy("web", &repo.head()));
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    assert!(deploy.message.as_deref().unwrap_or_default().contains("already live"), "{deploy:#?}");
    assert_eq!(agent.pids("web"), pids, "no worker was replaced");
}

#[test]
fn an_install_failure_leaves_the_old_release_serving() {
    let repo = repo_with_install("echo install ok\n");
    let agent = TestEnv::new().web(app_from(&repo)).start();
    let before = agent.current_release("web").expect("current");
    let pids = agent.pids("web");

    repo.commit_file(".env", "GREETING=broken\n", "a greeting nobody sees");
    let bad = repo.commit_file("install.sh", "echo 'npm ERR! code E404' >&2; exit 3\n", "a broken install");
    let (deploy, report) = deploy_under_load(&agent, "main");

    assert_eq!(deploy.state, "failed", "{deploy:#?}");
    let message = deploy.message.clone().unwrap_or_default();
    assert!(message.contains("install") && message.contains("keeps serving"), "{message}");
    assert!(
        deploy.output_tail.iter().any(|l| l.contains("npm ERR! code E404")),
        "the install's output is in the deploy: {:?}",
        deploy.output_tail
    );
    assert!(!states(&deploy).contains(&"rolling"), "{deploy:#?}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(!report.saw("broken from worker"), "{report}");
    assert_eq!(agent.current_release("web"), Some(before));
    assert_eq!(agent.pids("web"), pids, "the running workers were not touched");
    // The failed release is kept for inspection.
    let failed = deploy.release.clone().expect("the failed deploy names its release");
    assert!(failed.ends_with(&bad[..7]), "{failed}");
    assert!(agent.app_dir("web").join("releases").join(&failed).is_dir(), "failed release {failed} was removed");
}

#[test]
fn a_release_whose_workers_never_get_ready_is_rolled_back() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).ready_timeout("2s")).start();
    let before = agent.current_release("web").expect("current");
    let pids = agent.pids("web");

    // A new app.js that runs but never listens.
    repo.commit_file("app.js", "setInterval(() => {}, 1000);\n", "forget to listen");
    let (deploy, report) = deploy_under_load(&agent, "main");

    assert_eq!(deploy.state, "rolled_back", "{deploy:#?}");
    assert!(states(&deploy).contains(&"rolling"), "{deploy:#?}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(agent.current_release("web"), Some(before));
    let after = agent.pids("web");
    assert_eq!(after.len(), pids.len(), "{after:?}");
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
}

#[test]
fn rollback_puts_the_previous_release_back_without_fetching_or_installing() {
    let repo = repo_with_install("echo install ran\n");
    let agent = TestEnv::new().web(app_from(&repo)).start();
    let first = agent.current_release("web").expect("current");
    repo.commit_greeting("v2");
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    assert!(answer(&agent).starts_with("v2 from worker"));

    let load = Load::start(agent.port("web"), CONNS, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let out = agent.cli(&["rollback", "web", "--wait", "--json"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let rollback: Deploy = serde_json::from_str(&out.stdout).expect("rollback --wait --json prints the deploy");
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "nothing served after the rollback");
    let report = load.stop();

    assert_eq!(rollback.state, "live", "{rollback:#?}");
    assert_eq!(states(&rollback), ["queued", "rolling", "live"], "no fetch, no build: {rollback:#?}");
    assert!(rollback.output_tail.is_empty(), "no install ran: {:?}", rollback.output_tail);
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(agent.current_release("web"), Some(first));
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
}

#[test]
fn deploys_requested_during_a_slow_install_coalesce_into_one_of_the_newest() {
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = repo_with_install("echo fast\n");
    let agent = TestEnv::new().web(app_from(&repo)).start();

    repo.commit_file("install.sh", &gated_install(&gate), "a slow install");
    let slow = agent.deploy("web", "main");
    agent.wait_deploy_state(slow, "building");
    let mut later = Vec::new();
    for v in ["v3", "v4", "v5"] {
        let sha = repo.commit_greeting(v);
        later.push((agent.deploy("web", &sha), sha));
    }
    std::fs::write(&gate, "").expect("open the gate");

    assert_eq!(agent.wait_deploy(slow).state, "live");
    let (newest, newest_sha) = later.pop().expect("three");
    for (id, _) in &later {
        let d = agent.wait_deploy(*id);
        assert_eq!(d.state, "superseded", "{d:#?}");
    }
    let d = agent.wait_deploy(newest);
    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!(d.sha.as_deref(), Some(newest_sha.as_str()));
    assert!(answer(&agent).starts_with("v5 from worker"), "{}", answer(&agent));
    let ran: Vec<u64> = agent.history("web").iter().filter(|d| states(d).contains(&"building")).map(|d| d.id).collect();
    assert!(!ran.contains(&later[0].0) && !ran.contains(&later[1].0), "superseded deploys never ran: {ran:?}");
}

#[test]
fn a_deploy_can_be_cancelled_while_installing() {
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = repo_with_install("echo fast\n");
    let agent = TestEnv::new().web(app_from(&repo)).start();
    let before = agent.current_release("web");

    repo.commit_file("install.sh", &gated_install(&gate), "a slow install");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "building");
    let out = agent.cli(&["cancel", &id.to_string()]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let d = agent.wait_deploy(id);
    assert_eq!(d.state, "cancelled", "{d:#?}");
    assert_eq!(agent.current_release("web"), before);
    assert!(answer(&agent).starts_with("hello from worker"));
}

#[test]
fn an_agent_killed_during_install_comes_back_on_the_intact_current_release() {
    let gate = tempfile::tempdir().expect("a temp dir");
    let gate = gate.path().join("open");
    let repo = repo_with_install("echo fast\n");
    let mut agent = TestEnv::new().web(app_from(&repo)).start();
    let before = agent.current_release("web").expect("current");

    repo.commit_greeting("never-live");
    repo.commit_file("install.sh", &gated_install(&gate), "a slow install");
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "building");
    agent.signal(Signal::SIGKILL);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some(), "the agent survived SIGKILL");
    // Let the orphaned install end, whatever the kernel did with it.
    std::fs::write(&gate, "").expect("open the gate");

    agent.start_again();
    let d = agent.deploy_status(id);
    assert_eq!(d.state, "interrupted", "{d:#?}");
    assert_eq!(agent.current_release("web"), Some(before));
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    // The agent still deploys after the crash.
    let sha = repo.commit_greeting("after-crash");
    let d = agent.wait_deploy(agent.deploy("web", &sha));
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(answer(&agent).starts_with("after-crash from worker"), "{}", answer(&agent));
}

#[test]
fn hostile_refs_are_refused_with_400_and_queue_nothing() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let before = agent.history("web").len();
    for bad in [
        "--upload-pack=touch /tmp/pwned",
        "main..evil",
        "../../etc/passwd",
        "a b",
        "refs/heads/x.lock",
        "",
        "-x",
        "main@{1}",
        "HEAD~1;rm -rf /",
    ] {
        let r = agent.api_post("/v1/apps/web/deploys", serde_json::json!({ "ref": bad }));
        assert_eq!(r.status, 400, "ref {bad:?}: {}", r.body);
        let e: ApiError = r.json();
        assert!(!e.message.is_empty(), "ref {bad:?}: {e:?}");
    }
    assert_eq!(agent.history("web").len(), before, "nothing was queued");
}

#[test]
fn deploy_wait_history_and_releases_on_the_cli() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let sha = repo.commit_greeting("v2");

    let out = agent.cli(&["deploy", "web", "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("live"), "{}", out.stdout);

    let out = agent.cli(&["history", "web", "--json"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let history: Vec<Deploy> = serde_json::from_str(&out.stdout).expect("history --json");
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0].sha.as_deref(), Some(sha.as_str()));
    assert_eq!(history[0].state, "live");
    assert_eq!(history[0].trigger, "api");

    let out = agent.cli(&["releases", "web", "--json"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let releases: Vec<deployer_wire::Release> = serde_json::from_str(&out.stdout).expect("releases --json");
    assert_eq!(releases.iter().filter(|r| r.current).count(), 1, "{releases:#?}");
    assert!(releases.iter().any(|r| r.current && r.sha == sha), "{releases:#?}");

    let bad = agent.cli(&["deploy", "web", "--ref", "main..x"]);
    assert_ne!(bad.code(), Some(0));
    assert!(bad.stderr.contains("ref"), "{}", bad.stderr);
}

#[test]
fn releases_beyond_keep_releases_are_pruned_but_never_current_or_previous() {
    let repo = repo_with_install("true\n");
    let agent = TestEnv::new().web(app_from(&repo)).start();
    for v in ["v2", "v3", "v4", "v5"] {
        let sha = repo.commit_greeting(v);
        let d = agent.wait_deploy(agent.deploy("web", &sha));
        assert_eq!(d.state, "live", "{d:#?}");
    }
    let releases = agent.app_dir("web").join("releases");
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&releases)
            .expect("releases/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    // Pruning happens right after the switch to live; the deploy may be reported live just before.
    wait_until(Duration::from_secs(5), || names().len() == 2);
    assert_eq!(names().len(), 2, "keep_releases: 2 keeps two release dirs: {:?}", names());
    let current = agent.current_release("web").expect("current");
    assert!(releases.join(&current).is_dir());
}

#[test]
fn a_release_that_crash_loops_within_its_bake_window_is_rolled_back_by_the_agent() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).set("bake", "30s")).start();
    let before = agent.current_release("web").expect("current");

    // Gets ready, serves, then dies a second later, every time.
    repo.commit_crash_after(1000);
    let id = agent.deploy("web", "main");
    agent.wait_deploy_state(id, "baking");

    let rolled_back = deployer_tests::poll(Duration::from_secs(60), || {
        let d = agent.deploy_status(id);
        (d.state == "rolled_back").then_some(d)
    })
    .unwrap_or_else(|| panic!("the bake window did not roll back: {:#?}", agent.deploy_status(id)));
    let why = rolled_back.message.clone().unwrap_or_default();
    assert!(why.contains("bake window") && why.contains(&before), "{why}");
    assert!(
        wait_until(Duration::from_secs(60), || agent.current_release("web").as_deref() == Some(before.as_str())),
        "current went back to {before}: {:?}",
        agent.current_release("web")
    );
    let rollback =
        agent.history("web").into_iter().find(|d| d.trigger == "bake").expect("a rollback deploy by the bake watcher");
    assert_eq!(agent.wait_deploy(rollback.id).state, "live");
    agent.wait_online("web", 2);
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
}

#[test]
fn an_app_from_git_added_by_sighup_gets_its_first_deploy() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().start();
    let web = agent.pids("web");
    agent.reconfigure(|env| env.app(AppSpec::new("api").instances(1).repo(&repo)));

    agent.signal(Signal::SIGHUP);
    agent.wait_online("api", 1);
    let first = agent.history("api");
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].trigger, "config");
    assert_eq!(agent.wait_deploy(first[0].id).sha.as_deref(), Some(repo.head().as_str()));
    let r = http::get(agent.port("api"), "/").expect("GET / on the new app's port");
    assert!(r.body.starts_with("hello from worker 0"), "{}", r.body);
    assert_eq!(agent.pids("web"), web, "an unchanged app was touched");

    // A second SIGHUP with the release live deploys nothing more.
    agent.signal(Signal::SIGHUP);
    assert!(!wait_until(Duration::from_secs(2), || agent.history("api").len() > 1), "{:#?}", agent.history("api"));
}

#[test]
fn workers_and_the_install_step_run_as_the_configured_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can start processes as another user");
        return;
    }
    let repo = repo_with_install("id -u > installed-by\n");
    let setup = TestEnv::new().web(|a| app_from(&repo)(a).set("user", "nobody")).setup();
    // The test's temp dir is private to root; `nobody` must reach the releases inside it.
    std::fs::set_permissions(setup.dir(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the temp dir");
    let agent = setup.start();
    let nobody = nix::unistd::User::from_name("nobody").expect("getpwnam").expect("a `nobody` user");
    let uid = nobody.uid.as_raw().to_string();

    for pid in agent.pids("web") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
        assert!(uids.split_whitespace().skip(1).all(|u| u == uid), "worker {pid} runs as {uids}, not {uid}");
    }
    let release = agent.app_dir("web").join("current");
    let installed_by = std::fs::read_to_string(release.join("installed-by")).expect("the install step wrote its uid");
    assert_eq!(installed_by.trim(), uid);
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
}

/// A deploy rolls onto the config file as it is now: a changed `instances` is applied.
#[test]
fn a_deploy_applies_a_changed_instances() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    assert_eq!(agent.pids("web").len(), 2);
    agent.edit_config(|c| c.replacen("    instances: 2", "    instances: 3", 1));
    repo.commit_greeting("three of us");
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    let online = agent.wait_online("web", 3);
    assert_eq!(online.len(), 3, "{online:#?}");
    assert_eq!(agent.app("web").instances, 3);
}

/// A deploy whose roll fails puts the previous config back with the previous workers: the
/// front keeps applying the settings the serving workers were started with.
#[test]
fn a_roll_that_fails_puts_the_previous_config_back() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo).ready_timeout("2s")).start();
    agent.edit_config(|c| c.replacen("    instances: 2", "    instances: 2\n    front: { max_body: 10 }", 1));
    repo.commit_file("app.js", "setInterval(() => {}, 1000);\n", "forget to listen");
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "rolled_back", "{deploy:#?}");

    let body = "x".repeat(100);
    let r = http::request(agent.port("web"), "POST", "/", &[], Some(&body), Duration::from_secs(10)).expect("answer");
    assert_eq!(r.status, 200, "the failed deploy's `max_body: 10` must not stay in force: {}", r.body);
}

/// An app whose `/slow` answers once the file `$MARK.open` exists (and first touches the file
/// `$MARK`), `/` at once; both say the greeting and the worker's pid, `/slow` first whether its
/// release still has its `app.js` then. The test decides when a slow request ends.
const SLOW_APP: &str = "\
const http = require('http');
const fs = require('fs');
const say = () => `${process.env.GREETING || 'hello'} ${process.pid}\\n`;
http.createServer((req, res) => {
  if (req.url !== '/slow') return res.end(say());
  fs.writeFileSync(process.env.MARK, 'started');
  const wait = () => fs.existsSync(process.env.MARK + '.open')
    ? res.end(`slow ${fs.existsSync(__filename)} ${say()}`) : setTimeout(wait, 20);
  wait();
}).listen(Number(process.env.PORT));
";

/// Start `GET /slow` on `agent`'s app and wait until a worker has it; answers the thread that
/// ends with the answer and when it came.
fn slow_request(
    agent: &Agent,
    mark: &Path,
) -> std::thread::JoinHandle<(std::io::Result<http::Response>, std::time::Instant)> {
    let _ = std::fs::remove_file(mark); // absent already the first time
    let _ = std::fs::remove_file(open_mark(mark)); // the same
    let port = agent.port("web");
    let slow = std::thread::spawn(move || {
        let r = http::request(port, "GET", "/slow", &[], None, Duration::from_secs(30));
        (r, std::time::Instant::now())
    });
    assert!(wait_until(Duration::from_secs(10), || mark.exists()), "the slow request did not start");
    slow
}

/// The file that ends the slow requests of [`SLOW_APP`] started with `mark`.
fn open_mark(mark: &Path) -> std::path::PathBuf {
    let mut open = mark.as_os_str().to_owned();
    open.push(".open");
    open.into()
}

/// A deploy is live once the new workers serve alone: it does not wait for the old workers to
/// finish a slow request, which they still finish (with the old release), and then they exit.
#[test]
fn a_deploy_is_live_while_the_old_workers_finish_their_requests() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("app.js", SLOW_APP, "an app with a slow request");
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("slow-started");
    let agent = TestEnv::new().web(|a| a.repo(&repo).env("MARK", &mark.display().to_string()).instances(1)).start();
    let slow = slow_request(&agent, &mark);

    repo.commit_greeting("v2");
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    let live_at = std::time::Instant::now();
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(answer(&agent).starts_with("v2 "), "a request after `live` reached an old worker: {}", answer(&agent));

    std::fs::write(open_mark(&mark), "").expect("end the slow request");
    let (slow, slow_at) = slow.join().unwrap();
    let slow = slow.expect("the slow request was cut");
    assert_eq!(slow.status, 200, "{slow:?}");
    assert!(slow.body.starts_with("slow true hello "), "{}", slow.body);
    assert!(live_at < slow_at, "`live` waited for the old worker's request to end");
    let old: u32 = slow.body.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || !deployer_tests::pid_alive(old)),
        "the old worker {old} still runs after its request"
    );
}

/// The release whose old workers still finish their requests after a deploy went live is not
/// pruned under them, even when it is neither the new release nor the one before it (after a
/// rollback onto an older release).
#[test]
fn a_release_whose_old_workers_finish_requests_is_not_pruned_under_them() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("app.js", SLOW_APP, "an app with a slow request");
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("slow-started");
    let agent = TestEnv::new()
        .web(|a| a.repo(&repo).env("MARK", &mark.display().to_string()).instances(1).set("keep_releases", "1"))
        .start();
    let first = agent.history("web").pop().expect("the startup deploy");
    let first = agent.deploy_status(first.id).release.expect("a release");
    repo.commit_greeting("v2");
    assert_eq!(agent.wait_deploy(agent.deploy("web", "main")).state, "live");
    let out = agent.cli(&["rollback", "web", "--to", &first, "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);

    let slow = slow_request(&agent, &mark);
    repo.commit_greeting("v3");
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(d.state, "live", "{d:#?}");
    std::fs::write(open_mark(&mark), "").expect("end the slow request");
    let (slow, _) = slow.join().unwrap();
    let slow = slow.expect("the slow request was cut");
    assert!(slow.body.starts_with("slow true hello "), "the release was removed under its worker: {}", slow.body);
    // The next deploy prunes it.
    repo.commit_greeting("v4");
    assert_eq!(agent.wait_deploy(agent.deploy("web", "main")).state, "live");
    assert!(!agent.app_dir("web").join("releases").join(&first).exists(), "release {first} is never pruned");
}

/// The agent's stop waits for the old workers a deploy left finishing their requests: their
/// request is answered and none of them outlives the agent.
#[test]
fn a_stop_right_after_a_deploy_waits_for_the_old_workers() {
    let repo = TestRepo::with_example_app();
    repo.commit_file("app.js", SLOW_APP, "an app with a slow request");
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("slow-started");
    let mut agent = TestEnv::new().web(|a| a.repo(&repo).env("MARK", &mark.display().to_string()).instances(1)).start();
    let slow = slow_request(&agent, &mark);
    repo.commit_greeting("v2");
    assert_eq!(agent.wait_deploy(agent.deploy("web", "main")).state, "live");

    agent.signal(Signal::SIGTERM);
    assert!(wait_until(Duration::from_secs(10), || agent.log().contains("front stopped accepting")), "{}", agent.log());
    assert!(deployer_tests::pid_alive(agent.pid()), "the agent did not wait for the old worker's request");
    std::fs::write(open_mark(&mark), "").expect("end the slow request");
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    let (slow, _) = slow.join().unwrap();
    let slow = slow.expect("the slow request was cut");
    assert!(slow.body.starts_with("slow true hello "), "{}", slow.body);
    let old: u32 = slow.body.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(!deployer_tests::pid_alive(old), "the old worker {old} outlived the agent");
}
