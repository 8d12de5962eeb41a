//! Moving the hosts of an environment to a commit (push) or back to a release (rollback): the
//! canaries first, then the others `max_parallel` at a time, each followed over its deploy event
//! stream until it is final. A failure stops new hosts from starting (`halt_on_failure`) and can
//! put the hosts already moved back (`rollback_on_failure`).
//!
//! A host that cannot be reached, or whose stream goes silent, is a failed host with the reason;
//! nothing here waits without a deadline.

use deployer_wire::DeployState;
use std::time::{Duration, Instant};

use deployer_wire::{Deploy, DeployAccepted, DeployRequest, DeployStreamItem, RollbackRequest};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use super::file::{Host, Rollout};
use super::progress::{Board, HostLine};
use crate::client::{Client, ClientError};
use crate::output::{human_duration, short_sha};

/// How long a host's stream may fail (the agent restarting) before the host counts as failed.
const RECONNECT_GRACE: Duration = Duration::from_secs(30);

/// What each host is asked to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Deploy this commit.
    Deploy { sha: String, who: Option<String> },
    /// Put a release back: by name, number or sha prefix; the previous one when `None`.
    Rollback { to: Option<String> },
}

/// How a host ended: its deploy's final state, or what kept it from having one. Sent in `--json`
/// by its name, beside the deploy states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// The host's deploy ended in this state (`failed` too when its stream broke for good).
    Deploy(DeployState),
    /// Not started, after a failure (`halt_on_failure`).
    Skipped,
    /// No connection to its agent.
    Unreachable,
    /// Its agent refused the request.
    Error,
    /// Went live, then was put back by `rollback_on_failure`.
    Reverted,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Deploy(s) => s.as_str(),
            HostState::Skipped => "skipped",
            HostState::Unreachable => "unreachable",
            HostState::Error => "error",
            HostState::Reverted => "reverted",
        }
    }

    pub fn is_live(self) -> bool {
        self == HostState::Deploy(DeployState::Live)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for HostState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How one host ended: one row of the summary, one element of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// The agent's URL.
    pub host: String,
    pub app: String,
    /// The deploy's final state (`live`, `failed`, `rolled_back`...), or `unreachable`, `error`
    /// (the agent refused the request), `skipped` (not started after a failure), `reverted`
    /// (went live, then put back by `rollback_on_failure`).
    pub state: HostState,
    /// The commit the host runs or was asked to run.
    pub sha: Option<String>,
    pub release: Option<String>,
    pub deploy_id: Option<u64>,
    /// From the request to the end of the host's deploy, as the CLI measured it.
    pub duration_ms: Option<u64>,
    pub canary: bool,
    pub message: Option<String>,
    /// The release live before this push (what `rollback_on_failure` returns to).
    pub previous_release: Option<String>,
    /// Whether this run changed the host's release.
    #[serde(skip)]
    pub moved: bool,
}

impl HostResult {
    fn new(host: &Host, app: &str, canary: bool) -> HostResult {
        HostResult {
            host: crate::client::agent_label(&host.0),
            app: app.to_owned(),
            state: HostState::Skipped,
            sha: None,
            release: None,
            deploy_id: None,
            duration_ms: None,
            canary,
            message: None,
            previous_release: None,
            moved: false,
        }
    }

    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }

    fn failed(mut self, state: HostState, message: String) -> HostResult {
        self.state = state;
        self.message = Some(message);
        self
    }

    /// `1a2b3c4 in 3.2s`, or the reason it failed.
    fn words(&self) -> String {
        let mut words = Vec::new();
        if let Some(sha) = &self.sha {
            words.push(short_sha(sha).to_owned());
        }
        if let Some(ms) = self.duration_ms {
            words.push(format!("in {}", human_duration(ms)));
        }
        if let Some(m) = self.message.as_ref().filter(|_| !self.is_live()) {
            words.push(format!("— {}", crate::output::one_line(m, 120)));
        }
        words.join(" ")
    }
}

