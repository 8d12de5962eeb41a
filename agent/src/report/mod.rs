//! Reports back over HTTP: every step of a deploy (and a worker that errored or was found
//! unhealthy) goes out as a JSON
//! event to each `report: { url }` and as a commit status to each `report: { github_status }`.
//!
//! [`Reporter`] is the [`ReportRules`] the [`Store`] calls inside each deploy transaction: it
//! turns the change into outbox rows (destination, idempotency key, body), so a crash can lose no
//! report. [`send::run`] delivers the rows, in order per destination, retrying with exponential
//! backoff until the receiver answers 2xx; delivery is at least once. The reporter owns its two
//! tasks (the sender and the worker watcher); [`Reporter::shutdown`] ends them, after the sender
//! has had a bounded grace to deliver what is due (the deploy states the agent's stop recorded).
//!
//! Must never: block or do I/O inside [`ReportRules::reports`]; store a secret in the outbox
//! (rows name the environment variable, the sender reads it at each attempt).

pub mod event;
pub mod send;
mod watch;

use crate::config::{AgentConfig, ReportConfig, RetryConfig};
use crate::store::{Change, DeployFacts, NewReport, ReportRules, Store, StoreError, now_ms};
use event::{DeployEventBody, EventKind, WorkerEventBody};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where an outbox row goes, stored with it as JSON (a later config change does not strand it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// A JSON event POSTed to `url`, signed with the secret in `secret_env` when there is one.
    Webhook { url: String, secret_env: Option<String> },
    /// A commit status POSTed to GitHub's `.../statuses/<sha>` with the token in `token_env`.
    GithubStatus { url: String, token_env: String },
}

/// The report config in force: replaced on SIGHUP.
#[derive(Debug, Default, Clone)]
struct Targets {
    host: String,
    agent: Vec<ReportConfig>,
    /// Per app: its own reports and its `repo` URL (for GitHub statuses without `repo`).
    apps: BTreeMap<String, (Vec<ReportConfig>, Option<String>)>,
    retry: RetryConfig,
}

/// Turns deploy changes into reports, and owns their delivery.
pub struct Reporter {
    targets: RwLock<Targets>,
    /// The sender and the worker watcher.
    tasks: TaskTracker,
    /// Cancelled at the agent's stop: the sender delivers what is due now, then ends.
    flush: CancellationToken,
    /// Cancelled when the flush's grace is over: an attempt in flight is dropped (sent again later).
    stop: CancellationToken,
}

impl Reporter {
    /// Install the rules in `store` and start delivering its outbox (also what a previous agent
    /// left undelivered) until [`Reporter::shutdown`].
    pub fn start(store: Arc<Store>, config: &AgentConfig) -> Arc<Reporter> {
        let reporter = Arc::new(Reporter {
            targets: RwLock::new(Targets::default()),
            tasks: TaskTracker::new(),
            flush: CancellationToken::new(),
            stop: CancellationToken::new(),
        });
        reporter.apply(config);
        store.set_report_rules(reporter.clone());
        // Under the state dir's lock no other agent sends: claims left by a killed one go. (An
        // upgrade's new agent keeps them: the old one may be sending those reports right now.)
        if !crate::handover::is_new_side()
            && let Err(e) = store.release_report_claims()
        {
            tracing::warn!(error = %e, "cannot release the report claims of a previous agent; they lapse within 30s");
        }
        let sender = send::run(store, reporter.clone(), reporter.flush.clone(), reporter.stop.clone());
        reporter.tasks.spawn(sender);
        reporter
    }

    /// Report the supervisor's `worker.errored` and `worker.unhealthy` events from now on (and
    /// the workers errored or unhealthy already).
    pub fn watch_workers(self: &Arc<Self>, supervisor: Arc<crate::supervisor::Supervisor>, store: Arc<Store>) {
        // Ends when the stop begins: worker changes from then on are the stop's own.
        let watch = watch::watch_workers(supervisor, store, self.clone(), self.flush.clone());
        self.tasks.spawn(watch);
    }

