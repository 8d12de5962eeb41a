//! One deploy, from a ref to live workers:
//! fetch -> materialise a release -> link shared paths -> install and hooks -> rolling reload onto
//! the release (config and `env_file` read once, before the install) -> the supervisor records
//! the release, with `current` as its mirror -> prune -> live.
//!
//! A failure before the roll leaves everything that serves untouched. A roll whose new workers do
//! not get ready puts the previous release's workers back and ends `rolled_back`. With a `bake`
//! window the deploy is `baking` after the roll, and [`Bake`] decides: `live` or `rolled_back`.
//!
//! Every store write on the way is checked: a step that cannot be recorded is retried briefly
//! ([`record`]), then stops the deploy before it changes what serves. The final state is written
//! by [`finish`], which keeps it answered from memory and retries until the database takes it
//! (a full disk). A step that fails on a full disk says so, and the failed releases beyond the
//! newest are pruned to give room back.

use super::DeployState;
use super::install::{self, Output};
use super::install_cache;
use super::release::{self, AppDir, disk_full, disk_space, keep_failed, prune_plan, seq_of};
use super::{AppQueue, DeployError, Deployer, Job, Target};
use crate::config::{AppConfig, GitSource};
use crate::source::{GitAuth, Source, redact_url};
use crate::store::{BakeRow, DeployId, ReleaseRow, Settled, Store, StoreError, left_of, now_ms};
use crate::supervisor::event::SupervisorEvent;
use crate::supervisor::worker::WorkerSpec;
use crate::supervisor::worker::WorkerState;
use crate::supervisor::{ActiveRelease, App, resolve_spec};
use deployer_wire::Trigger;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// How a deploy ended early.
struct Stop {
    state: DeployState,
    message: String,
}

impl Stop {
    fn failed(message: impl Into<String>) -> Stop {
        Stop { state: DeployState::Failed, message: message.into() }
    }
}

struct Run<'a> {
    d: &'a Arc<Deployer>,
    q: &'a AppQueue,
    app: Arc<App>,
    id: DeployId,
    state: DeployState,
    cancel: CancellationToken,
    out: Option<Output>,
    started: Instant,
    /// The bake window to watch once the deploy is recorded `baking`.
    bake: Option<Bake>,
    /// `deploy --env NAME`: put on the re-read config (which otherwise keeps the app's own).
    env_set: Option<String>,
}

pub(super) async fn run(d: &Arc<Deployer>, q: &AppQueue, app_name: &str, job: Job, cancel: CancellationToken) {
    let Ok(app) = d.supervisor.app(app_name) else {
        finish(d, job.id, DeployState::Failed, "the app is no longer configured");
        return;
    };
    d.store.keep_reserve();
    let mut run = Run {
        d,
        q,
        app,
        id: job.id,
        state: DeployState::Queued,
        cancel,
        out: None,
        started: Instant::now(),
        bake: None,
        env_set: job.env_set.clone(),
    };
    let result = match &job.target {
        Target::Ref(r) => run.deploy(r, job.trigger).await,
        Target::Rollback(r) => run.rollback(r.as_deref()).await,
    };
    let (state, message) = match result {
        Ok(message) if run.bake.is_some() => (DeployState::Baking, message),
        Ok(message) => (DeployState::Live, message),
        // The agent's stop ended it (a cancelled step, a halted roll): `interrupted`, as a
        // restarted agent records a deploy a dead one left, and the pull loops retry it once.
        Err(stop) if d.stopping() => (
            DeployState::Interrupted,
            format!("interrupted: the agent stopped while {} ({})", run.state.as_str(), stop.message),
        ),
        // Whatever step failed (a fetch, the materialise, the install), a full disk is said.
        Err(stop) if stop.state == DeployState::Failed => {
            (stop.state, format!("{}{}", stop.message, run.on_full_disk()))
        }
        Err(stop) => (stop.state, stop.message),
    };
    if let Some(out) = &run.out
        && let Err(e) = d.store.set_output_tail(run.id, &out.tail())
    {
        tracing::error!(error = %e, "cannot record the install output's tail");
    }
    if let Some(bake) = run.bake.take() {
        let window = humantime::format_duration(bake.window);
        let note = format!("{message}; baking for {window}: the window decides whether it stays");
        if let Err(e) = run.enter(DeployState::Baking, &note) {
            // It serves all the same: the bake still decides, from `rolling`.
            tracing::error!(error = %e.message, "cannot record the bake window's start");
        } else if let Err(e) = d.store.record_bake(&bake.row()) {
            // Only a next agent needs it: this one watches the window all the same.
            tracing::error!(error = %e, "cannot record the bake window for a next agent");
        }
        d.tasks.spawn(bake.watch());
        return;
    }
    if state != DeployState::Live {
        tracing::warn!(state = state.as_str(), %message, "deploy ended");
    } else {
        tracing::info!(%message, duration_ms = run.started.elapsed().as_millis() as u64, "deploy live");
    }
    run.state = state;
    finish(d, run.id, state, &message);
}

