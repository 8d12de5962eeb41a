//! The cluster supervisor: per app, N workers behind the app's front, kept running, reloaded
//! without failing a request, scaled, stopped.
//!
//! Operations on one app (reload, restart, stop, start, scale, memory replacements) take the
//! app's operation lock, so they never interleave; the front keeps serving throughout.

pub mod event;
mod health;
mod ipc;
pub(crate) mod lines;
mod live;
mod logs;
mod orphans;
mod procstat;
mod readiness;
pub mod reload;
pub(crate) mod spawn;
pub mod worker;

use crate::cgroup::Cgroups;
use crate::config::{self, AgentConfig, AppConfig, AppSource, ConfigError, Loaded, ProxyMode, ReloadConfig};
use crate::front::http::FrontStats;
use crate::front::{self, Rotation};
use crate::secrets::Secrets;
use crate::store::{Scale, Store, StoreError};
use deployer_wire::{AppMode, AppState, AppStatus, LogLine, ReloadOutcome, WorkerState};
use event::{Events, SupervisorEvent, WorkerRef};
pub use live::{ActiveRelease, recorded_release};
use logs::LogSink;
use nix::sys::signal::Signal;
use orphans::PidRecord;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use worker::NotReady;
use worker::{Retire, Worker, WorkerCtx, WorkerSpec};