    /// The agent stops: deliver what is due now (within `grace`), then end every task. What is
    /// left stays in the outbox for the next agent.
    pub async fn shutdown(&self, grace: Duration) {
        self.flush.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "reports not delivered within the stop's grace; the next agent sends them"
            );
        }
        self.stop.cancel();
        self.tasks.wait().await;
    }

    /// Take a re-read config (SIGHUP). Rows already in the outbox keep their destination.
    pub fn apply(&self, config: &AgentConfig) {
        let apps = config
            .apps
            .iter()
            .map(|(name, a)| (name.clone(), (a.report.clone(), a.source.repo().map(String::from))))
            .collect();
        let host = config.host.clone().unwrap_or_else(hostname);
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) =
            Targets { host, agent: config.report.clone(), apps, retry: config.report_retry.clone() };
    }

    fn retry(&self) -> RetryConfig {
        self.targets.read().unwrap_or_else(|e| e.into_inner()).retry.clone()
    }

    /// Queue a worker event (`worker.errored`, `worker.unhealthy`) for `app`'s webhook destinations.
    #[allow(clippy::too_many_arguments)]
    pub fn worker_event(
        &self,
        store: &Store,
        kind: EventKind,
        app: &str,
        worker: u32,
        message: &str,
        release: Option<&str>,
        output_tail: &[String],
    ) -> Result<(), StoreError> {
        let t = self.targets.read().unwrap_or_else(|e| e.into_inner()).clone();
        let at_ms = now_ms();
        let body =
            WorkerEventBody { event: kind.name(), app, host: &t.host, worker, message, release, at_ms, output_tail };
        let Ok(body) = serde_json::to_string(&body) else { return Ok(()) };
        let key = format!("{}:{app}:worker-{worker}:{at_ms}:{}", t.host, kind.name());
        let reports: Vec<NewReport> = t
            .configs_for(app)
            .filter_map(|r| match r {
                ReportConfig::Webhook { url, secret_env } => Some(NewReport {
                    destination: destination_json(&Destination::Webhook {
                        url: url.clone(),
                        secret_env: secret_env.clone(),
                    }),
                    idempotency_key: key.clone(),
                    body: body.clone(),
                }),
                ReportConfig::GithubStatus(_) => None,
            })
            .collect();
        store.enqueue_reports(&reports)
    }
}

impl Targets {
    fn configs_for<'a>(&'a self, app: &str) -> impl Iterator<Item = &'a ReportConfig> {
        self.agent.iter().chain(self.apps.get(app).map(|(r, _)| r.as_slice()).unwrap_or_default())
    }
}

impl ReportRules for Reporter {
    fn reports(&self, d: &DeployFacts, change: Change<'_>) -> Vec<NewReport> {
        let t = self.targets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let key_base = format!("{}:{}:deploy-{}:{}", t.host, d.app, d.id, d.queued_at_ms);
        let event = EventKind::of(d, change);
        let event_body = event.and_then(|kind| serde_json::to_string(&DeployEventBody::new(kind, d, &t.host)).ok());
        let status = event::github_state(d, change);
        for r in t.configs_for(&d.app) {
            match r {
                ReportConfig::Webhook { url, secret_env } => {
                    let (Some(kind), Some(body)) = (event, &event_body) else { continue };
                    out.push(NewReport {
                        destination: destination_json(&Destination::Webhook {
                            url: url.clone(),
                            secret_env: secret_env.clone(),
                        }),
                        idempotency_key: format!("{key_base}:{}", kind.name()),
                        body: body.clone(),
                    });
                }
                ReportConfig::GithubStatus(gh) => {
                    let (Some((state, description)), Some(sha)) = (&status, &d.sha) else { continue };
                    let app_repo = t.apps.get(&d.app).and_then(|(_, url)| url.as_deref());
                    let Some(repo) =
                        gh.repo.clone().or_else(|| app_repo.and_then(crate::config::report::github_repo_of))
                    else {
                        tracing::warn!(
                            app = %d.app,
                            "a `github_status` report has no `repo` and the app's repo is not on github.com: \
                             status not sent"
                        );
                        continue;
                    };
                    let url = format!("{}/repos/{repo}/statuses/{sha}", gh.api_url.trim_end_matches('/'));
                    let context = format!("{}/{}", gh.context, t.host);
                    let body = serde_json::json!({ "state": state, "description": description, "context": context });
                    out.push(NewReport {
                        destination: destination_json(&Destination::GithubStatus {
                            url,
                            token_env: gh.token_env.clone(),
                        }),
                        idempotency_key: format!("{key_base}:status-{state}"),
                        body: body.to_string(),
                    });
                }
            }
        }
        out
    }
}