/// Record the final state of deploy `id`. The database may refuse it (a full disk): then the
/// state is answered from memory at once (so `deploy --wait` ends) and written as soon as the
/// database takes it ([`Deployer::settle_later`]). Never swallowed: every failure is logged.
pub(super) fn finish(d: &Arc<Deployer>, id: DeployId, state: DeployState, message: &str) {
    match d.store.finish(id, state, message) {
        Ok(Settled::Now) => {}
        Ok(Settled::Later(e)) => {
            tracing::error!(id, state = state.as_str(), error = %e, "cannot record the deploy's final state yet: answering it from memory and trying again");
            d.settle_later();
        }
        Err(e) => tracing::error!(id, state = state.as_str(), error = %e, "cannot record the deploy's final state"),
    }
}

/// A store write on the deploy path, tried again after a short pause when it fails (a database
/// locked by a checkpoint, a disk that had a moment of fullness), each failure logged.
async fn record<T>(what: &str, mut write: impl FnMut() -> Result<T, StoreError>) -> Result<T, Stop> {
    const PAUSES_MS: [u64; 3] = [50, 200, 800];
    let mut attempt = 0;
    loop {
        match write() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < PAUSES_MS.len() => {
                tracing::warn!(error = %e, attempt = attempt + 1, "cannot record {what}; trying again");
                tokio::time::sleep(Duration::from_millis(PAUSES_MS[attempt])).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record {what}; giving up the deploy");
                return Err(recording(e));
            }
        }
    }
}