/// Errors of supervisor operations, each with what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no app named `{0}`")]
    UnknownApp(String),
    #[error("cannot bind port {port} for app `{app}`: {source}")]
    Bind { app: String, port: u16, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare `{path}`: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("another agent is using the state dir `{0}`")]
    StateDirBusy(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the config file, read again for `--update-env` or a deploy, cannot be applied to an app.
#[derive(Debug, thiserror::Error)]
pub enum FreshConfigError {
    #[error("the config file has an error, nothing was changed:\n{0}")]
    Invalid(#[from] ConfigError),
    #[error("`port`, `proxy` or `bind` changed: send SIGHUP to the agent to apply that")]
    FrontChanged,
    #[error("app `{0}` is no longer in the config file")]
    Removed(String),
}

/// Why a reload did not move the app; its words are the `error` of the [`ReloadOutcome`], the
/// hint of a config error its `hint`.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] FreshConfigError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("no env set `{name}` in the app's `env_sets`{}", known_sets(.known))]
    UnknownEnvSet { name: String, known: Vec<String> },
}

/// ` (it has: production, staging)`, or nothing when the app has no env sets.
fn known_sets(known: &[String]) -> String {
    if known.is_empty() { String::new() } else { format!(" (it has: {})", known.join(", ")) }
}

impl ReloadError {
    /// The config error in it, if it is one (its hint is answered apart).
    fn config_error(&self) -> Option<&ConfigError> {
        match self {
            ReloadError::Config(FreshConfigError::Invalid(e)) | ReloadError::Refused(Refused::Spec(e)) => Some(e),
            _ => None,
        }
    }

    /// What went wrong, without the hint (a config error's place and words).
    fn problem(&self) -> String {
        let Some(e) = self.config_error() else { return self.to_string() };
        let place =
            ConfigError { file: e.file.clone(), line: e.line, col: e.col, message: e.message.clone(), hint: None };
        match self {
            ReloadError::Config(_) => format!("the config file has an error, nothing was changed:\n{place}"),
            _ => place.to_string(),
        }
    }

    fn hint(&self) -> Option<String> {
        if let ReloadError::UnknownEnvSet { name, .. } = self {
            return Some(format!("add `env_sets: {{ {name}: {{ KEY: value }} }}` to the app in the agent's config"));
        }
        self.config_error().and_then(|e| e.hint.clone())
    }
}

/// Everything the agent supervises.
pub struct Supervisor {
    config_path: PathBuf,
    /// Held while the agent runs: a second agent on the same state dir would reap our workers.
    _lock: nix::fcntl::Flock<std::fs::File>,
    state_dir: PathBuf,
    pids: Arc<PidRecord>,
    /// The cgroups of every process tree the agent starts (workers, install steps).
    cgroups: Cgroups,
    /// What children never get in their environment, and what logs mask (the daemon updates it).
    secrets: Secrets,
    apps: RwLock<BTreeMap<String, Arc<App>>>,
    /// Client connections all fronts may hold at once (`crate::limits`), and that number.
    front_budget: Arc<tokio::sync::Semaphore>,
    front_connections: usize,
    /// Every worker's and app's change, for whoever listens ([`Supervisor::events`]).
    events: Events,
    /// Cancelled when the agent stops: a roll or start in progress ends at once (new workers not
    /// yet in rotation are ended, the serving ones stay for the stop). Each app holds a child.
    halt: CancellationToken,
    /// Where each app's own state survives a restart (its release, a scale, a stop).
    store: Arc<Store>,
    /// The apps whose workers did not start when this agent started, and why.
    failed_at_start: Mutex<Vec<String>>,
}

impl Supervisor {
    /// Prepare the state dir, stop what a previous agent left running, open the state database
    /// (after the state dir's lock is held: a second agent never migrates it under the first),
    /// and bind every app's port. [`Supervisor::boot`] then starts the workers on each app's
    /// recorded release, scale and stop.
    pub fn open(
        loaded: &Loaded,
        secrets: Secrets,
        front_connections: usize,
    ) -> Result<Arc<Supervisor>, SupervisorError> {
        let state_dir = loaded.config.state_dir.clone();
        for dir in [state_dir.join("logs"), state_dir.join("run")] {
            std::fs::create_dir_all(&dir).map_err(|source| SupervisorError::StateDir { path: dir.clone(), source })?;
        }
        let lock = match crate::handover::take_lock() {
            // Handed over by the agent being upgraded: the same open file, so the same lock.
            Some(fd) => nix::fcntl::Flock::lock(std::fs::File::from(fd), nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|_| SupervisorError::StateDirBusy(state_dir.to_path_buf()))?,
            None => lock_state_dir(&state_dir)?,
        };
        let pids = Arc::new(PidRecord::new(state_dir.join("run").join("workers.pids")));
        let store = Arc::new(Store::open(&state_dir.join("agent.db"), secrets.clone())?);
        let cgroups = Cgroups::detect(&state_dir);
        // An upgrade's new agent: what runs belongs to the old agent, still serving.
        if !crate::handover::is_new_side() {
            let reaped = pids.reap_previous();
            if reaped > 0 {
                tracing::warn!(reaped, "stopped workers left running by a previous agent");
            }
            let reaped = cgroups.reap_previous();
            if reaped > 0 {
                tracing::warn!(reaped, "ended process trees (workers, install steps) left by a previous agent");
            }
        }
        let sup = Arc::new(Supervisor {
            config_path: loaded.path.clone(),
            state_dir,
            _lock: lock,
            pids,
            cgroups,
            secrets,
            apps: RwLock::new(BTreeMap::new()),
            front_budget: Arc::new(tokio::sync::Semaphore::new(front_connections)),
            front_connections,
            events: Events::default(),
            halt: CancellationToken::new(),
            store,
            failed_at_start: Mutex::new(Vec::new()),
        });
        for (name, cfg) in &loaded.config.apps {
            let app = sup.create_app(name, cfg)?;
            sup.apps.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), app);
        }
        Ok(sup)
    }

    /// Start every app's workers and wait until they are ready (or failed: see
    /// [`Supervisor::failed_at_start`]). The API answers meanwhile; each app's state says
    /// `starting` until its own workers are up, and its front serves from its first ready worker.
    pub async fn boot(&self) {
        let apps: Vec<Arc<App>> = self.list();
        let results = futures_util::future::join_all(apps.iter().map(|a| a.boot())).await;
        for (app, r) in apps.iter().zip(results) {
            if let Err(e) = r {
                tracing::error!(app = %app.name, error = %e, "workers did not start; see `deployer logs {}`", app.name);
                self.failed_at_start.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}: {e}", app.name));
            }
        }
    }

    /// The state database, opened under the state dir's lock.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Worker and app changes from now on. A receiver that lags loses the oldest events (it is
    /// told how many; it then reads [`App::worker_states`] once), never blocks the supervisor.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<SupervisorEvent> {
        self.events.subscribe()
    }

    /// The agent stops: interrupt every roll, reload or start in progress (a SIGHUP's included),
    /// so the stop does not wait for new workers to get ready. New workers not yet in rotation
    /// are ended; every slot keeps a worker that serves, and the stop ends those.
    pub fn halt(&self) {
        self.halt.cancel();
    }

    pub fn list(&self) -> Vec<Arc<App>> {
        self.apps.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn app(&self, name: &str) -> Result<Arc<App>, SupervisorError> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::UnknownApp(name.to_string()))
    }

    fn create_app(&self, name: &str, cfg: &AppConfig) -> Result<Arc<App>, SupervisorError> {
        // An app deployed from git runs its recorded release; before the first deploy it has none.
        let app_dir = cfg.source.app_dir().map(Path::to_path_buf);
        let release = match &app_dir {
            Some(dir) => live::settle(&self.store, name, dir)?,
            None => None,
        };
        let instances = self.instances_at_start(name, cfg)?;
        let spec = resolve_spec(cfg, release.as_ref())?.map(Arc::new);
        let logs = Arc::new(LogSink::new(name, self.state_dir.join("logs"), &cfg.logs, self.secrets.clone()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cut = CancellationToken::new();
        let halt = self.halt.child_token();
        let stats = Arc::new(FrontStats::default());
        let access_log = logs::access_log(
            self.state_dir.join("logs").join(format!("{name}.access.log")),
            &cfg.logs,
            &tracker,
            cancel.clone(),
        );
        let (rules, rules_rx) = tokio::sync::watch::channel(client_rules(cfg, &access_log));
        // A copy of the public socket's fd, for an upgrade to hand over; closed with the app.
        let mut handover_fd: Option<std::os::fd::OwnedFd> = None;
        let (rotation, listener) = match (cfg.proxy, cfg.port) {
            (ProxyMode::Http | ProxyMode::Tcp, Some(port)) => {
                let addr = SocketAddr::new(cfg.bind, port);
                let l = crate::listeners::tcp(name, addr)
                    .and_then(|l| {
                        handover_fd = Some(l.try_clone()?.into());
                        tokio::net::TcpListener::from_std(l)
                    })
                    .map_err(|source| SupervisorError::Bind { app: name.into(), port, source })?;
                let rotation = Arc::new(Rotation::default());
                rotation.set_unhealthy_after(cfg.front.unhealthy_after as usize);
                let serve = {
                    let (rotation, stats, tracker2) = (rotation.clone(), stats.clone(), tracker.clone());
                    let stop = front::Stop { accepting: cancel.clone(), open: cut.clone() };
                    let mode = cfg.proxy;
                    // By default one front may take three quarters of the budget: a flood on one
                    // app's port leaves the others a quarter.
                    let own = cfg.front.max_connections.map_or(self.front_connections * 3 / 4, |n| n as usize).max(1);
                    let budget = front::accept::Budget {
                        all_fronts: self.front_budget.clone(),
                        this_front: Arc::new(tokio::sync::Semaphore::new(own)),
                    };
                    async move {
                        match mode {
                            ProxyMode::Tcp => {
                                front::tcp::serve(l, rotation, stats, budget, rules_rx, stop, tracker2).await
                            }
                            _ => front::http::serve(l, rotation, stats, rules_rx, budget, stop, tracker2).await,
                        }
                    }
                };
                tracker.spawn(serve);
                tracing::info!(app = name, %addr, mode = cfg.proxy.as_str(), "front listening");
                (Some(rotation), None)
            }
            (ProxyMode::Fd, Some(port)) => {
                let addr = SocketAddr::new(cfg.bind, port);
                let l = crate::listeners::tcp(name, addr)
                    // The workers accept on it, and may expect a blocking socket as `bind` gives.
                    .and_then(|l| l.set_nonblocking(false).map(|()| l))
                    .and_then(|l| {
                        handover_fd = Some(l.try_clone()?.into());
                        Ok(l)
                    })
                    .map_err(|source| SupervisorError::Bind { app: name.into(), port, source })?;
                tracing::info!(app = name, %addr, "listening socket handed to workers (fd mode)");
                (None, Some(Arc::new(l)))
            }
            _ => (None, None),
        };
        let ctx = Arc::new(WorkerCtx {
            app: name.to_string(),
            mode: cfg.proxy,
            rotation,
            listener,
            app_port: cfg.port,
            logs,
            pids: self.pids.clone(),
            run_dir: self.state_dir.join("run"),
            secrets: self.secrets.clone(),
            cgroups: self.cgroups.clone(),
            events: self.events.clone(),
            tasks: TaskTracker::new(),
        });
        let app = Arc::new(App {
            name: name.to_string(),
            config_path: self.config_path.clone(),
            ctx,
            stats,
            config: Mutex::new(cfg.clone()),
            rules,
            access_log,
            spec: Mutex::new(spec),
            app_dir,
            release: Mutex::new(release),
            store: self.store.clone(),
            workers: Mutex::new(Vec::new()),
            instances: AtomicU32::new(instances),
            starting: AtomicBool::new(true),
            running: AtomicBool::new(false),
            reloading: AtomicBool::new(false),
            handover_fd: Mutex::new(handover_fd),
            op: tokio::sync::Mutex::new(()),
            boot_superseded: CancellationToken::new(),
            cancel,
            halt,
            tracker,
            cut,
            tasks: TaskTracker::new(),
            retiring: Arc::new(tokio::sync::Mutex::new(())),
        });
        app.tasks.spawn(app.clone().monitor());
        app.tasks.spawn(app.clone().scheduled_reloads());
        if let Some(rotation) = app.ctx.rotation.clone() {
            app.tasks.spawn(app.clone().replace_unhealthy());
            app.tasks.spawn(health::probe_workers(app.clone(), rotation));
        }
        Ok(app)
    }

    /// How many workers `name` starts with: a runtime `scale` while the config's `instances` is
    /// still what it overrode, the config's `instances` otherwise (and the scale is dropped).
    fn instances_at_start(&self, name: &str, cfg: &AppConfig) -> Result<u32, SupervisorError> {
        let scale = self.store.app_record(name)?.and_then(|r| r.scale);
        match scale {
            Some(s) if s.over == cfg.instances.to_string() => {
                tracing::info!(app = name, instances = s.instances, "scaled at runtime: starting as scaled");
                Ok(s.instances)
            }
            Some(s) => {
                tracing::info!(
                    app = name,
                    scaled = s.instances,
                    config = %cfg.instances,
                    "`instances` changed in the config since the runtime scale: the config's applies"
                );
                self.store.set_scale(name, None)?;
                Ok(cfg.instances.resolve())
            }
            None => Ok(cfg.instances.resolve()),
        }
    }

    /// SIGHUP: apply a re-read config. Apps added start, removed ones stop, changed ones are
    /// reloaded onto the new settings (or recreated when their port or front changed). The
    /// caller has updated the [`Secrets`] first, so every worker started from here on gets the
    /// environment of the new config.
    pub async fn apply(&self, loaded: &Loaded) -> Result<(), SupervisorError> {
        let current: BTreeMap<String, Arc<App>> = self.apps.read().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, app) in &current {
            if self.halt.is_cancelled() {
                return Ok(());
            }
            if !loaded.config.apps.contains_key(name) {
                tracing::info!(app = %name, "removed from the config; stopping");
                app.shutdown().await;
                // An app added again later starts as its config says.
                if let Err(e) = self.store.set_scale(name, None).and_then(|()| self.store.set_stopped(name, false)) {
                    tracing::warn!(app = %name, error = %e, "cannot forget the removed app's scale and stop");
                }
                self.apps.write().unwrap_or_else(|e| e.into_inner()).remove(name);
            }
        }
        for (name, cfg) in &loaded.config.apps {
            if self.halt.is_cancelled() {
                tracing::info!("the agent is stopping: the rest of the new config is not applied");
                return Ok(());
            }
            match current.get(name) {
                Some(app) if app.config() == app.with_env_set(cfg.clone()) => {}
                Some(app) if app.same_front(cfg) => {
                    tracing::info!(app = %name, "changed in the config; reloading");
                    let out = app.reload_with(Some(app.with_env_set(cfg.clone()))).await;
                    if !out.ok {
                        tracing::error!(app = %name, error = ?out.error, "reload onto the new config failed");
                    }
                }
                existing => {
                    if let Some(app) = existing {
                        tracing::info!(app = %name, "port or front changed; restarting it");
                        app.shutdown().await;
                    }
                    let app = self.create_app(name, cfg)?;
                    self.apps.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), app.clone());
                    if let Err(e) = app.boot().await {
                        tracing::error!(app = %name, error = %e, "workers did not start");
                    }
                }
            }
        }
        Ok(())
    }

    /// Stop taking connections, let in-flight requests finish, stop every worker: every app at
    /// once, each within its `drain_timeout + kill_timeout`.
    pub async fn shutdown(&self) {
        self.halt();
        let apps = self.list();
        futures_util::future::join_all(apps.iter().map(|a| a.shutdown())).await;
        self.cgroups.remove_root();
    }

    /// The apps whose workers did not start when this agent started (an upgrade's new agent
    /// with such an app gives up, and the old agent serves on).
    pub fn failed_at_start(&self) -> Vec<String> {
        self.failed_at_start.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Copies of what an upgrade hands over: the state dir's lock and each app's public socket.
    pub fn handover_fds(&self) -> std::io::Result<Vec<(String, std::os::fd::OwnedFd)>> {
        use std::os::fd::AsFd;
        let mut fds = vec![("lock".to_string(), self._lock.as_fd().try_clone_to_owned()?)];
        for app in self.list() {
            if let Some(fd) = app.handover_fd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                fds.push((app.name.clone(), fd.try_clone()?));
            }
        }
        Ok(fds)
    }

    /// Write the worker pid record again from this agent's own workers (after the agent it
    /// replaced, which wrote the same file, has exited).
    pub fn rewrite_pid_record(&self) {
        self.pids.rewrite();
    }

    /// Where install steps and hooks put their process trees.
    pub fn cgroups(&self) -> Cgroups {
        self.cgroups.clone()
    }
}

