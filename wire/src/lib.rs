//! The agent's HTTP API, as types.
//!
//! Both the agent (which serves them) and the CLI (which reads them) compile against this crate,
//! so a field renamed on one side is a compile error on the other. It depends on serde only: the
//! CLI never builds the agent's heavy dependencies.

use serde::{Deserialize, Serialize};

#[macro_use]
mod names;
pub use names::UnknownName;

/// The version prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// `GET /v1/apps` answers a list of these; `GET /v1/apps/{app}` one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStatus {
    pub name: String,
    /// What owns the app's public port.
    pub mode: AppMode,
    /// The public port the front owns (absent in `none` mode without a port).
    pub port: Option<u16>,
    /// Instances the app is configured (or scaled) to run.
    pub instances: u32,
    /// The config's `instances`, when a runtime `deployer scale` runs another count (kept
    /// across restarts and upgrades until the config's `instances` changes). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured: Option<u32>,
    pub state: AppState,
    pub workers: Vec<WorkerStatus>,
    /// The release the workers run (`<seq>-<shortsha>`), for an app deployed from git that has
    /// one. Absent otherwise, and from agents older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Requests (connections in `tcp` mode) through the app's front since the agent started: a
    /// counter, from which `deployer monit` derives requests per second. Absent for apps without
    /// a front (`fd`, `none`), and from agents older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_total: Option<u64>,
}

/// One worker process of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    /// The instance id (`INSTANCE_ID`), stable across reloads.
    pub id: u32,
    pub pid: Option<u32>,
    /// The private port the worker listens on (absent in `fd` and `none` modes).
    pub port: Option<u16>,
    pub state: WorkerState,
    /// Restarts after unexpected exits since the worker was created.
    pub restarts: u32,
    pub uptime_ms: u64,
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    /// Requests (or connections, in `tcp` mode) in flight through the front.
    pub inflight: u64,
    /// A short hash of the environment the worker was started with.
    pub env_hash: String,
    /// The release the worker runs (the app's `cwd` until git deploys exist).
    pub release: String,
    /// How its last process ended, when it ended by itself and was not restarted
    /// (`restart: { autorestart: false }` or a code in `stop_exit_codes`): the exit code, or
    /// 128 + the signal's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `POST /v1/apps/{app}/reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Re-read the config file, `env` and `env_file` before starting the new workers.
    #[serde(default)]
    pub update_env: bool,
    /// Put this env set of the app's `env_sets` on top (implies `update_env`); it stays chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// The answer of a reload that ended, successful or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadOutcome {
    pub app: String,
    pub ok: bool,
    /// Workers replaced by new ones.
    pub replaced: u32,
    pub duration_ms: u64,
    /// Environment hash of the new workers.
    pub env_hash: String,
    /// Why the reload failed, when it did.
    pub error: Option<String>,
    /// What to do about it, when there is something to say (a config error's fix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Set when the reload stopped old workers before starting new ones (`proxy: none` with a
    /// `port` and no `reload.reuse_port`): how long, in all, a slot had no worker serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<u64>,
}

/// `POST /v1/apps/{app}/scale`.
/// Either `instances` (run that many) or `by` (that many more, or fewer when negative: `scale
/// web +2`), not both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<i64>,
}

/// `POST /v1/apps/{app}/signal`: send a signal to every running worker of the app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A name like `SIGUSR1` or `USR1`.
    pub signal: String,
}

/// The answer of `POST /v1/apps/{app}/signal`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalOutcome {
    pub app: String,
    /// The signal's full name (`SIGUSR1`).
    pub signal: String,
    /// The workers it was sent to (their process groups): those running when asked.
    pub workers: Vec<SignalledWorker>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalledWorker {
    pub id: u32,
    pub pid: u32,
}

/// `GET /v1/apps/{app}/logs?lines=N`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLines {
    pub app: String,
    pub lines: Vec<LogLine>,
}

/// `POST /v1/apps/{app}/logs/flush`: the files emptied or removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsFlushed {
    pub app: String,
    pub files: Vec<String>,
}

/// One line a worker wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub worker: u32,
    pub stream: LogStream,
    pub line: String,
}

