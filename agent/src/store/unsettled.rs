//! Final states the database could not take yet.
//!
//! A deploy's last write can fail for a reason that passes: the disk is full (SQLite needs a
//! few pages even for a one-row update), the database is locked past its busy timeout. The
//! deploy is over all the same, and whoever follows it (`deploy --wait`, the stream, the API)
//! must hear how it ended now, not when the disk frees up. So the final state is kept here,
//! answered by every read of the deploy as if it were written, and written by
//! [`Store::settle`] until the database takes it.

use super::{DeployId, Store, StoreError, now_ms};
use deployer_wire::{Deploy, DeployEvent, DeployState, EventState};
use std::collections::HashMap;

/// A final state not written yet.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    state: DeployState,
    message: String,
    at_ms: u64,
}

/// The final states waiting for the database, by deploy.
#[derive(Debug, Default)]
pub(super) struct Unsettled(HashMap<DeployId, Pending>);

impl Unsettled {
    /// `d` as it is once its pending final state is written: the state, the message, the end
    /// time and the event entering it. A row that is final already is left as it is.
    pub(super) fn overlay(&self, d: &mut Deploy) {
        let Some(p) = self.0.get(&d.id) else { return };
        if d.state.is_final() {
            return;
        }
        d.state = p.state;
        d.message = Some(p.message.clone());
        d.finished_at_ms = Some(p.at_ms);
        if let Some(last) = d.events.last().map(|e| e.seq) {
            d.events.push(DeployEvent {
                seq: last + 1,
                at_ms: p.at_ms,
                state: EventState::Entered(p.state),
                message: p.message.clone(),
            });
        }
    }
}

/// How a final write went.
#[derive(Debug)]
pub enum Settled {
    /// Written.
    Now,
    /// Not written (the error says why): it is answered from memory until [`Store::settle`]
    /// writes it.
    Later(StoreError),
}

impl Store {
    /// Enter the final state `to`. When the database refuses the write for want of room, the
    /// room kept beside it is given up and the write tried again. When it still refuses (full, locked), the state
    /// is still what every read of the deploy answers from now on, and followers are told; the
    /// caller retries with [`Store::settle`]. A transition the states forbid is an error as usual.
    pub fn finish(&self, id: DeployId, to: DeployState, message: &str) -> Result<Settled, StoreError> {
        debug_assert!(to.is_final(), "only a final state waits for the database");
        let mut result = self.transition(id, to, message);
        if result.as_ref().is_err_and(StoreError::is_disk_full) && self.release_reserve() {
            result = self.transition(id, to, message);
        }
        match result {
            Ok(()) => Ok(Settled::Now),
            Err(e @ StoreError::Illegal { .. }) => Err(e),
            Err(e) => {
                let pending = Pending { state: to, message: self.mask(message), at_ms: now_ms() };
                self.unsettled().0.insert(id, pending);
                self.changed(id, to.into(), true, 0);
                Ok(Settled::Later(e))
            }
        }
    }

    /// Try once more to write every final state still waiting; answers how many still wait.
    /// One the states now forbid (another agent wrote the deploy meanwhile) is dropped.
    pub fn settle(&self) -> usize {
        let pending: Vec<(DeployId, Pending)> = self.unsettled().0.iter().map(|(id, p)| (*id, p.clone())).collect();
        for (id, p) in pending {
            let mut result = self.transition(id, p.state, &p.message);
            if result.as_ref().is_err_and(StoreError::is_disk_full) && self.release_reserve() {
                result = self.transition(id, p.state, &p.message);
            }
            match result {
                Ok(()) => {
                    tracing::info!(id, state = p.state.as_str(), "the deploy's final state is recorded at last");
                    self.unsettled().0.remove(&id);
                }
                Err(e @ StoreError::Illegal { .. }) => {
                    tracing::warn!(id, error = %e, "a final state waiting for the database no longer applies");
                    self.unsettled().0.remove(&id);
                }
                Err(e) => tracing::debug!(id, error = %e, "the deploy's final state still cannot be recorded"),
            }
        }
        self.unsettled().0.len()
    }

    /// The deploys whose final state waits for the database, and that state.
    pub fn unsettled_states(&self) -> Vec<(DeployId, DeployState)> {
        self.unsettled().0.iter().map(|(id, p)| (*id, p.state)).collect()
    }

    pub(super) fn unsettled(&self) -> std::sync::MutexGuard<'_, Unsettled> {
        self.unsettled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deployer_wire::Trigger;

    /// Writes fail from now on (as on a full disk), reads still work.
    fn refuse_writes(s: &Store, refuse: bool) {
        s.conn().pragma_update(None, "query_only", refuse).unwrap();
    }

    #[test]
    fn a_final_state_the_database_refuses_is_answered_at_once_and_written_later() {
        let s = Store::in_memory();
        let id = s.insert_deploy("web", "main", Trigger::Api, &Default::default()).unwrap();
        s.transition(id, DeployState::Fetching, "fetching").unwrap();
        let mut changes = s.subscribe();
        refuse_writes(&s, true);

        let settled = s.finish(id, DeployState::Failed, "install: disk full").unwrap();
        assert!(matches!(settled, Settled::Later(_)), "{settled:?}");
        let change = changes.try_recv().expect("followers are told");
        assert!(change.is_final && change.id == id, "{change:?}");
        let d = s.deploy(id).unwrap().unwrap();
        assert_eq!((d.state, d.message.as_deref()), (DeployState::Failed, Some("install: disk full")));
        assert!(d.is_final() && d.finished_at_ms.is_some());
        assert_eq!(d.events.last().map(|e| e.state), Some(EventState::Entered(DeployState::Failed)));
        assert_eq!(s.history("web", 5).unwrap()[0].state, DeployState::Failed, "lists say it too");
        assert_eq!(s.settle(), 1, "still refused");

        refuse_writes(&s, false);
        assert_eq!(s.settle(), 0, "written once the database takes it");
        assert!(s.unsettled_states().is_empty());
        let d = s.deploy(id).unwrap().unwrap();
        assert_eq!(d.state, DeployState::Failed);
        let failed = d.events.iter().filter(|e| e.state == EventState::Entered(DeployState::Failed)).count();
        assert_eq!(failed, 1, "one event, not the remembered one and the written one: {:?}", d.events);
    }

    #[test]
    fn a_forbidden_final_state_is_an_error_not_a_pending_write() {
        let s = Store::in_memory();
        let id = s.insert_deploy("web", "main", Trigger::Api, &Default::default()).unwrap();
        s.transition(id, DeployState::Cancelled, "cancelled").unwrap();
        assert!(matches!(s.finish(id, DeployState::Live, "live"), Err(StoreError::Illegal { .. })));
        assert!(s.unsettled_states().is_empty());
    }

    #[test]
    fn the_room_beside_the_database_is_given_up_for_a_final_write_and_kept_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("agent.db"), Default::default()).unwrap();
        let reserve = dir.path().join("agent.db.reserve");
        assert!(reserve.is_file(), "kept at open");
        assert!(s.release_reserve());
        assert!(!reserve.exists() && !s.release_reserve(), "given up once");
        s.keep_reserve();
        assert!(reserve.is_file(), "kept again");
    }
}
