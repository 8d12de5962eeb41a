//! Following one deploy as it happens: its past events, then each new one, then its end.
//!
//! The database is the record; the [`Store`]'s change broadcast only says when to look again.
//! A receiver that lags loses nothing: it re-reads the events after the last one it sent.

use super::{DeployError, Deployer};
use crate::store::{DeployId, Store};
use deployer_wire::DeployStreamItem;
use futures_util::Stream;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

struct Follow {
    store: Arc<Store>,
    id: DeployId,
    changes: broadcast::Receiver<crate::store::DeployChange>,
    /// The `seq` of the last event sent.
    seen: u64,
    ready: VecDeque<DeployStreamItem>,
    ended: bool,
    stop: CancellationToken,
}

impl Deployer {
    /// The deploy's events from the first, then as they happen; ends after
    /// [`DeployStreamItem::End`], or when `stop` is cancelled (the agent stops).
    pub fn follow(
        &self,
        id: DeployId,
        stop: CancellationToken,
    ) -> Result<impl Stream<Item = DeployStreamItem> + Send + 'static + use<>, DeployError> {
        // Subscribe before the first read, so no change falls between the two.
        let changes = self.store.subscribe();
        self.store.deploy(id)?.ok_or(DeployError::NotFound(id))?;
        let follow =
            Follow { store: self.store.clone(), id, changes, seen: 0, ready: VecDeque::new(), ended: false, stop };
        Ok(follow.into_stream())
    }
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = DeployStreamItem> + Send + 'static {
        futures_util::stream::unfold(self, |mut f| async move {
            loop {
                if let Some(item) = f.ready.pop_front() {
                    return Some((item, f));
                }
                if f.ended {
                    return None;
                }
                f.catch_up();
                if !f.ready.is_empty() || f.ended {
                    continue;
                }
                f.wait_for_change().await;
            }
        })
    }

    /// Queue the events not sent yet, and the end if the deploy is final.
    fn catch_up(&mut self) {
        let deploy = match self.store.deploy(self.id) {
            Ok(Some(d)) => d,
            Ok(None) | Err(_) => {
                tracing::warn!(id = self.id, "deploy vanished from the state database while followed");
                self.ended = true;
                return;
            }
        };
        let is_final = deploy.is_final();
        let mut ended = deploy.clone();
        ended.events.clear();
        ended.output_tail.clear();
        let seen = self.seen;
        for event in deploy.events.into_iter().filter(|e| e.seq > seen) {
            self.seen = event.seq;
            self.ready.push_back(DeployStreamItem::Event(event));
        }
        if is_final {
            self.ready.push_back(DeployStreamItem::End(Box::new(ended)));
            self.ended = true;
        }
    }

    /// Until a change of this deploy (or a lag, after which we re-read anyway).
    async fn wait_for_change(&mut self) {
        loop {
            tokio::select! {
                change = self.changes.recv() => match change {
                    Ok(c) if c.id == self.id => return,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => {
                        self.ended = true;
                        return;
                    }
                },
                _ = self.stop.cancelled() => {
                    self.ended = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use deployer_wire::DeployStreamItem;
    use futures_util::StreamExt;
    use std::sync::Arc;

    /// Follows a deploy with the store alone (the [`super::Deployer`] needs a supervisor).
    fn follow(store: &Arc<Store>, id: u64) -> impl futures_util::Stream<Item = DeployStreamItem> {
        let f = super::Follow {
            store: store.clone(),
            id,
            changes: store.subscribe(),
            seen: 0,
            ready: Default::default(),
            ended: false,
            stop: Default::default(),
        };
        f.into_stream()
    }

    #[tokio::test]
    async fn replays_then_follows_until_the_end() {
        let store = Arc::new(Store::in_memory());
        let id = store
            .insert_deploy("web", "main", deployer_wire::Trigger::Api, &crate::store::Requester::default())
            .unwrap();
        store.transition(id, deployer_wire::DeployState::Fetching, "fetching main").unwrap();
        let mut stream = Box::pin(follow(&store, id));
        let first: Vec<_> = vec![stream.next().await.unwrap(), stream.next().await.unwrap()];
        assert!(matches!(&first[1], DeployStreamItem::Event(e) if e.state == "fetching"));
        let writer = store.clone();
        tokio::spawn(async move {
            writer.log(id, "fetched").unwrap();
            writer.transition(id, deployer_wire::DeployState::Live, "live").unwrap();
        });
        let rest: Vec<_> = stream.collect().await;
        let kinds: Vec<&str> = rest.iter().map(|i| i.kind()).collect();
        assert_eq!(kinds, ["event", "event", "end"]);
        assert!(matches!(&rest[2], DeployStreamItem::End(d) if d.state == "live" && d.events.is_empty()));
    }
}
