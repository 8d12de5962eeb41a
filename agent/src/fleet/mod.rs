//! Fleet mode: this agent joins its environment on the engine (NATS JetStream, `fleet:` in the
//! config). It says it is there ([`presence`]), watches the desired state of each of its apps
//! and takes part in the rollout with the other hosts ([`rollout`]), deploying through the same
//! [`Deployer::request`] as the API.
//!
//! Costs nothing without `fleet:` (no connection, no task). With it, one task owns everything:
//! it connects (retrying while the engine is down: the apps keep serving meanwhile), then runs
//! presence and one rollout loop per app until the agent stops.

mod node;
mod poller;
mod presence;
mod rollout;
mod simulate;

pub use simulate::{Simulation, simulate};

use crate::config::FleetConfig;
use crate::config::fleet::FleetCredentials;
use crate::deploy::Deployer;
use crate::supervisor::Supervisor;
use deployer_fleet::proto::FleetEvent;
use deployer_fleet::{Credentials, Engine, EngineError, EngineOptions};
use node::{AgentNode, Node};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the fleet task looks for apps a SIGHUP added.
const APPS_EVERY: Duration = Duration::from_secs(5);
/// The longest wait between two connection attempts while the engine is down.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the fleet's loops share.
pub(crate) struct Member {
    pub engine: Engine,
    pub host: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The host's apps and deploys.
    pub node: Arc<dyn Node>,
    /// The last fleet event of this host (presence shows it).
    pub last: Mutex<Option<FleetEvent>>,
    /// This run of the agent, in its presence.
    pub instance: String,
    pub stop: CancellationToken,
}

/// Start the fleet task when `fleet:` is configured; it ends when `stop` is cancelled.
pub(crate) fn start(
    config: Option<&FleetConfig>,
    agent_host: Option<&str>,
    deployer: Arc<Deployer>,
    supervisor: Arc<Supervisor>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let Some(config) = config else { return };
    let host = config.host_name(agent_host);
    let options = match options(config, &host) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "fleet: cannot read the engine's credentials; this agent stays out of the fleet");
            return;
        }
    };
    let (env, labels) = (config.env.clone(), config.labels.clone());
    let node: Arc<dyn Node> = Arc::new(AgentNode { deployer, supervisor });
    tasks.spawn(join(options, env, host, labels, node, stop));
}

/// Connect (retrying while the engine is down), then take part in the environment until `stop`:
/// presence, and per app a rollout loop (and with `poll`/`cron`, a poller).
async fn join(
    options: EngineOptions,
    env: String,
    host: String,
    labels: std::collections::BTreeMap<String, String>,
    node: Arc<dyn Node>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    let engine = loop {
        let attempt = tokio::select! {
            r = Engine::connect(&options, &env) => r,
            () = stop.cancelled() => return,
        };
        match attempt {
            Ok(engine) => break engine,
            Err(e) => {
                let hint = e.hint().map(|h| format!("; hint: {h}")).unwrap_or_default();
                let level_is_error = matches!(e, EngineError::TooOld { .. } | EngineError::NoJetStream { .. });
                if level_is_error {
                    tracing::error!(env, error = %e, "fleet: engine refused, the apps keep serving{hint}");
                } else {
                    tracing::warn!(env, error = %e, retry_in = ?backoff, "fleet: engine down, the apps keep serving");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    let instance = deployer_fleet::proto::new_push_id();
    let member = Arc::new(Member { engine, host, labels, node, last: Mutex::new(None), instance, stop: stop.clone() });
    // Two agents under one name would share its `done` keys: the second would never deploy, and
    // `deployer push` would count one host. The later one stays out until the name is free.
    let mut refused = false;
    loop {
        match presence::other_holder(&member).await {
            Ok(None) => break,
            Ok(Some(other)) if !refused => {
                refused = true;
                tracing::error!(
                    env = %member.engine.env,
                    host = %member.host,
                    other = %other.instance,
                    "fleet: another agent is host `{}` of `{}`; this one stays out of the fleet until that \
                     one leaves (give each agent its own `fleet.host`); the apps keep serving",
                    member.host,
                    member.engine.env
                );
            }
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(error = %e, "fleet: cannot read this host's presence; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(deployer_fleet::proto::PRESENCE_TTL / 3) => {}
            () = stop.cancelled() => return,
        }
    }
    tracing::info!(env = %member.engine.env, host = %member.host, "fleet: joined the environment");
    let loops = TaskTracker::new();
    loops.spawn(presence::run(member.clone()));
    // Apps a SIGHUP adds join too; the rollout loop of an app that went away ends by itself.
    let mut running = std::collections::HashSet::new();
    loop {
        for (app, schedule) in member.node.git_apps() {
            if running.insert(app.clone()) {
                loops.spawn(rollout::run(member.clone(), app.clone()));
                if let Some(schedule) = schedule {
                    loops.spawn(poller::run(member.clone(), app, schedule));
                }
            }
        }
        running.retain(|name| member.node.has_app(name));
        tokio::select! {
            () = tokio::time::sleep(APPS_EVERY) => {}
            () = member.stop.cancelled() => break,
        }
    }
    loops.close();
    loops.wait().await;
    presence::leave(&member).await;
}

fn options(config: &FleetConfig, host: &str) -> Result<EngineOptions, String> {
    let credentials = match &config.credentials {
        None => None,
        Some(FleetCredentials::Env(var)) => {
            Some(Credentials::Text(std::env::var(var).map_err(|_| format!("`{var}` is not set"))?))
        }
        Some(FleetCredentials::File(path)) => Some(Credentials::File(path.clone())),
    };
    Ok(EngineOptions {
        urls: config.nats.clone(),
        credentials,
        ca_cert: config.tls.as_ref().map(|t| t.ca_cert.clone()),
        name: format!("deployer-agent@{host}"),
    })
}

impl Member {
    /// Publish one step of a push to the environment's stream (and remember it for presence).
    pub(crate) async fn publish(&self, event: FleetEvent) {
        let is_final = event.is_final();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(event.clone());
        if is_final {
            // Presence first: whoever sees the push end (`deployer push` exits) then reads a
            // `status` that already shows it.
            if let Err(e) = presence::renew(self).await {
                tracing::warn!(error = %e, "fleet: cannot renew presence");
            }
        }
        let subject = deployer_fleet::proto::events_subject(&self.engine.env, &self.host);
        match serde_json::to_vec(&event) {
            Ok(body) => match self.engine.js.publish(subject, body.into()).await {
                Ok(ack) => {
                    if let Err(e) = ack.await {
                        tracing::warn!(error = %e, state = event.state, "fleet: an event was not stored");
                    }
                }
                Err(e) => tracing::warn!(error = %e, state = event.state, "fleet: cannot publish an event"),
            },
            Err(e) => tracing::warn!(error = %e, "fleet: cannot encode an event"),
        }
    }
}
