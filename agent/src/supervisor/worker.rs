//! One worker: a process the supervisor keeps running, restarts with backoff when it exits by
//! itself, and retires gracefully (out of rotation, drain, signal, kill) when asked.

use super::event::{Events, SupervisorEvent, WorkerRef};
use super::ipc;
use super::logs::{LogSink, Stream};
use super::orphans::PidRecord;
use super::procstat;
use super::readiness::{self, NotifySocket};
use super::spawn::{self, Launch};
use crate::cgroup::{Cgroups, Tree};
use crate::config::{ProxyMode, ReadyCheck, ReadyConfig, RestartConfig, RunAs};
use crate::front::{Backend, Rotation};
use crate::secrets::Secrets;
use deployer_wire::WorkerStatus;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What every worker of one app shares.
#[derive(Debug)]
pub struct WorkerCtx {
    pub app: String,
    pub mode: ProxyMode,
    /// The front's rotation (`http` and `tcp` modes).
    pub rotation: Option<Arc<Rotation>>,
    /// The shared listener (`fd` mode).
    pub listener: Option<Arc<std::net::TcpListener>>,
    /// The public port, handed to the worker as `PORT` in `none` mode.
    pub app_port: Option<u16>,
    pub logs: Arc<LogSink>,
    pub pids: Arc<PidRecord>,
    pub run_dir: PathBuf,
    /// Builds every worker's environment (without the agent's secrets), read at each spawn.
    pub secrets: Secrets,
    /// Each run of a worker is one process tree in a cgroup of its own, where the host has them.
    pub cgroups: Cgroups,
    /// Where worker changes are announced (the supervisor's channel).
    pub(crate) events: Events,
    /// Owns every keeper and output reader of the app's workers: the app's stop waits for them.
    pub(crate) tasks: TaskTracker,
}

/// Everything that decides what a worker runs, resolved when the worker starts. A plain reload
/// reuses it; `--update-env` builds a new one from the config file and `env_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The app's own variables (`env` and `env_file`), without the agent's.
    pub env: BTreeMap<String, String>,
    pub env_hash: String,
    pub release: String,
    pub ready: ReadyConfig,
    pub restart: RestartConfig,
    /// The account the worker runs as (`user:`); `None`: the agent's own.
    pub run_as: Option<RunAs>,
    /// Node's IPC channel for each run (`ipc: true` or `ready: { message: true }`): the worker
    /// is told `'shutdown'` before its stop signal.
    pub ipc: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    Starting,
    Online,
    Draining,
    Stopping,
    Stopped,
    Restarting,
    /// Its answers time out (passive health): out of rotation, being replaced.
    Unhealthy,
    Errored(String),
}

impl WorkerState {
    #[cfg(test)]
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Online => "online",
            WorkerState::Draining => "draining",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
            WorkerState::Restarting => "restarting",
            WorkerState::Unhealthy => "unhealthy",
            WorkerState::Errored(_) => "errored",
        }
    }

    fn is_final(&self) -> bool {
        matches!(self, WorkerState::Stopped | WorkerState::Errored(_))
    }

    /// The state as the API shows it (why a worker errored is in its log).
    pub fn to_wire(&self) -> deployer_wire::WorkerState {
        use deployer_wire::WorkerState as Wire;
        match self {
            WorkerState::Starting => Wire::Starting,
            WorkerState::Online => Wire::Online,
            WorkerState::Draining => Wire::Draining,
            WorkerState::Stopping => Wire::Stopping,
            WorkerState::Stopped => Wire::Stopped,
            WorkerState::Restarting => Wire::Restarting,
            WorkerState::Unhealthy => Wire::Unhealthy,
            WorkerState::Errored(_) => Wire::Errored,
        }
    }
}

