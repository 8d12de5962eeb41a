//! The setup of one test: a temp dir with an `agent.yaml`, a copy of the example app per app, and
//! the environment the agent runs with. [`TestEnv`] states it; [`Setup`] is it written to disk.

use crate::agent::Agent;
use crate::process::{CliOutput, free_port, run_to_end};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// The front on an app's public port (`proxy:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Http,
    Tcp,
    Fd,
    None,
}

impl Proxy {
    fn as_str(self) -> &'static str {
        match self {
            Proxy::Http => "http",
            Proxy::Tcp => "tcp",
            Proxy::Fd => "fd",
            Proxy::None => "none",
        }
    }
}

/// The absolute path of a file in `tests/fixtures/`, for a `start` command.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    assert!(path.is_file(), "no fixture `{}`", path.display());
    path.display().to_string()
}

/// One app of the config. Its workers run in `<tempdir>/<name>/`, a copy of
/// `examples/hello-node` (so each test may rewrite its `.env`).
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub name: String,
    start: Vec<String>,
    instances: u32,
    proxy: Proxy,
    env: BTreeMap<String, String>,
    env_file: Option<String>,
    ready_timeout: String,
    /// The check in `ready:` as YAML (`message: true`); the default check when `None`.
    ready_check: Option<String>,
    reload: BTreeMap<&'static str, String>,
    restart: BTreeMap<&'static str, String>,
    /// Other keys of the app, written as given (`max_memory: 1M`).
    other: BTreeMap<&'static str, String>,
    /// The public port, picked when the config is first written.
    port: Option<u16>,
    /// Deployed from this repository's `main` (`repo:`) instead of run in a copy of the example.
    repo: Option<String>,
}

impl AppSpec {
    /// Two workers of the example app behind an `http` front, answering after 200 ms.
    pub fn new(name: &str) -> AppSpec {
        let reload = [("signal", "SIGUSR2"), ("drain_timeout", "10s"), ("kill_timeout", "3s"), ("max_surge", "1")];
        let restart = [("max_restarts", "10"), ("min_uptime", "1s"), ("backoff_max", "1s")];
        AppSpec {
            name: name.to_string(),
            start: vec!["node".into(), "app.js".into()],
            instances: 2,
            proxy: Proxy::Http,
            env: BTreeMap::from([("DELAY_MS".to_string(), "200".to_string())]),
            env_file: None,
            ready_timeout: "10s".into(),
            ready_check: None,
            reload: reload.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            restart: restart.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            other: BTreeMap::new(),
            port: None,
            repo: None,
        }
    }

    /// The command of one worker, e.g. `["node", &fixture("ignores-usr2.js")]`.
    pub fn start(mut self, argv: &[&str]) -> Self {
        self.start = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n;
        self
    }

    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Deploy from `repo`'s `main` branch (`repo:`, `branch: main`) instead of running in a copy
    /// of the example app (`cwd:`). Other keys (`install`, `bake`, ...) go through [`Self::set`].
    pub fn repo(mut self, repo: &crate::TestRepo) -> Self {
        self.repo = Some(repo.url());
        self
    }

    /// Deploy from `url`'s `main` branch (a git server of [`crate::gitserver`]); like [`Self::repo`].
    pub fn repo_url(mut self, url: &str) -> Self {
        self.repo = Some(url.into());
        self
    }

    /// A variable in the config's `env:` map.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The content of the app's `.env` (`env_file`); the example's is `GREETING=hello`.
    pub fn env_file(mut self, content: &str) -> Self {
        self.env_file = Some(content.into());
        self
    }

    /// `ready: { timeout }`, e.g. `"1s"`.
    pub fn ready_timeout(mut self, t: &str) -> Self {
        self.ready_timeout = t.into();
        self
    }

    /// The check of `ready:`, as YAML: `ready_check("message: true")`.
    pub fn ready_check(mut self, yaml: &str) -> Self {
        self.ready_check = Some(yaml.into());
        self
    }

