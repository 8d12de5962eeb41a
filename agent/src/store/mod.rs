//! The agent's durable state, in SQLite under `state_dir/agent.db`: deploys and their events,
//! releases, and each app's own state (its live release, a runtime scale, a stop: [`AppRecord`](apps::AppRecord)).
//!
//! Every call is a short transaction on one connection (WAL mode), so it is called directly from
//! async code. A crash at any point leaves a database the next agent opens and repairs with
//! [`Store::interrupt_unfinished`].
//!
//! Every text that comes from outside the agent's own code (refs, names, messages, output, report
//! bodies) has the agent's secret values masked before it is written, and again when it is read
//! (a row written before a secret was configured shows it masked too).

mod apps;
mod bakes;
mod deliveries;
mod install_keys;
mod outbox;
pub(crate) mod peek;
mod schema;
mod unsettled;

pub use apps::Scale;
pub use bakes::{BakeRow, left_of};
pub use outbox::{Change, DeployFacts, NewReport, OutboxRow, ReportRules};
pub use unsettled::Settled;

use crate::secrets::Secrets;
use deployer_wire::{Deploy, DeployEvent, DeployState, EventState, Trigger};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, broadcast};

/// The state database failed, or was asked for a transition the deploy's states forbid.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("deploy #{id} cannot go from `{from}` to `{to}`")]
    Illegal { id: DeployId, from: String, to: DeployState },
}

impl StoreError {
    /// Whether SQLite refused the write for want of room (`SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Db(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    }
}

pub type DeployId = u64;

/// A release directory as recorded: `<seq>-<shortsha>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub app: String,
    pub name: String,
    pub seq: u64,
    pub sha: String,
    pub ok: bool,
}

pub struct Store {
    conn: Mutex<Connection>,
    changes: broadcast::Sender<DeployChange>,
    /// Turn deploy changes into outbox rows, in the same transaction.
    rules: RwLock<Option<Arc<dyn ReportRules>>>,
    outbox_wake: Arc<Notify>,
    secrets: Secrets,
    /// Final states the database refused (a full disk), answered from here until written.
    unsettled: Mutex<unsettled::Unsettled>,
    /// A file of [`RESERVE_BYTES`] beside the database, given up when the disk is full so that a
    /// deploy's final state can still be written ([`Store::finish`]). None in memory.
    reserve: Option<std::path::PathBuf>,
}

/// Room kept for the final writes of deploys on a full disk: a few SQLite pages and WAL frames.
const RESERVE_BYTES: usize = 1 << 20;

/// Who asked for a deploy, as the audit trail keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// The name of the API token the request came with: the authenticated actor.
    pub token: Option<String>,
    /// What the request said about who asked (`who`), or the pusher of a webhook, or the
    /// trigger: shown beside the token, never instead of it.
    pub who: Option<String>,
}

impl Requester {
    /// A request that came with the API token `token`, saying it was from `who`.
    pub fn token(token: &str, who: Option<String>) -> Requester {
        Requester { token: Some(token.to_string()), who }
    }

    /// A request without a token (a webhook's pusher, pull mode, the agent itself).
    pub fn named(who: Option<&str>) -> Requester {
        Requester { token: None, who: who.map(String::from) }
    }
}