fn lock_state_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, SupervisorError> {
    let path = state_dir.join("run").join("agent.lock");
    // 0600: another local user holding the lock would keep the agent from starting.
    let file = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().create(true).truncate(false).write(true),
        0o600,
    )
    .open(&path)
    .map_err(|source| SupervisorError::StateDir { path: path.clone(), source })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| SupervisorError::StateDirBusy(state_dir.to_path_buf()))
}

/// Why [`App::roll_locked`] did not move the app.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// Before anything changed: there is no release to run yet.
    #[error("no release deployed yet: deploy one first")]
    NoRelease,
    /// Before anything changed: the config or `env_file` has an error.
    #[error(transparent)]
    Spec(ConfigError),
    /// The roll stopped; what it put back is in the error.
    #[error("{}; {}", .0.reason, if .0.restored {
        "the previous workers are serving"
    } else {
        "some previous workers could not be put back"
    })]
    Roll(reload::RollFailed),
}

/// Clears an app's `starting` flag when its boot ends, however it ends.
struct Started<'a>(&'a AtomicBool);

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

/// How long an app's stop waits for its workers' output readers once the workers are gone.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How far back replacements of unhealthy workers count towards the backoff.
const UNHEALTHY_WINDOW: Duration = Duration::from_secs(600);

/// The wait before replacing an unhealthy worker when `recent` were replaced within
/// [`UNHEALTHY_WINDOW`]: none for the first three, then 30 s, doubling up to 5 minutes.
fn unhealthy_backoff(recent: usize) -> Option<Duration> {
    let over = recent.checked_sub(3)?;
    Some(Duration::from_secs(30u64.saturating_mul(1 << over.min(4))).min(Duration::from_secs(300)))
}

/// The app's `front:` settings as the `http` front applies them.
fn client_rules(cfg: &AppConfig, access_log: &tokio::sync::mpsc::Sender<String>) -> Arc<front::http::ClientRules> {
    let f = cfg.front.clone();
    Arc::new(front::http::ClientRules {
        access_log: f.access_log.then(|| access_log.clone()),
        header_timeout: f.header_timeout.0,
        idle_timeout: f.idle_timeout.0,
        response_timeout: f.response_timeout.0,
        body_timeout: f.body_timeout.0,
        max_body: f.max_body.0,
        tunnel_idle_timeout: f.tunnel_idle_timeout.0,
        trusted_proxy: Box::new(move |ip| f.trusts(ip)),
        superseded: tokio_util::sync::CancellationToken::new(),
    })
}

