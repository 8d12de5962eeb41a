//! Abuse: credentials on the transports users fetch private repositories over. A token over
//! smart HTTP (nginx + fcgiwrap + git-http-backend behind basic auth) and a deploy key over ssh
//! (OpenSSH's sshd), each a real server on loopback. A good credential deploys, and neither the
//! token nor the key's path shows up anywhere app code or an API client can read; a wrong one
//! fails the deploy with a clear error after one refused attempt, not a storm of them; an ssh
//! server whose host key the operator's known_hosts file does not hold gets no credential at all.

use deployer_tests::abuse::{is_root, nobody_uid, open_to_nobody};
use deployer_tests::gitserver::git_servers_installed;
use deployer_tests::{Agent, GitHttpServer, GitSshServer, Mode, Receiver, TestEnv, TestRepo, environ};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "git-token-9d4e1c0b7a";
const WRONG_TOKEN: &str = "wrong-token-5b8f2e6d13";

/// How long the no-retry-storm tests watch the server after the deploy failed (five ticks of
/// `poll: 1s`).
const WATCH: Duration = Duration::from_secs(5);

/// Whether the test can run here: root (workers as `nobody`), and the servers installed.
fn can_run() -> bool {
    if !is_root() {
        eprintln!("skipped: the abuse suite runs as root");
        return false;
    }
    if !git_servers_installed() {
        eprintln!("skipped: nginx-light, fcgiwrap and openssh-server are not installed (.ci/run installs them)");
        return false;
    }
    true
}

/// Every process below `pid` (workers, install steps, their children).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Every file under `dir`, read whole (the state dir: the database, logs, the cached clone).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        } else if meta.is_file()
            && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// `secret` is in no agent log, no file of the state dir (database, deploy logs, cached clone), no
/// deploy the API shows, no report, no command line and no environment of the agent's children
/// (its workers, when the deploy went live).
#[track_caller]
fn assert_nowhere(agent: &Agent, reports: &Receiver, secret: &str) {
    for log in ["agent.err", "agent.out"] {
        let text = std::fs::read_to_string(agent.dir().join(log)).unwrap_or_default();
        assert!(!text.contains(secret), "`{secret}` is in the agent's {log}");
    }
    let files = files_containing(&agent.dir().join("state"), secret);
    assert!(files.is_empty(), "`{secret}` is in {files:?}");
    for d in agent.history("web") {
        let shown = agent.api_get(&format!("/v1/deploys/{}", d.id)).body;
        assert!(!shown.contains(secret), "`{secret}` is in deploy {}: {shown}", d.id);
    }
    for r in reports.received() {
        assert!(!r.body.contains(secret), "`{secret}` is in a report: {}", r.body);
    }
    for pid in descendants(agent.pid()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(secret), "`{secret}` is on the command line of {pid}");
        let env = environ(pid);
        assert!(
            !env.iter().any(|(k, v)| k.contains(secret) || v.contains(secret)),
            "`{secret}` is in the env of {pid}"
        );
    }
}

/// The app `web` deployed from `url` with `auth`, its workers and install step as `nobody`; the
/// install step prints its environment (a leak would land in the deploy's output); reports go to
/// `reports`.
fn env_for(url: &str, auth: &str, reports: &Receiver) -> TestEnv {
    let (url, auth) = (url.to_string(), auth.to_string());
    TestEnv::new()
        .web(move |a| a.repo_url(&url).set("auth", &auth).set("install", "env").set("user", "nobody"))
        .agent_set("report", &format!("[{{ url: \"{}\" }}]", reports.url("/events")))
        .agent_env("RUST_LOG", "debug")
}

/// Deploy 1 (the startup deploy) ended `failed`; its message.
fn failed_startup_deploy(agent: &Agent) -> String {
    let d = agent.wait_deploy(1);
    assert_eq!(d.state, "failed", "{d:#?}");
    d.message.unwrap_or_default()
}

