//! The rolling reload: replace workers `max_surge` at a time (unset: all at once where memory
//! allows, [`auto_surge`]), never stopping an old worker before its replacement is ready and in
//! rotation.
//!
//! Per slot: start the new worker -> wait until ready (it enters the rotation) -> take the old one
//! out of rotation -> drain its in-flight requests -> reload signal -> `kill_timeout` -> SIGKILL.
//! If a new worker does not become ready, the roll stops: the new ones of that step are killed,
//! the old ones of that step never left the rotation, and the slots already replaced are rolled
//! back onto the previous spec the same way. When the agent stops meanwhile ([`App::halted`]),
//! the roll ends at once: the new workers of that step are killed, nothing is put back (the stop
//! ends every worker), and every slot still holds a worker.
//!
//! A deploy's roll ([`Tail::Detach`]) answers once the last step's old workers left the rotation:
//! the new ones serve alone, the release is recorded and `current` switched; the old ones finish
//! their in-flight requests and exit in the app's background tasks, which the app's next roll,
//! its stop and the agent's shutdown wait for. A reload ([`Tail::Await`]) answers after they
//! exited.
//!
//! An app that binds its public port itself (`proxy: none` with a `port`, fork mode) cannot run
//! an old and a new worker on it at once, unless it binds with `SO_REUSEPORT`
//! (`reload: { reuse_port: true }`). Without it, each step stops the old workers first, then
//! starts their replacements (PM2's fork-mode reload): the port has a gap, which the outcome
//! says ([`Rolled::gap`]). A replacement that does not get ready is killed and a worker of the
//! old spec is started in its slot again.

use super::App;
use super::worker::{NotReady, Retire, Worker, WorkerSpec};
use futures_util::future::join_all;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a roll answers: after the last step's old workers exited, or as soon as they left the
/// rotation (the new workers serve alone) while they drain and exit on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Await,
    /// Their retirement then runs in the app's background tasks; the next roll, a stop and the
    /// agent's shutdown wait for it ([`App::retiring`]).
    Detach,
}

/// A roll that stopped, after putting back what it had replaced.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct RollFailed {
    pub reason: String,
    /// Whether the slots already replaced were put back on the old spec.
    pub restored: bool,
}

/// A roll that succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rolled {
    /// Workers replaced.
    pub replaced: u32,
    /// Stop-then-start steps only: the time, summed over the steps, from stopping the old
    /// workers until their replacements were ready. `None` when nothing ever stopped serving.
    pub gap: Option<Duration>,
}

/// One step done: the retired workers (their specs are what a rollback puts back), and the gap
/// of a stop-then-start step.
struct Replaced {
    olds: Vec<Arc<Worker>>,
    gap: Option<Duration>,
}

/// Replace the workers in `slots` by workers of `spec`.
pub async fn roll(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>, tail: Tail) -> Result<Rolled, RollFailed> {
    let surge = match app.reload_config().max_surge {
        Some(n) => n.max(1) as usize,
        None => auto_surge(app, slots),
    };
    let mut replaced: Vec<(usize, Arc<Worker>)> = Vec::new();
    let mut gap: Option<Duration> = None;
    let steps = slots.chunks(surge).count();
    for (i, step) in slots.chunks(surge).enumerate() {
        // Only the last step may answer early: an earlier one's old workers must be gone before
        // the next step starts more (the memory `max_surge` bounds).
        let this_tail = if i + 1 == steps { tail } else { Tail::Await };
        match replace(app, step, spec, this_tail).await {
            Ok(done) => {
                replaced.extend(step.iter().copied().zip(done.olds));
                if let Some(g) = done.gap {
                    gap = Some(gap.unwrap_or_default() + g);
                }
            }
            Err(reason) if app.halted().is_cancelled() => {
                tracing::warn!(%reason, replaced = replaced.len(), "reload interrupted: the agent is stopping");
                return Err(RollFailed { reason: reason.to_string(), restored: false });
            }
            Err(reason) => {
                tracing::error!(%reason, "reload stopped");
                let mut restored = true;
                for (slot, old) in replaced.iter().rev() {
                    if let Err(e) = replace(app, &[*slot], &old.spec, Tail::Await).await {
                        tracing::error!(slot, error = %e, "could not put the previous worker back");
                        restored = false;
                    }
                }
                return Err(RollFailed { reason: reason.to_string(), restored });
            }
        }
    }
    Ok(Rolled { replaced: replaced.len() as u32, gap })
}

