//! The agent's YAML config: what it serves, on which ports, with which workers.
//!
//! Every mistake is reported as `file:line:col: what is wrong` plus a `hint:` saying what to write
//! instead. Parsing is strict (`deny_unknown_fields`), so a misspelt key is an error, not a
//! silently ignored setting.

pub mod auth;
mod checked;
mod command;
pub use checked::ValueError;
pub use command::{Commands, StartCommand};
pub(crate) use command::{flow_list, yaml_scalar};
pub mod env_file;
pub mod fleet;
pub mod front;
pub mod health;
pub mod install_cache;
pub mod limits;
pub mod report;
mod resolve;
pub mod run_as;
mod source;
pub mod triggers;
pub mod units;
mod validate;

pub use auth::AuthConfig;
pub use fleet::FleetConfig;
pub use front::FrontConfig;
pub use health::{HealthCheck, HealthConfig};
pub use install_cache::InstallCacheConfig;
pub use limits::LimitsConfig;
pub use report::{ReportConfig, RetryConfig};
pub use run_as::RunAs;
pub use source::{AppSource, GitSource};
pub use triggers::{CronSchedule, Schedule, WebhookConfig};

use deployer_diagnostic::locate;
use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use units::{Dur, Size};

/// A mistake in `agent.yaml` or an app's env file, located: `file:line:col: message` and a
/// `hint:`. The shape is shared with the CLI's `deployer.yaml`; the hints that name the agent's
/// files are written here.
pub type ConfigError = deployer_diagnostic::FileError;

/// The whole `agent.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the agent's HTTP API. Loopback unless you put a TLS proxy or a firewall in front.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the agent keeps its state: logs, pid records, releases. Relative to the config file.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// API bearer tokens. The values come from environment variables, never from this file.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Serve the API over TLS (`https://`) with this certificate and key; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The apps this agent supervises, by name.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// Where every app's deploys are reported, on top of each app's own `report`.
    #[serde(default)]
    pub report: Vec<ReportConfig>,
    /// The backoff between attempts to deliver a report.
    #[serde(default)]
    pub report_retry: RetryConfig,
    /// This host's name in reports; the machine's hostname by default.
    #[serde(default)]
    pub host: Option<String>,
    /// Join an environment on the fleet engine (NATS JetStream): presence, desired state,
    /// self-coordinated rollouts. Absent: no connection, no task.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_branch() -> String {
    "main".into()
}
fn default_root() -> PathBuf {
    PathBuf::from(".")
}
fn default_install_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_keep_releases() -> u32 {
    5
}
fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// The API listener's certificate: PEM files, relative to the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One API token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and errors (the token itself is never logged).
    pub name: String,
    /// The environment variable holding the token.
    pub token_env: String,
    /// What the token may do: `read` (list, logs), `deploy` (reload, restart, stop, scale...).
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Deploy,
}

