//! What the fleet's loops ask of the host they run on: its apps, what each runs, a deploy. The
//! agent answers through its [`Deployer`] and [`Supervisor`] ([`AgentNode`]); the fleet
//! benchmark's simulated hosts answer from memory ([`SimNode`], `deployer-agent simulate-fleet`),
//! so the rollout code measured at 1,000 hosts is the agent's own.

use crate::config::Schedule;
use crate::deploy::{Deployer, Requester, Target};
use crate::supervisor::Supervisor;
use deployer_fleet::proto::AppPresence;
use deployer_wire::{DeployState, DeployStreamItem, Trigger};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One step of a deploy, as the rollout publishes it; `End` is the last.
pub(crate) enum Progress {
    Step { state: String, message: String, deploy_id: Option<u64> },
    End { ok: bool, message: String },
}

pub(crate) trait Node: Send + Sync + 'static {
    /// The apps deployed from git, with their pull schedule (`poll`/`cron`).
    fn git_apps(&self) -> Vec<(String, Option<Schedule>)>;
    /// Whether `app` is (still) configured.
    fn has_app(&self, app: &str) -> bool;
    /// The commit `app` runs now.
    fn live_sha(&self, app: &str) -> Option<String>;
    /// Every app, for presence.
    fn presence(&self) -> Vec<AppPresence>;
    /// Deploy `target`; its steps, ending with [`Progress::End`] (or ending early: stopped).
    fn deploy(&self, app: &str, target: Target, who: &str, stop: CancellationToken) -> BoxStream<'static, Progress>;
    /// The head of `app`'s branch on its remote.
    fn remote_head<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// `app`'s branch.
    fn branch(&self, app: &str) -> Option<String>;
}

/// This agent: deploys through [`Deployer::request`], the API's entry point.
pub(crate) struct AgentNode {
    pub deployer: Arc<Deployer>,
    pub supervisor: Arc<Supervisor>,
}

impl Node for AgentNode {
    fn git_apps(&self) -> Vec<(String, Option<Schedule>)> {
        self.supervisor
            .list()
            .iter()
            .filter(|a| a.config().source.git().is_some())
            .map(|a| (a.name.clone(), a.config().schedule))
            .collect()
    }

    fn has_app(&self, app: &str) -> bool {
        self.supervisor.app(app).is_ok()
    }

    fn live_sha(&self, app: &str) -> Option<String> {
        self.deployer.releases(app).ok()?.into_iter().find(|r| r.current).map(|r| r.sha)
    }

    fn presence(&self) -> Vec<AppPresence> {
        self.supervisor
            .list()
            .iter()
            .map(|app| {
                let status = app.status();
                AppPresence {
                    app: app.name.clone(),
                    sha: self.live_sha(&app.name),
                    release: status.release,
                    state: status.state.to_string(),
                    // Only an app deployed from git has a rollout loop here.
                    rolls: app.config().source.git().is_some(),
                }
            })
            .collect()
    }

    fn deploy(&self, app: &str, target: Target, who: &str, stop: CancellationToken) -> BoxStream<'static, Progress> {
        let end = |ok: bool, message: String| stream::iter([Progress::End { ok, message }]).boxed();
        let accepted = match self.deployer.request(app, target, Trigger::Fleet, &Requester::named(Some(who))) {
            Ok(a) => a,
            Err(e) => return end(false, e.to_string()),
        };
        if accepted.state == DeployState::Live {
            return end(true, accepted.message.unwrap_or_else(|| "live".into()));
        }
        let id = accepted.id;
        match self.deployer.follow(id, stop) {
            Ok(follow) => follow
                .map(move |item| match item {
                    DeployStreamItem::Event(e) => {
                        Progress::Step { state: e.state.as_str().to_string(), message: e.message, deploy_id: Some(id) }
                    }
                    DeployStreamItem::End(d) => Progress::End {
                        ok: d.state == DeployState::Live,
                        message: d.message.clone().unwrap_or_else(|| d.state.to_string()),
                    },
                })
                .boxed(),
            Err(e) => end(false, e.to_string()),
        }
    }

    fn remote_head<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.deployer.remote_head(app).await.map_err(|e| e.to_string()) })
    }

    fn branch(&self, app: &str) -> Option<String> {
        self.supervisor.app(app).ok().and_then(|a| a.config().source.git().map(|g| g.branch.clone()))
    }
}

/// A simulated host for the benchmark: one app, a deploy that takes `deploy_time`, no workers.
pub(crate) struct SimNode {
    pub app: String,
    pub live: Arc<Mutex<Option<String>>>,
    pub deploy_time: Duration,
}

impl Node for SimNode {
    fn git_apps(&self) -> Vec<(String, Option<Schedule>)> {
        vec![(self.app.clone(), None)]
    }

    fn has_app(&self, app: &str) -> bool {
        app == self.app
    }

    fn live_sha(&self, _: &str) -> Option<String> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn presence(&self) -> Vec<AppPresence> {
        vec![AppPresence {
            app: self.app.clone(),
            sha: self.live_sha(&self.app),
            release: None,
            state: "running".into(),
            rolls: true,
        }]
    }

    fn deploy(&self, _: &str, target: Target, _: &str, _: CancellationToken) -> BoxStream<'static, Progress> {
        let sha = match target {
            Target::Ref(sha) => sha,
            Target::Rollback(to) => to.unwrap_or_default(),
        };
        let (live, took) = (self.live.clone(), self.deploy_time);
        let start = Progress::Step { state: "rolling".into(), message: "simulated".into(), deploy_id: None };
        stream::iter([start])
            .chain(stream::once(async move {
                tokio::time::sleep(took).await;
                *live.lock().unwrap_or_else(|e| e.into_inner()) = Some(sha);
                Progress::End { ok: true, message: "live (simulated)".into() }
            }))
            .boxed()
    }

    fn remote_head<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err("a simulated host has no remote".to_string()) })
    }

    fn branch(&self, _: &str) -> Option<String> {
        None
    }
}