impl Run<'_> {
    /// Enter a state that is not final: stored as an event (the one record of it, read by
    /// `cancel` and the API). A deploy whose step cannot be recorded does not go on: a cancel
    /// would read the old state, and the final one could not follow it.
    fn enter(&mut self, state: DeployState, message: &str) -> Result<(), Stop> {
        self.d.store.transition(self.id, state, message).map_err(|e| {
            tracing::error!(error = %e, state = state.as_str(), "cannot record the deploy's state");
            recording(e)
        })?;
        self.state = state;
        tracing::info!(state = state.as_str(), "{message}");
        Ok(())
    }

    /// [`Run::enter`], tried again briefly when the database refuses ([`record`]).
    async fn step(&mut self, state: DeployState, message: &str) -> Result<(), Stop> {
        let (store, id) = (self.d.store.clone(), self.id);
        record("the deploy's state", || store.transition(id, state, message)).await?;
        self.state = state;
        tracing::info!(state = state.as_str(), "{message}");
        Ok(())
    }

    fn log(&self, message: &str) {
        if let Err(e) = self.d.store.log(self.id, message) {
            tracing::error!(error = %e, %message, "cannot record a deploy event");
        }
    }

    /// Enter `rolling`, unless a cancel came first: past this point a deploy cannot be cancelled,
    /// and the queue decides that in the same step as a cancel does.
    fn begin_roll(&mut self, message: &str) -> Result<(), Stop> {
        let (q, id, was) = (self.q, self.id, self.state);
        let mut entered = Ok(());
        if !q.past_cancelling(id, || entered = self.enter(DeployState::Rolling, message)) {
            return Err(Stop { state: DeployState::Cancelled, message: format!("cancelled while {}", was.as_str()) });
        }
        entered
    }

    fn check_cancel(&self) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            return Err(Stop {
                state: DeployState::Cancelled,
                message: format!("cancelled while {}", self.state.as_str()),
            });
        }
        Ok(())
    }

    async fn deploy(&mut self, git_ref: &str, trigger: Trigger) -> Result<String, Stop> {
        let cfg = self.app.config();
        let Some(git) = cfg.source.git().cloned() else { return Err(Stop::failed("the app has no `repo`")) };
        let dir = AppDir::new(git.dir.clone());
        dir.create(cfg.run_as.as_ref())
            .map_err(|e| Stop::failed(format!("cannot create `{}`: {e}", dir.root().display())))?;
        self.out = Some(
            Output::create(dir.logs().join(format!("deploy-{}.log", self.id)), self.d.secrets.clone())
                .in_cgroups(self.d.supervisor.cgroups(), format!("{}.deploy-{}", self.app.name, self.id)),
        );

        // 1. fetch
        self.step(DeployState::Fetching, &format!("fetching `{}` from {}", git.branch, redact_url(&git.repo))).await?;
        let t = Instant::now();
        let sha = {
            let (url, branch, auth) = (git.repo.clone(), git.branch.clone(), git_auth(&git));
            let (cache, rev) = (dir.repo(), git_ref.to_string());
            let limits = cfg.limits.to_source();
            // Awaited below; a cancel leaves it to finish on its own (libgit2 cannot be
            // interrupted), and the agent's exit does not wait for it (`daemon::BLOCKING_GRACE`).
            let fetch = tokio::task::spawn_blocking(move || {
                let src = Source::open(&url, &branch, auth, &cache)?.with_limits(limits);
                src.fetch()?;
                let sha = src.resolve(&rev)?;
                // A commit named from outside (API, webhook payload) must be on the branch.
                if rev != branch {
                    src.require_on_branch(&sha)?;
                }
                Ok::<_, crate::source::SourceError>(sha)
            });
            tokio::select! {
                r = fetch => r.map_err(|e| Stop::failed(format!("fetch crashed: {e}")))?.map_err(|e| Stop::failed(e.to_string()))?,
                _ = self.cancel.cancelled() => return Err(Stop { state: DeployState::Cancelled, message: "cancelled while fetching".into() }),
            }
        };
        let short = &sha[..7.min(sha.len())];
        let (store, id) = (self.d.store.clone(), self.id);
        record("the deploy's commit", || store.set_sha(id, &sha)).await?;
        self.log(&format!("`{git_ref}` is {short} (fetched in {} ms)", t.elapsed().as_millis()));
        let previous = self.app.release();
        if let Some(prev) = &previous {
            let rows = record("the releases", || store.releases(&self.app.name)).await?;
            let live_sha = rows.into_iter().find(|r| r.name == prev.name).map(|r| r.sha);
            // A new env set changes what runs: the same commit is installed and rolled again.
            if live_sha.as_deref() == Some(sha.as_str()) && self.env_set.is_none() {
                record("the deploy's release", || store.set_release(id, &prev.name)).await?;
                return Ok(format!("{short} is already live (release {}): nothing to do", prev.name));
            }
        }
        self.check_cancel()?;

        // 2. materialise
        let seq = next_seq(&self.d.store, &self.app.name, &dir).await?;
        let name = format!("{seq}-{short}");
        let release_dir = dir.release(&name);
        self.step(DeployState::Building, &format!("materialising {short} into releases/{name}")).await?;
        let t = Instant::now();
        let linked = {
            let (url, branch, auth, cache, sha, root, dest) = (
                git.repo.clone(),
                git.branch.clone(),
                git_auth(&git),
                dir.repo(),
                sha.clone(),
                git.root.display().to_string(),
                release_dir.clone(),
            );
            let limits = cfg.limits.to_source();
            let objects = dir.object_store(cfg.run_as.as_ref()).except(&cfg.shared);
            tokio::task::spawn_blocking(move || {
                Source::open(&url, &branch, auth, &cache)?
                    .with_limits(limits)
                    .with_objects(objects)
                    .materialise(&sha, &root, &dest)
            })
            .await
            .map_err(|e| Stop::failed(format!("materialise crashed: {e}")))?
            .map_err(|e| Stop::failed(e.to_string()))?
        };
        let row = ReleaseRow { app: self.app.name.clone(), name: name.clone(), seq, sha: sha.clone(), ok: false };
        record("the new release", || store.record_release(&row)).await?;
        record("the deploy's release", || store.set_release(id, &name)).await?;
        if let Some(r) = cfg.run_as.clone() {
            let tree = release_dir.clone();
            tokio::task::spawn_blocking(move || release::give_tree(&tree, &r))
                .await
                .map_err(|e| Stop::failed(format!("chown crashed: {e}")))?
                .map_err(|e| {
                    Stop::failed(format!(
                        "cannot give releases/{name} to `{}`: {e}",
                        cfg.user.as_deref().unwrap_or_default()
                    ))
                })?;
        }
        dir.link_shared(&release_dir, &cfg.shared)
            .map_err(|e| Stop::failed(format!("cannot link shared paths: {e}")))?;
        if let Some(r) = &cfg.run_as {
            dir.give_shared(&cfg.shared, r)
                .map_err(|e| Stop::failed(format!("cannot give the shared paths to `{}`: {e}", r.user)))?;
        }
        let large = if linked.files() > 0 { format!(" ({linked})") } else { String::new() };
        self.log(&format!("release {name} materialised in {} ms{large}", t.elapsed().as_millis()));

        // 3. install and hooks, in the release with the deploy's environment. The config file is
        // read again now and the release's `env_file` once: the install step, the hooks and the
        // workers all run with what was read here.
        let release = ActiveRelease { name: name.clone(), dir: release_dir.clone() };
        let mut fresh = self.app.fresh_config().map_err(|e| Stop::failed(e.to_string()))?;
        if let Some(name) = &self.env_set {
            if !fresh.env_sets.contains_key(name) {
                return Err(Stop::failed(format!("env set `{name}` is no longer in the app's `env_sets`")));
            }
            fresh.env_set = Some(name.clone());
        }
        let spec = worker_spec(&fresh, &release)?;
        let env = self.deploy_env(&spec, &release, &sha, git_ref, trigger, previous.as_ref());
        let cfg = fresh;
        // The release holds only the repository's `root` subdirectory.
        let workdir = release_dir.clone();
        let steps = [
            ("install", &cfg.install),
            ("post_install", &cfg.hooks.post_install),
            ("pre_reload", &cfg.hooks.pre_reload),
        ];
        let (cache, skip_install) = self.install_cache(&cfg, &dir, &name, &env, previous.as_ref()).await;
        for (label, cmds) in steps {
            if cmds.0.is_empty() || (label == "install" && skip_install) {
                continue;
            }
            self.check_cancel()?;
            let t = Instant::now();
            if let Err(e) = install::run(
                &cmds.0,
                &workdir,
                &env,
                cfg.run_as.as_ref(),
                cfg.install_timeout.0,
                &self.cancel,
                self.output(),
            )
            .await
            {
                if matches!(e, install::StepError::Cancelled) {
                    return Err(Stop { state: DeployState::Cancelled, message: format!("cancelled during {label}") });
                }
                if let Some(out) = &self.out {
                    self.log(&format!("{label} failed; its whole output is in {}", out.path().display()));
                }
                self.on_failure(&cfg, &workdir, &env).await;
                self.prune(&cfg, &dir, false, None);
                return Err(Stop::failed(format!("{label}: {e}; the running release keeps serving")));
            }
            self.log(&format!("{label} ok in {:.1}s", t.elapsed().as_secs_f32()));
        }
        if let Some(plan) = &cache
            && let Err(e) = store.set_install_key(&self.app.name, &name, &plan.key)
        {
            // The next deploy then finds no key and runs its install step: slower, not wrong.
            tracing::warn!(error = %e, "cannot record the release's install key");
        }
        self.check_cancel()?;

        // 4. roll; once it answers ok the release is recorded live, `current` mirroring it
        let n = self.app.status().workers.len();
        self.begin_roll(&format!("rolling {n} worker(s) onto {name}"))?;
        let t = Instant::now();
        match self.app.roll_to(cfg.clone(), release, spec).await {
            // The roll answers once the new workers serve alone; the old ones drain and exit
            // after (`reload::Tail::Detach`), before the app's next roll or stop.
            Ok(rolled) if rolled.replaced > 0 => self.log(&format!(
                "rolled {} worker(s) in {} ms; the old ones are out of rotation, finishing their requests",
                rolled.replaced,
                t.elapsed().as_millis()
            )),
            Ok(_) => {}
            Err(e) => {
                self.on_failure(&cfg, &workdir, &env).await;
                self.prune(&cfg, &dir, disk_full(dir.root()), None);
                return Err(match (&previous, e.restored) {
                    (Some(p), true) => Stop {
                        state: DeployState::RolledBack,
                        message: format!("{}; release {} is serving again", e.reason, p.name),
                    },
                    _ => Stop::failed(e.reason),
                });
            }
        }

        // 5. prune, post_reload
        // The release that served until now: its workers may still be finishing their requests.
        let draining = previous.as_ref().map(|p| p.name.as_str());
        self.prune(&cfg, &dir, disk_full(dir.root()), draining);
        if !cfg.hooks.post_reload.0.is_empty()
            && let Err(e) = install::run(
                &cfg.hooks.post_reload.0,
                &workdir,
                &env,
                cfg.run_as.as_ref(),
                cfg.install_timeout.0,
                // The deploy is past cancelling; only the agent's stop ends the hook early.
                &self.d.shutdown,
                self.output(),
            )
            .await
        {
            self.log(&format!("post_reload: {e} (the deploy stays live)"));
        }
        let live = format!("live on {short} (release {name})");
        if let Some(window) = cfg.bake {
            self.bake = Some(Bake {
                d: self.d.clone(),
                app: self.app.clone(),
                id: self.id,
                release: name.clone(),
                previous: previous.map(|p| p.name),
                window: window.0,
                left: window.0,
                // Subscribed now: a worker of the release that errors from here on is heard.
                events: self.d.supervisor.events(),
                live: live.clone(),
            });
        }
        Ok(format!("{live} in {:.1}s", self.started.elapsed().as_secs_f32()))
    }

    /// Back to a release on disk: no fetch, no install, the same rolling reload.
    async fn rollback(&mut self, want: Option<&str>) -> Result<String, Stop> {
        let cfg = self.app.config();
        let dir = AppDir::new(cfg.source.app_dir().ok_or_else(|| Stop::failed("the app has no `repo`"))?.to_path_buf());
        let name = pick_rollback(&self.d.store, &self.app, want).map_err(|e| Stop::failed(e.to_string()))?;
        let (store, id) = (self.d.store.clone(), self.id);
        let row = record("the releases", || store.releases(&self.app.name))
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Stop::failed("the release is no longer recorded"))?;
        record("the deploy's commit", || store.set_sha(id, &row.sha)).await?;
        record("the deploy's release", || store.set_release(id, &name)).await?;
        let fresh = self.app.fresh_config().map_err(|e| Stop::failed(e.to_string()))?;
        let release = ActiveRelease { name: name.clone(), dir: dir.release(&name) };
        let spec = worker_spec(&fresh, &release)?;
        self.begin_roll(&format!("rolling back onto {name}"))?;
        self.app
            .roll_to(fresh, release, spec)
            .await
            .map_err(|e| Stop::failed(format!("{}; the workers stay on the release they ran", e.reason)))?;
        Ok(format!(
            "rolled back: live on {} (release {name}) in {:.1}s",
            &row.sha[..7.min(row.sha.len())],
            self.started.elapsed().as_secs_f32()
        ))
    }

    /// The install cache's part of a deploy (`install_cache.rs`): answers the plan whose key is
    /// recorded once the install step is done (None: the cache is off or cannot read its inputs),
    /// and whether the install step is skipped because the outputs were copied from the previous
    /// release. Every outcome is a deploy event; none fails the deploy (the install step runs).
    async fn install_cache(
        &self,
        cfg: &AppConfig,
        dir: &AppDir,
        name: &str,
        env: &BTreeMap<String, String>,
        previous: Option<&ActiveRelease>,
    ) -> (Option<install_cache::Plan>, bool) {
        if cfg.install.0.is_empty() {
            return (None, false);
        }
        let release = dir.release(name);
        let (c, e) = (cfg.clone(), env.clone());
        let planned = tokio::task::spawn_blocking(move || {
            install_cache::plan(&c, &crate::beneath::Dir::open_trusted(&release)?, &e)
        })
        .await;
        let plan = match planned {
            Ok(Ok(Some(plan))) => plan,
            Ok(Ok(None)) => {
                self.log("install cache: off (`install_cache: false`)");
                return (None, false);
            }
            Ok(Err(e)) => {
                self.log(&format!("install cache: not used: {e}"));
                return (None, false);
            }
            Err(e) => {
                self.log(&format!("install cache: not used: reading its inputs crashed: {e}"));
                return (None, false);
            }
        };
        let rows = match self.d.store.releases(&self.app.name) {
            Ok(rows) => rows,
            Err(e) => {
                self.log(&format!("install cache: not used: cannot read the releases: {e}"));
                return (Some(plan), false);
            }
        };
        // The live release, else the newest good one.
        let source = match previous {
            Some(p) => rows.iter().find(|r| r.name == p.name),
            None => rows.iter().find(|r| r.ok && r.name != name),
        };
        let Some(source) = source else {
            self.log("install cache: not used: no previous release");
            return (Some(plan), false);
        };
        let from = format!("{} (release {})", &source.sha[..7.min(source.sha.len())], source.name);
        let key = match self.d.store.install_key(&self.app.name, &source.name) {
            Ok(Some(key)) => key,
            Ok(None) => {
                self.log(&format!("install cache: not used: {from} has no recorded install key"));
                return (Some(plan), false);
            }
            Err(e) => {
                self.log(&format!("install cache: not used: cannot read the install key of {from}: {e}"));
                return (Some(plan), false);
            }
        };
        let same = key == plan.key;
        if !same {
            let what = install_cache::changed(&key, &plan.key).join(", ");
            let warm = if plan.warm { "; warm start: copying its outputs first" } else { "" };
            self.log(&format!("install cache: not used: key changed since {from}: {what}{warm}"));
            if !plan.warm {
                return (Some(plan), false);
            }
        }
        let t = Instant::now();
        let (d, src, dst, paths) = (dir.clone(), source.name.clone(), name.to_string(), plan.paths.clone());
        let owner = cfg.run_as.as_ref().map(|r| (r.uid, r.gid));
        let copied = tokio::task::spawn_blocking(move || {
            install_cache::has_outputs(&d, &src, &paths)?;
            install_cache::copy_outputs(&d, &src, &dst, &paths, owner)
        })
        .await;
        let ms = t.elapsed().as_millis();
        match copied {
            Ok(Ok(c)) if same => {
                self.log(&format!("install cache: used (from {from}): {c} in {ms} ms; the install step is skipped"));
                (Some(plan), true)
            }
            Ok(Ok(c)) => {
                self.log(&format!("install cache: warm start from {from}: {c} in {ms} ms; running the install step"));
                (Some(plan), false)
            }
            Ok(Err(e)) => {
                self.log(&format!("install cache: not used: {e}"));
                (Some(plan), false)
            }
            Err(e) => {
                self.log(&format!("install cache: not used: copying crashed: {e}"));
                (Some(plan), false)
            }
        }
    }

    fn output(&self) -> &Output {
        self.out.as_ref().expect("output is created before any command runs")
    }

    /// The environment of the install step and hooks: the workers' (`spec`: without the agent's
    /// secrets; `env_file` of the new release, then `env`), plus what describes this deploy.
    fn deploy_env(
        &self,
        spec: &WorkerSpec,
        release: &ActiveRelease,
        sha: &str,
        git_ref: &str,
        trigger: Trigger,
        previous: Option<&ActiveRelease>,
    ) -> BTreeMap<String, String> {
        let run = [
            ("DEPLOY_SHA", sha.to_string()),
            ("DEPLOY_REF", git_ref.to_string()),
            ("DEPLOY_ID", self.id.to_string()),
            ("DEPLOY_TRIGGER", trigger.as_str().to_string()),
            ("RELEASE_DIR", release.dir.display().to_string()),
            ("PREVIOUS_RELEASE_DIR", previous.map(|p| p.dir.display().to_string()).unwrap_or_default()),
        ];
        self.d.secrets.child_env(&spec.env, run.map(|(k, v)| (k.to_string(), v)))
    }

    async fn on_failure(&self, cfg: &AppConfig, workdir: &Path, env: &BTreeMap<String, String>) {
        // The agent's stop is no failure of the release: the hook is not run for it.
        if cfg.hooks.on_failure.0.is_empty() || self.d.stopping() {
            return;
        }
        if let Err(e) = install::run(
            &cfg.hooks.on_failure.0,
            workdir,
            env,
            cfg.run_as.as_ref(),
            cfg.install_timeout.0,
            // Only the agent's stop ends the hook early.
            &self.d.shutdown,
            self.output(),
        )
        .await
        {
            self.log(&format!("on_failure: {e}"));
        }
    }

    /// Remove the releases beyond `keep_releases` (and the failed ones beyond the newest two, or
    /// the newest one when the disk is `full`), but not the release `draining` (old workers of it
    /// may still finish their requests after a roll answered: it goes with the next prune).
    /// Answers the names removed.
    fn prune(&self, cfg: &AppConfig, dir: &AppDir, full: bool, draining: Option<&str>) -> Vec<String> {
        let rows = match self.d.store.releases(&self.app.name) {
            Ok(rows) => rows,
            Err(e) => {
                // Without the list every release would look unknown: remove nothing.
                tracing::error!(error = %e, "cannot read the recorded releases; pruning nothing");
                return Vec::new();
            }
        };
        let current = self.app.release().map(|r| r.name);
        let previous = rows.iter().filter(|r| r.ok && Some(&r.name) != current.as_ref()).map(|r| r.name.clone()).next();
        let list: Vec<(String, bool)> = rows.iter().map(|r| (r.name.clone(), r.ok)).collect();
        let plan =
            prune_plan(&list, cfg.keep_releases as usize, keep_failed(full), current.as_deref(), previous.as_deref());
        let mut removed = Vec::new();
        for name in plan.into_iter().filter(|n| Some(n.as_str()) != draining) {
            if let Err(e) = dir.remove_release(&name) {
                tracing::warn!(error = %e, release = %name, "cannot remove a release");
            }
            if dir.release(&name).exists() {
                continue;
            }
            if let Err(e) = self.d.store.forget_release(&self.app.name, &name) {
                tracing::error!(error = %e, release = %name, "cannot forget a pruned release");
            }
            self.log(&format!("pruned release {name}"));
            removed.push(name);
        }
        self.collect_objects(cfg, dir, rows.iter().filter(|r| !removed.contains(&r.name)).map(|r| r.sha.as_str()));
        removed
    }

    /// Remove the objects no release kept needs any more (`source/objects.rs`).
    fn collect_objects<'s>(&self, cfg: &AppConfig, dir: &AppDir, kept: impl Iterator<Item = &'s str>) {
        let Some(git) = cfg.source.git() else { return };
        let referenced = || {
            let source =
                Source::open(&git.repo, &git.branch, git_auth(git), &dir.repo())?.with_limits(cfg.limits.to_source());
            let mut keys = std::collections::HashSet::new();
            for sha in kept {
                keys.extend(source.large_files(sha, &git.root)?);
            }
            Ok(keys)
        };
        match dir.object_store(cfg.run_as.as_ref()).collect(referenced) {
            Ok(c) if c.objects > 0 => self.log(&format!(
                "removed {} large file(s) ({}) no release links from the object store",
                c.objects,
                human_bytes(c.bytes)
            )),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot collect the object store"),
        }
    }

    /// After a failed step: when the disk of the app's directory is full, prune the failed
    /// releases beyond the newest one, then answer what the deploy's message adds about it
    /// (empty when the disk is not full).
    fn on_full_disk(&self) -> String {
        let cfg = self.app.config();
        let Some(root) = cfg.source.app_dir().map(Path::to_path_buf) else { return String::new() };
        if !disk_full(&root) {
            return String::new();
        }
        let dir = AppDir::new(root);
        let free = || disk_space(dir.root()).map_or(0, |(free, _)| free);
        let mut note = format!("; disk full: {} free on {}", human_bytes(free()), dir.root().display());
        let pruned = self.prune(&cfg, &dir, true, None);
        if !pruned.is_empty() {
            note =
                format!("{note}; pruned the failed release(s) {}: {} free now", pruned.join(", "), human_bytes(free()));
        }
        tracing::error!(app = %self.app.name, "{}", note.trim_start_matches("; "));
        note
    }
}