/// The rollout of one action over hosts.
pub struct Plan<'a> {
    pub hosts: &'a [(Host, Client)],
    pub app: &'a str,
    pub action: Action,
    pub rollout: Rollout,
}

impl Plan<'_> {
    /// Runs the rollout to its end; answers one result per host, in the file's order.
    pub async fn run(&self, board: &Board) -> Vec<HostResult> {
        let lines: Vec<HostLine> = self.hosts.iter().map(|(h, _)| board.host(&h.label())).collect();
        let mut results: Vec<Option<HostResult>> = vec![None; self.hosts.len()];
        let canaries = self.rollout.canary.min(self.hosts.len());
        let parallel = self.rollout.max_parallel.get();
        let mut halted: Option<String> = None;

        // The canaries, together, and nothing else until they are all done.
        let mut running: FuturesUnordered<_> = (0..canaries).map(|i| self.host(i, true, &lines[i])).collect();
        while let Some((i, r)) = running.next().await {
            if !r.is_live() && halted.is_none() {
                halted = Some(format!("canary {} did not go live", r.host));
            }
            results[i] = Some(r);
        }
        if let Some(why) = &halted {
            board.note(&format!("halting: {why}"));
        }

        let mut next = canaries;
        let mut running = FuturesUnordered::new();
        loop {
            while halted.is_none() && next < self.hosts.len() && running.len() < parallel {
                running.push(self.host(next, false, &lines[next]));
                next += 1;
            }
            let Some((i, r)) = running.next().await else { break };
            if !r.is_live() && self.rollout.halt_on_failure && halted.is_none() {
                let why = format!("{} is {}", r.host, r.state);
                board.note(&format!("halting: {why}; hosts not started yet stay as they are"));
                halted = Some(why);
            }
            results[i] = Some(r);
        }

        let mut results: Vec<HostResult> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    let (host, _) = &self.hosts[i];
                    let r = HostResult::new(host, self.app, i < canaries);
                    let why = halted.clone().unwrap_or_else(|| "not started".into());
                    lines[i].finish(HostState::Skipped, &format!("— not started: {why}"));
                    r.failed(HostState::Skipped, format!("not started: {why}"))
                })
            })
            .collect();

        if self.rollout.rollback_on_failure && results.iter().any(|r| !r.is_live()) {
            self.revert(&mut results, board).await;
        }
        results
    }

    /// Puts the hosts that this run moved back on the release they ran before.
    async fn revert(&self, results: &mut [HostResult], board: &Board) {
        let moved: Vec<usize> = (0..results.len()).filter(|&i| results[i].moved && results[i].is_live()).collect();
        if moved.is_empty() {
            return;
        }
        board.note(&format!("rolling back {} host(s) already moved (rollback_on_failure)", moved.len()));
        let lines: Vec<HostLine> = moved.iter().map(|&i| board.host(&self.hosts[i].0.label())).collect();
        let parallel = self.rollout.max_parallel.get();
        let mut pending = moved.iter().copied().zip(lines.iter()).peekable();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < parallel {
                let Some((i, line)) = pending.next() else { break };
                let to = results[i].previous_release.clone();
                let back = Plan {
                    hosts: self.hosts,
                    app: self.app,
                    action: Action::Rollback { to },
                    rollout: self.rollout.clone(),
                };
                running.push(async move { (i, back.one(i, false, line).await) });
            }
            let Some((i, back)) = running.next().await else { break };
            let r = &mut results[i];
            if back.is_live() {
                r.state = HostState::Reverted;
                r.message = Some(format!(
                    "went live, then was put back on {} (rollback_on_failure)",
                    back.release.as_deref().unwrap_or("its previous release")
                ));
            } else {
                r.message = Some(format!("went live; putting it back failed: {}", back.message.unwrap_or_default()));
            }
        }
    }

    async fn host<'a>(&'a self, i: usize, canary: bool, line: &'a HostLine) -> (usize, HostResult) {
        (i, self.one(i, canary, line).await)
    }

    /// One host, start to end.
    async fn one(&self, i: usize, canary: bool, line: &HostLine) -> HostResult {
        let (host, client) = &self.hosts[i];
        let mut result = HostResult::new(host, self.app, canary);
        let started = Instant::now();
        line.start("connecting");
        let r = self.drive(client, &mut result, line).await;
        result.duration_ms = Some(started.elapsed().as_millis() as u64);
        let result = match r {
            Ok(()) => result,
            Err(e) => {
                let state = match e {
                    ClientError::Unreachable { .. } => HostState::Unreachable,
                    ClientError::Api { .. } | ClientError::OutOfFds { .. } => HostState::Error,
                    _ => HostState::Deploy(DeployState::Failed),
                };
                let message = reason(&e);
                result.failed(state, message)
            }
        };
        line.finish(result.state, &result.words());
        result
    }

    async fn drive(&self, client: &Client, result: &mut HostResult, line: &HostLine) -> Result<(), ClientError> {
        let accepted: DeployAccepted = match &self.action {
            Action::Deploy { sha, who } => {
                result.sha = Some(sha.clone());
                // What to come back to if the environment must be rolled back.
                let releases = client.releases(self.app).await?;
                result.previous_release = releases.iter().find(|r| r.current).map(|r| r.name.clone());
                line.start(&format!("deploying {}", short_sha(sha)));
                client
                    .deploy(self.app, &DeployRequest { git_ref: Some(sha.clone()), who: who.clone(), env: None })
                    .await?
            }
            Action::Rollback { to } => {
                line.start("rolling back");
                client.rollback(self.app, &RollbackRequest { release: to.clone() }).await?
            }
        };
        result.deploy_id = Some(accepted.id);
        let deploy = follow(client, accepted.id, line).await?;
        result.state = HostState::Deploy(deploy.state);
        result.release = deploy.release.clone();
        if deploy.sha.is_some() {
            result.sha = deploy.sha.clone();
        }
        result.message = deploy.message.clone();
        // A no-op (`already live`) is live without moving anything.
        let noop = accepted.state == DeployState::Live;
        result.moved = deploy.state == DeployState::Live && !noop && result.previous_release != deploy.release;
        Ok(())
    }
}