#[test]
fn a_token_over_smart_http_deploys_and_shows_up_nowhere() {
    if !can_run() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let server = GitHttpServer::start(&repo, TOKEN);
    let reports = Receiver::start(Mode::Status(200));
    // A proxy in the agent's environment would read a plain-http request, token and all.
    let proxy = Receiver::start(Mode::Status(200));
    // The README's form: `auth: { token_env: GIT_TOKEN }`.
    let setup = env_for(&server.url(), "{ token_env: GIT_TOKEN }", &reports)
        .agent_env("GIT_TOKEN", TOKEN)
        .agent_env("http_proxy", &proxy.url(""))
        .agent_env("HTTP_PROXY", &proxy.url(""))
        // libgit2 reads `no_proxy` first (empty: the proxy applies), the agent's report client
        // `NO_PROXY` first (its reports to loopback skip the proxy, so they arrive).
        .agent_env("no_proxy", "")
        .agent_env("NO_PROXY", "127.0.0.1")
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();

    let deploy = agent.wait_deploy(1);
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    assert_eq!(deploy.sha.as_deref(), Some(repo.head().as_str()));
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("x-access-token \"POST /app.git/git-upload-pack")),
        "the fetch went through nginx with the token's user: {requests:#?}"
    );
    // The install step's environment is in the deploy's output, so a leak would be seen there.
    assert!(deploy.output_tail.iter().any(|l| l.starts_with("PATH=")), "{:?}", deploy.output_tail);
    assert!(!deploy.output_tail.iter().any(|l| l.starts_with("GIT_TOKEN=")), "{:?}", deploy.output_tail);
    for pid in agent.pids("web") {
        assert!(!environ(pid).iter().any(|(k, _)| k == "GIT_TOKEN"), "worker {pid} has GIT_TOKEN");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(status.contains(&format!("Uid:\t{}", nobody_uid())), "worker {pid} is not nobody's");
    }
    assert!(deployer_tests::wait_until(Duration::from_secs(10), || !reports.received().is_empty()), "no report");
    assert_nowhere(&agent, &reports, TOKEN);
    // (The agent's reports may take the proxy: they carry no secret.)
    let fetches: Vec<_> = proxy.received().into_iter().filter(|r| r.path.contains("app.git")).collect();
    assert!(fetches.is_empty(), "the fetch went through the proxy: {fetches:?}");
}

#[test]
fn a_wrong_token_fails_the_deploy_after_one_refusal_and_polls_do_not_storm() {
    if !can_run() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let server = GitHttpServer::start(&repo, TOKEN);
    let reports = Receiver::start(Mode::Status(200));
    let setup = env_for(&server.url(), "{ token_env: GIT_TOKEN }", &reports)
        .web(|a| a.set("poll", "1s"))
        .agent_env("GIT_TOKEN", WRONG_TOKEN)
        .dont_wait_for_workers()
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();

    let message = failed_startup_deploy(&agent);
    assert!(message.contains("the remote refused the token"), "{message}");
    assert!(message.contains("hint: check the app's `auth:`"), "{message}");
    // The deploy's fetch: one request without credentials, one with them, then it gave up.
    let first = server.requests();
    assert_eq!(first.iter().filter(|r| r.starts_with("x-access-token ")).count(), 1, "{first:#?}");
    assert!(first.len() <= 2, "one refused token costs two requests: {first:#?}");

    // Pull mode looks up the branch head every second: two requests a look, nothing more.
    let started = Instant::now();
    std::thread::sleep(WATCH);
    let seen = server.requests().len() - first.len();
    let looks = started.elapsed().as_secs() + 1;
    assert!(seen as u64 <= 2 * looks, "{seen} requests in {:?}: {:#?}", started.elapsed(), server.requests());
    assert!(server.requests().iter().all(|r| r.ends_with(" 401")), "only refusals: {:#?}", server.requests());
    assert_eq!(agent.history("web").len(), 1, "a refused look-up queues no deploy");
    assert_nowhere(&agent, &reports, WRONG_TOKEN);
}

/// An agent whose app `web` fetches from `server` with `key` and `known_hosts` (a file written
/// with `known` in the agent's temp dir).
fn ssh_agent(
    server: &GitSshServer,
    key: &Path,
    known: &str,
    reports: &Receiver,
    tune: fn(TestEnv) -> TestEnv,
) -> Agent {
    let setup = tune(env_for(&server.url(), "{}", reports)).setup();
    let file = setup.dir().join("known_hosts");
    std::fs::write(&file, known).expect("write known_hosts");
    setup.edit_config(|c| {
        c.replace("auth: {}", &format!("auth: {{ ssh_key: {}, known_hosts: {} }}", key.display(), file.display()))
    });
    open_to_nobody(&setup);
    setup.start()
}