/// What the workers of `cfg` run with in `release`: its `env_file` read here, once per deploy.
fn worker_spec(cfg: &AppConfig, release: &ActiveRelease) -> Result<WorkerSpec, Stop> {
    match resolve_spec(cfg, Some(release)) {
        Ok(Some(spec)) => Ok(spec),
        // `cwd` apps are not deployed, and a release is given: not reached.
        Ok(None) => Err(Stop::failed("the app has no release to run")),
        Err(e) => Err(Stop::failed(e.to_string())),
    }
}

/// A deploy whose progress cannot be recorded stops before it changes what serves.
fn recording(e: crate::store::StoreError) -> Stop {
    Stop::failed(format!("cannot record the deploy's progress: {e}"))
}

/// The next release number: one more than any recorded or on disk.
async fn next_seq(store: &Store, app: &str, dir: &AppDir) -> Result<u64, Stop> {
    let recorded = record("the releases", || store.releases(app)).await?.into_iter().map(|r| r.seq).max().unwrap_or(0);
    let on_disk = dir.on_disk().iter().filter_map(|n| seq_of(n)).max().unwrap_or(0);
    Ok(recorded.max(on_disk) + 1)
}

/// `bytes` for people: `512 KiB`, `3.2 MiB`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 20 => format!("{} KiB", b >> 10),
        b => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
    }
}