/// Every error answer of the API has this body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable machine-readable code.
    pub code: ErrorCode,
    pub message: String,
    /// What to do about it, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `POST /v1/apps/{app}/deploys`: deploy a branch or a commit of the app's repo.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A branch name or a commit sha (full or at least 7 hex digits); the app's `branch` when absent.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Who asked (shown in history). The token's name is recorded beside it in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Run the release with this env set of the app's `env_sets` on top; it stays chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// `POST /v1/apps/{app}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// A release name (`12-1a2b3c4`), a sequence number or a sha prefix; the previous release when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// One deploy: what was asked, what happened, step by step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deploy {
    pub id: u64,
    pub app: String,
    /// What was asked for: a branch, a sha, or `rollback:<release>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit, once resolved.
    pub sha: Option<String>,
    /// What asked for it.
    pub trigger: Trigger,
    pub state: DeployState,
    /// Who asked, as the request said (`--who`), or the pusher of a webhook, or the trigger.
    pub who: Option<String>,
    /// The name of the API token the deploy was asked with: the authenticated actor, whatever
    /// `who` says. Absent for webhooks, pull mode and the agent's own deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The release directory name (`<seq>-<shortsha>`), once materialised.
    pub release: Option<String>,
    pub queued_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Why it failed, was rolled back, superseded or is a no-op.
    pub message: Option<String>,
    /// Present on `GET /v1/deploys/{id}`, empty in lists.
    #[serde(default)]
    pub events: Vec<DeployEvent>,
    /// The last lines of install and hook output (on `GET /v1/deploys/{id}`).
    #[serde(default)]
    pub output_tail: Vec<String>,
}

impl Deploy {
    /// Whether the deploy will not change any more. A state this build does not know (from a
    /// newer agent) is final once the agent says when it finished.
    pub fn is_final(&self) -> bool {
        self.state.is_final() || (self.state == DeployState::Unknown && self.finished_at_ms.is_some())
    }
}

/// One step of a deploy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployEvent {
    pub seq: u64,
    pub at_ms: u64,
    /// The state entered, or `log` for a message within a state.
    pub state: EventState,
    pub message: String,
}

/// The answer to a deploy or rollback request (202).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployAccepted {
    pub id: u64,
    pub app: String,
    pub state: DeployState,
    /// Set when the request changed nothing (the commit is already live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /v1/apps/{app}/releases`: the release directories on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    pub name: String,
    pub seq: u64,
    pub sha: String,
    pub current: bool,
    /// Whether its install succeeded (failed releases are kept for inspection).
    pub ok: bool,
}

/// `POST /v1/apps/{app}/check`: the branch head on the remote, and the deploy it queued if it moved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckOutcome {
    pub app: String,
    pub sha: String,
    /// The deploy queued because the head moved; absent when it is live or already queued.
    pub queued: Option<u64>,
}

/// One message of `GET /v1/deploys/{id}/events` (Server-Sent Events): the SSE `event:` field is
/// the `type`, the `data:` field this value as JSON. Past events are replayed first; the stream
/// ends after the `end` message, sent once the deploy is final.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeployStreamItem {
    /// One step of the deploy, in `seq` order.
    Event(DeployEvent),
    /// The deploy as it ended (without its events).
    End(Box<Deploy>),
}

impl DeployStreamItem {
    /// The SSE `event:` name of this message.
    pub fn kind(&self) -> &'static str {
        match self {
            DeployStreamItem::Event(_) => "event",
            DeployStreamItem::End(_) => "end",
        }
    }
}

/// `GET /v1/apps/{app}/logs?follow=true` is a Server-Sent Events stream of `line` events whose
/// data is a [`LogLine`] as JSON: the last `lines` lines first, then every new one.
pub const LOG_LINE_EVENT: &str = "line";

/// `POST /v1/locks/{name}`: take or renew a lease on a named lock (the CLI's push lock).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// Who asks, as others see it: `ana@laptop (push prod)`.
    pub holder: String,
    /// A secret the holder chose: renewing and releasing need it.
    pub lease: String,
    /// How long the lock lasts unless renewed, in milliseconds (at most an hour).
    pub ttl_ms: u64,
}

/// The answer to `POST /v1/locks/{name}` (200 whether taken or not): who holds it now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockStatus {
    pub name: String,
    /// Whether the request holds the lock now (taken or renewed).
    pub acquired: bool,
    pub holder: String,
    /// When the current holder took it (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// When it lapses unless renewed.
    pub expires_at_ms: u64,
}

