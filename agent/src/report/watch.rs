//! Worker events: `worker.errored`, a worker the supervisor gave up on (it kept crashing, or never
//! got ready), and `worker.unhealthy`, a worker that passive or active health took out of
//! rotation; each reported once, as the supervisor announces it ([`SupervisorEvent`]). The
//! supervisor needs no knowledge of reports.
//!
//! Events, not looks at the status: a worker that errors and is gone a moment later (scaled
//! away, replaced by a rollback) is reported too. When the watcher starts, and whenever it lagged
//! behind the channel, it reads every worker's state once and reports what it has not yet.

use super::Reporter;
use super::event::EventKind;
use crate::store::Store;
use crate::supervisor::event::{SupervisorEvent, WorkerRef};
use crate::supervisor::worker::WorkerState;
use crate::supervisor::{App, Supervisor};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Lines of the worker's own output sent with the event.
const TAIL: usize = 20;

/// What was reported, by worker run: forgotten only when the set grows large (then only the runs
/// still errored or unhealthy are kept).
const REMEMBERED: usize = 1024;

/// A report queued for one worker run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reported {
    Errored(u64),
    Unhealthy(u64),
}

pub(super) async fn watch_workers(
    supervisor: Arc<Supervisor>,
    store: Arc<Store>,
    reporter: Arc<Reporter>,
    stop: CancellationToken,
) {
    let w = Watcher { supervisor, store, reporter };
    // Subscribed before the first read: nothing falls between the two.
    let mut events = w.supervisor.events();
    let mut reported = BTreeSet::new();
    w.catch_up(&mut reported);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(SupervisorEvent::WorkerErrored { worker, restarts, .. }) => {
                if reported.insert(Reported::Errored(worker.serial)) {
                    w.errored(&worker, restarts);
                }
            }
            Ok(SupervisorEvent::WorkerUnhealthy { worker, why }) => {
                if reported.insert(Reported::Unhealthy(worker.serial)) {
                    w.unhealthy(&worker, &format!("{why}"));
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(lost)) => {
                tracing::warn!(
                    lost,
                    "the report watcher fell behind the supervisor's events; reading the workers' states"
                );
                w.catch_up(&mut reported);
            }
            Err(RecvError::Closed) => return,
        }
        if reported.len() > REMEMBERED {
            let now: BTreeSet<Reported> = w.current().into_iter().map(|(r, ..)| r).collect();
            reported.retain(|r| now.contains(r));
        }
    }
}

struct Watcher {
    supervisor: Arc<Supervisor>,
    store: Arc<Store>,
    reporter: Arc<Reporter>,
}

impl Watcher {
    /// Every worker errored or unhealthy now, with its restarts.
    fn current(&self) -> Vec<(Reported, WorkerRef, u32)> {
        let mut out = Vec::new();
        for app in self.supervisor.list() {
            for (worker, status) in app.worker_states() {
                let key = match status.state {
                    WorkerState::Errored(_) => Reported::Errored(worker.serial),
                    WorkerState::Unhealthy => Reported::Unhealthy(worker.serial),
                    _ => continue,
                };
                out.push((key, worker, status.restarts));
            }
        }
        out
    }

    /// Report what is errored or unhealthy now and was not reported yet.
    fn catch_up(&self, reported: &mut BTreeSet<Reported>) {
        for (key, worker, restarts) in self.current() {
            if !reported.insert(key) {
                continue;
            }
            match key {
                Reported::Errored(_) => self.errored(&worker, restarts),
                Reported::Unhealthy(_) => self.unhealthy(&worker, "found unhealthy"),
            }
        }
    }

    fn errored(&self, w: &WorkerRef, restarts: u32) {
        let message = format!("worker {} of `{}` is errored after {restarts} restart(s)", w.id, w.app);
        self.queue(EventKind::WorkerErrored, w, &message);
    }

    fn unhealthy(&self, w: &WorkerRef, why: &str) {
        let message = format!("worker {} of `{}` is unhealthy ({why}); replacing it", w.id, w.app);
        self.queue(EventKind::WorkerUnhealthy, w, &message);
    }

    fn queue(&self, kind: EventKind, w: &WorkerRef, message: &str) {
        let tail = self.supervisor.app(&w.app).map(|app| tail_of(&app, w.id)).unwrap_or_default();
        let release = Some(w.release.as_str()).filter(|r| !r.is_empty());
        let queued = self.reporter.worker_event(&self.store, kind, &w.app, w.id, message, release, &tail);
        if let Err(e) = queued {
            tracing::error!(error = %e, event = kind.name(), "cannot queue the worker report");
        }
    }
}

/// The last lines worker `id` of `app` wrote.
fn tail_of(app: &App, id: u32) -> Vec<String> {
    let tail: Vec<String> = app.logs(500, None).into_iter().filter(|l| l.worker == id).map(|l| l.line).collect();
    tail[tail.len().saturating_sub(TAIL)..].to_vec()
}