/// Sent after every committed change to a deploy (new, new state, new event), so streams and
/// reporters wake up. A slow receiver that lags re-reads from the database: the database, not
/// this channel, is the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployChange {
    pub id: DeployId,
    /// The state entered, or `Log` for a message within the current state.
    pub state: EventState,
    pub is_final: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Open (and migrate) the database; `secrets` are masked in what is written and read.
    pub fn open(path: &Path, secrets: Secrets) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&conn)?;
        let mut store = Store::with(conn, secrets);
        let mut reserve = path.as_os_str().to_owned();
        reserve.push(".reserve");
        store.reserve = Some(reserve.into());
        store.keep_reserve();
        Ok(store)
    }

    /// Put the room for final writes back if it was given up (at start, and before each
    /// deploy). A disk still full leaves it missing: said once in the log, tried again later.
    pub fn keep_reserve(&self) {
        let Some(path) = &self.reserve else { return };
        if std::fs::metadata(path).is_ok_and(|m| m.len() as usize >= RESERVE_BYTES) {
            return;
        }
        if let Err(e) = std::fs::write(path, vec![0u8; RESERVE_BYTES]) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep room for the deploys' final states");
            // A partial file is no reserve, and takes what little room is left.
            if let Err(e) = std::fs::remove_file(path) {
                tracing::debug!(error = %e, "no partial reserve to remove");
            }
        }
    }

    /// Give up the reserved room (the disk is full): answers whether there was any.
    fn release_reserve(&self) -> bool {
        let Some(path) = &self.reserve else { return false };
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::warn!("the disk is full: giving up the room kept for the deploys' final states");
                true
            }
            Err(_) => false,
        }
    }

    fn with(conn: Connection, secrets: Secrets) -> Store {
        Store {
            conn: Mutex::new(conn),
            changes: broadcast::channel(1024).0,
            rules: RwLock::new(None),
            outbox_wake: Arc::new(Notify::new()),
            secrets,
            unsettled: Mutex::new(unsettled::Unsettled::default()),
            reserve: None,
        }
    }

    /// `text` with the agent's secrets masked.
    fn mask(&self, text: &str) -> String {
        self.secrets.masked(text)
    }

    /// A deploy as read, with the agent's secrets masked in every text of it.
    fn masked_deploy(&self, mut d: Deploy) -> Deploy {
        let mask = |s: &mut String| {
            if let std::borrow::Cow::Owned(m) = self.secrets.mask(s) {
                *s = m;
            }
        };
        mask(&mut d.git_ref);
        for s in [&mut d.who, &mut d.token, &mut d.message].into_iter().flatten() {
            mask(s);
        }
        d.output_tail.iter_mut().for_each(mask);
        d.events.iter_mut().for_each(|e| mask(&mut e.message));
        d
    }

    /// Changes to deploys from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeployChange> {
        self.changes.subscribe()
    }

    fn changed(&self, id: DeployId, state: EventState, is_final: bool, reports: usize) {
        // No follower is listening: nothing to tell.
        let _ = self.changes.send(DeployChange { id, state, is_final });
        if reports > 0 {
            self.outbox_wake.notify_one();
        }
    }

    #[cfg(test)]
    pub fn in_memory() -> Store {
        Store::in_memory_with(Secrets::default())
    }

    #[cfg(test)]
    pub fn in_memory_with(secrets: Secrets) -> Store {
        let conn = Connection::open_in_memory().expect("sqlite in memory");
        schema::migrate(&conn).expect("schema");
        Store::with(conn, secrets)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a new deploy in state `queued`, asked for by `by`.
    pub fn insert_deploy(
        &self,
        app: &str,
        git_ref: &str,
        trigger: Trigger,
        by: &Requester,
    ) -> Result<DeployId, StoreError> {
        let git_ref = self.mask(git_ref);
        let who = by.who.as_deref().map(|w| self.mask(w));
        let token = by.token.as_deref().map(|t| self.mask(t));
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO deploys (app, git_ref, trigger, state, who, token, queued_at)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6)",
            params![app, git_ref, trigger.as_str(), who, token, now_ms() as i64],
        )?;
        let id = tx.last_insert_rowid() as DeployId;
        tx.execute(
            "INSERT INTO deploy_events (deploy_id, seq, at, state, message) VALUES (?1, 1, ?2, 'queued', ?3)",
            params![id as i64, now_ms() as i64, format!("{trigger}: deploy {git_ref}")],
        )?;
        let reports = self.write_reports(&tx, id, Change::Queued)?;
        tx.commit()?;
        drop(c);
        self.changed(id, DeployState::Queued.into(), false, reports);
        Ok(id)
    }

    /// Enter `state`, with an event; final states also set `finished_at` and the message.
    /// Enter `to`, if the deploy's current state may become it (checked in the transaction that
    /// writes it, whoever asks: the pipeline, a cancel, the queue, the bake window, a restart).
    pub fn transition(&self, id: DeployId, to: DeployState, message: &str) -> Result<(), StoreError> {
        let message = self.mask(message);
        let is_final = to.is_final();
        let mut c = self.conn();
        let tx = c.transaction()?;
        let from: String = tx
            .query_row("SELECT state FROM deploys WHERE id = ?1", params![id as i64], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        if !from.parse::<DeployState>().is_ok_and(|f| f.can_become(to)) {
            return Err(StoreError::Illegal { id, from, to });
        }
        if is_final {
            tx.execute(
                "UPDATE deploys SET state = ?2, finished_at = ?3, message = ?4 WHERE id = ?1",
                params![id as i64, to.as_str(), now_ms() as i64, message],
            )?;
        } else {
            tx.execute("UPDATE deploys SET state = ?2 WHERE id = ?1", params![id as i64, to.as_str()])?;
        }
        insert_event(&tx, id, to.into(), &message)?;
        let reports = self.write_reports(&tx, id, Change::Entered { from: &from })?;
        tx.commit()?;
        drop(c);
        self.changed(id, to.into(), is_final, reports);
        Ok(())
    }

    /// A message within the current state.
    pub fn log(&self, id: DeployId, message: &str) -> Result<(), StoreError> {
        insert_event(&self.conn(), id, EventState::Log, &self.mask(message))?;
        self.changed(id, EventState::Log, false, 0);
        Ok(())
    }

    /// The deploy's commit is known; reports that need a sha (commit statuses) can go out.
    pub fn set_sha(&self, id: DeployId, sha: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("UPDATE deploys SET sha = ?2 WHERE id = ?1", params![id as i64, sha])?;
        let reports = self.write_reports(&tx, id, Change::Resolved)?;
        tx.commit()?;
        drop(c);
        if reports > 0 {
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    pub fn set_release(&self, id: DeployId, release: &str) -> Result<(), StoreError> {
        self.conn().execute("UPDATE deploys SET release = ?2 WHERE id = ?1", params![id as i64, release])?;
        Ok(())
    }

    pub fn set_output_tail(&self, id: DeployId, tail: &[String]) -> Result<(), StoreError> {
        let tail = self.mask(&tail.join("\n"));
        self.conn().execute("UPDATE deploys SET output_tail = ?2 WHERE id = ?1", params![id as i64, tail])?;
        Ok(())
    }

    /// One deploy with its events and output tail.
    pub fn deploy(&self, id: DeployId) -> Result<Option<Deploy>, StoreError> {
        let c = self.conn();
        let Some(mut d) = deploy_row(&c, id)? else { return Ok(None) };
        d.events = events_after(&c, id, 0)?;
        drop(c);
        self.unsettled().overlay(&mut d);
        Ok(Some(self.masked_deploy(d)))
    }

    /// Events of a deploy after `seq` (for streaming).
    #[cfg(test)]
    pub fn events_after(&self, id: DeployId, seq: u64) -> Result<Vec<DeployEvent>, StoreError> {
        let mut events = events_after(&self.conn(), id, seq)?;
        for e in &mut events {
            e.message = self.mask(&e.message);
        }
        Ok(events)
    }

    /// The newest deploys of an app, newest first, without events.
    pub fn history(&self, app: &str, limit: usize) -> Result<Vec<Deploy>, StoreError> {
        let c = self.conn();
        let mut stmt =
            c.prepare(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE app = ?1 ORDER BY id DESC LIMIT ?2"))?;
        let rows = stmt.query_map(params![app, limit as i64], row_to_deploy)?;
        let mut rows: Vec<Deploy> = rows.collect::<Result<_, _>>()?;
        drop(stmt);
        drop(c);
        let unsettled = self.unsettled();
        rows.iter_mut().for_each(|d| unsettled.overlay(d));
        drop(unsettled);
        Ok(rows.into_iter().map(|d| self.masked_deploy(d)).collect())
    }

    /// At start: deploys a previous agent left unfinished become `interrupted`. Answers their ids.
    pub fn interrupt_unfinished(&self) -> Result<Vec<DeployId>, StoreError> {
        let ids: Vec<DeployId> = {
            let c = self.conn();
            let mut stmt =
                c.prepare("SELECT id FROM deploys WHERE state IN ('queued', 'fetching', 'building', 'rolling')")?;
            let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
            ids.into_iter().map(|i| i as DeployId).collect()
        };
        for id in &ids {
            self.transition(*id, DeployState::Interrupted, "the agent stopped during this deploy")?;
        }
        // A release in its bake window stays `baking`: the deployer watches the rest of the window
        // ([`Store::unfinished_bakes`]).
        Ok(ids)
    }

    pub fn record_release(&self, r: &ReleaseRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO releases (app, name, seq, sha, ok, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.app, r.name, r.seq as i64, r.sha, r.ok, now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn forget_release(&self, app: &str, name: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM releases WHERE app = ?1 AND name = ?2", params![app, name])?;
        Ok(())
    }

    /// Releases of an app, newest first.
    pub fn releases(&self, app: &str) -> Result<Vec<ReleaseRow>, StoreError> {
        let c = self.conn();
        let mut stmt = c.prepare("SELECT app, name, seq, sha, ok FROM releases WHERE app = ?1 ORDER BY seq DESC")?;
        let rows = stmt.query_map(params![app], |r| {
            Ok(ReleaseRow {
                app: r.get(0)?,
                name: r.get(1)?,
                seq: r.get::<_, i64>(2)? as u64,
                sha: r.get(3)?,
                ok: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Deploys of one app in one state, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployCount {
    pub app: String,
    pub state: String,
    pub count: u64,
    /// How many of them are finished, and their summed time from queued to final.
    pub finished: u64,
    pub duration_ms: u64,
}

impl Store {
    /// Deploys by app and state.
    pub fn deploy_counts(&self) -> Result<Vec<DeployCount>, StoreError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT app, state, COUNT(*), COUNT(finished_at), COALESCE(SUM(finished_at - queued_at), 0)
             FROM deploys GROUP BY app, state ORDER BY app, state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeployCount {
                app: r.get(0)?,
                state: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
                finished: r.get::<_, i64>(3)? as u64,
                duration_ms: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const DEPLOY_COLUMNS: &str =
    "id, app, git_ref, sha, trigger, state, who, release, queued_at, finished_at, message, token";

fn row_to_deploy(r: &rusqlite::Row) -> rusqlite::Result<Deploy> {
    Ok(Deploy {
        id: r.get::<_, i64>(0)? as u64,
        app: r.get(1)?,
        git_ref: r.get(2)?,
        sha: r.get(3)?,
        trigger: named(r, 4)?,
        state: named(r, 5)?,
        who: r.get(6)?,
        release: r.get(7)?,
        queued_at_ms: r.get::<_, i64>(8)? as u64,
        finished_at_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        message: r.get(10)?,
        token: r.get(11)?,
        events: Vec::new(),
        output_tail: Vec::new(),
    })
}

/// One deploy with its output tail, without its events.
fn deploy_row(c: &Connection, id: DeployId) -> Result<Option<Deploy>, StoreError> {
    let row = c.query_row(
        &format!("SELECT {DEPLOY_COLUMNS}, output_tail FROM deploys WHERE id = ?1"),
        params![id as i64],
        |r| {
            let mut d = row_to_deploy(r)?;
            let tail: Option<String> = r.get(12)?;
            d.output_tail =
                tail.filter(|t| !t.is_empty()).map(|t| t.lines().map(String::from).collect()).unwrap_or_default();
            Ok(d)
        },
    );
    Ok(row.optional()?)
}

/// A column that holds one of the wire's names (a state, a trigger), read back as its value. A
/// name this agent does not know is an error: the agent only reads what it wrote.
fn named<T>(r: &rusqlite::Row, column: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = deployer_wire::UnknownName>,
{
    let name: String = r.get(column)?;
    name.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

fn insert_event(c: &Connection, id: DeployId, state: EventState, message: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO deploy_events (deploy_id, seq, at, state, message)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deploy_events WHERE deploy_id = ?1), ?2, ?3, ?4)",
        params![id as i64, now_ms() as i64, state.as_str(), message],
    )?;
    Ok(())
}

fn events_after(c: &Connection, id: DeployId, seq: u64) -> Result<Vec<DeployEvent>, StoreError> {
    let mut stmt =
        c.prepare("SELECT seq, at, state, message FROM deploy_events WHERE deploy_id = ?1 AND seq > ?2 ORDER BY seq")?;
    let rows = stmt.query_map(params![id as i64, seq as i64], |r| {
        Ok(DeployEvent {
            seq: r.get::<_, i64>(0)? as u64,
            at_ms: r.get::<_, i64>(1)? as u64,
            state: named(r, 2)?,
            message: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_in_its_bake_window_stays_baking_with_its_window_after_a_restart() {
        let s = Store::in_memory();
        let id = s.insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::default()).unwrap();
        for (state, m) in [(DeployState::Fetching, "f"), (DeployState::Building, "b"), (DeployState::Rolling, "r")] {
            s.transition(id, state, m).unwrap();
        }
        s.transition(id, DeployState::Baking, "baking for 30s").unwrap();
        let bake = BakeRow {
            deploy: id,
            app: "web".into(),
            release: "2-abc".into(),
            previous: Some("1-def".into()),
            until_ms: now_ms() + 30_000,
            window_ms: 30_000,
            live: "live on abc (release 2-abc)".into(),
        };
        s.record_bake(&bake).unwrap();
        assert!(s.interrupt_unfinished().unwrap().is_empty(), "it was not interrupted");
        assert_eq!(s.deploy(id).unwrap().unwrap().state, DeployState::Baking, "the next agent watches the rest");
        assert_eq!(s.unfinished_bakes().unwrap(), vec![(id, Some(bake))]);
    }

    #[test]
    fn a_deploy_records_its_steps() {
        let s = Store::in_memory();
        let id = s
            .insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::token("ci", Some("ana".into())))
            .unwrap();
        s.transition(id, DeployState::Fetching, "fetching main").unwrap();
        s.set_sha(id, "abc").unwrap();
        s.log(id, "fetched abc").unwrap();
        s.transition(id, DeployState::Live, "live").unwrap();
        let d = s.deploy(id).unwrap().unwrap();
        assert_eq!(d.state, "live");
        assert_eq!(d.sha.as_deref(), Some("abc"));
        assert_eq!((d.token.as_deref(), d.who.as_deref()), (Some("ci"), Some("ana")));
        assert!(d.finished_at_ms.is_some());
        let states: Vec<&str> = d.events.iter().map(|e| e.state.as_str()).collect();
        assert_eq!(states, ["queued", "fetching", "log", "live"]);
        assert_eq!(s.events_after(id, 2).unwrap().len(), 2);
        assert_eq!(s.history("web", 10).unwrap().len(), 1);
        let counts = s.deploy_counts().unwrap();
        assert_eq!((counts.len(), counts[0].state.as_str(), counts[0].count, counts[0].finished), (1, "live", 1, 1));
    }

    #[test]
    fn secrets_are_masked_in_what_is_written_and_what_is_read() {
        let s = Store::in_memory_with(crate::secrets::Secrets::for_test(&[("T", "token-value-123")]));
        let by = Requester { token: Some("ci".into()), who: Some("token-value-123".into()) };
        let id = s.insert_deploy("web", "token-value-123", deployer_wire::Trigger::Api, &by).unwrap();
        s.transition(id, DeployState::Fetching, "fetching with token-value-123").unwrap();
        s.log(id, "log token-value-123").unwrap();
        s.set_output_tail(id, &["out token-value-123".into()]).unwrap();
        s.transition(id, DeployState::Failed, "failed: token-value-123").unwrap();
        let stored: Vec<String> = {
            let c = s.conn();
            let mut stmt = c.prepare("SELECT message FROM deploy_events UNION ALL SELECT git_ref || who || message || output_tail FROM deploys").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        };
        assert!(stored.iter().all(|t| !t.contains("token-value-123")), "{stored:?}");
        let d = s.deploy(id).unwrap().unwrap();
        assert_eq!(
            (d.git_ref.as_str(), d.who.as_deref(), d.message.as_deref()),
            ("***", Some("***"), Some("failed: ***"))
        );
        assert_eq!(d.output_tail, ["out ***"]);
        // A row written before the secret was known is masked when read.
        let before = Store::in_memory();
        let id = before
            .insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::named(Some("token-value-123")))
            .unwrap();
        let conn = std::mem::replace(&mut *before.conn(), Connection::open_in_memory().unwrap());
        let after = Store::with(conn, crate::secrets::Secrets::for_test(&[("T", "token-value-123")]));
        assert_eq!(after.deploy(id).unwrap().unwrap().who.as_deref(), Some("***"));
        assert_eq!(after.history("web", 1).unwrap()[0].who.as_deref(), Some("***"));
    }

    #[test]
    fn unfinished_deploys_become_interrupted() {
        let s = Store::in_memory();
        let a = s.insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::default()).unwrap();
        let b = s.insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::default()).unwrap();
        s.transition(b, DeployState::Live, "").unwrap();
        assert_eq!(s.interrupt_unfinished().unwrap(), vec![a]);
        assert_eq!(s.deploy(a).unwrap().unwrap().state, "interrupted");
        assert_eq!(s.deploy(b).unwrap().unwrap().state, "live");
    }

    #[test]
    fn releases_newest_first() {
        let s = Store::in_memory();
        for seq in 1..=3 {
            s.record_release(&ReleaseRow {
                app: "web".into(),
                name: format!("{seq}-abc"),
                seq,
                sha: "abc".into(),
                ok: seq != 2,
            })
            .unwrap();
        }
        let r = s.releases("web").unwrap();
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2, 1]);
        assert!(!r[1].ok);
        s.forget_release("web", "3-abc").unwrap();
        assert_eq!(s.releases("web").unwrap().len(), 2);
    }

    #[test]
    fn an_illegal_transition_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("agent.db"), Secrets::default()).unwrap();
        let id = s.insert_deploy("web", "main", deployer_wire::Trigger::Api, &Requester::default()).unwrap();
        s.transition(id, DeployState::Fetching, "fetching").unwrap();
        s.transition(id, DeployState::Failed, "failed").unwrap();
        let e = s.transition(id, DeployState::Live, "live after all").unwrap_err();
        assert!(matches!(&e, StoreError::Illegal { from, to: DeployState::Live, .. } if from == "failed"), "{e}");
        let d = s.deploy(id).unwrap().unwrap();
        assert_eq!(d.state, "failed");
        assert!(d.events.iter().all(|e| e.message != "live after all"));
    }
}