/// How many workers a roll replaces at once when `max_surge` is not set: all of `slots` when the
/// host's available memory holds a second set of them (twice their RSS now, plus 256 MiB for
/// everything else), so a small app's roll costs one worker start instead of one per worker;
/// one at a time otherwise, and always for a stop-then-start roll (each step is a gap).
fn auto_surge(app: &App, slots: &[usize]) -> usize {
    if app.stops_first() {
        return 1;
    }
    let rss: u64 = app.workers_in(slots).iter().map(|w| w.rss_bytes()).sum();
    let room = mem_available().is_some_and(|free| free > 2 * rss + (256 << 20));
    let surge = if room { slots.len().max(1) } else { 1 };
    tracing::debug!(surge, rss, "max_surge unset: replacing {surge} worker(s) at a time");
    surge
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim();
    kb.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// One step: start replacements for `slots`, wait until all are ready, then retire the old ones
/// (or the other way round, [`App::stops_first`]).
async fn replace(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>, tail: Tail) -> Result<Replaced, NotReady> {
    if app.halted().is_cancelled() {
        return Err(NotReady::Stopping);
    }
    if app.stops_first() {
        return stop_then_start(app, slots, spec).await;
    }
    let ctx = app.worker_ctx();
    let news = start_ready(app, slots, spec).await?;
    let olds = app.swap_workers(slots, &news);
    let how = app.retire_how();
    match tail {
        Tail::Await => {
            join_all(olds.iter().map(|w| w.retire(how, ctx.rotation.as_deref()))).await;
        }
        Tail::Detach => {
            let leaving: Vec<_> = olds.iter().map(|w| w.leave_rotation(ctx.rotation.as_deref())).collect();
            let done = app.retiring.clone().lock_owned().await;
            let olds = olds.clone();
            app.tasks.spawn(async move {
                join_all(olds.iter().zip(leaving).map(|(w, l)| w.finish_retire(l, how))).await;
                drop(done);
            });
        }
    }
    Ok(Replaced { olds, gap: None })
}

/// Fork mode: retire the old workers of `slots`, then start and wait for their replacements. If
/// one is not ready, the new ones are killed and workers of each old one's spec take the slots
/// again (unless the agent is stopping).
async fn stop_then_start(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>) -> Result<Replaced, NotReady> {
    let ctx = app.worker_ctx();
    let olds = app.workers_in(slots);
    let stopped = Instant::now();
    let how = app.retire_how();
    join_all(olds.iter().map(|w| w.retire(how, ctx.rotation.as_deref()))).await;
    match start_ready(app, slots, spec).await {
        Ok(news) => {
            let gap = stopped.elapsed();
            app.swap_workers(slots, &news);
            Ok(Replaced { olds, gap: Some(gap) })
        }
        Err(reason) => {
            if !app.halted().is_cancelled() {
                let again: Vec<Arc<Worker>> = slots
                    .iter()
                    .zip(&olds)
                    .map(|(&s, old)| Worker::start(s as u32, old.spec.clone(), ctx.clone()))
                    .collect();
                app.swap_workers(slots, &again);
                let timeout =
                    again.iter().map(|w| w.spec.ready.timeout).max().unwrap_or_default() + Duration::from_secs(1);
                for (w, r) in again.iter().zip(join_all(again.iter().map(|w| w.wait_ready(timeout))).await) {
                    if let Err(e) = r {
                        tracing::error!(worker = w.id, error = %e, "the previous worker did not start again");
                    }
                }
            }
            Err(reason)
        }
    }
}

/// Start workers of `spec` in `slots` (not in the slots yet) and wait until all are ready; if
/// one is not, all of them are killed.
async fn start_ready(app: &App, slots: &[usize], spec: &Arc<WorkerSpec>) -> Result<Vec<Arc<Worker>>, NotReady> {
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
    Ok(news)
}
