//! Git-driven deploys: the queue per app, and the [`pipeline`] that takes one deploy from a ref to
//! live workers.
//!
//! One deploy runs per app at a time. Requests that arrive meanwhile coalesce: only the newest
//! queued one survives, the others become `superseded`. Every trigger (API, CLI, webhook, poll)
//! comes in through [`Deployer::request`].
//!
//! The deployer owns its tasks (one queue runner per app, the pull loops, the bake windows) in
//! one [`TaskTracker`]. The agent's stop first closes the intake ([`Deployer::close`]: pull loops
//! end, requests are refused), then [`Deployer::shutdown`] ends the running deploys and waits
//! until each has recorded its final state (`interrupted`: the agent stopped during it).

mod follow;
mod install;
mod install_cache;
mod pipeline;
pub mod poll;
mod push;
pub mod release;
mod retry;
mod settle;

use crate::config::GitSource;
use crate::secrets::Secrets;
use crate::source::{self, BadRef};
pub use crate::store::Requester;
use crate::store::{DeployId, Store, StoreError};
use crate::supervisor::{App, Supervisor, SupervisorError};
pub use deployer_wire::DeployState;
use deployer_wire::{Deploy, DeployAccepted, Release, Trigger};
use release::AppDir;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use push::{PushDelivery, Pushed};