/// `POST /hooks/{app}` (202): what the agent did with a webhook delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookAnswer {
    pub app: String,
    /// The host's delivery id, when the delivery was authentic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// The deploy queued (or joined) for the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<u64>,
    /// What happened to the push when it did not queue a new deploy: it joined one queued or
    /// running for the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why nothing was deployed: a ping, a tag, another branch, a redelivery...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

named! {
    /// The states of a deploy, one place for the agent (which stores them by these names and
    /// checks every transition), the CLI and scripts.
    ///
    /// `queued -> fetching -> building -> rolling -> live`, or `failed | rolled_back | superseded |
    /// interrupted | cancelled`. An app with a `bake` window goes `rolling -> baking -> live` (or
    /// `rolled_back`): `live` is final, so a script that waits for it is never told a deploy
    /// succeeded that the bake window then reverts.
    pub enum DeployState ("deploy state") {
        Queued = "queued",
        Fetching = "fetching",
        Building = "building",
        Rolling = "rolling",
        /// The new release serves, and its bake window decides whether it stays.
        Baking = "baking",
        Live = "live",
        Failed = "failed",
        RolledBack = "rolled_back",
        Superseded = "superseded",
        Interrupted = "interrupted",
        Cancelled = "cancelled",
    }
}

impl DeployState {
    /// Whether the deploy will not change any more. A state this build does not know is not
    /// final: the agent's stream says when the deploy ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeployState::Live
                | DeployState::Failed
                | DeployState::RolledBack
                | DeployState::Superseded
                | DeployState::Interrupted
                | DeployState::Cancelled
        )
    }

    /// Whether the deploy is still under way (queued or running).
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            DeployState::Queued
                | DeployState::Fetching
                | DeployState::Building
                | DeployState::Rolling
                | DeployState::Baking
        )
    }

    /// Whether a deploy may go from `self` to `next`.
    pub fn can_become(self, next: DeployState) -> bool {
        use DeployState::*;
        match (self, next) {
            (Queued, Fetching | Rolling | Superseded | Cancelled | Interrupted | Failed | Live) => true,
            (Fetching, Building | Live | Failed | Cancelled | Interrupted) => true,
            (Building, Rolling | Failed | Cancelled | Interrupted) => true,
            (Rolling, Baking | Live | Failed | RolledBack | Interrupted) => true,
            // The bake window: a release that crash-loops in it is rolled back; one that does
            // not is live. The agent's stop cuts the window short and leaves the release live.
            // No previous release to go back to: `failed`, and it keeps running.
            (Baking, Live | RolledBack | Failed) => true,
            _ => false,
        }
    }

    /// Cancelling is possible before the workers are touched.
    pub fn can_cancel(self) -> bool {
        matches!(self, DeployState::Queued | DeployState::Fetching | DeployState::Building)
    }
}

/// What a deploy event records: a state entered, or a message within the current state. On the
/// wire and in SQLite it is the state's name, or `log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    Entered(DeployState),
    Log,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Entered(s) => s.as_str(),
            EventState::Log => "log",
        }
    }

    /// The state entered, if the event is one.
    pub fn entered(self) -> Option<DeployState> {
        match self {
            EventState::Entered(s) => Some(s),
            EventState::Log => None,
        }
    }
}

impl From<DeployState> for EventState {
    fn from(s: DeployState) -> EventState {
        EventState::Entered(s)
    }
}

impl std::fmt::Display for EventState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<EventState, UnknownName> {
        match s {
            "log" => Ok(EventState::Log),
            _ => s.parse().map(EventState::Entered).map_err(|_| UnknownName { kind: "deploy event", name: s.into() }),
        }
    }
}

impl Serialize for EventState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A name this build does not know is a state entered that it does not know.
impl<'de> Deserialize<'de> for EventState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventState, D::Error> {
        let name = String::deserialize(d)?;
        Ok(name.parse().unwrap_or(EventState::Entered(DeployState::Unknown)))
    }
}

impl PartialEq<&str> for EventState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

