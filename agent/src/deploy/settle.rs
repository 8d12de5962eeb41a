//! The writer of final states the database refused (a full disk): the deploy is over, every read
//! answers its final state from memory ([`Store::finish`](crate::store::Store::finish)), and this
//! task writes it as soon as the database takes it, with a short backoff that stays short: space
//! that frees up is used within seconds.

use super::Deployer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The first pause after a refused write, and the longest one.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

impl Deployer {
    /// Write the final states still waiting, until none waits or the agent stops. One writer at
    /// a time: a deploy that ends while it runs is taken along.
    pub(super) fn settle_later(self: &Arc<Self>) {
        if self.settling.swap(true, Ordering::SeqCst) {
            return;
        }
        let d = self.clone();
        self.tasks.spawn(async move {
            let mut pause = FIRST_PAUSE;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = d.shutdown.cancelled() => break,
                }
                if d.store.settle() == 0 {
                    break;
                }
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            d.settling.store(false, Ordering::SeqCst);
            // A deploy that ended between the last try and the flag: tried once more now.
            let left = d.store.settle();
            if left > 0 {
                let waiting = d.store.unsettled_states();
                tracing::error!(?waiting, "the agent stops with deploy states the database never took: the next start records them `interrupted`");
            }
        });
    }
}
