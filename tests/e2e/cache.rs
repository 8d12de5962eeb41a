//! The install cache: a release whose lockfile (and install command) is the previous release's
//! gets that release's `node_modules` copied in and skips its install step; a changed lockfile
//! runs it; each release keeps its own dependencies; a link committed in the repo is never
//! followed by the agent.

use deployer_tests::{Agent, Decoy, Load, TestEnv, TestRepo, http};
use deployer_wire::Deploy;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

/// An app whose answer says which dependencies it loaded: `<first line of package-lock.json>
/// <greeting> from worker <n>`.
const APP: &str = "\
const http = require('http');
const dep = require('./node_modules/dep');
http.createServer((req, res) => {
  res.end(`${dep} ${process.env.GREETING || 'hello'} from worker ${process.env.INSTANCE_ID}\\n`);
}).listen(Number(process.env.PORT));
";

/// A repository of [`APP`] with a `package-lock.json` and an install step (`sh install.sh`) that
/// writes `node_modules/dep` from the lockfile and counts its runs in a file outside the repo.
struct Fixture {
    repo: TestRepo,
    counts: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let repo = TestRepo::with_example_app();
        let counts = tempfile::tempdir().expect("a temp dir");
        let install = format!(
            "echo ran >> {}\n[ -L node_modules ] && rm node_modules\nmkdir -p node_modules/dep\n\
             printf 'module.exports = \"%s\";\\n' \"$(head -n 1 package-lock.json)\" > node_modules/dep/index.js\n",
            counts.path().join("installs").display()
        );
        repo.commit_file("install.sh", &install, "an install step that counts its runs");
        repo.commit_file("app.js", APP, "an app that loads a dependency");
        repo.commit_file("package-lock.json", "lock-v1\n", "a lockfile");
        Fixture { repo, counts }
    }

    /// The agent, with the cache declared for the install step (the built-in default caches
    /// only the installers it knows, and `sh install.sh` is none of them).
    fn start(&self) -> Agent {
        self.start_with(|a| a.set("install_cache", "{ key: [package-lock.json], paths: [node_modules] }"))
    }

    fn start_with(&self, more: impl FnOnce(deployer_tests::AppSpec) -> deployer_tests::AppSpec) -> Agent {
        TestEnv::new()
            .web(|a| more(a.repo(&self.repo).set("install", "sh install.sh").set("keep_releases", "5")))
            .start()
    }

    /// How many times the install step ran.
    fn installs(&self) -> usize {
        std::fs::read_to_string(self.counts.path().join("installs")).map_or(0, |s| s.lines().count())
    }
}

/// The startup deploy, with its events.
fn startup_deploy(agent: &Agent) -> Deploy {
    agent.deploy_status(agent.history("web").pop().expect("the startup deploy").id)
}