/// One supervised app. The keys that say where its code comes from (`cwd`, `repo`, `branch`,
/// `root`, `auth`, `path`) and when it is pulled (`poll`, `cron`) are read here only: the rest of
/// the agent reads what they mean, [`AppConfig::source`] and [`AppConfig::schedule`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Where the app's code comes from: `repo:` and its keys, or `cwd:`.
    #[serde(skip)]
    pub source: AppSource,
    /// Pull mode: `poll` or `cron`, parsed (apps deployed from git only).
    #[serde(skip)]
    pub schedule: Option<Schedule>,
    /// Directory the workers run in, for an app deployed by other means. Relative to the config
    /// file. An app with `repo` runs in `current/<root>` instead.
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// The git repository to deploy from: https or ssh URL, local path or `file://` URL.
    #[serde(default)]
    repo: Option<String>,
    /// The branch to deploy.
    #[serde(default = "default_branch")]
    branch: String,
    /// The repository's subdirectory that holds the app (monorepos).
    #[serde(default = "default_root")]
    root: PathBuf,
    /// Credentials for `repo`; secrets come from the environment or a key file, never this file.
    #[serde(default)]
    auth: Option<AuthConfig>,
    /// The install step, run in the new release (one command or a list). No shell is run.
    #[serde(default)]
    pub install: Commands,
    /// Skip the install step when its inputs (lockfile, command, listed variables) are those of
    /// the previous release, copying that release's outputs instead: absent is the built-in
    /// default for the lockfile the release holds, `false` is off, a map declares its own.
    #[serde(default)]
    pub install_cache: InstallCacheConfig,
    /// How long the install step (each command, and each hook) may take.
    #[serde(default = "default_install_timeout")]
    pub install_timeout: Dur,
    /// Lifecycle commands run in the release directory.
    #[serde(default)]
    pub hooks: LifecycleHooks,
    /// Paths kept across releases in the app's `shared/` dir and linked into each release.
    #[serde(default)]
    pub shared: Vec<PathBuf>,
    /// Successful releases kept on disk (the current and previous ones are never pruned).
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// The app's directory (`repo.git`, `releases/`, `shared/`, `current`); `state_dir/apps/<name>` by default.
    #[serde(default)]
    path: Option<PathBuf>,
    /// Pull mode: look up the branch head this often (with up to 10% jitter) and deploy when it moved.
    #[serde(default)]
    poll: Option<Dur>,
    /// Pull mode on a schedule instead: `cron: "*/5 * * * *"` (UTC; not together with `poll`).
    #[serde(default)]
    cron: Option<String>,
    /// Signed push webhooks at `POST /hooks/<app>`: `{ provider: github, secret_env: NAME }`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Where this app's deploys are reported (the agent-wide `report` list gets them too).
    #[serde(default)]
    pub report: Vec<ReportConfig>,
    /// After a deploy goes live, watch the new workers this long and roll back by itself if they
    /// crash-loop or stop being ready.
    #[serde(default)]
    pub bake: Option<Dur>,
    /// Run the workers and the install steps as this user (a name or a uid) instead of the
    /// agent's own; the agent must then run as root. Releases are given to this user.
    #[serde(default)]
    pub user: Option<String>,
    /// `user`, looked up when the config is loaded.
    #[serde(skip)]
    pub run_as: Option<RunAs>,
    /// The command: split like a shell would (quotes, escapes) but no shell is run.
    pub start: StartCommand,
    /// Number of workers, or `max` for one per CPU.
    #[serde(default)]
    pub instances: Instances,
    /// The public port, owned by the front. Workers get private ports in `PORT`.
    #[serde(default)]
    pub port: Option<u16>,
    /// The address the front binds the public port on.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// The front on the public port: `http` (default), `tcp`, `fd` or `none`.
    #[serde(default)]
    pub proxy: ProxyMode,
    /// How the `http` front treats clients: head deadline, keep-alive idle time, trusted proxies.
    #[serde(default)]
    pub front: FrontConfig,
    /// Active health checks of each online worker (`http` and `tcp` fronts): off when absent.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Environment for the workers, on top of the agent's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A `KEY=VALUE` file read when workers start (and re-read by `reload --update-env`).
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Named environments (PM2's `env_production`): `env_sets: { production: { NODE_ENV:
    /// production } }`. `deployer reload web --env production` puts one on top of `env` and
    /// `env_file`; it stays chosen for later reloads and deploys until another is chosen (or
    /// the agent restarts).
    #[serde(default)]
    pub env_sets: BTreeMap<String, BTreeMap<String, String>>,
    /// The env set chosen at runtime (`reload --env`), kept by the app across config re-reads.
    #[serde(skip)]
    pub env_set: Option<String>,
    /// When a new worker counts as ready.
    #[serde(default)]
    pub ready: ReadyConfig,
    /// Give each worker Node's IPC channel (`NODE_CHANNEL_FD`, as PM2 does): `process.send`
    /// works, other messages are logged, and the worker gets `'shutdown'` (PM2's
    /// `shutdown_with_message`) before its stop or reload signal. `ready: { message: true }`
    /// turns it on too.
    #[serde(default)]
    pub ipc: bool,
    /// How a rolling reload replaces workers.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// What happens when a worker exits by itself.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Replace a worker (gracefully, like a reload) whose RSS goes above this.
    #[serde(default)]
    pub max_memory: Option<Size>,
    /// Reload the app on a schedule (PM2's `cron_restart`): `"0 3 * * *"`, in UTC (five fields,
    /// or six with seconds first). A rolling reload like `deployer reload`: no request fails.
    #[serde(default)]
    cron_restart: Option<String>,
    /// `cron_restart`, parsed.
    #[serde(skip)]
    pub reload_schedule: Option<CronSchedule>,
    /// Rotation of the log files under `state_dir/logs`.
    #[serde(default)]
    pub logs: LogsConfig,
    /// How much one commit of `repo` may make the agent fetch and write (depth, files, sizes); a
    /// commit over a limit fails its deploy. See `config/limits.rs` for the defaults and why.
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl AppConfig {
    /// The variable `auth: { token_env: NAME }` names, as written: a secret to withhold whether
    /// or not this config was resolved (the agent's secrets are named from every config read).
    pub fn git_token_env(&self) -> Option<&str> {
        match &self.auth {
            Some(AuthConfig::TokenEnv(var)) => Some(var),
            _ => None,
        }
    }
}

/// `instances: 4` or `instances: max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(u32),
    Max,
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::any::<_, InstancesRaw, _>(d, "a number like `2`, or `max`")
    }
}