#[test]
fn an_ssh_deploy_key_deploys_and_its_path_shows_up_nowhere() {
    if !can_run() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let server = GitSshServer::start(&repo);
    let reports = Receiver::start(Mode::Status(200));
    let agent = ssh_agent(&server, &server.deploy_key(), &server.known_hosts_line(), &reports, |e| e);

    let deploy = agent.wait_deploy(1);
    assert_eq!(deploy.state, "live", "{deploy:#?}");
    assert_eq!(deploy.sha.as_deref(), Some(repo.head().as_str()));
    assert!(server.log().contains("Accepted publickey for"), "{}", server.log());
    assert!(deployer_tests::wait_until(Duration::from_secs(10), || !reports.received().is_empty()), "no report");
    assert_nowhere(&agent, &reports, &server.deploy_key().display().to_string());
}

#[test]
fn a_wrong_ssh_key_fails_the_deploy_after_one_refusal_and_polls_do_not_storm() {
    if !can_run() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let server = GitSshServer::start(&repo);
    let reports = Receiver::start(Mode::Status(200));
    let agent = ssh_agent(&server, &server.wrong_key(), &server.known_hosts_line(), &reports, |e| {
        e.web(|a| a.set("poll", "1s")).dont_wait_for_workers()
    });

    let message = failed_startup_deploy(&agent);
    assert!(message.contains("the remote refused the ssh key"), "{message}");
    assert!(message.contains("hint: check the app's `auth:`"), "{message}");
    let log = server.log();
    assert_eq!(log.matches("Failed publickey for").count(), 1, "one refused key per connection: {log}");
    assert!(!log.contains("Accepted publickey"), "{log}");

    let connections = |log: &str| log.matches("Connection from 127.0.0.1").count();
    let (before, started) = (connections(&log), Instant::now());
    std::thread::sleep(WATCH);
    let log = server.log();
    let looks = started.elapsed().as_secs() as usize + 1;
    assert!(connections(&log) - before <= looks, "{} connections in {:?}: {log}", connections(&log) - before, WATCH);
    assert!(log.matches("Failed publickey for").count() <= connections(&log), "one key offered per connection: {log}");
    assert_eq!(agent.history("web").len(), 1, "a refused look-up queues no deploy");
    assert_nowhere(&agent, &reports, &server.wrong_key().display().to_string());
}

#[test]
fn an_unknown_or_changed_ssh_host_key_is_refused_before_any_key_is_offered() {
    if !can_run() {
        return;
    }
    let repo = TestRepo::with_example_app();
    let server = GitSshServer::start(&repo);
    let reports = Receiver::start(Mode::Status(200));

    // Unknown: the operator's file does not name the server.
    let agent = ssh_agent(&server, &server.deploy_key(), "", &reports, TestEnv::dont_wait_for_workers);
    let message = failed_startup_deploy(&agent);
    let file = agent.dir().join("known_hosts");
    let port = server.port();
    assert!(message.contains(&format!("the ssh host key of `[127.0.0.1]:{port}` (ssh-ed25519 SHA256:")), "{message}");
    assert!(message.contains("is unknown"), "{message}");
    let hint = format!("`ssh-keyscan -p {port} 127.0.0.1 >> {}`", file.display());
    assert!(message.contains(&hint), "the hint says how to add it: {message}");
    drop(agent);

    // Changed: the file names the server with another key (a new key, or someone in the middle).
    let agent = ssh_agent(
        &server,
        &server.deploy_key(),
        &server.changed_known_hosts_line(),
        &reports,
        TestEnv::dont_wait_for_workers,
    );
    let message = failed_startup_deploy(&agent);
    assert!(message.contains(&format!("the ssh host key of `[127.0.0.1]:{port}` CHANGED")), "{message}");
    assert!(message.contains("line 1 of"), "{message}");
    assert!(message.contains(&format!("ssh-keygen -R '[127.0.0.1]:{port}'")), "{message}");

    // Neither agent offered its key to a server it could not verify.
    let log = server.log();
    assert!(!log.contains("publickey"), "a key was offered to an unverified server: {log}");
    assert!(!log.contains("Accepted"), "{log}");
}
