//! What a report says: the event a deploy change is, and its JSON body.

use crate::store::{Change, DeployFacts, now_ms};
use serde::Serialize;

/// The events a receiver gets, named `deploy.<state>`, `worker.errored` and `worker.unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Queued,
    /// The deploy left the queue (fetching, or rolling for a rollback).
    Started,
    Live,
    Failed,
    RolledBack,
    Superseded,
    Cancelled,
    Interrupted,
    WorkerErrored,
    /// Passive or active health found the worker unhealthy; it is being replaced.
    WorkerUnhealthy,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Queued => "deploy.queued",
            EventKind::Started => "deploy.started",
            EventKind::Live => "deploy.live",
            EventKind::Failed => "deploy.failed",
            EventKind::RolledBack => "deploy.rolled_back",
            EventKind::Superseded => "deploy.superseded",
            EventKind::Cancelled => "deploy.cancelled",
            EventKind::Interrupted => "deploy.interrupted",
            EventKind::WorkerErrored => "worker.errored",
            EventKind::WorkerUnhealthy => "worker.unhealthy",
        }
    }

    /// The event a deploy change is, if it is one receivers hear about (a resolved sha and
    /// the steps after `started` are not).
    pub fn of(deploy: &DeployFacts, change: Change<'_>) -> Option<EventKind> {
        match change {
            Change::Queued => Some(EventKind::Queued),
            Change::Resolved => None,
            Change::Entered { from } => match deploy.state.as_str() {
                "live" => Some(EventKind::Live),
                "failed" => Some(EventKind::Failed),
                "rolled_back" => Some(EventKind::RolledBack),
                "superseded" => Some(EventKind::Superseded),
                "cancelled" => Some(EventKind::Cancelled),
                "interrupted" => Some(EventKind::Interrupted),
                _ if from == "queued" => Some(EventKind::Started),
                _ => None,
            },
        }
    }

    fn is_failure(self) -> bool {
        matches!(self, EventKind::Failed | EventKind::RolledBack)
    }
}

/// The JSON body of a deploy event. Written once into the outbox, so a retry sends the same bytes.
#[derive(Debug, Serialize)]
pub struct DeployEventBody<'a> {
    pub event: &'static str,
    pub app: &'a str,
    pub host: &'a str,
    pub deploy: u64,
    pub state: &'a str,
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub sha: Option<&'a str>,
    pub trigger: &'a str,
    pub who: Option<&'a str>,
    /// The name of the API token the deploy was asked with (absent for webhooks, pull mode...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    pub release: Option<&'a str>,
    pub message: Option<&'a str>,
    pub queued_at_ms: u64,
    pub at_ms: u64,
    /// From queued to this event.
    pub duration_ms: u64,
    /// The last lines of install and hook output, on `deploy.failed` and `deploy.rolled_back`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<&'a [String]>,
}

impl<'a> DeployEventBody<'a> {
    pub fn new(kind: EventKind, d: &'a DeployFacts, host: &'a str) -> Self {
        let at_ms = now_ms();
        DeployEventBody {
            event: kind.name(),
            app: &d.app,
            host,
            deploy: d.id,
            state: d.state.as_str(),
            git_ref: &d.git_ref,
            sha: d.sha.as_deref(),
            trigger: d.trigger.as_str(),
            who: d.who.as_deref(),
            token: d.token.as_deref(),
            release: d.release.as_deref(),
            message: d.message.as_deref(),
            queued_at_ms: d.queued_at_ms,
            at_ms,
            duration_ms: at_ms.saturating_sub(d.queued_at_ms),
            output_tail: kind.is_failure().then_some(d.output_tail.as_slice()),
        }
    }
}

/// The JSON body of `worker.errored` and `worker.unhealthy`.
#[derive(Debug, Serialize)]
pub struct WorkerEventBody<'a> {
    pub event: &'static str,
    pub app: &'a str,
    pub host: &'a str,
    pub worker: u32,
    pub message: &'a str,
    pub release: Option<&'a str>,
    pub at_ms: u64,
    /// The last lines the worker wrote.
    pub output_tail: &'a [String],
}

/// GitHub's commit status for a deploy change: (`pending|success|failure|error`, description).
pub fn github_state(d: &DeployFacts, change: Change<'_>) -> Option<(&'static str, String)> {
    let short = d.sha.as_deref().map_or("", |s| &s[..7.min(s.len())]);
    match (change, d.state.as_str()) {
        (Change::Resolved, _) => Some(("pending", format!("deploying {short} (deploy #{})", d.id))),
        (Change::Entered { .. }, "live") => Some(("success", format!("live (deploy #{})", d.id))),
        (Change::Entered { .. }, "failed") => Some(("failure", format!("deploy #{} failed", d.id))),
        (Change::Entered { .. }, "rolled_back") => Some(("failure", format!("deploy #{} was rolled back", d.id))),
        (Change::Entered { .. }, "cancelled" | "interrupted") => {
            Some(("error", format!("deploy #{} was {}", d.id, d.state)))
        }
        _ => None,
    }
}