impl Default for Instances {
    fn default() -> Self {
        Instances::Count(1)
    }
}

/// As written in the config: `4` or `max` (what a runtime scale records it overrides).
impl std::fmt::Display for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Instances::Count(n) => write!(f, "{n}"),
            Instances::Max => f.write_str("max"),
        }
    }
}

impl Instances {
    pub fn resolve(self) -> u32 {
        match self {
            Instances::Count(n) => n,
            Instances::Max => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InstancesRaw {
    N(i64),
    S(String),
}

impl TryFrom<InstancesRaw> for Instances {
    type Error = ValueError;
    fn try_from(raw: InstancesRaw) -> Result<Self, ValueError> {
        match raw {
            InstancesRaw::N(n) if (1..=1024).contains(&n) => Ok(Instances::Count(n as u32)),
            InstancesRaw::N(n) => Err(ValueError::InstancesOutOfRange(n)),
            InstancesRaw::S(s) if s == "max" => Ok(Instances::Max),
            InstancesRaw::S(s) => Err(ValueError::Instances(s)),
        }
    }
}

/// `hooks:` — each optional, run in the release directory with the deploy's environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleHooks {
    /// After `install`; a failure fails the deploy.
    pub post_install: Commands,
    /// Before the rolling reload (migrations); a failure fails the deploy.
    pub pre_reload: Commands,
    /// After the new release is live; a failure is logged only.
    pub post_reload: Commands,
    /// When a deploy fails; a failure is logged only.
    pub on_failure: Commands,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// HTTP/1.1 reverse proxy that knows request boundaries (zero failed requests on reload).
    #[default]
    Http,
    /// Layer-4 proxy for any TCP protocol.
    Tcp,
    /// The agent binds the port and hands the socket to every worker (systemd socket activation).
    Fd,
    /// No front: plain supervised processes.
    None,
}

impl AppConfig {
    /// Whether workers get Node's IPC channel: `ipc: true`, or readiness by message.
    pub fn uses_ipc(&self) -> bool {
        self.ipc || self.ready.check == ReadyCheck::Message
    }

    /// Whether a reload must stop an old worker before its replacement starts: it binds the
    /// public port itself (`proxy: none` with a `port`), and not with `SO_REUSEPORT`.
    pub fn reloads_stop_first(&self) -> bool {
        self.proxy == ProxyMode::None && self.port.is_some() && !self.reload.reuse_port
    }
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Http => "http",
            ProxyMode::Tcp => "tcp",
            ProxyMode::Fd => "fd",
            ProxyMode::None => "none",
        }
    }
}

/// `ready: { tcp: true }`, `{ http: /healthz }`, `{ notify: true }` or `{ message: true }`, plus `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyConfig {
    pub check: ReadyCheck,
    /// How long a new worker has to become ready before it counts as failed.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadyCheck {
    /// The worker's port accepts a connection.
    Tcp,
    /// `GET <path>` on the worker's port answers 2xx.
    Http(String),
    /// The worker sends `READY=1` on `NOTIFY_SOCKET` (sd_notify).
    Notify,
    /// The worker sends `'ready'` on Node's IPC channel (`process.send('ready')`, PM2's
    /// `wait_ready`).
    Message,
    /// The process is still running after this long (the default where there is no port to probe).
    Alive(Duration),
}

