//! Each app's own state, one row per app: the release its workers run, a runtime `scale`, and
//! whether it was stopped. The supervisor owns these facts and is the only writer; this row is
//! where they survive a restart (the `current` symlink is only a mirror of the release).

use super::{Store, StoreError, now_ms};
use rusqlite::{OptionalExtension, params};

/// An app's row, as the supervisor wrote it last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRecord {
    /// The release its workers run (apps deployed from git); `None` before the first one.
    pub release: Option<String>,
    /// A runtime `scale`, if one was made since the config's `instances` last changed.
    pub scale: Option<Scale>,
    /// Stopped by request (`deployer stop`): the next agent does not start it either.
    pub stopped: bool,
}

/// A runtime `scale`: the count, and the config's `instances` (as written) it overrides. When
/// the config's `instances` is no longer that, the config wins again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub instances: u32,
    pub over: String,
}

impl Store {
    /// The app's row; `None` when no agent of this version has written one yet.
    pub fn app_record(&self, app: &str) -> Result<Option<AppRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT release, instances, instances_over, stopped FROM app_state WHERE app = ?1",
                params![app],
                |r| {
                    let instances: Option<i64> = r.get(1)?;
                    let over: Option<String> = r.get(2)?;
                    Ok(AppRecord {
                        release: r.get(0)?,
                        scale: instances.zip(over).map(|(n, over)| Scale { instances: n as u32, over }),
                        stopped: r.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// The release `app` runs from now on. Going live also makes the release a good one (a
    /// rollback target), in the same transaction.
    pub fn set_live_release(&self, app: &str, release: Option<&str>) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO app_state (app, release, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (app) DO UPDATE SET release = excluded.release, at = excluded.at",
            params![app, release, now_ms() as i64],
        )?;
        if let Some(name) = release {
            tx.execute("UPDATE releases SET ok = 1 WHERE app = ?1 AND name = ?2", params![app, name])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A runtime `scale` of `app`, or none (the config's `instances` applies).
    pub fn set_scale(&self, app: &str, scale: Option<&Scale>) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO app_state (app, instances, instances_over, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app) DO UPDATE SET instances = excluded.instances,
                 instances_over = excluded.instances_over, at = excluded.at",
            params![app, scale.map(|s| s.instances as i64), scale.map(|s| s.over.as_str()), now_ms() as i64],
        )?;
        Ok(())
    }

    /// Whether `app` was stopped by request.
    pub fn set_stopped(&self, app: &str, stopped: bool) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO app_state (app, stopped, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (app) DO UPDATE SET stopped = excluded.stopped, at = excluded.at",
            params![app, stopped, now_ms() as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReleaseRow;

    #[test]
    fn each_fact_is_written_without_touching_the_others() {
        let s = Store::in_memory();
        assert_eq!(s.app_record("web").unwrap(), None);
        s.set_scale("web", Some(&Scale { instances: 3, over: "2".into() })).unwrap();
        s.set_stopped("web", true).unwrap();
        s.set_live_release("web", Some("4-abcdef0")).unwrap();
        let want = AppRecord {
            release: Some("4-abcdef0".into()),
            scale: Some(Scale { instances: 3, over: "2".into() }),
            stopped: true,
        };
        assert_eq!(s.app_record("web").unwrap(), Some(want));
        s.set_scale("web", None).unwrap();
        s.set_stopped("web", false).unwrap();
        let now = s.app_record("web").unwrap().unwrap();
        assert_eq!((now.release.as_deref(), now.scale, now.stopped), (Some("4-abcdef0"), None, false));
        assert_eq!(s.app_record("api").unwrap(), None, "one row per app");
    }

    #[test]
    fn going_live_makes_the_release_a_good_one() {
        let s = Store::in_memory();
        let row = ReleaseRow { app: "web".into(), name: "1-abc".into(), seq: 1, sha: "abc".into(), ok: false };
        s.record_release(&row).unwrap();
        s.set_live_release("web", Some("1-abc")).unwrap();
        assert!(s.releases("web").unwrap()[0].ok);
    }
}
