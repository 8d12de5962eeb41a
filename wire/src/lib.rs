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
    /// `conflict`, `reload_failed`, `internal`.
    pub code: String,
    pub message: String,
    /// What to do about it, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
