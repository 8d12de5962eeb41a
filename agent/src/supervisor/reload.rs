//! The rolling reload: replace workers `max_surge` at a time, never stopping an old worker
//! before its replacement is ready and in rotation.
//!
//! Per slot: start the new worker -> wait until ready (it enters the rotation) -> take the old one
//! out of rotation -> drain its in-flight requests -> reload signal -> `kill_timeout` -> SIGKILL.
//! If a new worker does not become ready, the roll stops: the new ones of that step are killed,
//! the old ones of that step never left the rotation, and the slots already replaced are rolled
//! back onto the previous spec the same way. When the agent stops meanwhile ([`App::halted`]),
//! the roll ends at once: the new workers of that step are killed, nothing is put back (the stop
//! ends every worker), and every slot still holds a worker.

use super::App;
use super::worker::{NotReady, Retire, Worker, WorkerSpec};
use futures_util::future::join_all;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;

/// A roll that stopped, after putting back what it had replaced.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct RollFailed {
    pub reason: String,
    /// Whether the slots already replaced were put back on the old spec.
    pub restored: bool,
}

/// Replace the workers in `slots` by workers of `spec`. Answers how many were replaced.
pub async fn roll(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>) -> Result<u32, RollFailed> {
    let surge = app.reload_config().max_surge.max(1) as usize;
    let mut replaced: Vec<(usize, Arc<Worker>)> = Vec::new();
    for step in slots.chunks(surge) {
        match replace(app, step, spec).await {
            Ok(olds) => replaced.extend(step.iter().copied().zip(olds)),
            Err(reason) if app.halted().is_cancelled() => {
                tracing::warn!(%reason, replaced = replaced.len(), "reload interrupted: the agent is stopping");
                return Err(RollFailed { reason: reason.to_string(), restored: false });
            }
            Err(reason) => {
                tracing::error!(%reason, "reload stopped");
                let mut restored = true;
                for (slot, old) in replaced.iter().rev() {
                    if let Err(e) = replace(app, &[*slot], &old.spec).await {
                        tracing::error!(slot, error = %e, "could not put the previous worker back");
                        restored = false;
                    }
                }
                return Err(RollFailed { reason: reason.to_string(), restored });
            }
        }
    }
    Ok(replaced.len() as u32)
}

/// One step: start replacements for `slots`, wait until all are ready, then retire the old ones.
/// Answers the retired workers (their specs are what a rollback puts back).
async fn replace(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>) -> Result<Vec<Arc<Worker>>, NotReady> {
    if app.halted().is_cancelled() {
        return Err(NotReady::Stopping);
    }
    let ctx = app.worker_ctx();
    let news: Vec<Arc<Worker>> = slots.iter().map(|&s| Worker::start(s as u32, spec.clone(), ctx.clone())).collect();
    let timeout = spec.ready.timeout + Duration::from_secs(1);
    let ready = join_all(news.iter().map(|w| w.wait_ready(timeout)));
    let results = tokio::select! {
        r = ready => r,
        _ = app.halted().cancelled() => vec![Err(NotReady::Stopping)],
    };
    if let Some(Err(reason)) = results.into_iter().find(Result::is_err) {
        let kill = Retire {
            signal: Signal::SIGKILL,
            drain_timeout: app.reload_config().drain_timeout.0,
            kill_timeout: Duration::from_secs(1),
        };
        join_all(news.iter().map(|w| w.retire(kill, ctx.rotation.as_deref()))).await;
        return Err(reason);
    }
    let olds = app.swap_workers(slots, &news);
    let how = app.retire_how();
    join_all(olds.iter().map(|w| w.retire(how, ctx.rotation.as_deref()))).await;
    Ok(olds)
}