impl Default for ReadyConfig {
    fn default() -> Self {
        ReadyConfig { check: ReadyCheck::Tcp, timeout: Duration::from_secs(30) }
    }
}

impl<'de> Deserialize<'de> for ReadyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::any::<_, ReadyRaw, _>(d, "a map like `{ http: /healthz, timeout: 10s }`")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyRaw {
    tcp: Option<bool>,
    http: Option<String>,
    notify: Option<bool>,
    message: Option<bool>,
    alive: Option<Dur>,
    timeout: Option<Dur>,
}

impl TryFrom<ReadyRaw> for ReadyConfig {
    type Error = ValueError;
    fn try_from(r: ReadyRaw) -> Result<Self, ValueError> {
        let mut checks = Vec::new();
        if r.tcp == Some(true) {
            checks.push(ReadyCheck::Tcp);
        }
        if let Some(path) = r.http {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ValueError::ProbePath(path));
            }
            checks.push(ReadyCheck::Http(path));
        }
        if r.notify == Some(true) {
            checks.push(ReadyCheck::Notify);
        }
        if r.message == Some(true) {
            checks.push(ReadyCheck::Message);
        }
        if let Some(d) = r.alive {
            checks.push(ReadyCheck::Alive(d.0));
        }
        if checks.len() > 1 {
            return Err(ValueError::ReadyChecks);
        }
        Ok(ReadyConfig {
            check: checks.pop().unwrap_or(ReadyCheck::Tcp),
            timeout: r.timeout.map_or(Duration::from_secs(30), |d| d.0),
        })
    }
}

/// `reload: { signal: SIGUSR2, drain_timeout: 30s, kill_timeout: 5s, max_surge: 1, reuse_port: false }`
/// (`max_surge` unset: chosen per roll, see `supervisor::reload`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Sent to an old worker once its in-flight requests are done.
    pub signal: SignalName,
    /// How long an old worker may take to finish its in-flight requests.
    pub drain_timeout: Dur,
    /// How long an old worker may take to exit after the signal before `SIGKILL`.
    pub kill_timeout: Dur,
    /// How many workers are replaced at once. Unset: all of them when the host's available
    /// memory holds a second set of the app's workers with room to spare, else one at a time.
    pub max_surge: Option<u32>,
    /// `proxy: none` with a `port`: the app binds its port with `SO_REUSEPORT`, so a new worker
    /// can listen while the old one still does, and a reload starts it first (no gap). Without
    /// it such an app is reloaded stop-then-start, and it does not serve in between.
    pub reuse_port: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            signal: SignalName(Signal::SIGUSR2),
            drain_timeout: Dur(Duration::from_secs(30)),
            kill_timeout: Dur(Duration::from_secs(5)),
            max_surge: None,
            reuse_port: false,
        }
    }
}

/// A signal by name: `SIGUSR2`, `USR2`, `SIGTERM`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::text(d, "a signal name like `SIGUSR2`")
    }
}

impl TryFrom<String> for SignalName {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let upper = s.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
        Signal::from_str(&full).map(SignalName).map_err(|_| ValueError::Signal(s))
    }
}

/// `restart: { max_restarts: 10, min_uptime: 1s, backoff_max: 15s, autorestart: true,
/// delay: 2s, stop_exit_codes: [0] }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// Restart a worker that exits by itself (PM2's `autorestart`). `false`: one-shot workers,
    /// left `stopped` with their exit code until the next start, restart or reload.
    pub autorestart: bool,
    /// A fixed wait before each restart instead of the growing backoff (PM2's `restart_delay`).
    pub delay: Option<Dur>,
    /// Exit codes that mean "done": a worker exiting with one is not restarted (PM2's
    /// `stop_exit_codes`).
    pub stop_exit_codes: Vec<i32>,
    /// Exits in a row, each within `min_uptime` of its start, before the worker is `errored`.
    pub max_restarts: u32,
    /// A worker that ran at least this long before exiting resets the count.
    pub min_uptime: Dur,
    /// The longest wait between two restarts (the wait doubles from 100ms).
    pub backoff_max: Dur,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            autorestart: true,
            delay: None,
            stop_exit_codes: Vec::new(),
            max_restarts: 10,
            min_uptime: Dur(Duration::from_secs(1)),
            backoff_max: Dur(Duration::from_secs(15)),
        }
    }
}

