//! What the supervisor tells whoever listens: every worker's and app's change, as it happens,
//! on one `tokio::sync::broadcast` channel ([`super::Supervisor::events`]).
//!
//! Listeners (the bake window, the report watcher) follow these instead of looking at the
//! status once in a while: a worker that errors and is replaced between two looks is not missed.
//! A receiver that lags is told how many events it lost; it then reads the current state once
//! ([`super::App::worker_states`]) so it loses nothing that still matters. Sending never waits:
//! a slow listener cannot hold a worker's keeper.

use crate::front::Unhealthy;

/// How many events a listener may fall behind before it lags.
pub(crate) const CAPACITY: usize = 1024;

/// One worker run, as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRef {
    pub app: String,
    /// The instance id, which is also its slot.
    pub id: u32,
    /// Unique among every worker this agent started: a slot's next worker has a new one.
    pub serial: u64,
    /// The release (or `cwd`) it runs.
    pub release: String,
}

/// A change of a worker or an app.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorEvent {
    /// A worker is ready and in rotation.
    WorkerOnline { worker: WorkerRef, pid: u32 },
    /// A worker's process ended (`pid: None`: it could not be started at all). `retired`: it was
    /// asked to (reload, stop, scale, replacement); otherwise it exited by itself and is
    /// restarted, or errored.
    WorkerExited { worker: WorkerRef, pid: Option<u32>, retired: bool },
    /// The supervisor gave up on a worker: it kept exiting, or never got ready.
    WorkerErrored { worker: WorkerRef, why: String, restarts: u32 },
    /// Passive or active health took the worker out of rotation; it is being replaced.
    WorkerUnhealthy { worker: WorkerRef, why: Unhealthy },
    /// A ready worker took over a slot from another (reload, deploy, health or memory
    /// replacement); the old one is being retired.
    WorkerReplaced { old: WorkerRef, new: WorkerRef },
    /// The app's workers were started (start, restart, a new app).
    AppStarted { app: String },
    /// A roll onto a new spec, config or release finished; `release` is the one it runs.
    AppReloaded { app: String, replaced: u32, release: Option<String> },
    /// The number of workers changed.
    AppScaled { app: String, instances: u32 },
    /// Every worker of the app was stopped (stop, restart, removal, the agent's stop).
    AppStopped { app: String },
}

impl SupervisorEvent {
    /// The app the event is about.
    pub fn app(&self) -> &str {
        match self {
            SupervisorEvent::WorkerOnline { worker, .. }
            | SupervisorEvent::WorkerExited { worker, .. }
            | SupervisorEvent::WorkerErrored { worker, .. }
            | SupervisorEvent::WorkerUnhealthy { worker, .. }
            | SupervisorEvent::WorkerReplaced { new: worker, .. } => &worker.app,
            SupervisorEvent::AppStarted { app }
            | SupervisorEvent::AppReloaded { app, .. }
            | SupervisorEvent::AppScaled { app, .. }
            | SupervisorEvent::AppStopped { app } => app,
        }
    }
}

/// The sending side, shared by the supervisor, its apps and their workers.
#[derive(Debug, Clone)]
pub(crate) struct Events(tokio::sync::broadcast::Sender<SupervisorEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(tokio::sync::broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    pub(crate) fn send(&self, event: SupervisorEvent) {
        tracing::debug!(?event, "supervisor event");
        // No listener (no reports, no bake running) is not an error: the event is for whoever listens.
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SupervisorEvent> {
        self.0.subscribe()
    }
}
