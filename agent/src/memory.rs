//! Giving freed heap memory back to the system.
//!
//! Under load the fronts hold two 8 KiB buffers per connection; when the connections close, glibc
//! keeps the freed pages in its arenas (a front loop's arena grows by ~1.5 MB under 64 busy
//! clients and stays there), so the agent's RSS would carry its busiest moment for ever.
//! `malloc_trim` hands free pages back with `madvise`; once every [`PERIOD`] it costs tens of
//! microseconds, and nothing at all when there is nothing to return; every 2 s, the RSS a reload
//! or a burst leaves behind is gone before anyone looks.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often freed memory is given back.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Give freed heap memory back every [`PERIOD`] until `stop`.
pub async fn return_freed(stop: CancellationToken) {
    let mut every = tokio::time::interval(PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => trim(),
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes each arena's lock itself; it only releases pages that are free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) give pages back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
