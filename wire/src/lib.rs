//! The agent's HTTP API, as types.
//!
//! Both the agent (which serves them) and the CLI (which reads them) compile against this crate,
//! so a field renamed on one side is a compile error on the other. It depends on serde only: the
//! CLI never builds the agent's heavy dependencies.

use serde::{Deserialize, Serialize};

/// The version prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// `GET /v1/apps` answers a list of these; `GET /v1/apps/{app}` one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStatus {
    pub name: String,
    /// `http`, `tcp`, `fd` or `none`.
    pub mode: String,
    /// The public port the front owns (absent in `none` mode without a port).
    pub port: Option<u16>,
    /// Instances the app is configured (or scaled) to run.
    pub instances: u32,
    /// `running`, `stopped`, `reloading`.
    pub state: String,
    pub workers: Vec<WorkerStatus>,
}

/// One worker process of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    /// The instance id (`INSTANCE_ID`), stable across reloads.
    pub id: u32,
    pub pid: Option<u32>,
    /// The private port the worker listens on (absent in `fd` and `none` modes).
    pub port: Option<u16>,
    /// `starting`, `online`, `draining`, `stopping`, `stopped`, `restarting`, `errored`.
    pub state: String,
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
}

/// `POST /v1/apps/{app}/reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Re-read the config file, `env` and `env_file` before starting the new workers.
    #[serde(default)]
    pub update_env: bool,
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
}

/// `POST /v1/apps/{app}/scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub instances: u32,
}

/// `GET /v1/apps/{app}/logs?lines=N`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLines {
    pub app: String,
    pub lines: Vec<LogLine>,
}

/// One line a worker wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub worker: u32,
    /// `out` or `err`.
    pub stream: String,
    pub line: String,
}

/// Every error answer of the API has this body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable machine-readable code: `unauthorized`, `forbidden`, `not_found`, `bad_request`,
    /// `conflict`, `reload_failed`, `too_large`, `method_not_allowed`, `git_unreachable`, `internal`.
    pub code: String,
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
    /// `api`, `cli`, `webhook`, `poll`, `cron`, `rollback`, `bake`.
    pub trigger: String,
    /// `queued`, `fetching`, `building`, `rolling`, `live`, `failed`, `rolled_back`, `superseded`,
    /// `interrupted`, `cancelled`.
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
    /// Whether the deploy will not change any more.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }
}

/// One step of a deploy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployEvent {
    pub seq: u64,
    pub at_ms: u64,
    /// The state entered, or `log` for a message within a state.
    pub state: String,
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

/// The states of a deploy, one place for the agent (which stores them by these names and checks
/// every transition), the CLI and scripts.
///
/// `queued -> fetching -> building -> rolling -> live`, or `failed | rolled_back | superseded |
/// interrupted | cancelled`. A live deploy can still become `rolled_back` (the bake window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    Queued,
    Fetching,
    Building,
    Rolling,
    Live,
    Failed,
    RolledBack,
    Superseded,
    Interrupted,
    Cancelled,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::Queued => "queued",
            DeployState::Fetching => "fetching",
            DeployState::Building => "building",
            DeployState::Rolling => "rolling",
            DeployState::Live => "live",
            DeployState::Failed => "failed",
            DeployState::RolledBack => "rolled_back",
            DeployState::Superseded => "superseded",
            DeployState::Interrupted => "interrupted",
            DeployState::Cancelled => "cancelled",
        }
    }

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

    /// Whether a deploy may go from `self` to `next`.
    pub fn can_become(self, next: DeployState) -> bool {
        use DeployState::*;
        match (self, next) {
            (Queued, Fetching | Rolling | Superseded | Cancelled | Interrupted | Failed | Live) => true,
            (Fetching, Building | Live | Failed | Cancelled | Interrupted) => true,
            (Building, Rolling | Failed | Cancelled | Interrupted) => true,
            (Rolling, Live | Failed | RolledBack | Interrupted) => true,
            // The bake window: a live release that crash-loops is rolled back.
            (Live, RolledBack) => true,
            _ => false,
        }
    }

    /// Every state, in the order of the happy path, then the ends.
    pub const ALL: [DeployState; 10] = [
        DeployState::Queued,
        DeployState::Fetching,
        DeployState::Building,
        DeployState::Rolling,
        DeployState::Live,
        DeployState::Failed,
        DeployState::RolledBack,
        DeployState::Superseded,
        DeployState::Interrupted,
        DeployState::Cancelled,
    ];

    /// Cancelling is possible before the workers are touched.
    pub fn can_cancel(self) -> bool {
        matches!(self, DeployState::Queued | DeployState::Fetching | DeployState::Building)
    }
}

impl std::fmt::Display for DeployState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deploy.state == "live"`: scripts and tests compare with the names they see in JSON.
impl PartialEq<&str> for DeployState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for DeployState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl std::str::FromStr for DeployState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        DeployState::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// A state name that is none of [`DeployState`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl std::fmt::Display for UnknownState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown deploy state `{}`", self.0)
    }
}

impl std::error::Error for UnknownState {}

#[cfg(test)]
mod deploy_state_tests {
    use super::DeployState::{self, *};

    #[test]
    fn the_happy_path_and_its_exits() {
        let path = [Queued, Fetching, Building, Rolling, Live];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(!Live.can_become(Failed));
        assert!(!Rolling.can_become(Cancelled), "the roll is not cancellable");
        assert!(!Failed.can_become(Live));
        assert!(Live.can_become(RolledBack));
        assert!(Building.can_cancel() && !Rolling.can_cancel());
        assert!(Superseded.is_final() && !Rolling.is_final());
        for s in DeployState::ALL {
            assert_eq!(s.as_str().parse::<DeployState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert!("done".parse::<DeployState>().is_err());
    }
}
