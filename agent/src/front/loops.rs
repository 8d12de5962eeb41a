//! The fronts' event loops: one thread per core, each a single-threaded tokio runtime, like
//! nginx's worker processes.
//!
//! A client connection lives on the loop that accepted it, with its upstream connections, from
//! accept to close. In the agent's work-stealing runtime every request also paid for waking idle
//! worker threads (an eventfd write or a futex, one more `epoll_wait`) and for tasks moving
//! between cores; on a small host those cycles are taken from the app's workers. Each loop
//! accepts from its own copy of the listener, and keeps its own pool of idle upstream
//! connections (a pooled connection is registered with the loop that opened it).

use std::cell::Cell;
use std::sync::OnceLock;
use tokio::runtime::Handle;

/// Loops at most: the front rarely needs more, and each loop is a thread and a pool per worker.
const MAX_LOOPS: usize = 16;

thread_local! {
    /// 1..=count() on a loop's thread, 0 elsewhere (the main runtime, tests).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many loops there are (or will be), known without starting them: `DEPLOYER_FRONT_LOOPS`
/// if set, else one per two cores the agent may run on (the app's workers need the others; one
/// loop proxies ~30k requests/s on a core), between 1 and [`MAX_LOOPS`]. More loops than
/// needed cost cycles: all of them wake for each new connection and one gets it.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let n = std::env::var("DEPLOYER_FRONT_LOOPS").ok().and_then(|v| v.parse::<usize>().ok());
        n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).clamp(1, MAX_LOOPS)
    })
}

/// Which loop runs the calling thread: 1..=[`count`], or 0 when it is not a front loop. Indexes
/// per-loop state such as a backend's idle pools.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The loops' runtimes, started at the first call. A loop that cannot start (no thread or no
/// runtime, e.g. out of memory or fds) is left out and logged; with none at all the caller's
/// runtime serves the fronts.
pub fn handles() -> &'static [Handle] {
    static HANDLES: OnceLock<Vec<Handle>> = OnceLock::new();
    HANDLES.get_or_init(|| (1..=count()).filter_map(start).collect())
}

fn start(index: usize) -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(format!("front-{index}")).spawn(move || {
        INDEX.with(|i| i.set(index));
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, index, "cannot start a front loop");
                return;
            }
        };
        if tx.send(rt.handle().clone()).is_ok() {
            // Spawned tasks run while the loop blocks on a future that never ends.
            rt.block_on(std::future::pending::<()>());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, index, "cannot start a front loop thread");
        return None;
    }
    rx.recv().ok()
}