/// Follows deploy `id` over its event stream to its end; re-opens the stream when it breaks, for
/// up to [`RECONNECT_GRACE`], skipping the events already shown.
pub async fn follow(client: &Client, id: u64, line: &HostLine) -> Result<Deploy, ClientError> {
    let mut seen = 0;
    let mut broken_since: Option<Instant> = None;
    loop {
        let outcome = async {
            let mut stream = client.deploy_events(id).await?;
            broken_since = None;
            while let Some(item) = stream.next().await? {
                match item {
                    DeployStreamItem::Event(e) if e.seq > seen => {
                        seen = e.seq;
                        line.event(&e);
                    }
                    DeployStreamItem::Event(_) => {}
                    DeployStreamItem::End(d) => return Ok(Some(*d)),
                }
            }
            Ok(None)
        }
        .await;
        match outcome {
            Ok(Some(deploy)) => return Ok(deploy),
            Err(e @ ClientError::Api { .. }) => return Err(e),
            // Ended without an end (the agent stopping), or broke: ask again for a while.
            other => {
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECONNECT_GRACE {
                    return Err(other
                        .err()
                        .unwrap_or_else(|| ClientError::TimedOut { agent: client.agent(), after: RECONNECT_GRACE }));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The error and its innermost cause, on one line: `cannot reach the agent at `…`: Connection refused`.
pub fn reason(e: &ClientError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    // Printed on stderr as it is, with --json too.
    crate::output::untrusted::text(&text).into_owned()
}
