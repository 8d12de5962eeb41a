//! Waiting for the system to reach a state: poll with a short pause, give up at a deadline.

use std::time::{Duration, Instant};

const PAUSE: Duration = Duration::from_millis(25);

/// Poll `cond` until it holds or `timeout` passes; answers whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(timeout, || cond().then_some(())).is_some()
}

/// Poll `f` until it answers `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(PAUSE);
    }
}