/// The release a rollback goes to: the newest good one before the current, or the one named by
/// name, sequence number or sha prefix.
pub(super) fn pick_rollback(store: &Store, app: &App, want: Option<&str>) -> Result<String, DeployError> {
    let current = app.release();
    let current_seq = current.as_ref().and_then(|r| seq_of(&r.name));
    let good: Vec<ReleaseRow> = store.releases(&app.name)?.into_iter().filter(|r| r.ok).collect();
    let found = match want {
        None => good.iter().find(|r| current_seq.is_none_or(|c| r.seq < c)),
        Some(w) => {
            good.iter().find(|r| r.name == w || r.seq.to_string() == w || (w.len() >= 4 && r.sha.starts_with(w)))
        }
    };
    match found {
        Some(r) if Some(&r.name) == current.as_ref().map(|c| &c.name) => {
            Err(DeployError::NoSuchRelease(format!("release {} is already live", r.name)))
        }
        Some(r) => Ok(r.name.clone()),
        None if want.is_none() => {
            Err(DeployError::NoSuchRelease("there is no previous release to roll back to".into()))
        }
        None => Err(DeployError::NoSuchRelease(format!(
            "no good release matches `{}`; `deployer releases <app>` lists them",
            want.unwrap_or_default()
        ))),
    }
}