/// Why a worker did not become ready: what stops a start, a scale or a roll.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotReady {
    #[error("worker {id} errored: {why}")]
    Errored { id: u32, why: String },
    #[error("worker {id} stopped before it was ready")]
    Stopped { id: u32 },
    #[error("worker {id} is gone")]
    Gone { id: u32 },
    #[error("worker {id} was not ready within {}", humantime::format_duration(*.within))]
    TimedOut { id: u32, within: Duration },
    /// The agent is stopping: no worker is started any more (a roll in progress is halted).
    #[error("interrupted: the agent is stopping")]
    Stopping,
    /// What was asked could not be recorded in the state database, so nothing was done.
    #[error("{0}")]
    NotRecorded(String),
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub started: Option<Instant>,
    pub restarts: u32,
    /// The exit of a process left stopped by the restart policy (code, or 128 + signal).
    pub exit_code: Option<i32>,
}

/// What `retire` asks the keeper to send the running process.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    /// `'shutdown'` over the IPC channel (PM2's `shutdown_with_message`).
    Message,
    /// A signal to the process group.
    Signal(Signal),
}

/// How to retire a worker.
#[derive(Debug, Clone, Copy)]
pub struct Retire {
    pub signal: Signal,
    pub drain_timeout: Duration,
    pub kill_timeout: Duration,
}

/// A worker taken out of rotation by [`Worker::leave_rotation`]: what is left to drain.
#[derive(Debug)]
pub struct Leaving(Option<Arc<Backend>>);

#[derive(Debug)]
pub struct Worker {
    /// The instance id (`INSTANCE_ID`, `NODE_APP_INSTANCE`), also its slot in the app.
    pub id: u32,
    /// Unique among the workers of this agent (events tell two runs of one slot apart).
    pub serial: u64,
    app: String,
    pub spec: Arc<WorkerSpec>,
    status: watch::Sender<Status>,
    /// Set only while in rotation. The keeper checks `stop` under this lock before adding the
    /// worker, so once `retire` has cancelled `stop` and taken it, nothing puts the worker back.
    backend: Mutex<Option<Arc<Backend>>>,
    /// Cancelled by `retire`: the keeper spawns no new process and puts none into rotation.
    stop: CancellationToken,
    /// What `retire` asks for. The keeper sends it itself, to the process it is waiting
    /// on: that child is not reaped yet, so its group id cannot belong to another process, and a
    /// worker between two runs (restarting) has nothing to signal.
    kill: watch::Sender<Option<Stop>>,
    /// Signals asked for by `deployer signal`, sent by the keeper like `kill`'s; the keeper
    /// takes the receiver.
    signals: tokio::sync::mpsc::Sender<Signal>,
    signals_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Signal>>>,
    usage: Mutex<Usage>,
    /// The current run's process tree, while it runs in a cgroup.
    tree: Mutex<Option<Arc<Tree>>>,
}

#[derive(Debug, Default)]
struct Usage {
    /// The last reading: CPU time in microseconds, the leader's start time, when.
    last: Option<(u64, u64, Instant)>,
    cpu_percent: f32,
    rss_bytes: u64,
}

/// Signals of `deployer signal` waiting for a keeper, per worker; more are refused.
const SIGNALS_PENDING: usize = 16;

/// The next [`Worker::serial`].
static SERIAL: AtomicU64 = AtomicU64::new(1);

impl Worker {
    /// Create the worker and start keeping it running; its keeper belongs to the app's tasks.
    pub fn start(id: u32, spec: Arc<WorkerSpec>, ctx: Arc<WorkerCtx>) -> Arc<Worker> {
        let status =
            Status { state: WorkerState::Starting, pid: None, port: None, started: None, restarts: 0, exit_code: None };
        let (signals, signals_rx) = tokio::sync::mpsc::channel(SIGNALS_PENDING);
        let w = Arc::new(Worker {
            signals,
            signals_rx: Mutex::new(Some(signals_rx)),
            id,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            app: ctx.app.clone(),
            spec,
            status: watch::Sender::new(status),
            backend: Mutex::new(None),
            stop: CancellationToken::new(),
            kill: watch::Sender::new(None),
            usage: Mutex::new(Usage::default()),
            tree: Mutex::new(None),
        });
        let span = tracing::info_span!("worker", app = %ctx.app, id);
        ctx.tasks.spawn(w.clone().keep(ctx.clone()).instrument(span));
        w
    }

