//! Bake windows in progress: what a deploy in `baking` rolls back to, and until when, so the next
//! agent (after an upgrade or a restart) watches the rest of the window instead of calling the
//! release good unwatched.

use super::{Store, StoreError, now_ms};
use crate::store::DeployId;
use rusqlite::params;

/// A deploy in its bake window, as recorded when the window began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeRow {
    pub deploy: DeployId,
    pub app: String,
    /// The release being baked.
    pub release: String,
    /// What a failed bake rolls back to.
    pub previous: Option<String>,
    /// When the window ends (ms since the epoch).
    pub until_ms: u64,
    /// The whole window, as configured when it began (ms).
    pub window_ms: u64,
    /// What the deploy's final message starts with: `live on <sha> (release <name>)`.
    pub live: String,
}

impl Store {
    /// Record a bake window as it begins (with the `baking` state: written after it).
    pub fn record_bake(&self, bake: &BakeRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO bakes (deploy_id, app, release, previous, until_ms, window_ms, live)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                bake.deploy as i64,
                bake.app,
                bake.release,
                bake.previous,
                bake.until_ms as i64,
                bake.window_ms as i64,
                bake.live
            ],
        )?;
        // Windows of deploys that are over are of no use to anyone.
        self.conn()
            .execute("DELETE FROM bakes WHERE deploy_id NOT IN (SELECT id FROM deploys WHERE state = 'baking')", [])?;
        Ok(())
    }

    /// Deploys a previous agent left in their bake window, with the window when it was recorded
    /// (`None`: an agent that did not record windows).
    pub fn unfinished_bakes(&self) -> Result<Vec<(DeployId, Option<BakeRow>)>, StoreError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT d.id, b.app, b.release, b.previous, b.until_ms, b.window_ms, b.live
             FROM deploys d LEFT JOIN bakes b ON b.deploy_id = d.id
             WHERE d.state = 'baking' ORDER BY d.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let deploy = r.get::<_, i64>(0)? as DeployId;
            let row = match r.get::<_, Option<String>>(1)? {
                None => None,
                Some(app) => Some(BakeRow {
                    deploy,
                    app,
                    release: r.get(2)?,
                    previous: r.get(3)?,
                    until_ms: r.get::<_, i64>(4)? as u64,
                    window_ms: r.get::<_, i64>(5)? as u64,
                    live: r.get(6)?,
                }),
            };
            Ok((deploy, row))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// How long is left of a window ending at `until_ms`, now.
pub fn left_of(until_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(until_ms.saturating_sub(now_ms()))
}