pub(super) fn git_auth(git: &GitSource) -> Option<GitAuth> {
    git.auth.as_ref().and_then(|a| a.git_auth())
}

/// The bake window: a new release whose workers crash-loop or error out within `window` is
/// rolled back by the agent itself. It follows the supervisor's events: a worker of the release
/// that errors, or exits by itself a second time, ends the bake at once. The deploy is `baking`
/// meanwhile, and the bake writes its final state: `live` once the window passed, `rolled_back`.
pub(super) struct Bake {
    d: Arc<Deployer>,
    app: Arc<App>,
    id: DeployId,
    release: String,
    previous: Option<String>,
    window: Duration,
    /// What is left of the window: all of it, unless a previous agent watched its beginning.
    left: Duration,
    events: broadcast::Receiver<SupervisorEvent>,
    /// What the deploy's final message starts with: `live on <sha> (release <name>)`.
    live: String,
}

/// What the bake has seen of the release's workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Exits the workers did not ask for (each one a restart).
    exits: u32,
    errored: u32,
}

impl Seen {
    fn unhealthy(self) -> bool {
        self.exits >= 2 || self.errored > 0
    }

    /// What an event adds, when it is about a worker of `release`.
    fn add(&mut self, event: &SupervisorEvent, release: &str) {
        match event {
            SupervisorEvent::WorkerExited { worker, retired: false, .. } if worker.release == release => {
                self.exits += 1
            }
            SupervisorEvent::WorkerErrored { worker, .. } if worker.release == release => self.errored += 1,
            _ => {}
        }
    }
}