named! {
    /// What asked for a deploy: the API (and the CLI through it), a webhook, pull mode, or the
    /// agent itself.
    pub enum Trigger ("trigger") {
        /// `POST /v1/apps/{app}/deploys` (`deployer deploy`, `deployer push`).
        Api = "api",
        /// `POST /v1/apps/{app}/rollback`.
        Rollback = "rollback",
        /// `POST /v1/apps/{app}/check` (`deployer pull`) found the branch head moved.
        Check = "check",
        /// A signed push webhook.
        Webhook = "webhook",
        /// Pull mode, `poll:`.
        Poll = "poll",
        /// Pull mode, `cron:`.
        Cron = "cron",
        /// The agent started with an app that has no release yet.
        Startup = "startup",
        /// SIGHUP applied a config with a new app that has no release yet.
        Config = "config",
        /// The bake window rolled a crash-looping release back.
        Bake = "bake",
        /// Fleet mode: the environment's desired state (`deployer push <env>` on the engine).
        Fleet = "fleet",
    }
}

impl Trigger {
    /// Whether the deploy puts a release on disk back (no fetch, no install).
    pub fn is_rollback(self) -> bool {
        matches!(self, Trigger::Rollback | Trigger::Bake)
    }
}

named! {
    /// One worker process's state, as the supervisor sees it.
    pub enum WorkerState ("worker state") {
        /// Spawned, not ready yet.
        Starting = "starting",
        /// Ready and in rotation.
        Online = "online",
        /// Out of rotation, finishing its in-flight work.
        Draining = "draining",
        /// Signalled, waiting to exit.
        Stopping = "stopping",
        Stopped = "stopped",
        /// Exited unexpectedly, waiting for its restart (with backoff).
        Restarting = "restarting",
        /// Out of rotation after failed requests or probes; about to be replaced.
        Unhealthy = "unhealthy",
        /// Died `max_restarts` times within `min_uptime`: left alone until a reload or restart.
        Errored = "errored",
    }
}

named! {
    /// The state of an app's cluster as a whole.
    pub enum AppState ("app state") {
        /// The agent has just started: the app's first workers are not ready yet.
        Starting = "starting",
        Running = "running",
        Stopped = "stopped",
        /// A rolling reload (or a deploy's roll) is under way.
        Reloading = "reloading",
    }
}

named! {
    /// What owns an app's public port (`proxy:` in the agent's config).
    pub enum AppMode ("app mode") {
        /// An HTTP/1.1 reverse proxy in the agent.
        Http = "http",
        /// A plain L4 proxy.
        Tcp = "tcp",
        /// The listener handed to every worker (systemd socket activation).
        Fd = "fd",
        /// No port: plain supervised processes.
        None = "none",
    }
}

named! {
    /// Which output of a worker a log line came from.
    pub enum LogStream ("log stream") {
        Out = "out",
        Err = "err",
    }
}

