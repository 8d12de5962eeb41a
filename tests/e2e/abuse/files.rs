//! Abuse: files. Root never follows a link out of a release or out of `shared/`: a repo that
//! commits a link, or a worker (as `nobody`) that plants one in `shared/`, cannot make the agent
//! read a root-only file into an app's environment or error messages, nor move, chown or delete
//! anything outside the app directory.

use deployer_tests::abuse::{BYSTANDER, is_root, open_to_nobody};
use deployer_tests::{Agent, AppSpec, Bystander, Decoy, TestEnv, TestRepo, environ, http, poll, wait_until};
use deployer_wire::Deploy;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An agent with `web` deployed from `repo` as `nobody` (changed further by `app`) and the
/// bystander app.
fn agent_for(repo: &TestRepo, app: impl FnOnce(AppSpec) -> AppSpec, wait_for_workers: bool) -> Agent {
    let mut env = TestEnv::new().web(|a| app(a.repo(repo).set("user", "nobody"))).app(Bystander::app());
    if !wait_for_workers {
        env = env.dont_wait_for_workers();
    }
    let setup = env.setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    if !wait_for_workers {
        agent.wait_online(BYSTANDER, 2);
    }
    agent
}

/// Deploy the branch head and wait for the end.
fn deploy(agent: &Agent) -> Deploy {
    let id = agent.deploy("web", "main");
    let d = agent.wait_deploy(id);
    eprintln!("deploy {id}: {d:#?}");
    d
}

/// The secret appears in no worker's environment, no deploy (API), no deploy log, nor the
/// agent's own log.
fn assert_nothing_leaked(agent: &Agent) {
    for app in ["web", BYSTANDER] {
        for pid in agent.pids(app) {
            let leaked: Vec<_> = environ(pid)
                .into_iter()
                .filter(|(k, v)| k.starts_with("DECOY") || v.contains(Decoy::SECRET) || k.contains(Decoy::SECRET))
                .collect();
            assert!(leaked.is_empty(), "worker {pid} of `{app}` got the decoy's secret: {leaked:?}");
        }
    }
    for d in agent.history("web") {
        let body = agent.api_get(&format!("/v1/deploys/{}", d.id)).body;
        assert!(!body.contains(Decoy::SECRET), "deploy {} shows the decoy's secret: {body}", d.id);
    }
    let logs = agent.app_dir("web").join("logs");
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains(Decoy::SECRET), "{} shows the decoy's secret", entry.path().display());
    }
    assert!(!agent.log().contains(Decoy::SECRET), "the agent's log shows the decoy's secret");
}

fn answer(agent: &Agent) -> String {
    http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

#[test]
fn a_committed_env_file_link_to_a_root_only_file_is_not_followed() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    let agent = agent_for(&repo, |a| a, true);
    let bystander = Bystander::start(&agent);
    let first = agent.current_release("web").expect("the first release is live");

    repo.commit_link(".env", &decoy.secret_file());
    let d = deploy(&agent);

    assert_eq!(d.state, "failed", "{d:#?}");
    let message = d.message.clone().unwrap_or_default();
    assert!(message.contains(".env") && message.contains("symbolic link"), "unclear: {message}");
    assert_eq!(agent.current_release("web").as_deref(), Some(first.as_str()), "the live release changed");
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    assert_nothing_leaked(&agent);
    decoy.assert_untouched();
    bystander.finish();
}

#[test]
fn an_env_file_that_does_not_parse_is_named_without_its_content() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    let agent = agent_for(&repo, |a| a, true);
    let bystander = Bystander::start(&agent);

    // A line with no `=` (like `/etc/shadow`'s), then a variable name that is not one.
    let cases = [
        (format!("root:{}:19000:0:99999:7:::\n", Decoy::SECRET), "line 1"),
        (format!("GREETING=x\n{}-x=1\n", Decoy::SECRET), "line 2"),
    ];
    for (content, line) in cases {
        repo.commit_file(".env", &content, "an env file that does not parse");
        let d = deploy(&agent);
        assert_eq!(d.state, "failed", "{d:#?}");
        let message = d.message.clone().unwrap_or_default();
        assert!(message.contains(".env") && message.contains(line), "the error does not name the place: {message}");
        assert!(!message.contains(Decoy::SECRET), "the error shows the file's content: {message}");
    }
    assert_nothing_leaked(&agent);
    decoy.assert_untouched();
    bystander.finish();
}

