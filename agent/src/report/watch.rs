//! Worker events: `worker.errored`, a worker the supervisor gave up on (it kept crashing, or never
//! got ready), reported once, when it becomes errored, found by watching the supervisor from
//! outside once a second; and `worker.unhealthy`, a worker that passive or active health took
//! out of rotation, reported as the supervisor announces it. The supervisor needs no knowledge
//! of reports either way.

use super::Reporter;
use super::event::EventKind;
use crate::store::Store;
use crate::supervisor::{App, Supervisor, UnhealthyWorker};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Lines of the worker's own output sent with the event.
const TAIL: usize = 20;

pub async fn watch_workers(
    supervisor: Arc<Supervisor>,
    store: Arc<Store>,
    reporter: Arc<Reporter>,
    shutdown: CancellationToken,
) {
    let mut errored: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut unhealthy = supervisor.unhealthy_workers();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            found = unhealthy.recv() => {
                match found {
                    Ok(u) => report_unhealthy(&supervisor, &store, &reporter, &u),
                    Err(RecvError::Lagged(lost)) => {
                        tracing::warn!(lost, "worker.unhealthy reports lost: too many at once");
                    }
                    Err(RecvError::Closed) => return,
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        }
        let mut now = BTreeSet::new();
        for app in supervisor.list() {
            let status = app.status();
            for w in status.workers.iter().filter(|w| w.state == "errored") {
                let key = (app.name.clone(), w.id);
                if !errored.contains(&key) {
                    let message =
                        format!("worker {} of `{}` is errored after {} restart(s)", w.id, app.name, w.restarts);
                    let release = Some(w.release.as_str()).filter(|r| !r.is_empty());
                    let tail = tail_of(&app, w.id);
                    let queued = reporter.worker_event(
                        &store,
                        EventKind::WorkerErrored,
                        &app.name,
                        w.id,
                        &message,
                        release,
                        &tail,
                    );
                    if let Err(e) = queued {
                        tracing::error!(error = %e, "cannot queue the worker.errored report");
                    }
                }
                now.insert(key);
            }
        }
        errored = now;
    }
}

fn report_unhealthy(supervisor: &Supervisor, store: &Store, reporter: &Reporter, u: &UnhealthyWorker) {
    let tail = supervisor.app(&u.app).map(|app| tail_of(&app, u.worker)).unwrap_or_default();
    let message = format!("worker {} of `{}` is unhealthy ({}); replacing it", u.worker, u.app, u.why);
    let release = Some(u.release.as_str()).filter(|r| !r.is_empty());
    let queued = reporter.worker_event(store, EventKind::WorkerUnhealthy, &u.app, u.worker, &message, release, &tail);
    if let Err(e) = queued {
        tracing::error!(error = %e, "cannot queue the worker.unhealthy report");
    }
}

/// The last lines worker `id` of `app` wrote.
fn tail_of(app: &App, id: u32) -> Vec<String> {
    let tail: Vec<String> = app.logs(500).into_iter().filter(|l| l.worker == id).map(|l| l.line).collect();
    tail[tail.len().saturating_sub(TAIL)..].to_vec()
}