/// `logs: { max_size: 10M, keep: 5, out: web.out.log, err: web.err.log, merge: true,
/// date_format: "%Y-%m-%d %H:%M:%S", format: text, compress: false }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Rotate a log file when it reaches this size.
    pub max_size: Size,
    /// Rotated files kept per log file (`web.log.1` ... `web.log.N`).
    pub keep: u32,
    /// The workers' stdout in a file of its own (PM2's `out_file`); relative to
    /// `state_dir/logs`. Without it, stdout goes to `<app>.log` with stderr.
    pub out: Option<PathBuf>,
    /// The workers' stderr in a file of its own (PM2's `error_file`), likewise.
    pub err: Option<PathBuf>,
    /// Every worker into one file (the default); `false`: one file per worker, `web-0.log`,
    /// `web-1.log`... (PM2's `merge_logs: false`).
    pub merge: bool,
    /// The time at the start of each line, as a strftime format in local time (PM2's
    /// `log_date_format`); RFC 3339 in UTC with milliseconds by default.
    pub date_format: Option<DateFormat>,
    /// `text` (the default): `<time> <app>-<worker> <out|err>| <line>`; `json`: one object per
    /// line with PM2's keys, `{"message", "timestamp", "type", "process_id", "app_name"}`.
    pub format: LogFormat,
    /// Gzip rotated files (`web.log.1.gz`).
    pub compress: bool,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            max_size: Size(10 << 20),
            keep: 5,
            out: None,
            err: None,
            merge: true,
            date_format: None,
            format: LogFormat::Text,
            compress: false,
        }
    }
}

/// How each line is written to the log files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A strftime format checked when the config is read (`%Q` is refused there, not at the first line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat(pub String);

impl<'de> Deserialize<'de> for DateFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::text(d, "a strftime format like `%Y-%m-%d %H:%M:%S`")
    }
}

impl TryFrom<String> for DateFormat {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        let bad = chrono::format::StrftimeItems::new(&s).any(|i| matches!(i, chrono::format::Item::Error));
        if bad || s.is_empty() { Err(ValueError::DateFormat(s)) } else { Ok(DateFormat(s)) }
    }
}

/// A config read from a file, with every relative path made absolute and token values resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: AgentConfig,
    /// (token name, token value, scopes), read from the environment.
    pub tokens: Vec<ResolvedToken>,
}

#[derive(Clone)]
pub struct ResolvedToken {
    pub name: String,
    pub value: String,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ResolvedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedToken").field("name", &self.name).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

/// Read, parse and check a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::io(path, e, "check the path; `examples/agent.yaml` is a complete example"))?;
    parse(path, &text)
}

/// Parse and check config text; `path` names it in errors and anchors relative paths. Three
/// steps: [`read`] (what the text says, and what it means where that needs only the text),
/// then per app in file order [`validate::app`] (the values fit together) and [`resolve::app`]
/// (paths, the environment and the accounts of this host), then the agent's own keys.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let mut config = read(path, text)?;
    let base = base_dir(path);
    // At the key, or at its closest parent written in the file (a default has no line of its own).
    let at = |keys: &[&str], msg: String, hint: Option<String>| {
        let (line, col) = (1..=keys.len()).rev().find_map(|n| locate::key(text, &keys[..n])).unwrap_or((1, 1));
        ConfigError::at(path, line, col, msg, hint)
    };
    resolve::agent(&mut config, &base, &at)?;
    if let Some(f) = &mut config.fleet {
        fleet::resolve(f, &base, &at)?;
    }
    let (listen, state_dir) = (config.listen.port(), config.state_dir.clone());
    let mut ports = validate::Ports::new(listen);
    for name in in_file_order(text, config.apps.keys()) {
        let Some(app) = config.apps.get_mut(&name) else { continue };
        validate::app(&name, app, &mut ports, &at)?;
        resolve::app(&name, app, &base, &state_dir, &at)?;
    }
    for (i, r) in config.report.iter().enumerate() {
        resolve::report(r, None, &["report"], i, &at)?;
    }
    let tokens = resolve::tokens(&config.tokens, &at)?;
    Ok(Loaded { path: path.to_path_buf(), config, tokens })
}

