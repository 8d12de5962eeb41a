//! Tables of fleets: the summary of a rollout (one row per host) and `status` of an environment.

use anstyle::{AnsiColor, Style};
use comfy_table::{Attribute, Cell, Color, Table};
use deployer_wire::{AppState, DeployState};
use serde::Serialize;

use super::{FAILURE, SUCCESS, human_age, human_duration, new_table, one_line, short_sha};
use crate::fleet::rollout::{HostResult, HostState};

/// Whether a host's end is good (live), a stop that changed nothing bad (yellow), or a failure.
enum Verdict {
    Good,
    Stopped,
    Bad,
}

fn verdict(state: HostState) -> Verdict {
    match state {
        HostState::Deploy(DeployState::Live) => Verdict::Good,
        HostState::Skipped
        | HostState::Reverted
        | HostState::Deploy(DeployState::Superseded | DeployState::Cancelled) => Verdict::Stopped,
        _ => Verdict::Bad,
    }
}

/// The style of a host's last words in the progress lines.
pub fn host_style(state: HostState) -> Style {
    match verdict(state) {
        Verdict::Good => SUCCESS,
        Verdict::Stopped => AnsiColor::Yellow.on_default().bold(),
        Verdict::Bad => FAILURE,
    }
}

fn state_cell(state: HostState) -> Cell {
    let cell = Cell::new(state).add_attribute(Attribute::Bold);
    match verdict(state) {
        Verdict::Good => cell.fg(Color::Green),
        Verdict::Stopped => cell.fg(Color::Yellow),
        Verdict::Bad => cell.fg(Color::Red),
    }
}

fn dash() -> String {
    "-".to_owned()
}

/// host, state, sha, release, duration, message: the end of `push` and fleet `rollback`.
pub fn rollout_table(results: &[HostResult], colour: bool) -> Table {
    let mut table = new_table(["host", "state", "sha", "release", "duration", "message"], colour);
    for r in results {
        let host = if r.canary { format!("{} (canary)", r.host) } else { r.host.clone() };
        let message = if r.is_live() {
            r.message.as_deref().filter(|m| m.contains("already live")).unwrap_or("")
        } else {
            r.message.as_deref().unwrap_or("")
        };
        table.add_row(vec![
            Cell::new(host),
            state_cell(r.state),
            Cell::new(r.sha.as_deref().map_or_else(dash, |s| short_sha(s).to_owned())),
            Cell::new(r.release.clone().unwrap_or_else(dash)),
            Cell::new(r.duration_ms.map_or_else(dash, human_duration)),
            Cell::new(one_line(message, 60)),
        ]);
    }
    table
}

/// One host of `deployer status <env> --json`.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// The agent's URL.
    pub host: String,
    pub app: String,
    /// Whether the agent answered; `null` when it was not asked (this machine's own limits, such
    /// as its file descriptors, stopped the request).
    pub reachable: Option<bool>,
    /// Why not, or what it answered instead of the app.
    pub error: Option<String>,
    pub app_state: Option<AppState>,
    /// The commit of the current release.
    pub sha: Option<String>,
    pub release: Option<String>,
    /// Workers online.
    pub workers_up: u32,
    /// Workers configured.
    pub workers_total: u32,
    /// Workers that kept crashing and were left alone (`errored`).
    pub workers_errored: u32,
    pub last_deploy: Option<LastDeploy>,
}

/// The newest deploy of a host.
#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub id: u64,
    pub state: DeployState,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: Option<String>,
    pub queued_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Since it was queued, when the CLI asked.
    pub age_ms: u64,
}

/// host, app, state, sha, release, workers, last deploy.
pub fn status_table(hosts: &[HostStatus], now_ms: u64, colour: bool) -> Table {
    let mut table = new_table(["host", "app", "state", "sha", "release", "workers", "last deploy"], colour);
    for h in hosts {
        if h.reachable != Some(true) {
            let state = if h.reachable.is_none() { HostState::Error } else { HostState::Unreachable };
            table.add_row(vec![
                Cell::new(&h.host),
                Cell::new(&h.app),
                state_cell(state),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new(one_line(h.error.as_deref().unwrap_or(""), 50)),
            ]);
            continue;
        }
        let last = h.last_deploy.as_ref().map_or_else(dash, |d| {
            format!(
                "#{} {} {}",
                d.id,
                d.state,
                human_age(now_ms.saturating_sub(d.finished_at_ms.unwrap_or(d.queued_at_ms)))
            )
        });
        let workers = format!("{}/{}", h.workers_up, h.workers_total);
        let workers = if h.workers_up == h.workers_total {
            Cell::new(workers).fg(Color::Green)
        } else {
            Cell::new(workers).fg(Color::Yellow)
        };
        let state = match (h.app_state, &h.error) {
            (Some(AppState::Running), _) if h.workers_errored == 0 => Cell::new(AppState::Running).fg(Color::Green),
            (Some(state @ (AppState::Reloading | AppState::Starting)), _) => Cell::new(state).fg(Color::Yellow),
            (Some(state), _) => Cell::new(state).fg(Color::Red).add_attribute(Attribute::Bold),
            (None, error) => Cell::new(error.as_deref().unwrap_or("-")).fg(Color::Red).add_attribute(Attribute::Bold),
        };
        table.add_row(vec![
            Cell::new(&h.host),
            Cell::new(&h.app),
            state,
            Cell::new(h.sha.as_deref().map_or_else(dash, |s| short_sha(s).to_owned())),
            Cell::new(h.release.clone().unwrap_or_else(dash)),
            workers,
            Cell::new(last),
        ]);
    }
    table
}