impl Bake {
    /// The workers of the release as they are now: errored ones, and restarts so far.
    fn read(&self) -> Seen {
        let states = self.app.worker_states();
        let ours = states.iter().filter(|(w, _)| w.release == self.release);
        let mut seen = Seen::default();
        for (_, status) in ours {
            seen.exits += status.restarts;
            if matches!(status.state, WorkerState::Errored(_)) {
                seen.errored += 1;
            }
        }
        seen
    }

    /// The window as the next agent needs it.
    fn row(&self) -> BakeRow {
        BakeRow {
            deploy: self.id,
            app: self.app.name.clone(),
            release: self.release.clone(),
            previous: self.previous.clone(),
            until_ms: now_ms() + self.left.as_millis() as u64,
            window_ms: self.window.as_millis() as u64,
            live: self.live.clone(),
        }
    }

    /// The rest of a window a previous agent began ([`Deployer::resume_bakes`]).
    pub(super) fn resume(d: &Arc<Deployer>, app: Arc<App>, row: BakeRow) -> Bake {
        Bake {
            d: d.clone(),
            app,
            id: row.deploy,
            release: row.release,
            previous: row.previous,
            window: Duration::from_millis(row.window_ms),
            left: left_of(row.until_ms),
            events: d.supervisor.events(),
            live: row.live,
        }
    }