#[test]
fn a_shared_path_below_a_committed_link_fails_the_deploy_before_anything_moves() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    // The very first deploy would seed `shared/cfg/data` from `<decoy>/data`.
    repo.commit_link("cfg", decoy.path());
    let agent = agent_for(&repo, |a| a.set("shared", "[cfg/data]"), false);
    let bystander = Bystander::start(&agent);
    let startup = poll(Duration::from_secs(60), || agent.history("web").into_iter().find(Deploy::is_final))
        .expect("the startup deploy ended");
    assert_eq!(startup.state, "failed", "{startup:#?}");
    let message = startup.message.clone().unwrap_or_default();
    assert!(message.contains("cfg/data") && message.contains("symbolic link"), "unclear: {message}");
    decoy.assert_untouched();

    // A good commit goes live (`shared/cfg/data` is created) ...
    std::fs::remove_file(repo.path().join("cfg")).expect("remove the link");
    repo.commit_file("cfg/readme.txt", "config lives here\n", "a real cfg dir");
    let d = deploy(&agent);
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(agent.app_dir("web").join("shared/cfg/data").is_dir());

    // ... and a later link would make root delete `<decoy>/data` and plant a link there.
    repo.commit_link("cfg", decoy.path());
    let d = deploy(&agent);
    assert_eq!(d.state, "failed", "{d:#?}");
    let message = d.message.clone().unwrap_or_default();
    assert!(message.contains("cfg/data") && message.contains("symbolic link"), "unclear: {message}");
    decoy.assert_untouched();
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    assert_nothing_leaked(&agent);
    bystander.finish();
}

/// A worker that, when it starts, swaps `shared/<what>` for a link to `target`, then serves as
/// the example app does. It finds `shared/` through the release's own link to `link_in_release`.
fn commit_planting_worker(repo: &TestRepo, link_in_release: &str, what: &str, target: &Path) {
    let js = format!(
        r#"const fs = require('fs');
const path = require('path');
const shared = fs.readlinkSync({link}).split('/shared/')[0] + '/shared';
const victim = path.join(shared, {what});
try {{
  if (!fs.lstatSync(victim).isSymbolicLink()) {{
    fs.renameSync(victim, victim + '.moved');
    fs.symlinkSync({target}, victim);
    console.error('plant: ' + victim + ' -> ' + {target});
  }}
}} catch (e) {{ console.error('plant: ' + e); }}
require('./app.js');
"#,
        link = serde_json::to_string(link_in_release).expect("json"),
        what = serde_json::to_string(what).expect("json"),
        target = serde_json::to_string(&target.display().to_string()).expect("json"),
    );
    repo.commit_file("plant.js", &js, "a worker that plants a link in shared/");
}

/// Wait until the worker planted its link in `shared/`.
fn wait_planted(agent: &Agent, what: &str) -> PathBuf {
    let victim = agent.app_dir("web").join("shared").join(what);
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::symlink_metadata(&victim)
            .is_ok_and(|m| m.file_type().is_symlink())),
        "the worker did not plant its link at {}",
        victim.display()
    );
    victim
}

#[test]
fn a_worker_that_links_a_shared_dir_out_cannot_make_the_next_deploy_touch_it() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    commit_planting_worker(&repo, "cfg/data", "cfg", decoy.path());
    let agent = agent_for(&repo, |a| a.set("shared", "[cfg/data]").start(&["node", "plant.js"]).instances(1), true);
    let bystander = Bystander::start(&agent);
    wait_planted(&agent, "cfg");

    repo.commit_greeting("v2");
    let d = deploy(&agent);
    // Following `shared/cfg` would chown `<decoy>/data` to `nobody`.
    assert_eq!(d.state, "failed", "{d:#?}");
    let message = d.message.clone().unwrap_or_default();
    assert!(message.contains("shared/cfg") && message.contains("symbolic link"), "unclear: {message}");
    decoy.assert_untouched();
    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    assert_nothing_leaked(&agent);
    bystander.finish();
}

#[test]
fn a_worker_that_links_the_shared_env_file_to_a_root_file_leaks_nothing() {
    if !is_root() {
        eprintln!("skipped: workers as `nobody` need root");
        return;
    }
    let decoy = Decoy::new();
    let repo = TestRepo::with_example_app();
    commit_planting_worker(&repo, ".env", ".env", &decoy.secret_file());
    // The usual pattern: `.env` kept in `shared/` and read as the env file.
    let agent = agent_for(&repo, |a| a.set("shared", "[.env]").start(&["node", "plant.js"]).instances(1), true);
    let bystander = Bystander::start(&agent);
    assert!(answer(&agent).starts_with("hello from worker"), "the shared .env was not read: {}", answer(&agent));
    wait_planted(&agent, ".env");

    repo.commit_greeting("v2");
    let d = deploy(&agent);
    assert_eq!(d.state, "failed", "{d:#?}");
    let message = d.message.clone().unwrap_or_default();
    assert!(message.contains("shared/.env") && message.contains("symbolic link"), "unclear: {message}");

    // `reload --update-env` and `deployer-agent check` read the env file the same way.
    let r = agent.reload("web", true);
    assert_ne!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("symbolic link") && !r.body.contains(Decoy::SECRET), "{}", r.body);
    let config = agent.config_path().display().to_string();
    let check = agent.run_agent(&["check", "--config", &config]);
    assert!(!check.status.success(), "check passed: {}", check.stdout);
    assert!(check.stderr.contains("symbolic link"), "{}", check.stderr);
    assert!(!check.stdout.contains(Decoy::SECRET) && !check.stderr.contains(Decoy::SECRET));

    assert!(answer(&agent).starts_with("hello from worker"), "{}", answer(&agent));
    assert_nothing_leaked(&agent);
    decoy.assert_untouched();
    bystander.finish();
}
