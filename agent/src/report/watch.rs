//! `worker.errored`: a worker that the supervisor gave up on (it kept crashing, or never got
//! ready) is reported once, when it becomes errored. The supervisor is watched from outside, once
//! a second, so it needs no knowledge of reports.

use super::Reporter;
use crate::state::Store;
use crate::supervisor::Supervisor;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut now = BTreeSet::new();
        for app in supervisor.list() {
            let status = app.status();
            for w in status.workers.iter().filter(|w| w.state == "errored") {
                let key = (app.name.clone(), w.id);
                if !errored.contains(&key) {
                    let tail: Vec<String> =
                        app.logs(500).into_iter().filter(|l| l.worker == w.id).map(|l| l.line).collect();
                    let tail = &tail[tail.len().saturating_sub(TAIL)..];
                    let message =
                        format!("worker {} of `{}` is errored after {} restart(s)", w.id, app.name, w.restarts);
                    let release = Some(w.release.as_str()).filter(|r| !r.is_empty());
                    if let Err(e) = reporter.worker_errored(&store, &app.name, w.id, &message, release, tail) {
                        tracing::error!(error = %e, "cannot queue the worker.errored report");
                    }
                }
                now.insert(key);
            }
        }
        errored = now;
    }
}
