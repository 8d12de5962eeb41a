//! The install key of each release: what its install step's inputs were
//! (`deploy/install_cache.rs` writes and compares it). Kept on the release's row, so it goes
//! when the release is forgotten, and only the agent can write it (a file in the release would
//! be the app user's to change).

use super::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

impl Store {
    /// Record `key` (the inputs, one `name=digest` line each) for release `name` of `app`.
    pub fn set_install_key(&self, app: &str, name: &str, key: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE releases SET install_key = ?3 WHERE app = ?1 AND name = ?2", params![app, name, key])?;
        Ok(())
    }

    /// The install key recorded for release `name` of `app`; None when there is none (the
    /// cache was off, or the release is older than the cache).
    pub fn install_key(&self, app: &str, name: &str) -> Result<Option<String>, StoreError> {
        let key = self
            .conn()
            .query_row("SELECT install_key FROM releases WHERE app = ?1 AND name = ?2", params![app, name], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?;
        Ok(key.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReleaseRow;
    use super::*;

    #[test]
    fn a_key_lives_and_goes_with_its_release() {
        let s = Store::in_memory();
        let row = ReleaseRow { app: "web".into(), name: "1-abc".into(), seq: 1, sha: "abc".into(), ok: false };
        s.record_release(&row).unwrap();
        assert_eq!(s.install_key("web", "1-abc").unwrap(), None);
        s.set_install_key("web", "1-abc", "lock=1").unwrap();
        assert_eq!(s.install_key("web", "1-abc").unwrap().as_deref(), Some("lock=1"));
        s.forget_release("web", "1-abc").unwrap();
        assert_eq!(s.install_key("web", "1-abc").unwrap(), None);
    }
}