fn answer(agent: &Agent) -> String {
    http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

fn deploy(agent: &Agent) -> Deploy {
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    eprintln!("{d:#?}");
    d
}

/// What the deploy's event about the install cache says.
fn cache_event(d: &Deploy) -> String {
    d.events
        .iter()
        .map(|e| e.message.as_str())
        .find(|m| m.starts_with("install cache:"))
        .unwrap_or_default()
        .to_string()
}

fn release_dir(agent: &Agent, d: &Deploy) -> PathBuf {
    agent.app_dir("web").join("releases").join(d.release.as_deref().expect("the deploy names its release"))
}

#[test]
fn a_second_deploy_with_the_same_lockfile_skips_the_install_and_serves() {
    let f = Fixture::new();
    let agent = f.start();
    let first = startup_deploy(&agent);
    assert_eq!(f.installs(), 1);
    assert_eq!(cache_event(&first), "install cache: not used: no previous release", "{first:#?}");
    assert!(answer(&agent).starts_with("lock-v1 hello from worker"), "{}", answer(&agent));

    let v2 = f.repo.commit_greeting("v2");
    let load = Load::start(agent.port("web"), 30, false);
    assert!(load.wait_for_more(50, Duration::from_secs(15)), "the load did not get going");
    let d = deploy(&agent);
    assert!(load.wait_for_more(100, Duration::from_secs(15)), "nothing served after the deploy");
    let report = load.stop();

    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!(d.sha.as_deref(), Some(v2.as_str()));
    assert_eq!(f.installs(), 1, "the install step ran again");
    let sha1 = first.sha.as_deref().expect("a sha");
    let event = cache_event(&d);
    assert!(event.starts_with(&format!("install cache: used (from {}", &sha1[..7])), "{event}");
    assert!(event.contains("the install step is skipped"), "{event}");
    assert!(!d.events.iter().any(|e| e.message.starts_with("install ok")), "{d:#?}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(report.saw("lock-v1 v2 from worker"), "{report}");
    // The copy is the release's own: same bytes, another file.
    let (a, b) = (release_dir(&agent, &first), release_dir(&agent, &d));
    let (fa, fb) = (a.join("node_modules/dep/index.js"), b.join("node_modules/dep/index.js"));
    assert_eq!(std::fs::read(&fa).unwrap(), std::fs::read(&fb).unwrap());
    assert_ne!(std::fs::metadata(&fa).unwrap().ino(), std::fs::metadata(&fb).unwrap().ino(), "hard-linked");
}

#[test]
fn a_changed_lockfile_runs_the_install_and_the_event_names_it() {
    let f = Fixture::new();
    let agent = f.start();
    f.repo.commit_file("package-lock.json", "lock-v2\n", "new dependencies");
    let d = deploy(&agent);
    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!(f.installs(), 2);
    let event = cache_event(&d);
    assert!(event.starts_with("install cache: not used: key changed since"), "{event}");
    assert!(event.ends_with(": package-lock.json"), "names the file: {event}");
    assert!(answer(&agent).starts_with("lock-v2 hello"), "{}", answer(&agent));

    // The next deploy of the same lockfile uses the new release's outputs.
    f.repo.commit_greeting("v3");
    let d3 = deploy(&agent);
    assert_eq!((d3.state.as_str(), f.installs()), ("live", 2), "{d3:#?}");
    assert!(cache_event(&d3).starts_with(&format!("install cache: used (from {}", &d.sha.unwrap()[..7])));
    assert!(answer(&agent).starts_with("lock-v2 v3"), "{}", answer(&agent));
}

#[test]
fn a_rollback_finds_the_older_release_with_its_own_dependencies() {
    let f = Fixture::new();
    let agent = f.start();
    let first = startup_deploy(&agent);
    f.repo.commit_greeting("v2");
    let cached = deploy(&agent);
    f.repo.commit_file("package-lock.json", "lock-v2\n", "new dependencies");
    let installed = deploy(&agent);
    assert_eq!((cached.state.as_str(), installed.state.as_str()), ("live", "live"));
    assert!(answer(&agent).starts_with("lock-v2"), "{}", answer(&agent));

    // What the cached release's workers may write stays theirs.
    let ours = release_dir(&agent, &cached).join("node_modules/dep/index.js");
    std::fs::write(&ours, "module.exports = \"written by release 2\";\n").unwrap();
    let theirs = release_dir(&agent, &first).join("node_modules/dep/index.js");
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "module.exports = \"lock-v1\";\n");

    let out = agent.cli(&["rollback", "web", "--to", cached.release.as_deref().unwrap(), "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(answer(&agent).starts_with("written by release 2 v2"), "{}", answer(&agent));
    let out = agent.cli(&["rollback", "web", "--to", first.release.as_deref().unwrap(), "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(answer(&agent).starts_with("lock-v1 hello"), "{}", answer(&agent));
    assert_eq!(f.installs(), 2, "a rollback installs nothing");
}

#[test]
fn a_lockfile_link_in_the_commit_turns_the_cache_off_and_is_not_read() {
    let f = Fixture::new();
    let agent = f.start();
    let decoy = Decoy::new();
    f.repo.commit_link("package-lock.json", &decoy.secret_file());
    let d = deploy(&agent);
    let event = cache_event(&d);
    assert!(event.contains("package-lock.json`") && event.contains("symbolic link"), "{event}");
    assert!(!event.contains(Decoy::SECRET), "{event}");
    assert_eq!(f.installs(), 2, "the install step runs without the cache");
    decoy.assert_untouched();
}

#[test]
fn a_node_modules_link_in_the_commit_is_not_copied_through() {
    let f = Fixture::new();
    let agent = f.start();
    let decoy = Decoy::new();
    f.repo.commit_link("node_modules", &decoy.path().join("data"));
    let d = deploy(&agent);
    let event = cache_event(&d);
    assert_eq!(event, "install cache: not used: `node_modules` is in the commit: the install step makes it", "{d:#?}");
    assert_eq!(f.installs(), 2, "the install step runs without the cache");
    decoy.assert_untouched();
    assert_eq!(d.state, "live", "{d:#?}");
    assert!(answer(&agent).starts_with("lock-v1 hello"), "{}", answer(&agent));
}

#[test]
fn install_cache_false_runs_every_install() {
    let f = Fixture::new();
    let agent = f.start_with(|a| a.set("install_cache", "false"));
    f.repo.commit_greeting("v2");
    let d = deploy(&agent);
    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!(cache_event(&d), "install cache: off (`install_cache: false`)");
    assert_eq!(f.installs(), 2);
}

#[test]
fn the_default_runs_an_install_step_it_does_not_know_every_time() {
    let f = Fixture::new();
    let agent = f.start_with(|a| a);
    f.repo.commit_greeting("v2");
    let d = deploy(&agent);
    assert_eq!(d.state, "live", "{d:#?}");
    let event = cache_event(&d);
    assert!(event.starts_with("install cache: not used: `sh install.sh` is not a dependency install"), "{event}");
    assert!(event.contains("post_install"), "says where builds go: {event}");
    assert_eq!(f.installs(), 2);
}

#[test]
fn a_declared_key_names_the_variable_that_changed() {
    let f = Fixture::new();
    let mut agent = f.start_with(|a| {
        a.set("install_cache", "{ key: [package-lock.json], env: [DEPS_FLAVOUR], paths: [node_modules] }")
            .env("DEPS_FLAVOUR", "a")
    });
    agent.reconfigure(|e| e.web(|a| a.env("DEPS_FLAVOUR", "b")));
    f.repo.commit_greeting("v2");
    let d = deploy(&agent);
    assert!(cache_event(&d).ends_with(": DEPS_FLAVOUR"), "{d:#?}");
    assert_eq!(f.installs(), 2);
}