    /// One key of `reload:` (`signal`, `drain_timeout`, `kill_timeout`, `max_surge`).
    pub fn reload(mut self, key: &'static str, value: &str) -> Self {
        self.reload.insert(key, value.into());
        self
    }

    /// Leave a key of `reload:` out, so the agent's default applies (the tests set `max_surge: 1`).
    pub fn reload_default(mut self, key: &'static str) -> Self {
        self.reload.remove(key);
        self
    }

    /// `restart: { max_restarts, min_uptime, backoff_max }`.
    pub fn restart(mut self, max_restarts: u32, min_uptime: &str, backoff_max: &str) -> Self {
        self.restart.insert("max_restarts", max_restarts.to_string());
        self.restart.insert("min_uptime", min_uptime.into());
        self.restart.insert("backoff_max", backoff_max.into());
        self
    }

    /// Any other key of the app, its value written as YAML: `set("max_memory", "1M")`.
    pub fn set(mut self, key: &'static str, yaml: &str) -> Self {
        self.other.insert(key, yaml.into());
        self
    }

    /// Whether the app is deployed from git (`repo:`).
    pub(crate) fn deployed_from_git(&self) -> bool {
        self.repo.is_some()
    }

    pub(crate) fn instance_count(&self) -> u32 {
        self.instances
    }

    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }
}