/// The YAML as an [`AgentConfig`], with what the keys mean where the text alone says it: each
/// app's pull schedule, and its readiness check where there is no port to probe.
fn read(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::at(
            path,
            1,
            1,
            "the config is empty".into(),
            Some("start from `examples/agent.yaml`: it needs at least `apps:` with one app".into()),
        ));
    }
    let mut config: AgentConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::from_yaml(path, e))?;
    for (name, app) in &mut config.apps {
        let at = |key: &str| locate::key(text, &["apps", name, key]).unwrap_or((1, 1));
        app.schedule = schedule(name, app).map_err(|(key, msg, hint)| {
            let (line, col) = at(key);
            ConfigError::at(path, line, col, msg, Some(hint.into()))
        })?;
        if let Some(text) = &app.cron_restart {
            app.reload_schedule = Some(text.parse::<CronSchedule>().map_err(|e| {
                let (line, col) = at("cron_restart");
                let hint =
                    "write five fields, minute hour day month weekday, like `\"0 3 * * *\"` (03:00 UTC every day)";
                ConfigError::at(
                    path,
                    line,
                    col,
                    format!("invalid `cron_restart: {text}`: {}", e.reason),
                    Some(hint.into()),
                )
            })?);
        }
        // Where there is no private port to probe, readiness defaults to "still alive after 1s".
        if matches!(app.proxy, ProxyMode::Fd | ProxyMode::None)
            && app.ready.check == ReadyCheck::Tcp
            && !locate::has_key(text, &["apps", name, "ready", "tcp"])
        {
            app.ready.check = ReadyCheck::Alive(Duration::from_secs(1));
        }
    }
    Ok(config)
}

/// `poll` or `cron`, never both; a cron text that does not parse is an error at its key.
fn schedule(name: &str, app: &AppConfig) -> Result<Option<Schedule>, (&'static str, String, &'static str)> {
    match (&app.cron, app.poll) {
        (Some(_), Some(_)) => Err((
            "cron",
            format!("app `{name}` has both `poll` and `cron`"),
            "pull mode runs on one schedule: keep `poll: 30s` (an interval) or `cron: \"*/5 * * * *\"` (times of day)",
        )),
        (Some(text), None) => text.parse::<CronSchedule>().map(|c| Some(Schedule::Cron(Box::new(c)))).map_err(|e| {
            (
                "cron",
                e.to_string(),
                "write five fields, minute hour day month weekday, like `\"*/5 * * * *\"` (every 5 minutes, UTC)",
            )
        }),
        (None, Some(every)) => Ok(Some(Schedule::Every(every.0))),
        (None, None) => Ok(None),
    }
}

/// Only the `state_dir` of the config file at `path` (for `deployer-agent upgrade`, which must
/// not need the agent's secrets): read leniently, resolved as [`load`] resolves it.
pub fn state_dir_of(path: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("`{}` is not YAML: {e}", path.display()))?;
    let dir = match doc.get("state_dir") {
        None => default_state_dir(),
        Some(v) => {
            PathBuf::from(v.as_str().ok_or_else(|| format!("`state_dir` in `{}` is not a path", path.display()))?)
        }
    };
    Ok(if dir.is_absolute() { dir } else { base_dir(path).join(dir) })
}

/// The config file's directory, absolute: relative paths in the file start there.
fn base_dir(path: &Path) -> PathBuf {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    std::fs::canonicalize(&base).unwrap_or(base)
}

/// App names in the order the file writes them: of two clashing apps, the error names the one
/// written second.
fn in_file_order<'a>(text: &str, names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names.cloned().collect();
    names.sort_by_key(|name| locate::key(text, &["apps", name]).unwrap_or((usize::MAX, 0)));
    names
}

type At<'a> = dyn Fn(&[&str], String, Option<String>) -> ConfigError + 'a;

/// App names end up in file names and URL paths.
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
}

#[cfg(test)]
mod tests;
