//! The recorded live release, read without an agent: `deployer-agent check` starts nothing, so
//! it opens the database read-only, neither migrating it nor waiting on a running agent for long.

use super::StoreError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

/// `app_state.release` of `app` in the database at `db`: `None` when the app has no row (no
/// agent of this version wrote one yet), `Some(None)` when its row records no release. An error
/// when the database does not exist, predates the table, or cannot be read.
pub fn recorded_release(db: &Path, app: &str) -> Result<Option<Option<String>>, StoreError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let release =
        conn.query_row("SELECT release FROM app_state WHERE app = ?1", params![app], |r| r.get(0)).optional()?;
    Ok(release)
}
