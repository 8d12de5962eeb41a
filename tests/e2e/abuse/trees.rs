//! Abuse: trees. A repository's content is the attacker's: a commit whose tree nests 30,000
//! directories (git refuses to make one, so its objects are written straight into the repository
//! the agent fetches from), a commit holding a 1 GB file, or one over a limit the app configured.
//! Each ends as a `failed` deploy naming the limit, within seconds, with the agent's RSS under
//! 64 MB; the live release and the other app keep serving, and a restarted agent does not try the
//! bad commit again by itself.

use deployer_tests::abuse::{is_root, open_to_nobody};
use deployer_tests::{Agent, Bystander, TestEnv, TestRepo, http, poll, wait_until};
use deployer_wire::Deploy;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The ceiling issue 9 sets on the agent's RSS while it deals with a hostile commit.
const RSS_CEILING_KB: u64 = 64 * 1024;
/// "Within seconds": generous for a loaded 2-core test machine and a debug build.
const FAILS_WITHIN: Duration = Duration::from_secs(20);

/// Run git in `repo` with `input` on stdin; its stdout, trimmed.
fn git_with_input(repo: &TestRepo, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(repo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git");
    child.stdin.take().expect("stdin").write_all(input).expect("write to git");
    let out = child.wait_with_output().expect("wait for git");
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// A commit on `main` with the tree of `main` plus one entry (`mode`, `kind`, `name`, `id`),
/// made with git's plumbing (`mktree`, `commit-tree`, `update-ref`), which writes what `git
/// commit` would refuse. Answers its sha.
fn commit_entry(repo: &TestRepo, mode: &str, kind: &str, id: &str, name: &str) -> String {
    let mut listing = repo.git(&["ls-tree", "HEAD"]).stdout;
    listing.push_str(&format!("{mode} {kind} {id}\t{name}\n"));
    let tree = git_with_input(repo, &["mktree"], listing.as_bytes());
    let commit = repo.git(&["commit-tree", &tree, "-p", "HEAD", "-m", &format!("add {name}")]).stdout;
    let commit = commit.trim();
    repo.git(&["update-ref", "refs/heads/main", commit]);
    commit.to_string()
}

/// `levels` directories `d/d/.../d` with one file at the bottom, written one tree at a time
/// through one `git mktree --batch` (each tree names the one below it); the top tree's id.
fn deep_tree(repo: &TestRepo, levels: usize) -> String {
    let leaf = git_with_input(repo, &["hash-object", "-w", "--stdin"], b"the bottom\n");
    let mut mktree = Command::new("git")
        .args(["mktree", "--batch"])
        .current_dir(repo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git mktree --batch");
    let mut input = mktree.stdin.take().expect("stdin");
    let mut output = BufReader::new(mktree.stdout.take().expect("stdout"));
    let mut tree = String::new();
    let mut entry = format!("100644 blob {leaf}\tbottom.txt\n\n");
    for _ in 0..levels {
        input.write_all(entry.as_bytes()).expect("write to git mktree");
        input.flush().expect("flush");
        tree.clear();
        output.read_line(&mut tree).expect("read from git mktree");
        entry = format!("040000 tree {}\td\n\n", tree.trim());
    }
    drop(input);
    assert!(mktree.wait().expect("wait for git mktree").success());
    tree.trim().to_string()
}

/// The agent's `VmRSS` sampled every 50 ms from [`RssWatch::start`] to [`RssWatch::peak_kb`].
struct RssWatch {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<(u64, usize)>,
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !stopped.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmRSS:") {
                    peak = peak.max(kb);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, samples)
        });
        RssWatch { stop, sampler }
    }

    /// The highest `VmRSS` seen, in kB, and how many samples were taken.
    fn peak_kb(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the RSS sampler")
    }
}

/// Deploy `main` of `web` while watching the agent's RSS; the finished deploy and the time it
/// took to end. Asserts the RSS stayed under the ceiling (sampled, and the kernel's high-water
/// mark, which covers the agent's whole life) and prints the figures.
fn deploy_watched(agent: &Agent, what: &str) -> (Deploy, Duration) {
    let rss = RssWatch::start(agent.pid());
    let started = Instant::now();
    let id = agent.deploy("web", "main");
    let deploy = agent.wait_deploy(id);
    let took = started.elapsed();
    let (peak, samples) = rss.peak_kb();
    let hwm = status_kb(agent.pid(), "VmHWM:").expect("VmHWM of the agent");
    eprintln!(
        "{what}: deploy {} after {} ms; agent VmRSS peak {peak} kB over {samples} samples, VmHWM {hwm} kB",
        deploy.state,
        took.as_millis()
    );
    assert!(peak < RSS_CEILING_KB, "{what}: the agent's RSS reached {peak} kB");
    assert!(hwm < RSS_CEILING_KB, "{what}: the agent's RSS high-water mark is {hwm} kB");
    (deploy, took)
}