named! {
    /// The `code` of an API error: what a script branches on. The `message` says it for people,
    /// the `hint` what to do.
    pub enum ErrorCode ("error code") {
        /// No bearer token, or not one of the agent's (401).
        Unauthorized = "unauthorized",
        /// The token lacks the scope the route needs (403).
        Forbidden = "forbidden",
        /// No such app, deploy, release or route (404).
        NotFound = "not_found",
        /// The request is malformed: its JSON, a value out of range, a ref git would refuse (400).
        BadRequest = "bad_request",
        /// The request conflicts with the state: a deploy past cancelling, a lock held (409).
        Conflict = "conflict",
        /// The app has no `repo`: it cannot be deployed, rolled back or checked (409).
        NoRepo = "no_repo",
        /// A reload stopped; the previous workers serve (409).
        ReloadFailed = "reload_failed",
        /// Workers did not become ready after a start, restart or scale (409).
        StartFailed = "start_failed",
        /// The request body is over the limit (413).
        TooLarge = "too_large",
        /// The route exists with another method (405).
        MethodNotAllowed = "method_not_allowed",
        /// The app's branch does not exist in its repository (409).
        BranchNotFound = "branch_not_found",
        /// The app's git remote could not be read: network, credentials, host key (502).
        GitUnreachable = "git_unreachable",
        /// The agent is stopping and takes no new deploy (503).
        Stopping = "stopping",
        /// The agent failed (500).
        Internal = "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeployState::*;

    #[test]
    fn the_happy_path_and_its_exits() {
        let path = [Queued, Fetching, Building, Rolling, Live];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(!Live.can_become(Failed));
        assert!(!Rolling.can_become(Cancelled), "the roll is not cancellable");
        assert!(!Failed.can_become(Live));
        assert!(!Live.can_become(RolledBack), "live is final: the bake window decides before it");
        assert!(Rolling.can_become(Baking) && Baking.can_become(Live) && Baking.can_become(RolledBack));
        assert!(!Baking.is_final() && !Baking.can_cancel());
        assert!(Building.can_cancel() && !Rolling.can_cancel());
        assert!(Superseded.is_final() && !Rolling.is_final());
        assert!(!Unknown.is_final() && !Unknown.can_become(Live) && !Queued.can_become(Unknown));
        assert!("done".parse::<DeployState>().is_err());
    }

    /// Every name goes out and comes back as the same value, through JSON and through `FromStr`
    /// (what the agent's SQLite columns are read with).
    fn round_trips<T>(known: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr + Serialize,
        T: for<'de> Deserialize<'de>,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        let mut names = std::collections::HashSet::new();
        for &v in known {
            let name = v.to_string();
            assert!(names.insert(name.clone()), "`{name}` names two values");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "`{name}` is not snake_case");
            assert_eq!(name.parse::<T>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn every_name_round_trips() {
        round_trips(DeployState::KNOWN);
        round_trips(Trigger::KNOWN);
        round_trips(WorkerState::KNOWN);
        round_trips(AppState::KNOWN);
        round_trips(AppMode::KNOWN);
        round_trips(LogStream::KNOWN);
        round_trips(ErrorCode::KNOWN);
        let events: Vec<EventState> =
            DeployState::KNOWN.iter().map(|&s| EventState::Entered(s)).chain([EventState::Log]).collect();
        round_trips(&events);
        assert_eq!(DeployState::KNOWN.len(), 11);
    }

    /// A CLI older than its agent reads a name added later as `Unknown` instead of failing to
    /// read the whole answer; the agent, parsing what it stored, gets an error instead.
    #[test]
    fn names_from_a_newer_agent_read_as_unknown() {
        let worker: WorkerStatus = serde_json::from_value(serde_json::json!({
            "id": 0, "pid": 1, "port": null, "state": "hibernating", "restarts": 0, "uptime_ms": 0,
            "cpu_percent": 0.0, "rss_bytes": 0, "inflight": 0, "env_hash": "", "release": ""
        }))
        .unwrap();
        assert_eq!(worker.state, WorkerState::Unknown);
        let err: ApiError = serde_json::from_str(r#"{"code":"quota_exceeded","message":"m","hint":"h"}"#).unwrap();
        assert_eq!((err.code, err.hint.as_deref()), (ErrorCode::Unknown, Some("h")));
        let event: DeployEvent =
            serde_json::from_str(r#"{"seq":1,"at_ms":0,"state":"verifying","message":"m"}"#).unwrap();
        assert_eq!(event.state, EventState::Entered(DeployState::Unknown));
        assert_eq!(serde_json::from_str::<Trigger>("\"schedule\"").unwrap(), Trigger::Unknown);
        assert_eq!(serde_json::from_str::<AppMode>("\"quic\"").unwrap(), AppMode::Unknown);

        let refused = "hibernating".parse::<WorkerState>().unwrap_err();
        assert_eq!(refused.to_string(), "unknown worker state `hibernating`");
        assert!("unknown".parse::<DeployState>().is_err(), "`Unknown` is never a stored value");
        assert!("verifying".parse::<EventState>().is_err());
        assert!(serde_json::from_str::<Trigger>("3").is_err(), "not a name at all is still an error");
    }

    /// `release` and `requests_total` came later: an older agent's answer reads without them,
    /// and an app without them writes none (an older CLI ignores them anyway).
    #[test]
    fn app_statuses_of_older_agents_read() {
        let old = serde_json::json!({
            "name": "web", "mode": "http", "port": 3000, "instances": 2, "state": "running", "workers": []
        });
        let app: AppStatus = serde_json::from_value(old.clone()).unwrap();
        assert_eq!((app.release.as_deref(), app.requests_total), (None, None));
        assert_eq!(serde_json::to_value(&app).unwrap(), old);
    }

    #[test]
    fn scripts_compare_values_with_the_names_they_see() {
        assert!(DeployState::RolledBack == "rolled_back" && EventState::Log == "log");
        assert_eq!(ErrorCode::NoRepo, "no_repo");
        assert_eq!(EventState::from(Live).entered(), Some(Live));
    }
}