    /// This worker as events name it.
    pub fn reference(&self) -> WorkerRef {
        WorkerRef { app: self.app.clone(), id: self.id, serial: self.serial, release: self.spec.release.clone() }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    fn set_state(&self, state: WorkerState) {
        self.status.send_modify(|s| s.state = state);
    }

    /// Wait until the worker is online (ready and in rotation), or say why it is not.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), NotReady> {
        let id = self.id;
        let mut rx = self.status.subscribe();
        let wait =
            rx.wait_for(|s| matches!(s.state, WorkerState::Online | WorkerState::Errored(_) | WorkerState::Stopped));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => match &s.state {
                WorkerState::Online => Ok(()),
                WorkerState::Errored(why) => Err(NotReady::Errored { id, why: why.clone() }),
                _ => Err(NotReady::Stopped { id }),
            },
            Ok(Err(_)) => Err(NotReady::Gone { id }),
            Err(_) => Err(NotReady::TimedOut { id, within: timeout }),
        }
    }

    /// Out of rotation, wait for in-flight work, send the signal, wait, then SIGKILL the group.
    /// A worker with an IPC channel is sent `'shutdown'` first and given `kill_timeout` to exit
    /// before the signal (unless the signal is SIGKILL: nothing graceful is asked then).
    ///
    /// Safe at any point of the keeper's loop: `stop` is cancelled first, so no process is
    /// spawned or put into rotation after this; the signals go through the keeper, which holds
    /// the current child (if any) unreaped.
    pub async fn retire(&self, how: Retire, rotation: Option<&Rotation>) {
        let leaving = self.leave_rotation(rotation);
        self.finish_retire(leaving, how).await;
    }

    /// The first part of [`Worker::retire`], at once: no process is spawned or put into rotation
    /// after this, and no new request reaches this worker (it is `draining`).
    pub fn leave_rotation(&self, rotation: Option<&Rotation>) -> Leaving {
        self.stop.cancel();
        let backend = self.backend.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (backend, rotation) {
            (Some(b), Some(rot)) => {
                self.set_state(WorkerState::Draining);
                rot.remove(&b);
                Leaving(Some(b))
            }
            _ => Leaving(None),
        }
    }

    /// The rest of [`Worker::retire`] once [`Worker::leave_rotation`] was done: drain, signal,
    /// wait, SIGKILL.
    pub async fn finish_retire(&self, leaving: Leaving, how: Retire) {
        if let Leaving(Some(b)) = leaving
            && !b.drain(how.drain_timeout).await
        {
            tracing::warn!(
                worker = self.id,
                inflight = b.inflight(),
                "drain_timeout reached; cutting the requests still running"
            );
        }
        let mut rx = self.status.subscribe();
        if rx.borrow_and_update().state.is_final() {
            return;
        }
        self.status.send_modify(|s| {
            if !s.state.is_final() {
                s.state = WorkerState::Stopping;
            }
        });
        if self.spec.ipc && how.signal != Signal::SIGKILL {
            self.kill.send_replace(Some(Stop::Message));
            if tokio::time::timeout(how.kill_timeout, rx.wait_for(|s| s.state.is_final())).await.is_ok() {
                return;
            }
            tracing::info!(worker = self.id, signal = %how.signal, "still running kill_timeout after 'shutdown'; sending the signal");
        }
        self.kill.send_replace(Some(Stop::Signal(how.signal)));
        if tokio::time::timeout(how.kill_timeout, rx.wait_for(|s| s.state.is_final())).await.is_err() {
            tracing::info!(worker = self.id, "still running after kill_timeout; sending SIGKILL");
            self.kill.send_replace(Some(Stop::Signal(Signal::SIGKILL)));
            // still running 10 s after SIGKILL (e.g. uninterruptible I/O): the watcher records the end
            // when it comes
            let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.state.is_final())).await;
        }
    }

    /// Ask the keeper to send `signal` to the running process's group; answers its pid, or
    /// `None` when nothing runs (between two runs, stopped) or too many signals wait already.
    pub fn signal(&self, signal: Signal) -> Option<u32> {
        let pid = self.status.borrow().pid?;
        self.signals.try_send(signal).ok().map(|()| pid)
    }

    /// The RSS of the last [`Worker::sample_usage`] (the monitor samples every second).
    pub fn rss_bytes(&self) -> u64 {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).rss_bytes
    }

    /// Refresh CPU and memory figures. Answers the RSS. In a cgroup they are the whole tree's
    /// (`node` under `npm start` counts); without one, the worker's own process's.
    pub fn sample_usage(&self) -> u64 {
        let Some(pid) = self.status.borrow().pid else { return 0 };
        let Some(leader) = procstat::sample(pid) else { return 0 };
        let tree = self.tree.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (cpu_usec, rss) = match &tree {
            Some(t) => {
                let pids = t.pids();
                let rss = pids.iter().filter_map(|p| procstat::sample(*p)).map(|s| s.rss_bytes).sum::<u64>();
                let cpu = t.cpu_usec().unwrap_or_else(|| ticks_to_usec(leader.cpu_ticks));
                (cpu, rss.max(leader.rss_bytes))
            }
            None => (ticks_to_usec(leader.cpu_ticks), leader.rss_bytes),
        };
        let mut u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let at = Instant::now();
        if let Some((prev_cpu, prev_start, prev_at)) = u.last {
            let secs = at.duration_since(prev_at).as_secs_f32();
            if secs > 0.0 && leader.start_ticks == prev_start {
                u.cpu_percent = cpu_usec.saturating_sub(prev_cpu) as f32 / 1e6 / secs * 100.0;
            }
        }
        u.last = Some((cpu_usec, leader.start_ticks, at));
        u.rss_bytes = rss;
        rss
    }

    pub fn to_wire(&self) -> WorkerStatus {
        let s = self.status();
        let u = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let running = matches!(
            s.state,
            WorkerState::Online | WorkerState::Draining | WorkerState::Stopping | WorkerState::Starting
        );
        WorkerStatus {
            id: self.id,
            pid: s.pid.filter(|_| running),
            port: s.port,
            state: s.state.to_wire(),
            restarts: s.restarts,
            uptime_ms: s.started.filter(|_| running).map_or(0, |t| t.elapsed().as_millis() as u64),
            cpu_percent: if running { (u.cpu_percent * 10.0).round() / 10.0 } else { 0.0 },
            rss_bytes: if running { u.rss_bytes } else { 0 },
            inflight: self
                .backend
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |b| b.inflight() as u64),
            env_hash: self.spec.env_hash.clone(),
            release: self.spec.release.clone(),
            exit_code: s.exit_code,
        }
    }

    /// The keeper: start the process, put it into rotation when ready, restart it with backoff
    /// when it exits by itself, stop for good when retired or errored.
    async fn keep(self: Arc<Self>, ctx: Arc<WorkerCtx>) {
        let mut unstable = 0u32;
        let Some(mut signals) = self.signals_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        loop {
            if self.stop.is_cancelled() {
                self.set_state(WorkerState::Stopped);
                return;
            }
            let started = Instant::now();
            let exit = match self.run_once(&ctx, &mut signals).await {
                RunEnd::Exited(exit) => exit,
                RunEnd::NotReady(why) => {
                    ctx.logs.write(self.id, Stream::Err, &format!("[deployer] {why}; the worker is errored"));
                    tracing::warn!("{why}");
                    self.errored(&ctx, why);
                    return;
                }
            };
            if self.stop.is_cancelled() {
                self.set_state(WorkerState::Stopped);
                return;
            }
            let policy = &self.spec.restart;
            if let Some(code) = exit.and_then(|e| done(policy, e)) {
                let why = if policy.autorestart {
                    format!("exited with {code}, one of `stop_exit_codes`")
                } else {
                    format!("exited with {code}; `autorestart: false`")
                };
                ctx.logs.write(self.id, Stream::Err, &format!("[deployer] {why}: not restarted"));
                tracing::info!("{why}: not restarted");
                self.status.send_modify(|s| {
                    s.state = WorkerState::Stopped;
                    s.exit_code = Some(code);
                });
                return;
            }
            unstable = if started.elapsed() < policy.min_uptime.0 { unstable + 1 } else { 0 };
            self.status.send_modify(|s| s.restarts += 1);
            if unstable >= policy.max_restarts.max(1) {
                let why = format!(
                    "exited {unstable} times in a row, each within {} of starting",
                    humantime::format_duration(policy.min_uptime.0)
                );
                ctx.logs.write(self.id, Stream::Err, &format!("[deployer] {why}; the worker is errored"));
                tracing::error!("{why}; giving up");
                self.errored(&ctx, why);
                return;
            }
            let backoff = match policy.delay {
                Some(d) => d.0,
                None => Duration::from_millis(100).saturating_mul(1 << unstable.min(16)).min(policy.backoff_max.0),
            };
            tracing::warn!(backoff_ms = backoff.as_millis() as u64, "worker exited; restarting");
            self.set_state(WorkerState::Restarting);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Given up on: shown as errored and announced (after the state is set, so a listener that
    /// reads the status on the event sees it).
    fn errored(&self, ctx: &WorkerCtx, why: String) {
        self.set_state(WorkerState::Errored(why.clone()));
        let restarts = self.status.borrow().restarts;
        ctx.events.send(SupervisorEvent::WorkerErrored { worker: self.reference(), why, restarts });
    }

    /// One process, from spawn to exit.
    async fn run_once(&self, ctx: &WorkerCtx, signals: &mut tokio::sync::mpsc::Receiver<Signal>) -> RunEnd {
        let port = match ctx.mode {
            ProxyMode::Http | ProxyMode::Tcp => match free_port() {
                Ok(p) => Some(p),
                Err(e) => return self.spawn_failed(ctx, &format!("no free port: {e}")),
            },
            ProxyMode::Fd => None,
            ProxyMode::None => ctx.app_port,
        };
        let notify = match &self.spec.ready.check {
            ReadyCheck::Notify => {
                let path = ctx.run_dir.join(format!("{}-{}-{}.notify", ctx.app, self.id, std::process::id()));
                // Only the worker may write to it: the app's user, whom the state dir lets pass.
                let bound = NotifySocket::bind(&path).and_then(|n| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(n.path(), std::fs::Permissions::from_mode(0o600))?;
                    if let Some(r) = &self.spec.run_as {
                        std::os::unix::fs::lchown(n.path(), Some(r.uid), Some(r.gid))?;
                    }
                    Ok(n)
                });
                match bound {
                    Ok(n) => Some(n),
                    Err(e) => return self.spawn_failed(ctx, &format!("cannot bind NOTIFY_SOCKET: {e}")),
                }
            }
            _ => None,
        };
        let mut run = vec![
            ("INSTANCE_ID".to_string(), self.id.to_string()),
            ("NODE_APP_INSTANCE".to_string(), self.id.to_string()),
        ];
        if let Some(p) = port {
            run.push(("PORT".into(), p.to_string()));
        }
        if let Some(n) = &notify {
            run.push(("NOTIFY_SOCKET".into(), n.path().display().to_string()));
        }
        let channel = if self.spec.ipc {
            match ipc::pair(self.id, ctx.logs.clone(), &ctx.tasks) {
                Ok((channel, end)) => {
                    run.extend(end.env());
                    Some((channel, end))
                }
                Err(e) => return self.spawn_failed(ctx, &format!("cannot open the IPC channel: {e}")),
            }
        } else {
            None
        };
        let tree = ctx.cgroups.create(&format!("{}.w{}", ctx.app, self.id)).map(Arc::new);
        run.extend(tree.as_ref().and_then(|t| t.env()));
        let env = ctx.secrets.child_env(&self.spec.env, run);
        // A signal `retire` asked for before this run is sent as soon as the child exists.
        let mut kill = self.kill.subscribe();
        kill.mark_changed();
        // Asked for a process that ended: not for this one.
        while signals.try_recv().is_ok() {}
        if self.stop.is_cancelled() {
            return RunEnd::Exited(None);
        }
        let launch = Launch {
            argv: &self.spec.argv,
            cwd: &self.spec.cwd,
            env: &env,
            listen_fd: ctx.listener.as_ref().map(|l| l.as_raw_fd()),
            fd_name: &ctx.app,
            run_as: self.spec.run_as.as_ref(),
            cgroup_procs: tree.as_ref().and_then(|t| t.procs_fd()),
            ipc_fd: channel.as_ref().map(|(_, end)| end.raw()),
        };
        let spawned = spawn::spawn(&launch);
        // The worker's end is the worker's now: closed here, so the channel ends when it does.
        let channel = channel.map(|(channel, _end)| channel);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return self.spawn_failed(ctx, &format!("cannot start `{}`: {e}", self.spec.argv.join(" "))),
        };
        let Some(pid) = child.id() else { return RunEnd::Exited(None) };
        if let Some(t) = &tree {
            t.adopt(pid);
            *self.tree.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
        }
        ctx.pids.add(pid);
        let started = Instant::now();
        let retiring = self.stop.is_cancelled();
        self.status.send_modify(|s| {
            if !retiring {
                s.state = WorkerState::Starting;
            }
            s.pid = Some(pid);
            s.port = port;
            s.started = Some(started);
        });
        tracing::info!(pid, port, "worker started");
        if let Some(out) = child.stdout.take() {
            let logs = ctx.logs.clone();
            let id = self.id;
            ctx.tasks.spawn(async move { logs.capture(id, Stream::Out, out).await });
        }
        if let Some(err) = child.stderr.take() {
            let logs = ctx.logs.clone();
            let id = self.id;
            ctx.tasks.spawn(async move { logs.capture(id, Stream::Err, err).await });
        }

        let timeout = self.spec.ready.timeout;
        let mut end = RunEnd::Exited(None);
        tokio::select! {
            _ = readiness::wait(&self.spec.ready.check, port, notify.as_ref(), channel.as_ref()) => {
                drop(notify);
                self.go_online(ctx, port, pid);
                // the exit is logged below, and the restart policy decides what follows; a status
                // that cannot be read counts as a crash
                end = RunEnd::Exited(self.wait_exit(&mut child, pid, &mut kill, signals, channel.as_ref()).await.ok());
            }
            _ = tokio::time::sleep(timeout) => {
                // ESRCH: the group is gone already
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                // killed just above: this reaps it; an error means there is nothing left to reap
                let _ = child.wait().await;
                // A worker retired while starting is stopped, not errored.
                if !self.stop.is_cancelled() {
                    end = RunEnd::NotReady(format!("not ready within {}", humantime::format_duration(timeout)));
                }
            }
            status = self.wait_exit(&mut child, pid, &mut kill, signals, channel.as_ref()) => {
                let code = status.as_ref().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::warn!(pid, "exited before it was ready ({code})");
                end = RunEnd::Exited(status.ok());
            }
        }
        // The pid is reaped: forget it before anything could recycle it.
        self.status.send_modify(|s| s.pid = None);
        // The group may hold children of the worker: none of them outlives it, nor anything
        // that left the group with `setsid` (the cgroup holds those).
        // ESRCH: no process of the group is left, the usual case
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        self.tree.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = tree
            && !t.end(Duration::from_secs(2)).await
        {
            tracing::warn!(pid, "processes of the worker's tree outlived it; the next agent ends them");
        }
        ctx.pids.remove(pid);
        if let (Some(b), Some(rot)) = (self.backend.lock().unwrap_or_else(|e| e.into_inner()).take(), &ctx.rotation) {
            rot.remove(&b);
        }
        tracing::info!(pid, uptime_ms = started.elapsed().as_millis() as u64, "worker exited");
        let retired = self.stop.is_cancelled();
        ctx.events.send(SupervisorEvent::WorkerExited { worker: self.reference(), pid: Some(pid), retired });
        end
    }

    /// Wait for the child to exit, sending it what `retire` asks for meanwhile.
    async fn wait_exit(
        &self,
        child: &mut Child,
        pid: u32,
        kill: &mut watch::Receiver<Option<Stop>>,
        signals: &mut tokio::sync::mpsc::Receiver<Signal>,
        channel: Option<&ipc::Channel>,
    ) -> std::io::Result<ExitStatus> {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                Some(signal) = signals.recv() => {
                    tracing::info!(pid, %signal, "sending the signal asked for");
                    // Not reaped: the group is this worker's. ESRCH: it ended meanwhile
                    let _ = killpg(Pid::from_raw(pid as i32), signal);
                }
                Ok(()) = kill.changed() => {
                    let stop = *kill.borrow_and_update();
                    match stop {
                        // Not reaped while this branch runs: the group id is still this worker's.
                        // ESRCH: the group ended meanwhile; `child.wait()` above sees it
                        Some(Stop::Signal(signal)) => { let _ = killpg(Pid::from_raw(pid as i32), signal); }
                        Some(Stop::Message) => {
                            if let Some(c) = channel
                                && let Err(e) = c.send(&serde_json::json!("shutdown")).await
                            {
                                tracing::info!(pid, error = %e, "cannot send 'shutdown'; the signal follows after kill_timeout");
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Its place in the rotation while it has one (what active health probes).
    pub fn backend(&self) -> Option<Arc<Backend>> {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `b` is this worker's place in the rotation.
    pub fn is_backend(&self, b: &Arc<Backend>) -> bool {
        self.backend.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|mine| Arc::ptr_eq(mine, b))
    }

    /// The front found it unhealthy; shown until it is replaced.
    pub fn mark_unhealthy(&self) {
        self.status.send_modify(|s| {
            if s.state == WorkerState::Online {
                s.state = WorkerState::Unhealthy;
            }
        });
    }

    fn go_online(&self, ctx: &WorkerCtx, port: Option<u16>, pid: u32) {
        // Under the lock `retire` takes the backend with, after cancelling `stop`.
        let mut backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        if self.stop.is_cancelled() {
            return;
        }
        if let (Some(rot), Some(port)) = (&ctx.rotation, port) {
            let b = Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), self.id);
            rot.add(&b);
            *backend = Some(b);
        }
        self.set_state(WorkerState::Online);
        drop(backend);
        tracing::info!(pid, "worker online");
        ctx.events.send(SupervisorEvent::WorkerOnline { worker: self.reference(), pid });
    }

    fn spawn_failed(&self, ctx: &WorkerCtx, why: &str) -> RunEnd {
        ctx.logs.write(self.id, Stream::Err, &format!("[deployer] {why}"));
        tracing::error!("{why}");
        let retired = self.stop.is_cancelled();
        ctx.events.send(SupervisorEvent::WorkerExited { worker: self.reference(), pid: None, retired });
        RunEnd::Exited(None)
    }
}

enum RunEnd {
    /// The process ended (how, when known), or none could be started.
    Exited(Option<ExitStatus>),
    NotReady(String),
}

/// The exit code (128 + the signal's number for a signal) of a run the restart policy does not
/// restart: any with `autorestart: false`, else one whose code is in `stop_exit_codes`.
fn done(policy: &RestartConfig, exit: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let code = exit.code().or_else(|| exit.signal().map(|s| 128 + s))?;
    (!policy.autorestart || (exit.code().is_some() && policy.stop_exit_codes.contains(&code))).then_some(code)
}

fn ticks_to_usec(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / procstat::ticks_per_second()
}

/// A private port for a new worker: the kernel picks a free one.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests;