    pub(super) async fn watch(mut self) {
        let deadline = tokio::time::Instant::now() + self.left;
        // Restarts before the window (during the roll) do not count; an errored worker does.
        let baseline = self.read();
        let mut seen = Seen { exits: 0, errored: baseline.errored };
        let window = humantime::format_duration(self.window);
        loop {
            if self.app.release().map(|r| r.name) != Some(self.release.clone()) {
                let why = format!("{}: another deploy replaced it within its bake window of {window}", self.live);
                return finish(&self.d, self.id, DeployState::Live, &why);
            }
            if seen.unhealthy() {
                return self.roll_back(seen).await;
            }
            let event = tokio::select! {
                e = self.events.recv() => e,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.d.shutdown.cancelled() => {
                    // Left `baking`, with its window recorded: the next agent (an upgrade's, a
                    // restart's) watches the rest of it.
                    tracing::info!(app = %self.app.name, release = %self.release, "the agent stops within a bake window: the next agent watches the rest");
                    return;
                }
            };
            match event {
                Ok(e) if e.app() == self.app.name => seen.add(&e, &self.release),
                Ok(_) => {}
                Err(RecvError::Lagged(lost)) => {
                    // Read the state once instead of the events lost.
                    tracing::debug!(lost, "the bake fell behind the supervisor's events");
                    let now = self.read();
                    seen.exits = seen.exits.max(now.exits.saturating_sub(baseline.exits));
                    seen.errored = seen.errored.max(now.errored);
                }
                Err(RecvError::Closed) => break,
            }
        }
        tracing::info!(app = %self.app.name, release = %self.release, "bake window of {window} passed: deploy live");
        finish(&self.d, self.id, DeployState::Live, &format!("{}: its bake window of {window} passed", self.live));
    }

    async fn roll_back(self, seen: Seen) {
        let (app, release) = (&self.app.name, &self.release);
        let Some(previous) = self.previous else {
            let why = format!(
                "within the bake window: {} worker restart(s), {} errored, and there is no previous release to roll back to: {release} keeps running",
                seen.exits, seen.errored
            );
            tracing::error!(%app, "{why}");
            return finish(&self.d, self.id, DeployState::Failed, &why);
        };
        let why = format!(
            "within the bake window: {} worker restart(s), {} errored; rolling back to {previous}",
            seen.exits, seen.errored
        );
        tracing::warn!(%app, "{why}");
        let by = super::Requester::named(Some(Trigger::Bake.as_str()));
        // The rollback is queued before the deploy says `rolled_back`. While an upgrade hands over
        // (deploys paused) it is asked again until it is taken (the upgrade failed) or this agent
        // stops: then the deploy stays `baking`, and the next agent watches the release again.
        loop {
            match self.d.request(app, Target::Rollback(Some(previous.clone())), Trigger::Bake, &by) {
                Ok(_) => return finish(&self.d, self.id, DeployState::RolledBack, &why),
                Err(super::DeployError::Stopping) => {
                    tokio::select! {
                        () = self.d.shutdown.cancelled() => {
                            tracing::warn!(%app, "the agent stops before the bake's rollback could be queued: the next agent watches {release} again");
                            return;
                        }
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(%app, error = %e, "bake rollback could not be queued");
                    let why = format!("{why}, but the rollback could not be queued ({e}): {release} keeps running");
                    return finish(&self.d, self.id, DeployState::Failed, &why);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;
    use crate::supervisor::event::{SupervisorEvent, WorkerRef};

    fn worker(release: &str) -> WorkerRef {
        WorkerRef { app: "web".into(), id: 0, serial: 1, release: release.into() }
    }

    #[test]
    fn the_bake_counts_only_what_the_release_s_workers_did_by_themselves() {
        let mut seen = Seen::default();
        let exited =
            |release: &str, retired| SupervisorEvent::WorkerExited { worker: worker(release), pid: Some(1), retired };
        seen.add(&exited("2-abc", true), "2-abc");
        seen.add(&exited("1-old", false), "2-abc");
        seen.add(&SupervisorEvent::WorkerOnline { worker: worker("2-abc"), pid: 1 }, "2-abc");
        assert_eq!(seen, Seen::default(), "retired workers and other releases do not count");
        seen.add(&exited("2-abc", false), "2-abc");
        assert!(!seen.unhealthy(), "one restart is allowed");
        seen.add(&exited("2-abc", false), "2-abc");
        assert!(seen.unhealthy(), "two are a crash loop");
        let mut seen = Seen::default();
        seen.add(&SupervisorEvent::WorkerErrored { worker: worker("2-abc"), why: "x".into(), restarts: 3 }, "2-abc");
        assert!(seen.unhealthy(), "an errored worker fails the bake at once");
    }
}