/// Read `env_file` and fix everything a worker of this config will run with: in `cwd`, or in
/// the release's `root` for an app deployed from git (`None` when it has no release yet).
pub fn resolve_spec(cfg: &AppConfig, release: Option<&ActiveRelease>) -> Result<Option<WorkerSpec>, ConfigError> {
    let (workdir, release_name) = match (&cfg.source, release) {
        (AppSource::Dir(cwd), _) => (cwd.clone(), cwd.display().to_string()),
        // A release holds only the repository's `root` subdirectory: it is the workers' cwd.
        (AppSource::Git(_), Some(r)) => (r.dir.clone(), r.name.clone()),
        (AppSource::Git(_), None) => return Ok(None),
    };
    let mut env = BTreeMap::new();
    if let Some(r) = &cfg.run_as {
        env.extend(r.env());
    }
    env.extend(config::env_file::read_for_app(cfg, release.map(|r| r.name.as_str()))?);
    env.extend(cfg.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(set) = cfg.env_set.as_ref().and_then(|name| cfg.env_sets.get(name)) {
        env.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut h = Sha256::new();
    for (k, v) in &env {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    let env_hash = hex::encode(&h.finalize()[..3]);
    Ok(Some(WorkerSpec {
        argv: cfg.start.0.clone(),
        cwd: workdir,
        env,
        env_hash,
        release: release_name,
        ready: cfg.ready.clone(),
        restart: cfg.restart.clone(),
        run_as: cfg.run_as.clone(),
        ipc: cfg.uses_ipc(),
    }))
}

/// One supervised app.
pub struct App {
    pub name: String,
    config_path: PathBuf,
    ctx: Arc<WorkerCtx>,
    stats: Arc<FrontStats>,
    config: Mutex<AppConfig>,
    /// The `front:` part of `config` as the `http` front reads it.
    rules: tokio::sync::watch::Sender<Arc<front::http::ClientRules>>,
    /// Lines for `<app>.access.log` (used while `front.access_log` is on).
    access_log: tokio::sync::mpsc::Sender<String>,
    /// The spec the cluster was started (or last reloaded) with: a plain reload keeps it.
    spec: Mutex<Option<Arc<WorkerSpec>>>,
    /// `repo.git`, `releases/`, `current`: the app's directory (apps deployed from git).
    app_dir: Option<PathBuf>,
    /// The release the workers run (apps deployed from git). The one owner of this fact: it is
    /// changed only with the record in `store` and its mirror `current` ([`live`]).
    release: Mutex<Option<ActiveRelease>>,
    /// Where the release, a runtime scale and a stop by request are recorded.
    store: Arc<Store>,
    /// Slot `i` holds the worker with instance id `i`.
    workers: Mutex<Vec<Arc<Worker>>>,
    instances: AtomicU32,
    running: AtomicBool,
    reloading: AtomicBool,
    /// From creation until [`App::boot`] ends: the agent's start has not brought it up yet.
    starting: AtomicBool,
    op: tokio::sync::Mutex<()>,
    /// Cancelled by the first operation that wants `op` while the agent's start still waits for
    /// the app's workers: the boot lets go of the lock (the workers keep starting in their slots)
    /// instead of holding a `stop` or a `scale` for up to `ready.timeout`.
    boot_superseded: CancellationToken,
    /// Cancelled when the app stops: the front stops accepting, the background tasks end.
    cancel: CancellationToken,
    /// Cancelled when the agent (or this app) stops: a roll or start in progress ends at once.
    halt: CancellationToken,
    /// The front's accept loop and its connections.
    tracker: TaskTracker,
    /// Cancelled when the app's stop has waited `drain_timeout` for its connections: those
    /// still open are closed (a head still trickling in, a tunnel whose worker ignores the end).
    cut: CancellationToken,
    /// The background tasks: monitor, unhealthy replacements, health probes, the old workers of
    /// a deploy's roll that answered once they left the rotation.
    tasks: TaskTracker,
    /// Held while such old workers drain and exit ([`reload::Tail::Detach`]): a roll and a stop
    /// wait for it first, so an app never runs more than one set of retiring workers.
    retiring: Arc<tokio::sync::Mutex<()>>,
    /// The public socket, for an upgrade to hand over (a copy of the fd the front serves).
    /// Closed when the app stops: a copy left open would keep the port listening with nobody
    /// accepting, so new connections would wait and then be reset instead of refused at once.
    handover_fd: Mutex<Option<std::os::fd::OwnedFd>>,
}

impl App {
    pub fn config(&self) -> AppConfig {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The config the app runs with, and the front's view of it.
    fn set_config(&self, cfg: AppConfig) {
        // Connections waiting by the old rules wake and wait again by the new ones.
        self.rules.send_replace(client_rules(&cfg, &self.access_log)).superseded.cancel();
        if let Some(rot) = &self.ctx.rotation {
            rot.set_unhealthy_after(cfg.front.unhealthy_after as usize);
        }
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    fn same_front(&self, other: &AppConfig) -> bool {
        let c = self.config();
        c.port == other.port && c.proxy == other.proxy && c.bind == other.bind
    }

    pub(crate) fn reload_config(&self) -> ReloadConfig {
        self.config().reload
    }

    /// A reload stops old workers before starting new ones ([`AppConfig::reloads_stop_first`]).
    pub(crate) fn stops_first(&self) -> bool {
        self.config().reloads_stop_first()
    }

    pub(crate) fn worker_ctx(&self) -> Arc<WorkerCtx> {
        self.ctx.clone()
    }

    pub fn front_stats(&self) -> &FrontStats {
        &self.stats
    }

    pub(crate) fn retire_how(&self) -> Retire {
        let r = self.reload_config();
        Retire { signal: r.signal.0, drain_timeout: r.drain_timeout.0, kill_timeout: r.kill_timeout.0 }
    }

    fn stop_how(&self) -> Retire {
        Retire { signal: Signal::SIGTERM, ..self.retire_how() }
    }

    /// Put `news` into `slots`; answers the workers they replace.
    pub(crate) fn swap_workers(&self, slots: &[usize], news: &[Arc<Worker>]) -> Vec<Arc<Worker>> {
        let olds: Vec<Arc<Worker>> = {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            slots.iter().zip(news).map(|(&s, n)| std::mem::replace(&mut workers[s], n.clone())).collect()
        };
        for (old, new) in olds.iter().zip(news) {
            self.ctx.events.send(SupervisorEvent::WorkerReplaced { old: old.reference(), new: new.reference() });
        }
        olds
    }

    /// Cancelled when the agent or this app stops: a roll or start waiting for new workers
    /// gives up at once.
    pub(crate) fn halted(&self) -> &CancellationToken {
        &self.halt
    }

    /// Every worker as events name it, with its state and restarts now: what a listener that
    /// lagged reads once to catch up.
    pub fn worker_states(&self) -> Vec<(WorkerRef, worker::Status)> {
        self.workers().iter().map(|w| (w.reference(), w.status())).collect()
    }

    fn workers(&self) -> Vec<Arc<Worker>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The workers in `slots`, in that order.
    pub(crate) fn workers_in(&self, slots: &[usize]) -> Vec<Arc<Worker>> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter_map(|&s| workers.get(s).cloned()).collect()
    }

    fn current_spec(&self) -> Option<Arc<WorkerSpec>> {
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn release(&self) -> Option<ActiveRelease> {
        self.release.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This app's part of the config file as it is now (`--update-env` and deploys re-read it).
    pub fn fresh_config(&self) -> Result<AppConfig, FreshConfigError> {
        let fresh = config::load(&self.config_path)?;
        // A secret this file names is withheld from the workers started with it, SIGHUP or not.
        self.ctx.secrets.include(&fresh.config);
        match fresh.config.apps.get(&self.name) {
            Some(cfg) if self.same_front(cfg) => Ok(self.with_env_set(cfg.clone())),
            Some(_) => Err(FreshConfigError::FrontChanged),
            None => Err(FreshConfigError::Removed(self.name.clone())),
        }
    }

    /// Roll the workers onto `release` with `cfg` and `spec` (the deploy path: the caller
    /// resolved the spec in the release, `env_file` read once). Before the first release the
    /// workers are simply started. The release is live once this answers `Ok`: recorded, mirrored
    /// by `current`, and served.
    pub async fn roll_to(
        &self,
        cfg: AppConfig,
        release: ActiveRelease,
        spec: WorkerSpec,
    ) -> Result<reload::Rolled, reload::RollFailed> {
        let _op = self.take_op().await;
        self.roll_locked(Some(cfg), Some((release, spec)), reload::Tail::Detach).await.map_err(|e| match e {
            Refused::Roll(e) => e,
            nothing_changed => reload::RollFailed { reason: nothing_changed.to_string(), restored: true },
        })
    }

    /// The one roll protocol, under the operation lock: reload, `--update-env`, SIGHUP, deploy
    /// and rollback all come here. Moves the app onto `cfg` (a re-read config) and `target` (a
    /// new release with the spec resolved in it), either, both or neither (a plain reload keeps
    /// the spec it runs). The new spec, config and release are kept only if the roll succeeds
    /// and the release is recorded: otherwise the previous workers, config and record are put
    /// back, and nothing that serves disagrees with what is recorded. A changed `instances`
    /// applies after the roll (and ends a runtime scale).
    async fn roll_locked(
        &self,
        cfg: Option<AppConfig>,
        target: Option<(ActiveRelease, WorkerSpec)>,
        tail: reload::Tail,
    ) -> Result<reload::Rolled, Refused> {
        // The old workers of the roll before, if it answered before they exited.
        drop(self.retiring.lock().await);
        let (release, spec) = match target {
            Some((release, spec)) => (Some(release), Ok(Some(spec))),
            None if cfg.is_none() => (None, Ok(self.current_spec().map(|s| WorkerSpec::clone(&s)))),
            None => {
                let c = cfg.clone().unwrap_or_else(|| self.config());
                (None, resolve_spec(&c, self.release().as_ref()))
            }
        };
        let spec = match spec {
            Ok(Some(s)) => Arc::new(s),
            Ok(None) => return Err(Refused::NoRelease),
            Err(e) => return Err(Refused::Spec(e)),
        };
        let previous_cfg = self.config();
        let previous_spec = self.current_spec();
        // `Some(n)`: the config's `instances` changed, so it applies (and a runtime scale ends).
        let resize = cfg.as_ref().filter(|c| c.instances != previous_cfg.instances).map(|c| c.instances.resolve());
        if let Some(c) = &cfg {
            self.set_config(c.clone());
        }
        if !self.running.load(SeqCst) {
            return self.move_stopped(spec, previous_cfg, release.as_ref(), resize).map(|()| reload::Rolled::default());
        }
        if self.workers().is_empty() {
            return self
                .start_onto(spec, previous_cfg, previous_spec, release.as_ref(), resize)
                .await
                .map(|()| reload::Rolled::default());
        }
        self.reloading.store(true, SeqCst);
        let slots: Vec<usize> = (0..self.workers().len()).collect();
        let span = match &release {
            Some(r) => tracing::info_span!("reload", app = %self.name, release = %r.name),
            None => tracing::info_span!("reload", app = %self.name, env = %spec.env_hash),
        };
        let result = tracing::Instrument::instrument(reload::roll(self, &slots, &spec, tail), span).await;
        let result = match result {
            Ok(n) => match self.record_release(release.as_ref()) {
                Ok(()) => Ok(n),
                Err(reason) => {
                    // Served, but not recorded: back onto the previous spec, the same way.
                    let restored = match &previous_spec {
                        Some(p) => reload::roll(self, &slots, p, reload::Tail::Await).await.is_ok(),
                        None => false,
                    };
                    Err(reload::RollFailed { reason, restored })
                }
            },
            Err(e) => Err(e),
        };
        self.reloading.store(false, SeqCst);
        match result {
            Ok(n) => {
                *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = Some(spec);
                if let Some(want) = resize {
                    self.end_scale();
                    if let Err(e) = self.resize_locked(want).await {
                        tracing::warn!(app = %self.name, error = %e, "scaling to the new `instances` failed");
                    }
                }
                let release = self.release().map(|r| r.name);
                if let Some(gap) = n.gap {
                    tracing::warn!(
                        app = %self.name,
                        gap_ms = gap.as_millis() as u64,
                        "reloaded stop-then-start (`proxy: none` with a `port`): the app did not serve in between; \
                         `reload: {{ reuse_port: true }}` avoids it if the app binds with SO_REUSEPORT"
                    );
                }
                self.ctx.events.send(SupervisorEvent::AppReloaded {
                    app: self.name.clone(),
                    replaced: n.replaced,
                    release,
                });
                Ok(n)
            }
            Err(e) => {
                self.set_config(previous_cfg);
                Err(Refused::Roll(e))
            }
        }
    }

    /// The roll of an app stopped by request: it stays stopped (a deploy, a reload or SIGHUP
    /// change what it will run; `start` runs it). The release is recorded all the same.
    fn move_stopped(
        &self,
        spec: Arc<WorkerSpec>,
        previous_cfg: AppConfig,
        release: Option<&ActiveRelease>,
        resize: Option<u32>,
    ) -> Result<(), Refused> {
        if let Err(reason) = self.record_release(release) {
            self.set_config(previous_cfg);
            return Err(Refused::Roll(reload::RollFailed { reason, restored: true }));
        }
        tracing::info!(app = %self.name, "the app is stopped: it starts on this with `deployer start {}`", self.name);
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = Some(spec);
        if let Some(n) = resize {
            self.instances.store(n, SeqCst);
            self.end_scale();
        }
        Ok(())
    }

    /// The roll of a running app with no workers (before its first release): start them on
    /// `spec`. A start that fails, or a release that cannot be recorded, ends the new workers and
    /// puts the previous spec, config and count back.
    async fn start_onto(
        &self,
        spec: Arc<WorkerSpec>,
        previous_cfg: AppConfig,
        previous_spec: Option<Arc<WorkerSpec>>,
        release: Option<&ActiveRelease>,
        resize: Option<u32>,
    ) -> Result<(), Refused> {
        let previous_count = self.instances.load(SeqCst);
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = Some(spec);
        if let Some(n) = resize {
            self.instances.store(n, SeqCst);
        }
        let started = self.start_locked().await.map_err(|e| e.to_string()).and_then(|()| self.record_release(release));
        if let Err(reason) = started {
            self.stop_locked().await;
            // Running still: its first release is yet to come.
            self.running.store(true, SeqCst);
            self.instances.store(previous_count, SeqCst);
            *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = previous_spec;
            self.set_config(previous_cfg);
            return Err(Refused::Roll(reload::RollFailed { reason, restored: false }));
        }
        if resize.is_some() {
            self.end_scale();
        }
        Ok(())
    }

    /// Make `release` the live one (nothing to do for `None`: a reload keeps its release): the
    /// mirror `current` first, then the record, then memory. The record's write is the commit:
    /// when it fails, `current` is put back. See [`live`] for which wins at start.
    fn record_release(&self, release: Option<&ActiveRelease>) -> Result<(), String> {
        let (Some(r), Some(dir)) = (release, &self.app_dir) else { return Ok(()) };
        let previous = self.release();
        live::mirror(dir, Some(&r.name)).map_err(|e| format!("cannot switch `current` to {}: {e}", r.name))?;
        if let Err(e) = self.store.set_live_release(&self.name, Some(&r.name)) {
            if let Err(e) = live::mirror(dir, previous.as_ref().map(|p| p.name.as_str())) {
                tracing::error!(
                    app = %self.name,
                    error = %e,
                    "cannot put `current` back; the next start rewrites it from the record"
                );
            }
            return Err(format!("cannot record release {} as live: {e}", r.name));
        }
        *self.release.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        Ok(())
    }

    /// The config's `instances` applies again: a runtime scale is over. A failure to record it
    /// is harmless (a scale counts only while the config's `instances` is what it overrode).
    fn end_scale(&self) {
        if let Err(e) = self.store.set_scale(&self.name, None) {
            tracing::warn!(app = %self.name, error = %e, "cannot record the end of the runtime scale");
        }
    }

    /// Grow or shrink to `n` workers (when running): the highest instance ids retire gracefully,
    /// missing ones start.
    async fn resize_locked(&self, n: u32) -> Result<(), NotReady> {
        self.instances.store(n, SeqCst);
        if !self.running.load(SeqCst) {
            return Ok(());
        }
        let extra: Vec<Arc<Worker>> = {
            let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            if w.len() > n as usize { w.split_off(n as usize) } else { Vec::new() }
        };
        let how = self.retire_how();
        futures_util::future::join_all(extra.iter().map(|w| w.retire(how, self.ctx.rotation.as_deref()))).await;
        self.start_locked().await
    }

    pub fn status(&self) -> AppStatus {
        let cfg = self.config();
        let instances = self.instances.load(SeqCst);
        let configured = cfg.instances.resolve();
        let workers: Vec<_> = self.workers().iter().map(|w| w.to_wire()).collect();
        // Until its boot ends and no longer once all its workers are online (the boot ends a
        // moment later).
        let starting = self.starting.load(SeqCst) && !workers.iter().all(|w| w.state == WorkerState::Online);
        let state = if starting {
            AppState::Starting
        } else if self.reloading.load(SeqCst) {
            AppState::Reloading
        } else if self.running.load(SeqCst) {
            AppState::Running
        } else {
            AppState::Stopped
        };
        let mode = match cfg.proxy {
            ProxyMode::Http => AppMode::Http,
            ProxyMode::Tcp => AppMode::Tcp,
            ProxyMode::Fd => AppMode::Fd,
            ProxyMode::None => AppMode::None,
        };
        AppStatus {
            name: self.name.clone(),
            mode,
            port: cfg.port,
            instances,
            configured: (configured != instances).then_some(configured),
            state,
            workers,
            release: self.release().map(|r| r.name),
            // The front counts in `http` and `tcp` modes; in `fd` and `none` nothing passes it.
            requests_total: matches!(mode, AppMode::Http | AppMode::Tcp).then(|| self.stats.requests.load(Relaxed)),
        }
    }

    pub fn logs(&self, lines: usize, only: Option<deployer_wire::LogStream>) -> Vec<LogLine> {
        self.ctx.logs.tail(lines, only)
    }

    /// `deployer flush`: empty the app's log files; answers the files emptied or removed.
    pub fn flush_logs(&self) -> Vec<std::path::PathBuf> {
        self.ctx.logs.flush()
    }

    /// The last `lines` lines and a receiver of every later one (`logs --follow`).
    pub fn follow_logs(
        &self,
        lines: usize,
        only: Option<deployer_wire::LogStream>,
    ) -> (Vec<LogLine>, tokio::sync::broadcast::Receiver<LogLine>) {
        self.ctx.logs.follow(lines, only)
    }

    /// Start the workers at the agent's start (or when SIGHUP added the app), unless the app was
    /// stopped by request: that holds across restarts until `deployer start`.
    pub(crate) async fn boot(&self) -> Result<(), NotReady> {
        let _op = self.op.lock().await;
        let _started = Started(&self.starting);
        let record = self
            .store
            .app_record(&self.name)
            .map_err(|e| NotReady::NotRecorded(format!("cannot read the app's state: {e}")))?;
        if record.is_some_and(|r| r.stopped) {
            tracing::info!(
                app = %self.name,
                "stopped by `deployer stop`: not started; `deployer start {}` starts it",
                self.name
            );
            return Ok(());
        }
        tokio::select! {
            r = self.start_locked() => r,
            () = self.boot_superseded.cancelled() => {
                tracing::info!(app = %self.name, "another operation came before the workers were ready; it takes over");
                Ok(())
            }
        }
    }

    /// The app's operation lock; an operation asked for while the agent's start still waits for
    /// the workers takes over from it ([`App::boot`]).
    async fn take_op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        if self.starting.load(SeqCst) {
            self.boot_superseded.cancel();
        }
        self.op.lock().await
    }

    /// Start the configured number of workers (if stopped) and wait until they are ready. The
    /// app counts as running from now on, after a restart of the agent too.
    pub async fn start(&self) -> Result<(), NotReady> {
        let _op = self.take_op().await;
        self.record_stopped(false)?;
        self.start_locked().await
    }

    async fn start_locked(&self) -> Result<(), NotReady> {
        if self.halt.is_cancelled() {
            // Nothing started after the stop began: the stop would not wait for it.
            return Err(NotReady::Stopping);
        }
        self.running.store(true, SeqCst);
        let n = self.instances.load(SeqCst) as usize;
        let Some(spec) = self.current_spec() else {
            tracing::info!(app = %self.name, "no release deployed yet: the workers start with the first deploy");
            return Ok(());
        };
        let news: Vec<Arc<Worker>> = {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            let have = workers.len();
            let news: Vec<Arc<Worker>> =
                (have..n).map(|i| Worker::start(i as u32, spec.clone(), self.ctx.clone())).collect();
            workers.extend(news.iter().cloned());
            news
        };
        let timeout = spec.ready.timeout + Duration::from_secs(1);
        let ready = futures_util::future::join_all(news.iter().map(|w| w.wait_ready(timeout)));
        // The agent's stop does not wait for workers to get ready: they are in their slots, and
        // the stop ends them with the others.
        let results = tokio::select! {
            r = ready => r,
            _ = self.halt.cancelled() => return Err(NotReady::Stopping),
        };
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => {
                if !news.is_empty() {
                    self.ctx.events.send(SupervisorEvent::AppStarted { app: self.name.clone() });
                }
                Ok(())
            }
        }
    }

    /// Stop every worker gracefully: out of rotation, drain, SIGTERM, `kill_timeout`, SIGKILL.
    /// Recorded first: the app stays stopped after a restart of the agent, until `start`.
    pub async fn stop(&self) -> Result<(), NotReady> {
        let _op = self.take_op().await;
        self.record_stopped(true)?;
        self.stop_locked().await;
        Ok(())
    }

    async fn stop_locked(&self) {
        self.stop_workers(self.stop_how()).await;
    }

    /// Retire every worker `how`, at once.
    async fn stop_workers(&self, how: Retire) {
        self.running.store(false, SeqCst);
        let olds: Vec<Arc<Worker>> = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        futures_util::future::join_all(olds.iter().map(|w| w.retire(how, self.ctx.rotation.as_deref()))).await;
        // And those of a roll that answered before they exited: stopped means none runs.
        drop(self.retiring.lock().await);
        if !olds.is_empty() {
            self.ctx.events.send(SupervisorEvent::AppStopped { app: self.name.clone() });
        }
    }

    /// Stop then start (like `pm2 restart`: not zero-downtime; `reload` is).
    pub async fn restart(&self) -> Result<(), NotReady> {
        let _op = self.take_op().await;
        self.record_stopped(false)?;
        self.stop_locked().await;
        self.start_locked().await
    }

    /// Whether the app is stopped by request, recorded before it is done: a request whose record
    /// cannot be written changes nothing.
    fn record_stopped(&self, stopped: bool) -> Result<(), NotReady> {
        self.store
            .set_stopped(&self.name, stopped)
            .map_err(|e| NotReady::NotRecorded(format!("nothing was changed: cannot record it: {e}")))
    }

    /// Grow or shrink to `n` workers; shrinking retires the highest instance ids gracefully.
    /// Recorded first, with the config's `instances` it overrides: the next agent starts `n`
    /// workers too, until the config's `instances` changes.
    pub async fn scale(&self, n: u32) -> Result<(), NotReady> {
        self.scale_from(|_| Some(n)).await.map(|_| ())
    }

    /// Scale to `target(current count)`, read and applied under the operation lock (`scale web
    /// +2` never races another scale). `target` answering `None` changes nothing; answers the
    /// count scaled to.
    pub async fn scale_from(&self, target: impl FnOnce(u32) -> Option<u32>) -> Result<Option<u32>, NotReady> {
        let _op = self.take_op().await;
        let Some(n) = target(self.instances.load(SeqCst)) else { return Ok(None) };
        let configured = self.config().instances;
        let scale = (n != configured.resolve()).then(|| Scale { instances: n, over: configured.to_string() });
        self.store
            .set_scale(&self.name, scale.as_ref())
            .map_err(|e| NotReady::NotRecorded(format!("nothing was changed: cannot record the scale: {e}")))?;
        let resized = self.resize_locked(n).await;
        self.ctx.events.send(SupervisorEvent::AppScaled { app: self.name.clone(), instances: n });
        resized.map(|()| Some(n))
    }

    /// Send `signal` to the process group of every running worker (`deployer signal`); answers
    /// (instance id, pid) of each. The keepers send it, to the children they hold unreaped.
    pub fn signal(&self, signal: Signal) -> Vec<(u32, u32)> {
        self.workers().iter().filter_map(|w| w.signal(signal).map(|pid| (w.id, pid))).collect()
    }

    /// Rolling reload. With `update_env`, the config file and `env_file` are read again first;
    /// with `env_set`, too, and that env set of `env_sets` is put on top (and stays chosen).
    pub async fn reload(&self, update_env: bool, env_set: Option<String>) -> ReloadOutcome {
        if !update_env && env_set.is_none() {
            return self.reload_with(None).await;
        }
        let mut cfg = match self.fresh_config() {
            Ok(cfg) => cfg,
            Err(e) => return self.outcome(Instant::now(), Err(e.into())),
        };
        if let Some(name) = env_set {
            if !cfg.env_sets.contains_key(&name) {
                let known = cfg.env_sets.keys().cloned().collect();
                return self.outcome(Instant::now(), Err(ReloadError::UnknownEnvSet { name, known }));
            }
            cfg.env_set = Some(name);
        }
        self.reload_with(Some(cfg)).await
    }

    /// `cfg` with the env set this app runs with (a re-read config does not know it).
    /// A set the new config no longer has is dropped (said in the agent's log).
    pub(crate) fn with_env_set(&self, mut cfg: AppConfig) -> AppConfig {
        let chosen = self.config().env_set;
        cfg.env_set = chosen.clone().filter(|name| cfg.env_sets.contains_key(name));
        if let (Some(name), None) = (chosen, &cfg.env_set) {
            tracing::warn!(app = %self.name, env_set = %name, "the chosen env set is no longer in `env_sets`; not applied");
        }
        cfg
    }

    /// Reload onto `cfg` (a new config for this app) or onto the spec the cluster runs with.
    pub(crate) async fn reload_with(&self, cfg: Option<AppConfig>) -> ReloadOutcome {
        let _op = self.take_op().await;
        let started = Instant::now();
        let result = self.roll_locked(cfg, None, reload::Tail::Await).await.map_err(ReloadError::from);
        self.outcome(started, result)
    }

    fn outcome(&self, started: Instant, result: Result<reload::Rolled, ReloadError>) -> ReloadOutcome {
        let env_hash = self.current_spec().map(|s| s.env_hash.clone()).unwrap_or_default();
        let duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(rolled) => {
                tracing::info!(app = %self.name, replaced = rolled.replaced, duration_ms, "reload done");
                ReloadOutcome {
                    app: self.name.clone(),
                    ok: true,
                    replaced: rolled.replaced,
                    duration_ms,
                    env_hash,
                    error: None,
                    hint: None,
                    gap_ms: rolled.gap.map(|g| g.as_millis() as u64),
                }
            }
            Err(e) => {
                let error = Some(self.ctx.secrets.masked(&e.problem()));
                let hint = e.hint().map(|h| self.ctx.secrets.masked(&h));
                ReloadOutcome {
                    app: self.name.clone(),
                    ok: false,
                    replaced: 0,
                    duration_ms,
                    env_hash,
                    error,
                    hint,
                    gap_ms: None,
                }
            }
        }
    }

    /// Stop the front (no new connections; in-flight requests finish), then the workers, then
    /// wait for every task of the app.
    ///
    /// One `drain_timeout` for the whole stop: the front's connections and the workers' in-flight
    /// requests are the same requests, so the workers' drain gets what the front's left, and a
    /// hung worker costs `drain_timeout + kill_timeout`, not twice the drain.
    pub async fn shutdown(&self) {
        self.handover_fd.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.halt.cancel();
        self.cancel.cancel();
        self.tracker.close();
        tracing::info!(app = %self.name, connections = self.tracker.len(), "front stopped accepting; draining its connections");
        let how = self.stop_how();
        let deadline = tokio::time::Instant::now() + how.drain_timeout;
        if tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_err() {
            tracing::warn!(app = %self.name, "connections still open after drain_timeout; closing them");
            self.cut.cancel();
        }
        {
            // A roll in progress was halted: it ends its new workers and lets go of the lock.
            let _op = self.take_op().await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.stop_workers(Retire { drain_timeout: left, ..how }).await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        // Keepers end with their workers; an output reader ends when the last holder of the
        // worker's stdout does, which a child that left the worker's process group may delay.
        self.ctx.tasks.close();
        if tokio::time::timeout(OUTPUT_GRACE, self.ctx.tasks.wait()).await.is_err() {
            tracing::warn!(app = %self.name, "a worker's output is still held open by a process it left behind");
        }
    }

    /// Passive and active health: a worker found unhealthy (answers timing out, connects
    /// refused, health probes failing) is announced and replaced through the reload path, its
    /// replacement ready before it is killed. The requests stuck on it were answered 504 by the
    /// front, so its drain is short.
    async fn replace_unhealthy(self: Arc<Self>) {
        let Some(rotation) = self.ctx.rotation.clone() else { return };
        // Replacements of the last 10 minutes: an app whose workers all turn unhealthy (a dead
        // database behind `/healthz`) is not restarted in a tight loop.
        let mut recent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
        loop {
            let (sick, why) = tokio::select! {
                found = rotation.next_unhealthy() => found,
                _ = self.cancel.cancelled() => return,
            };
            while recent.front().is_some_and(|t| t.elapsed() > UNHEALTHY_WINDOW) {
                recent.pop_front();
            }
            if let Some(wait) = unhealthy_backoff(recent.len()) {
                tracing::warn!(
                    app = %self.name,
                    replaced = recent.len(),
                    wait_s = wait.as_secs(),
                    "workers keep turning unhealthy; waiting before the next replacement"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.cancel.cancelled() => return,
                }
            }
            recent.push_back(Instant::now());
            let _op = tokio::select! {
                op = self.op.lock() => op,
                _ = self.cancel.cancelled() => return,
            };
            // Found again under the lock: a reload may have replaced it meanwhile.
            let Some((slot, w)) = self.workers().into_iter().enumerate().find(|(_, w)| w.is_backend(&sick)) else {
                continue;
            };
            tracing::warn!(app = %self.name, worker = w.id, "worker unhealthy ({why}); replacing it");
            w.mark_unhealthy();
            self.ctx.events.send(SupervisorEvent::WorkerUnhealthy { worker: w.reference(), why });
            let spec = w.spec.clone();
            if let Err(e) = reload::roll(&self, &[slot], &spec, reload::Tail::Await).await {
                tracing::error!(app = %self.name, worker = w.id, error = %e, "replacing the unhealthy worker failed");
            }
        }
    }

    /// `cron_restart`: a rolling reload at each tick of the schedule, through [`App::reload_with`]
    /// like `deployer reload`. The schedule is read again at least every minute (SIGHUP may
    /// change it); a stopped app is left alone.
    async fn scheduled_reloads(self: Arc<Self>) {
        const RECHECK: Duration = Duration::from_secs(60);
        loop {
            let schedule = self.config().reload_schedule;
            let next = schedule.as_ref().and_then(|c| c.until_next(chrono::Utc::now()));
            let (wait, due) = match next {
                Some(d) if d <= RECHECK => (d, true),
                _ => (RECHECK, false),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return,
            }
            if !due || self.config().reload_schedule != schedule || !self.running.load(SeqCst) {
                continue;
            }
            let text = schedule.map(|c| c.text).unwrap_or_default();
            tracing::info!(app = %self.name, cron_restart = %text, "scheduled reload");
            let out = self.reload_with(None).await;
            if !out.ok {
                tracing::error!(app = %self.name, error = ?out.error, "the scheduled reload (`cron_restart`) failed");
            }
        }
    }

    /// Every second: CPU and memory figures, idle upstream connections swept, and a worker above
    /// `max_memory` replaced through the reload path.
    async fn monitor(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.cancel.cancelled() => return,
            }
            if let Some(rot) = &self.ctx.rotation {
                rot.sweep_idle();
            }
            let limit = self.config().max_memory.map(|s| s.0);
            for (slot, w) in self.workers().iter().enumerate() {
                let rss = w.sample_usage();
                if let Some(limit) = limit.filter(|&l| rss > l) {
                    if w.status().state != worker::WorkerState::Online {
                        continue;
                    }
                    let Ok(_op) = self.op.try_lock() else { continue };
                    tracing::warn!(
                        app = %self.name,
                        worker = w.id,
                        rss,
                        limit,
                        "above max_memory; replacing the worker"
                    );
                    let spec = w.spec.clone();
                    if let Err(e) = reload::roll(&self, &[slot], &spec, reload::Tail::Await).await {
                        tracing::error!(app = %self.name, worker = w.id, error = %e, "memory replacement failed");
                    }
                }
            }
        }
    }
}

/// Used by `deployer-agent check`: would these apps start? (Config errors are caught earlier.)
pub fn describe(config: &AgentConfig) -> Vec<String> {
    config
        .apps
        .iter()
        .map(|(name, a)| {
            let port = a.port.map_or("no port".to_string(), |p| format!("port {p}"));
            let place = match &a.source {
                AppSource::Dir(cwd) => display(cwd),
                AppSource::Git(git) => format!("the current release of {} ({})", git.repo, git.branch),
            };
            format!(
                "{name}: {} x `{}` in {place}, {} front on {port}",
                a.instances.resolve(),
                a.start.0.join(" "),
                a.proxy.as_str()
            )
        })
        .collect()
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_replacements_back_off_after_three() {
        let waits: Vec<Option<u64>> = (0..9).map(|n| unhealthy_backoff(n).map(|d| d.as_secs())).collect();
        assert_eq!(waits, [None, None, None, Some(30), Some(60), Some(120), Some(240), Some(300), Some(300)]);
        assert_eq!(unhealthy_backoff(1000), Some(Duration::from_secs(300)));
    }
}