/// The victim `web` (from `repo`, workers as `nobody`) beside the bystander; started, with the
/// bystander under load.
fn victim_and_bystander(
    repo: &TestRepo,
    web: impl FnOnce(deployer_tests::AppSpec) -> deployer_tests::AppSpec,
) -> Agent {
    let setup = TestEnv::new().web(|a| web(a.repo(repo).set("user", "nobody"))).app(Bystander::app()).setup();
    open_to_nobody(&setup);
    setup.start()
}

/// The victim's live release is untouched and still serves.
fn still_serving(agent: &Agent, live: &str) {
    assert_eq!(agent.current_release("web").as_deref(), Some(live));
    let answer = http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_default();
    assert!(answer.starts_with("hello from worker"), "{answer}");
}

/// Issue 9's crash: a 30,000-level tree (~1 MB of objects) aborted the agent, and every worker
/// with it. It is now refused while it is fetched, at git's own 4096 levels; a 1,000-level tree,
/// which git allows, is fetched and refused on the app's `max_depth` (256 by default) before
/// anything is written.
#[test]
fn a_30000_level_tree_fails_its_deploy_within_seconds_and_the_agent_stays_up() {
    if !is_root() {
        eprintln!("skipped: workers run as `nobody`, which needs root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let mut agent = victim_and_bystander(&repo, |a| a);
    let live = agent.current_release("web").expect("a live release");
    let before = repo.head();
    let bystander = Bystander::start(&agent);

    let cases = [
        (30_000, "more than 4096 deep, at `deep/d/d/", "git itself refuses such trees"),
        (1_000, "more than 256 deep, at `deep/d/d/", "over the app's limit `limits.max_depth: 256`"),
    ];
    for (levels, deep, why) in cases {
        repo.git(&["update-ref", "refs/heads/main", &before]);
        let tree = deep_tree(&repo, levels);
        let sha = commit_entry(&repo, "040000", "tree", &tree, "deep");
        let (deploy, took) = deploy_watched(&agent, &format!("{levels}-level tree"));
        assert_eq!(deploy.state, "failed", "{deploy:#?}");
        let message = deploy.message.clone().unwrap_or_default();
        let found = format!("commit {} nests directories {deep}", &sha[..7]);
        assert!(message.contains(&found) && message.contains(why), "{message}");
        assert!(message.contains("hint: nothing of it was"), "{message}");
        assert!(took < FAILS_WITHIN, "took {took:?}");
        assert!(agent.exited().is_none(), "the agent is still running");
        still_serving(&agent, &live);
        let releases = std::fs::read_dir(agent.app_dir("web").join("releases")).expect("releases/").count();
        assert_eq!(releases, 1, "no release directory (nor a partial one) was left");
    }
    let report = bystander.finish();
    eprintln!("bystander: {report}");
}

#[test]
fn a_1_gb_file_fails_its_deploy_within_seconds_without_being_read() {
    if !is_root() {
        eprintln!("skipped: workers run as `nobody`, which needs root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let mut agent = victim_and_bystander(&repo, |a| a);
    let live = agent.current_release("web").expect("a live release");
    let bystander = Bystander::start(&agent);

    let written = Instant::now();
    let out = Command::new("sh")
        .args(["-c", "head -c 1073741824 /dev/zero | git hash-object -w --stdin"])
        .current_dir(repo.path())
        .output()
        .expect("git hash-object");
    assert!(out.status.success());
    let blob = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    eprintln!("git wrote the 1 GB blob in {} ms", written.elapsed().as_millis());
    let sha = commit_entry(&repo, "100644", "blob", &blob, "big.bin");
    let (deploy, took) = deploy_watched(&agent, "1 GB file");

    assert_eq!(deploy.state, "failed", "{deploy:#?}");
    let message = deploy.message.clone().unwrap_or_default();
    let found = format!("file `big.bin` (blob {}) in commit {} is 1G", &blob[..7], &sha[..7]);
    assert!(message.contains(&found), "{message}");
    assert!(message.contains("over the app's limit `limits.max_file_size: 100M`"), "{message}");
    assert!(took < FAILS_WITHIN, "took {took:?}");
    assert!(agent.exited().is_none(), "the agent is still running");
    still_serving(&agent, &live);
    let report = bystander.finish();
    eprintln!("bystander: {report}");
}

/// The pull loop saw the deep commit fail; after a restart it does not queue it again (it
/// starts from the commit the previous agent last tried), and once the branch is rewritten
/// without it (no commit after it can be fetched, as from a git server) the fix deploys.
#[test]
fn a_restarted_agent_does_not_try_the_failed_commit_again() {
    if !is_root() {
        eprintln!("skipped: workers run as `nobody`, which needs root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let mut agent = victim_and_bystander(&repo, |a| a.set("poll", "300ms"));
    let before = repo.head();
    let deep = deep_tree(&repo, 30_000);
    let bad = commit_entry(&repo, "040000", "tree", &deep, "deep");
    let of = |d: &Deploy, sha: &str| d.git_ref == sha || d.sha.as_deref() == Some(sha);
    let failed =
        poll(Duration::from_secs(60), || agent.history("web").into_iter().find(|d| of(d, &bad) && d.is_final()))
            .expect("the poller deploys the new head");
    assert_eq!(failed.state, "failed", "{failed:#?}");
    assert!(agent.exited().is_none(), "the agent is still running");

    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent stops on SIGTERM");
    assert!(status.success(), "{status}");
    agent.start_again();
    let bystander = Bystander::start(&agent);
    repo.git(&["update-ref", "refs/heads/main", &before]);
    let good = repo.commit_greeting("fixed");
    let live =
        poll(Duration::from_secs(60), || agent.history("web").into_iter().find(|d| of(d, &good) && d.is_final()))
            .expect("the poller deploys the next commit");
    assert_eq!(live.state, "live", "{live:#?}");

    let tries = agent.history("web").into_iter().filter(|d| of(d, &bad)).count();
    assert_eq!(tries, 1, "the failed commit was deployed once: {:#?}", agent.history("web"));
    assert!(agent.exited().is_none(), "the agent is still running");
    let report = bystander.finish();
    eprintln!("bystander: {report}");
}

/// An app whose branch head was hostile from the start has no release to keep serving: each
/// agent start tries the head once (the startup deploy), fails it and keeps running; nothing
/// loops. (Were the agent to die on it twice in a row, the next start would not try it at all:
/// `deploy/retry.rs`.)
#[test]
fn an_app_born_on_a_hostile_commit_fails_once_per_start_and_nothing_loops() {
    if !is_root() {
        eprintln!("skipped: workers run as `nobody`, which needs root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let deep = deep_tree(&repo, 30_000);
    commit_entry(&repo, "040000", "tree", &deep, "deep");
    let setup = TestEnv::new()
        .web(|a| a.repo(&repo).set("user", "nobody"))
        .app(Bystander::app())
        .dont_wait_for_workers()
        .setup();
    open_to_nobody(&setup);
    let mut agent = setup.start();
    assert!(agent.wait_online(deployer_tests::abuse::BYSTANDER, 2).len() == 2);
    for start in 1..=2 {
        let failed = poll(Duration::from_secs(60), || {
            let history = agent.history("web");
            (history.len() == start && history.iter().all(Deploy::is_final)).then_some(history)
        })
        .unwrap_or_else(|| panic!("start {start}: one deploy that ends: {:#?}", agent.history("web")));
        assert!(failed.iter().all(|d| d.state == "failed"), "{failed:#?}");
        assert!(agent.exited().is_none(), "the agent is still running");
        assert!(agent.current_release("web").is_none());
        agent.signal(Signal::SIGTERM);
        assert!(agent.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
        agent.start_again();
    }
    let bystander = Bystander::start(&agent);
    // The third start tries once more, and only once.
    assert!(wait_until(Duration::from_secs(60), || agent.history("web").iter().filter(|d| d.is_final()).count() == 3));
    let report = bystander.finish();
    assert_eq!(agent.history("web").len(), 3, "{:#?}", agent.history("web"));
    eprintln!("bystander: {report}");
}

#[test]
fn a_commit_over_a_configured_limit_fails_naming_the_key() {
    if !is_root() {
        eprintln!("skipped: workers run as `nobody`, which needs root");
        return;
    }
    let repo = TestRepo::with_example_app();
    let agent = victim_and_bystander(&repo, |a| a.set("limits", "{ max_files: 20, max_depth: 3 }"));
    let live = agent.current_release("web").expect("a live release");
    let bystander = Bystander::start(&agent);

    for i in 0..30 {
        std::fs::write(repo.path().join(format!("many-{i}.txt")), "x\n").expect("write a file");
    }
    repo.git(&["add", "--all"]);
    repo.git(&["commit", "--quiet", "--message", "thirty files"]);
    let sha = repo.head();
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "failed", "{deploy:#?}");
    let message = deploy.message.unwrap_or_default();
    assert!(message.contains(&format!("commit {} holds more than 20 files and directories", &sha[..7])));
    assert!(message.contains("`limits.max_files: 20`") && message.contains("raise `limits.max_files`"), "{message}");
    still_serving(&agent, &live);

    repo.git(&["rm", "--quiet", "many-*.txt"]);
    repo.commit_file("a/b/c/d/deep.txt", "deep\n", "four levels");
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "failed", "{deploy:#?}");
    let message = deploy.message.unwrap_or_default();
    assert!(message.contains("nests directories more than 3 deep, at `a/b/c/d`"), "{message}");
    assert!(message.contains("`limits.max_depth: 3`"), "{message}");
    still_serving(&agent, &live);

    repo.git(&["rm", "--quiet", "-r", "a"]);
    repo.commit_greeting("within limits");
    let deploy = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    let report = bystander.finish();
    eprintln!("bystander: {report}");
}