/// What a test runs: an agent with one app `web` (see [`AppSpec::new`]) unless told otherwise,
/// and an `admin` token with both scopes in `DEPLOYER_TOKEN`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    apps: Vec<AppSpec>,
    /// (name, scopes) of tokens beyond `admin`.
    tokens: Vec<(String, Vec<String>)>,
    wait_online: bool,
    /// The `admin` token's value, when several agents must accept one token (a fleet).
    admin_secret: Option<String>,
    /// Top-level keys of `agent.yaml` beyond the ones every test has (`report`, `report_retry`).
    agent_keys: BTreeMap<&'static str, String>,
    /// Variables in the agent's environment (webhook and report secrets).
    agent_env: BTreeMap<String, String>,
    /// `RLIMIT_NOFILE` of the agent process (`None`: the test's own).
    pub(crate) fd_limit: Option<u64>,
    /// The test holds the API's and the fronts' listening sockets and passes them to each agent
    /// process it starts, as systemd socket activation does.
    socket_activation: bool,
    /// Run the agent from a copy of its binary in the test's dir (`bin/deployer-agent`), which
    /// the test may replace (an upgrade starts whatever is there).
    own_binary: bool,
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            apps: vec![AppSpec::new("web")],
            tokens: Vec::new(),
            wait_online: true,
            admin_secret: None,
            agent_keys: BTreeMap::new(),
            agent_env: BTreeMap::new(),
            fd_limit: None,
            socket_activation: false,
            own_binary: false,
        }
    }

    /// Start the agent with `RLIMIT_NOFILE` at `n` (soft and hard), as a host with a low fd
    /// limit would.
    pub fn fd_limit(mut self, n: u64) -> Self {
        self.fd_limit = Some(n);
        self
    }

    /// A top-level key of the agent's config, its value written as YAML:
    /// `agent_set("report_retry", "{ first: 100ms, max: 1s }")`.
    pub fn agent_set(mut self, key: &'static str, yaml: &str) -> Self {
        self.agent_keys.insert(key, yaml.into());
        self
    }

    /// A variable in the agent's environment (a webhook or report secret).
    pub fn agent_env(mut self, name: &str, value: &str) -> Self {
        self.agent_env.insert(name.into(), value.into());
        self
    }

    /// Change the app `web`.
    pub fn web(mut self, f: impl FnOnce(AppSpec) -> AppSpec) -> Self {
        let web = self.apps.remove(0);
        self.apps.insert(0, f(web));
        self
    }

    pub fn start_command(self, argv: &[&str]) -> Self {
        self.web(|a| a.start(argv))
    }
    pub fn instances(self, n: u32) -> Self {
        self.web(|a| a.instances(n))
    }
    pub fn proxy(self, proxy: Proxy) -> Self {
        self.web(|a| a.proxy(proxy))
    }
    pub fn env(self, key: &str, value: &str) -> Self {
        self.web(|a| a.env(key, value))
    }
    pub fn env_file(self, content: &str) -> Self {
        self.web(|a| a.env_file(content))
    }
    pub fn ready_timeout(self, t: &str) -> Self {
        self.web(|a| a.ready_timeout(t))
    }
    pub fn reload(self, key: &'static str, value: &str) -> Self {
        self.web(|a| a.reload(key, value))
    }
    pub fn reload_default(self, key: &'static str) -> Self {
        self.web(|a| a.reload_default(key))
    }
    pub fn ready_check(self, yaml: &str) -> Self {
        self.web(|a| a.ready_check(yaml))
    }
    pub fn restart(self, max_restarts: u32, min_uptime: &str, backoff_max: &str) -> Self {
        self.web(|a| a.restart(max_restarts, min_uptime, backoff_max))
    }
    pub fn set(self, key: &'static str, yaml: &str) -> Self {
        self.web(|a| a.set(key, yaml))
    }

    /// Another app.
    pub fn app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    /// Without the app `name` (to remove it from a running agent's config).
    pub fn without_app(mut self, name: &str) -> Self {
        self.apps.retain(|a| a.name != name);
        self
    }

    /// Another API token, e.g. `token("reader", &["read"])`; [`Agent::token`] answers its value.
    pub fn token(mut self, name: &str, scopes: &[&str]) -> Self {
        self.tokens.push((name.into(), scopes.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// The `admin` token's value, instead of one of its own (agents of one fleet share it).
    pub fn admin_token(mut self, value: &str) -> Self {
        self.admin_secret = Some(value.into());
        self
    }

    /// Let [`TestEnv::start`] return once the API answers, without waiting for workers to be
    /// online (for apps that never are, or not for long).
    pub fn dont_wait_for_workers(mut self) -> Self {
        self.wait_online = false;
        self
    }

    /// Hold the API's and every front's listening socket in the test process and pass them to
    /// the agent (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), as systemd's socket units do: the
    /// ports stay open while no agent runs.
    pub fn own_binary(mut self) -> Self {
        self.own_binary = true;
        self
    }

    pub fn socket_activation(mut self) -> Self {
        self.socket_activation = true;
        self
    }

    pub(crate) fn apps(&self) -> &[AppSpec] {
        &self.apps
    }

    pub(crate) fn waits_for_workers(&self) -> bool {
        self.wait_online
    }

    /// Write the temp dir: config, app copies, token values.
    pub fn setup(self) -> Setup {
        // Build before picking ports: a first build takes a while, and a port picked long before
        // it is bound is more likely to be taken in between.
        crate::bin("deployer-agent");
        let dir = tempfile::Builder::new().prefix("deployer-e2e-").tempdir().expect("a temp dir");
        let mut tokens = vec![Token {
            name: "admin".into(),
            var: "DEPLOYER_TOKEN".into(),
            value: self.admin_secret.clone().unwrap_or_else(|| secret("admin")),
            scopes: vec!["read".into(), "deploy".into()],
        }];
        for (name, scopes) in &self.tokens {
            let var = format!("DEPLOYER_TEST_TOKEN_{}", name.to_ascii_uppercase());
            tokens.push(Token { name: name.clone(), var, value: secret(name), scopes: scopes.clone() });
        }
        let mut setup = Setup { dir, api_port: free_port(), env: self, tokens, held: Vec::new() };
        setup.write();
        if setup.env.socket_activation {
            setup.hold_sockets();
        }
        setup
    }

    /// Write the setup, start the agent, wait until its API answers and every worker is online.
    pub fn start(self) -> Agent {
        self.setup().start()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub name: String,
    pub var: String,
    pub value: String,
    pub scopes: Vec<String>,
}

fn secret(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{name}-secret-{}-{nanos:x}", std::process::id())
}

/// A test's temp dir, written: `agent.yaml`, one app dir per app, `state/`.
pub struct Setup {
    dir: TempDir,
    api_port: u16,
    env: TestEnv,
    tokens: Vec<Token>,
    /// The listening sockets held for the agent (`TestEnv::socket_activation`), by name.
    held: Vec<(String, std::net::TcpListener)>,
}

impl Setup {
    /// Bind the API's and each front's port here, to pass them to every agent process.
    fn hold_sockets(&mut self) {
        let mut held = vec![("api".to_string(), self.api_port)];
        held.extend(self.env.apps.iter().filter_map(|a| Some((a.name.clone(), a.port()?))));
        self.held = held
            .into_iter()
            .map(|(name, port)| {
                let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold a listening socket");
                (name, l)
            })
            .collect();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("agent.yaml")
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("agent.yaml")
    }

    /// Change the written config text (for mistakes [`TestEnv`] cannot state).
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        std::fs::write(self.config_path(), f(self.config_text())).expect("write agent.yaml");
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The public port of `app`.
    pub fn port(&self, app: &str) -> u16 {
        self.app_spec(app).port().expect("ports are picked when the config is written")
    }

    /// The directory `app`'s workers run in (for an app deployed from git: its directory under
    /// `state/apps/`, which holds `current`, `releases/`, `shared/` and `repo.git`).
    pub fn app_dir(&self, app: &str) -> PathBuf {
        if self.app_spec(app).repo.is_some() {
            self.dir().join("state").join("apps").join(app)
        } else {
            self.dir().join(app)
        }
    }

    pub(crate) fn app_spec(&self, app: &str) -> &AppSpec {
        self.env.apps().iter().find(|a| a.name == app).unwrap_or_else(|| panic!("no app `{app}` in this test"))
    }

    pub(crate) fn test_env(&self) -> &TestEnv {
        &self.env
    }

    pub(crate) fn token_value(&self, name: &str) -> String {
        self.tokens
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no token `{name}` in this test"))
            .value
            .clone()
    }

    /// Pick new ports for the API and every app, and write the config again.
    pub(crate) fn repick_ports(&mut self) {
        self.api_port = free_port();
        for app in &mut self.env.apps {
            app.port = None;
        }
        self.write();
    }

    /// Restate the test env (`f` gets the current one) and write the config again.
    pub(crate) fn reconfigure(&mut self, f: impl FnOnce(TestEnv) -> TestEnv) {
        self.env = f(self.env.clone());
        self.write();
    }

    /// `deployer-agent` with the tokens in its environment, run in the temp dir.
    pub fn agent_command(&self) -> Command {
        let mut cmd =
            if self.held.is_empty() { Command::new(self.agent_binary()) } else { self.socket_activated_command() };
        cmd.current_dir(self.dir()).env_remove("DEPLOYER_CONFIG").env("RUST_LOG", "info").env("NO_COLOR", "1");
        for t in &self.tokens {
            cmd.env(&t.var, &t.value);
        }
        cmd.envs(&self.env.agent_env);
        if let Some(n) = self.env.fd_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        cmd
    }

    /// The agent binary this setup runs: the build's, or the test's own copy.
    pub fn agent_binary(&self) -> PathBuf {
        if !self.env.own_binary {
            return crate::bin("deployer-agent");
        }
        let copy = self.dir().join("bin").join("deployer-agent");
        if !copy.exists() {
            std::fs::create_dir_all(copy.parent().expect("a parent")).expect("bin dir");
            std::fs::copy(crate::bin("deployer-agent"), &copy).expect("copy the agent binary");
        }
        copy
    }

    /// `deployer-agent` with the held sockets as fd 3.. and the variables systemd sets; `sh` sets
    /// `LISTEN_PID` to its own pid, which the agent keeps when `sh` execs it.
    fn socket_activated_command(&self) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let names: Vec<&str> = self.held.iter().map(|(n, _)| n.as_str()).collect();
        let script =
            format!("LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={} exec \"$0\" \"$@\"", names.len(), names.join(":"));
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg(crate::bin("deployer-agent"));
        let mut fds = [-1i32; 16];
        assert!(self.held.len() <= fds.len(), "at most {} held sockets", fds.len());
        for (slot, (_, l)) in fds.iter_mut().zip(&self.held) {
            *slot = l.as_raw_fd();
        }
        let n = self.held.len();
        // SAFETY: fcntl and dup2 only, between fork and exec, on fds this process owns. Each is
        // first copied above the target range, so placing one on 3.. never clobbers another.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [-1i32; 16];
                for i in 0..n {
                    high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 64);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().enumerate().take(n) {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }

    /// Run `deployer-agent <args>` to its end (e.g. `check --config agent.yaml`).
    pub fn run_agent(&self, args: &[&str]) -> CliOutput {
        let mut cmd = self.agent_command();
        cmd.args(args);
        run_to_end(cmd, Duration::from_secs(30))
    }

    /// Start the agent and wait until its API answers and (unless told not to) every worker is
    /// online.
    pub fn start(self) -> Agent {
        Agent::start(self)
    }

    /// Start the agent and return at once.
    pub fn spawn(self) -> Agent {
        Agent::spawn(self)
    }

    fn write(&mut self) {
        for app in &mut self.env.apps {
            if app.port.is_none() {
                app.port = Some(free_port());
            }
            let dir = self.dir.path().join(&app.name);
            if app.repo.is_none() && !dir.exists() {
                copy_example_app(&dir);
                if let Some(content) = &app.env_file {
                    std::fs::write(dir.join(".env"), content).expect("write .env");
                }
            }
        }
        let mut text = render(self.api_port, &self.tokens, &self.env.apps);
        for (k, v) in &self.env.agent_keys {
            let _ = writeln!(text, "{k}: {v}");
        }
        std::fs::write(self.config_path(), text).expect("write agent.yaml");
    }
}

pub(crate) fn copy_example_app(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples").join("hello-node");
    std::fs::create_dir_all(to).expect("create the app dir");
    for entry in std::fs::read_dir(&from).expect("examples/hello-node") {
        let entry = entry.expect("a dir entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy the example app");
        }
    }
}

/// JSON strings are YAML double-quoted strings.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn render(api_port: u16, tokens: &[Token], apps: &[AppSpec]) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "# Written by deployer-tests.");
    let _ = writeln!(y, "listen: 127.0.0.1:{api_port}");
    let _ = writeln!(y, "state_dir: state");
    let _ = writeln!(y, "tokens:");
    for t in tokens {
        let _ = writeln!(y, "  - {{ name: {}, token_env: {}, scopes: [{}] }}", t.name, t.var, t.scopes.join(", "));
    }
    let _ = writeln!(y, "apps:");
    for a in apps {
        let map =
            |m: &BTreeMap<&str, String>| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
        let env = a.env.iter().map(|(k, v)| format!("{}: {}", q(k), q(v))).collect::<Vec<_>>().join(", ");
        let start = a.start.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(y, "  {}:", a.name);
        match &a.repo {
            Some(url) => {
                let _ = writeln!(y, "    repo: {}", q(url));
                let _ = writeln!(y, "    branch: main");
            }
            None => {
                let _ = writeln!(y, "    cwd: {}", a.name);
            }
        }
        let _ = writeln!(y, "    start: [{start}]");
        let _ = writeln!(y, "    instances: {}", a.instances);
        let _ = writeln!(y, "    port: {}", a.port.expect("picked"));
        let _ = writeln!(y, "    bind: 127.0.0.1");
        let _ = writeln!(y, "    proxy: {}", a.proxy.as_str());
        let _ = writeln!(y, "    env: {{ {env} }}");
        let _ = writeln!(y, "    env_file: .env");
        match &a.ready_check {
            Some(check) => writeln!(y, "    ready: {{ {check}, timeout: {} }}", a.ready_timeout),
            None => writeln!(y, "    ready: {{ timeout: {} }}", a.ready_timeout),
        }
        .expect("writing to a String");
        let _ = writeln!(y, "    reload: {{ {} }}", map(&a.reload));
        let _ = writeln!(y, "    restart: {{ {} }}", map(&a.restart));
        for (k, v) in &a.other {
            let _ = writeln!(y, "    {k}: {v}");
        }
    }
    y
}
