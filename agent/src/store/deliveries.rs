//! Webhook delivery ids already handled, so a host's redelivery deploys nothing twice.

use super::{Store, StoreError, now_ms};
use rusqlite::params;

/// Ids kept per agent; older ones go first. A host redelivers within hours, not weeks.
const KEEP: i64 = 10_000;

impl Store {
    /// Remember `delivery` of `app`; `false` when it was seen before.
    pub fn remember_delivery(&self, app: &str, delivery: &str) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let new = tx.execute(
            "INSERT OR IGNORE INTO webhook_deliveries (app, delivery, at) VALUES (?1, ?2, ?3)",
            params![app, delivery, now_ms() as i64],
        )? == 1;
        if new {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE rowid IN (SELECT rowid FROM webhook_deliveries ORDER BY at DESC LIMIT -1 OFFSET ?1)",
                params![KEEP],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Forget a delivery that could not be acted on, so the host's retry is not ignored.
    pub fn forget_delivery(&self, app: &str, delivery: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM webhook_deliveries WHERE app = ?1 AND delivery = ?2", params![app, delivery])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_counts_once_per_app() {
        let s = Store::in_memory();
        assert!(s.remember_delivery("web", "d1").unwrap());
        assert!(!s.remember_delivery("web", "d1").unwrap());
        assert!(s.remember_delivery("api", "d1").unwrap());
        s.forget_delivery("web", "d1").unwrap();
        assert!(s.remember_delivery("web", "d1").unwrap());
    }
}