/// What a deploy is asked to put live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A branch of the app's repo, or a commit sha.
    Ref(String),
    /// A release already on disk: the previous one, or one named by name, sequence or sha prefix.
    Rollback(Option<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    App(#[from] SupervisorError),
    #[error("app `{0}` has no `repo`: it runs its `cwd` as it is and cannot be deployed")]
    NotFromGit(String),
    #[error(transparent)]
    BadRef(#[from] BadRef),
    #[error("{0}")]
    NoSuchRelease(String),
    #[error("no deploy #{0}")]
    NotFound(DeployId),
    #[error("no env set `{name}` in the `env_sets` of app `{app}`")]
    UnknownEnvSet { app: String, name: String },
    #[error("deploy #{id} is {state}: only a queued, fetching or building deploy can be cancelled")]
    CannotCancel { id: DeployId, state: DeployState },
    #[error(transparent)]
    State(#[from] StoreError),
    #[error("the agent is stopping: no new deploy is started")]
    Stopping,
}

/// Deploys of every app of this agent.
pub struct Deployer {
    store: Arc<Store>,
    supervisor: Arc<Supervisor>,
    /// Builds the install steps' environment and masks their output.
    secrets: Secrets,
    queues: Mutex<HashMap<String, Arc<AppQueue>>>,
    /// The pull loop of each app with `poll` or `cron`: its schedule and what stops it.
    pullers: Mutex<HashMap<String, (String, CancellationToken)>>,
    /// Cancelled by [`Deployer::shutdown`]: running deploys end, queue runners and bakes return.
    shutdown: CancellationToken,
    /// Set by [`Deployer::close`]: no new deploy is queued, no pull loop starts.
    closed: AtomicBool,
    /// An upgrade is handing over: no deploy is taken (the new agent takes them), but the
    /// running ones end as they would (not `interrupted`, `on_failure` runs).
    paused: AtomicBool,
    /// The queue runners, the pull loops, the bake windows and the writer of final states the
    /// database refused ([`Deployer::settle_later`]).
    tasks: TaskTracker,
    /// Whether that writer runs.
    settling: AtomicBool,
    /// Fleet mode: one agent of the environment pulls for all (`fleet/poller.rs`); this one's
    /// own pull loops do not run.
    pulls_elsewhere: AtomicBool,
}

#[derive(Default)]
struct AppQueue {
    /// The queued and the running deploy under one lock: the hand-off from one to the other, a
    /// cancel and the step past which a deploy can no longer be cancelled are each one step.
    slots: Mutex<Slots>,
    wake: Notify,
}

#[derive(Default)]
struct Slots {
    pending: Option<Job>,
    running: Option<Running>,
}

impl AppQueue {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the running deploy `id` past the last cancellable state: `enter` (which records
    /// the new state) runs under the lock a cancel takes to read the state, unless a cancel came
    /// first (`false`): a cancel that was answered "ok" is kept, and one that comes after is
    /// refused because it reads the recorded state.
    fn past_cancelling(&self, id: DeployId, enter: impl FnOnce()) -> bool {
        let slots = self.slots();
        if slots.running.as_ref().is_some_and(|r| r.id == id && r.cancel.is_cancelled()) {
            return false;
        }
        enter();
        true
    }
}

#[derive(Debug)]
struct Job {
    id: DeployId,
    target: Target,
    trigger: Trigger,
    /// `deploy --env NAME`: the env set the new release runs with (and keeps).
    env_set: Option<String>,
}

/// The running deploy. Its state is in the store only ([`Store::deploy`]).
struct Running {
    id: DeployId,
    cancel: CancellationToken,
}

impl Deployer {
    /// Repair what a crash left (unfinished deploys become `interrupted`, half-made release
    /// directories are removed), then deploy the branch of every git app that has no release yet.
    /// `pulls_elsewhere` (fleet mode): no pull loop of its own, the environment's poller pulls.
    pub fn start(
        store: Arc<Store>,
        supervisor: Arc<Supervisor>,
        secrets: Secrets,
        pulls_elsewhere: bool,
    ) -> Result<Arc<Deployer>, DeployError> {
        let interrupted = store.interrupt_unfinished()?;
        if !interrupted.is_empty() {
            tracing::warn!(?interrupted, "deploys interrupted by the previous agent's stop");
        }
        let d = Arc::new(Deployer {
            store,
            supervisor,
            secrets,
            queues: Mutex::new(HashMap::new()),
            pullers: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            settling: AtomicBool::new(false),
            pulls_elsewhere: AtomicBool::new(pulls_elsewhere),
        });
        for app in d.supervisor.list() {
            let Some(git) = app.config().source.git().cloned() else { continue };
            let dir = AppDir::new(git.dir);
            d.remove_incomplete(&app.name, &dir, app.release().map(|r| r.name));
        }
        d.resume_bakes();
        d.apply_config(Trigger::Startup)?;
        Ok(d)
    }

    /// Watch the rest of each bake window a previous agent left (it stopped, or handed over in
    /// an upgrade, within it); a window that ended meanwhile, or whose release no longer serves,
    /// ends its deploy `live`, saying so.
    fn resume_bakes(self: &Arc<Self>) {
        let bakes = match self.store.unfinished_bakes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the bake windows a previous agent left; they stay `baking`");
                return;
            }
        };
        for (id, row) in bakes {
            let app = row.as_ref().and_then(|r| self.supervisor.app(&r.app).ok());
            let serving =
                app.as_ref().zip(row.as_ref()).is_some_and(|(a, r)| a.release().is_some_and(|l| l.name == r.release));
            match (row, app) {
                (Some(row), Some(app)) if serving && !crate::store::left_of(row.until_ms).is_zero() => {
                    let left = crate::store::left_of(row.until_ms);
                    tracing::info!(id, app = %app.name, release = %row.release, left_ms = left.as_millis() as u64, "watching the rest of a bake window a previous agent began");
                    self.tasks.spawn(pipeline::Bake::resume(self, app, row).watch());
                }
                (Some(row), _) if serving => {
                    let why = format!("{}: its bake window ended while no agent watched it", row.live);
                    pipeline::finish(self, id, DeployState::Live, &why);
                }
                (Some(row), _) => {
                    let why =
                        format!("{}: another release serves since the agent stopped within its bake window", row.live);
                    pipeline::finish(self, id, DeployState::Live, &why);
                }
                (None, _) => {
                    let why = "live: the agent stopped during the bake window, which was not finished";
                    pipeline::finish(self, id, DeployState::Live, why);
                }
            }
        }
    }

    /// Make the deploys match the config (at start, and after SIGHUP applied a new one): a git app
    /// with no release and nothing queued or running gets its branch head deployed (`trigger` says
    /// why), and each app's pull loop is started, restarted or stopped to match `poll`/`cron`.
    pub fn apply_config(self: &Arc<Self>, trigger: Trigger) -> Result<(), DeployError> {
        for app in self.supervisor.list() {
            let Some(git) = app.config().source.git().cloned() else { continue };
            if app.release().is_some() || self.busy(&app.name) {
                continue;
            }
            if let Some(git_ref) = self.crash_looped(&app.name) {
                tracing::error!(app = %app.name, git_ref = %git_ref, "the agent stopped twice in a row while deploying `{git_ref}`: not deploying it again by itself; deploy a fixed commit with `deployer push` (or the API) once the cause is found in the log");
                continue;
            }
            tracing::info!(app = %app.name, branch = %git.branch, "no release yet: deploying the branch head");
            self.request(&app.name, Target::Ref(git.branch), trigger, &Requester::default())?;
        }
        self.apply_schedules();
        Ok(())
    }

    /// The agent stops: no deploy is queued from now on (requests answer [`DeployError::Stopping`])
    /// and the pull loops end. Running deploys go on until [`Deployer::shutdown`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, stop) in self.pullers.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, v)| v) {
            stop.cancel();
        }
    }

    /// An upgrade hands over: take no deploy and stop the pull loops until [`Deployer::resume`]
    /// (the upgrade failed) or the stop; running and queued deploys go on and end as usual.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for (_, stop) in self.pullers.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, v)| v) {
            stop.cancel();
        }
    }

    /// Take deploys again after [`Deployer::pause`] (an upgrade that did not happen).
    pub fn resume(self: &Arc<Self>) {
        self.paused.store(false, Ordering::SeqCst);
        self.apply_schedules();
    }

    /// Whether the agent is stopping ([`Deployer::close`]).
    fn stopping(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// End the running deploys and wait until every task of the deployer has returned; each
    /// deploy has its final state recorded by then (`interrupted`, or what it reached), and a
    /// deploy still queued is recorded `interrupted` too. Closes the intake first if needed.
    pub async fn shutdown(&self) {
        self.close();
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let queues: Vec<Arc<AppQueue>> =
            self.queues.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for q in queues {
            let Some(job) = q.slots().pending.take() else { continue };
            let message = "interrupted: the agent stopped before this deploy started";
            match self.store.finish(job.id, DeployState::Interrupted, message) {
                Ok(crate::store::Settled::Now) => {}
                Ok(crate::store::Settled::Later(e)) | Err(e) => {
                    tracing::error!(id = job.id, error = %e, "cannot record a queued deploy as interrupted")
                }
            }
        }
    }

    /// The apps with a deploy queued or running.
    pub fn busy_apps(&self) -> Vec<String> {
        let names: Vec<String> = self.queues.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.into_iter().filter(|a| self.busy(a)).collect()
    }

    /// Whether a deploy of `app` is queued or running.
    fn busy(&self, app: &str) -> bool {
        self.queue_if_any(app).is_some_and(|q| {
            let slots = q.slots();
            slots.pending.is_some() || slots.running.is_some()
        })
    }

    /// Start, restart or stop each app's pull loop to match its `poll`/`cron`.
    fn apply_schedules(self: &Arc<Self>) {
        let mut pullers = self.pullers.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = HashMap::new();
        for app in self.supervisor.list().into_iter().filter(|_| !self.pulls_elsewhere.load(Ordering::SeqCst)) {
            // Only git apps have one (checked when the config was loaded).
            if let Some(schedule) = app.config().schedule {
                wanted.insert(app.name.clone(), schedule);
            }
        }
        pullers.retain(|app, (text, stop)| {
            let keep = wanted.get(app).is_some_and(|s| s.describe() == *text);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (app, schedule) in wanted {
            if pullers.contains_key(&app) || self.stopping() || self.paused.load(Ordering::SeqCst) {
                continue;
            }
            let stop = self.shutdown.child_token();
            tracing::info!(app = %app, schedule = %schedule.describe(), "pull mode on");
            pullers.insert(app.clone(), (schedule.describe(), stop.clone()));
            self.tasks.spawn(self.clone().poll(app, schedule, stop));
        }
    }

    /// Release directories that are on disk but not recorded, and half-written trees (a crash
    /// mid-materialise), go.
    fn remove_incomplete(&self, app: &str, dir: &AppDir, current: Option<String>) {
        // Without the database's list every release would look unknown: remove nothing then.
        let known: Vec<String> = match self.store.releases(app) {
            Ok(rows) => rows.into_iter().map(|r| r.name).collect(),
            Err(e) => {
                tracing::error!(app, error = %e, "cannot read the recorded releases; leaving the release directories as they are");
                return;
            }
        };
        for name in dir.on_disk() {
            if !known.contains(&name) && Some(&name) != current.as_ref() {
                tracing::warn!(app, release = %name, "removing an incomplete release directory");
                if let Err(e) = dir.remove_release(&name) {
                    tracing::warn!(app, release = %name, error = %e, "cannot remove a half-made release");
                }
            }
        }
        // A crash while an object was written (`source/objects.rs`); the objects themselves are
        // collected when releases are pruned.
        if let Err(e) = dir.object_store(None).remove_temps() {
            tracing::warn!(app, error = %e, "cannot remove the object store's temporary files");
        }
        for partial in dir.partials() {
            tracing::warn!(app, path = %partial.display(), "removing a half-written release tree");
            if let Err(e) = std::fs::remove_dir_all(&partial) {
                tracing::warn!(app, path = %partial.display(), error = %e, "cannot remove a half-written release tree");
            }
        }
    }

    /// An app deployed from git, and its source as configured now.
    fn git_app(&self, app: &str) -> Result<(Arc<App>, GitSource), DeployError> {
        let a = self.supervisor.app(app)?;
        let git = a.config().source.git().cloned().ok_or_else(|| DeployError::NotFromGit(app.to_string()))?;
        Ok((a, git))
    }

    /// Queue a deploy, asked for `by` someone. A deploy still queued for the same app is
    /// superseded by this one.
    pub fn request(
        self: &Arc<Self>,
        app: &str,
        target: Target,
        trigger: Trigger,
        by: &Requester,
    ) -> Result<DeployAccepted, DeployError> {
        self.request_with_env(app, target, trigger, by, None)
    }

    /// [`Deployer::request`], the new release run with `env_set` of the app's `env_sets` on top
    /// (`deploy --env NAME`; `None`: the set the app runs with, if any).
    pub fn request_with_env(
        self: &Arc<Self>,
        app: &str,
        target: Target,
        trigger: Trigger,
        by: &Requester,
        env_set: Option<String>,
    ) -> Result<DeployAccepted, DeployError> {
        if self.stopping() || self.paused.load(Ordering::SeqCst) {
            return Err(DeployError::Stopping);
        }
        let (a, _) = self.git_app(app)?;
        // A set the app does not run with yet: the deploy changes what runs even on a live sha.
        let env_set = env_set.filter(|name| a.config().env_set.as_ref() != Some(name));
        if let Some(name) = &env_set
            && !a.config().env_sets.contains_key(name)
        {
            return Err(DeployError::UnknownEnvSet { app: app.to_string(), name: name.clone() });
        }
        let label = match &target {
            Target::Ref(r) => {
                source::validate_ref(r)?;
                r.clone()
            }
            Target::Rollback(r) => {
                let name = pipeline::pick_rollback(&self.store, &a, r.as_deref())?;
                format!("rollback:{name}")
            }
        };
        if let Some(joined) = self.join_queued(app, &target, &env_set) {
            return Ok(joined);
        }
        let id = self.store.insert_deploy(app, &label, trigger, by)?;
        if let Some(live) = self.live_release_for(&a, &target)?.filter(|_| env_set.is_none()) {
            let message = format!("{label} is already live (release {live}): nothing to do");
            self.store.set_release(id, &live)?;
            self.store.transition(id, DeployState::Live, &message)?;
            return Ok(DeployAccepted { id, app: app.to_string(), state: DeployState::Live, message: Some(message) });
        }
        tracing::info!(app, id, git_ref = %label, %trigger, token = ?by.token, who = ?by.who, "deploy queued");
        let queue = self.queue(app);
        let previous = {
            let mut slots = queue.slots();
            // Checked again under the queue's lock, which `shutdown` takes to record what is
            // still queued: a request that slipped past the first check is not left `queued`.
            if self.stopping() {
                drop(slots);
                self.store.transition(id, DeployState::Interrupted, "interrupted: the agent is stopping")?;
                return Err(DeployError::Stopping);
            }
            slots.pending.replace(Job { id, target, trigger, env_set })
        };
        if let Some(old) = previous {
            self.store.transition(old.id, DeployState::Superseded, &format!("superseded by #{id}"))?;
            tracing::info!(app, id = old.id, by = id, "deploy superseded");
        }
        queue.wake.notify_one();
        Ok(DeployAccepted { id, app: app.to_string(), state: DeployState::Queued, message: None })
    }

    /// The running deploy of `app`, when the commit it deploys is `sha`.
    fn join_running(&self, app: &str, sha: &str) -> Result<Option<DeployAccepted>, DeployError> {
        let Some(queue) = self.queue_if_any(app) else { return Ok(None) };
        let Some(id) = queue.slots().running.as_ref().map(|r| r.id) else {
            return Ok(None);
        };
        let Some(d) = self.store.deploy(id)?.filter(|d| !d.is_final()) else { return Ok(None) };
        if !d.sha.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sha)) {
            return Ok(None);
        }
        Ok(Some(DeployAccepted {
            id,
            app: app.to_string(),
            state: d.state,
            message: Some(format!("joined deploy #{id}, already deploying {}", &sha[..7.min(sha.len())])),
        }))
    }

    /// A request for exactly what is already queued joins that deploy instead of superseding it:
    /// a burst of webhooks for one branch makes one deploy, not one per delivery.
    fn join_queued(&self, app: &str, target: &Target, env_set: &Option<String>) -> Option<DeployAccepted> {
        let queue = self.queue_if_any(app)?;
        let slots = queue.slots();
        let job = slots.pending.as_ref().filter(|j| j.target == *target && j.env_set == *env_set)?;
        Some(DeployAccepted {
            id: job.id,
            app: app.to_string(),
            state: DeployState::Queued,
            message: Some(format!("joined deploy #{}, queued for the same ref", job.id)),
        })
    }

    /// The live release, when `target` is a sha it already runs (a branch must be fetched first).
    fn live_release_for(&self, app: &App, target: &Target) -> Result<Option<String>, DeployError> {
        let Target::Ref(r) = target else { return Ok(None) };
        let is_sha = r.len() >= 7 && r.len() <= 40 && r.chars().all(|c| c.is_ascii_hexdigit());
        let Some(current) = app.release().filter(|_| is_sha) else { return Ok(None) };
        let rows = self.store.releases(&app.name)?;
        Ok(rows
            .into_iter()
            .find(|row| row.name == current.name && row.sha.starts_with(&r.to_ascii_lowercase()))
            .map(|row| row.name))
    }

    pub fn cancel(&self, id: DeployId) -> Result<Deploy, DeployError> {
        let deploy = self.store.deploy(id)?.ok_or(DeployError::NotFound(id))?;
        if deploy.is_final() {
            return Err(DeployError::CannotCancel { id, state: deploy.state });
        }
        let queue = self.queue_if_any(&deploy.app);
        if let Some(q) = &queue {
            let mut slots = q.slots();
            if slots.pending.as_ref().is_some_and(|j| j.id == id) {
                slots.pending.take();
                drop(slots);
                self.store.transition(id, DeployState::Cancelled, "cancelled before it started")?;
                return self.store.deploy(id)?.ok_or(DeployError::NotFound(id));
            }
            if let Some(r) = slots.running.as_ref().filter(|r| r.id == id) {
                // Read again under the queue's lock, which the step into `rolling` is written under.
                let state = self.store.deploy(id)?.map_or(deploy.state, |d| d.state);
                if state.can_cancel() {
                    r.cancel.cancel();
                    return Ok(deploy);
                }
                return Err(DeployError::CannotCancel { id, state });
            }
        }
        Err(DeployError::CannotCancel { id, state: deploy.state })
    }

    /// The state database (for `/metrics`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, id: DeployId) -> Result<Deploy, DeployError> {
        self.store.deploy(id)?.ok_or(DeployError::NotFound(id))
    }

    pub fn history(&self, app: &str, limit: usize) -> Result<Vec<Deploy>, DeployError> {
        self.supervisor.app(app)?;
        Ok(self.store.history(app, limit)?)
    }

    pub fn releases(&self, app: &str) -> Result<Vec<Release>, DeployError> {
        let (a, _) = self.git_app(app)?;
        let current = a.release().map(|r| r.name);
        Ok(self
            .store
            .releases(app)?
            .into_iter()
            .map(|r| Release {
                current: Some(&r.name) == current.as_ref(),
                name: r.name,
                seq: r.seq,
                sha: r.sha,
                ok: r.ok,
            })
            .collect())
    }

    fn queue_if_any(&self, app: &str) -> Option<Arc<AppQueue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).get(app).cloned()
    }

    /// The app's queue, and its runner task on first use.
    fn queue(self: &Arc<Self>, app: &str) -> Arc<AppQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(app) {
            return q.clone();
        }
        let q = Arc::new(AppQueue::default());
        queues.insert(app.to_string(), q.clone());
        self.tasks.spawn(self.clone().run_queue(app.to_string(), q.clone()));
        q
    }

    /// Take the newest queued deploy and run it, one at a time, until the agent stops.
    async fn run_queue(self: Arc<Self>, app: String, q: Arc<AppQueue>) {
        loop {
            if self.shutdown.is_cancelled() {
                // What is still queued is recorded by `shutdown`.
                return;
            }
            let cancel = self.shutdown.child_token();
            // Taken from the queue and made the running one in one step: a cancel or a status
            // in between sees it in one place or the other, never in neither.
            let job = {
                let mut slots = q.slots();
                let job = slots.pending.take();
                if let Some(j) = &job {
                    slots.running = Some(Running { id: j.id, cancel: cancel.clone() });
                }
                job
            };
            let Some(job) = job else {
                tokio::select! {
                    _ = q.wake.notified() => continue,
                    _ = self.shutdown.cancelled() => return,
                }
            };
            let span = tracing::info_span!("deploy", app = %app, id = job.id);
            let run = pipeline::run(&self, &q, &app, job, cancel);
            tracing::Instrument::instrument(run, span).await;
            q.slots().running = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(q: &AppQueue, id: DeployId) -> CancellationToken {
        let cancel = CancellationToken::new();
        q.slots().running = Some(Running { id, cancel: cancel.clone() });
        cancel
    }

    #[test]
    fn a_cancel_that_came_first_keeps_a_deploy_from_rolling() {
        let q = AppQueue::default();
        let cancel = running(&q, 7);
        cancel.cancel();
        let mut entered = false;
        assert!(!q.past_cancelling(7, || entered = true), "the roll must not start after an answered cancel");
        assert!(!entered, "and `rolling` is not recorded");
    }

    #[test]
    fn the_step_into_rolling_is_recorded_under_the_queue_lock() {
        let q = AppQueue::default();
        let _cancel = running(&q, 7);
        let mut locked = false;
        assert!(q.past_cancelling(7, || locked = q.slots.try_lock().is_err()));
        assert!(locked, "a cancel waits until the new state is recorded, then reads it");
    }
}