fn destination_json(d: &Destination) -> String {
    serde_json::to_string(d).unwrap_or_default()
}

/// The machine's name, for reports from an agent without `host:`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: &str, sha: Option<&str>) -> DeployFacts {
        DeployFacts {
            id: 7,
            app: "web".into(),
            git_ref: "main".into(),
            sha: sha.map(String::from),
            trigger: deployer_wire::Trigger::Webhook,
            who: Some("ana".into()),
            token: None,
            state: state.parse().expect("a deploy state"),
            release: None,
            queued_at_ms: 1,
            finished_at_ms: None,
            message: None,
            output_tail: vec!["npm ERR!".into()],
            events: Vec::new(),
        }
    }

    fn reporter(reports: Vec<ReportConfig>) -> Reporter {
        let r = Reporter {
            targets: RwLock::new(Targets::default()),
            tasks: TaskTracker::new(),
            flush: CancellationToken::new(),
            stop: CancellationToken::new(),
        };
        r.targets.write().unwrap().host = "h1".into();
        r.targets.write().unwrap().apps.insert("web".into(), (reports, Some("https://github.com/acme/web.git".into())));
        r
    }

    #[test]
    fn deploy_steps_become_events_with_stable_keys() {
        let r = reporter(vec![ReportConfig::Webhook { url: "http://r/x".into(), secret_env: None }]);
        let queued = r.reports(&facts("queued", None), Change::Queued);
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].idempotency_key, "h1:web:deploy-7:1:deploy.queued");
        let started = r.reports(&facts("fetching", None), Change::Entered { from: "queued" });
        assert!(started[0].body.contains("\"event\":\"deploy.started\""));
        assert!(r.reports(&facts("building", None), Change::Entered { from: "fetching" }).is_empty());
        assert!(r.reports(&facts("building", Some("abc")), Change::Resolved).is_empty());
        let failed = r.reports(&facts("failed", Some("abc")), Change::Entered { from: "building" });
        let body: serde_json::Value = serde_json::from_str(&failed[0].body).unwrap();
        assert_eq!(body["event"], "deploy.failed");
        assert_eq!(body["output_tail"][0], "npm ERR!");
        assert_eq!(body["who"], "ana");
    }

    #[test]
    fn a_deploy_in_its_bake_window_is_reported_once_the_window_decides() {
        let r = reporter(vec![ReportConfig::Webhook { url: "http://r/x".into(), secret_env: None }]);
        let baking = r.reports(&facts("baking", Some("abc")), Change::Entered { from: "rolling" });
        assert!(baking.is_empty(), "baking is not live yet: {baking:?}");
        for (state, event) in [("live", "deploy.live"), ("rolled_back", "deploy.rolled_back")] {
            let reports = r.reports(&facts(state, Some("abc")), Change::Entered { from: "baking" });
            assert!(reports[0].body.contains(&format!("\"event\":\"{event}\"")), "{reports:?}");
        }
    }

    #[test]
    fn github_statuses_need_a_sha() {
        let gh = crate::config::report::GithubStatusConfig {
            token_env: "T".into(),
            api_url: "http://gh/".into(),
            repo: None,
            context: "deployer".into(),
        };
        let r = reporter(vec![ReportConfig::GithubStatus(gh)]);
        assert!(r.reports(&facts("queued", None), Change::Queued).is_empty());
        let pending = r.reports(&facts("fetching", Some("abcdef1234")), Change::Resolved);
        assert_eq!(pending.len(), 1);
        let dest: Destination = serde_json::from_str(&pending[0].destination).unwrap();
        assert_eq!(
            dest,
            Destination::GithubStatus {
                url: "http://gh/repos/acme/web/statuses/abcdef1234".into(),
                token_env: "T".into()
            }
        );
        assert!(pending[0].body.contains("\"pending\""));
        let live = r.reports(&facts("live", Some("abcdef1234")), Change::Entered { from: "rolling" });
        assert!(live[0].body.contains("\"success\""));
    }
}
