//! The report outbox: every report is a row written in the same transaction as the deploy change
//! that causes it, so a crash can lose none; a sender ([`crate::report`]) delivers rows until the
//! receiver answers 2xx. Delivery is at least once, in row order per destination.

use super::{DeployId, Store, StoreError, now_ms};
use rusqlite::{Connection, params};

/// A deploy as the report rules see it, read inside the transaction that changes it: the API's
/// `Deploy` with its output tail, without its events.
pub type DeployFacts = deployer_wire::Deploy;

/// What just happened to the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// It was created, `queued`.
    Queued,
    /// It entered `DeployFacts::state` from `from`.
    Entered { from: &'a str },
    /// Its commit became known (after the fetch, or at once for a rollback).
    Resolved,
}

/// One report to deliver: where (a destination the sender understands, as JSON), the key the
/// receiver can deduplicate on, and the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    pub destination: String,
    pub idempotency_key: String,
    pub body: String,
}

/// Decides which reports a change causes. Called inside the state transaction: it must be quick
/// and do no I/O.
pub trait ReportRules: Send + Sync {
    fn reports(&self, deploy: &DeployFacts, change: Change<'_>) -> Vec<NewReport>;
}

/// A report not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub destination: String,
    pub idempotency_key: String,
    pub body: String,
    pub attempts: u32,
    pub next_at_ms: u64,
}

/// Delivered rows kept this long, for a look at what went out.
const KEEP_SENT_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Install the rules that turn deploy changes into reports (at start, before any deploy).
    pub fn set_report_rules(&self, rules: std::sync::Arc<dyn ReportRules>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Some(rules);
    }

    /// Woken after rows were added to the outbox.
    pub fn outbox_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_wake.clone()
    }

    /// Write the reports `change` causes, within the caller's transaction. Answers how many.
    pub(super) fn write_reports(&self, c: &Connection, id: DeployId, change: Change<'_>) -> Result<usize, StoreError> {
        let Some(rules) = self.rules.read().unwrap_or_else(|e| e.into_inner()).clone() else { return Ok(0) };
        let Some(facts) = facts(c, id)? else { return Ok(0) };
        let reports = rules.reports(&facts, change);
        insert(c, &reports, &self.secrets)?;
        Ok(reports.len())
    }

    /// Add reports that belong to no deploy change (a worker that errored).
    pub fn enqueue_reports(&self, reports: &[NewReport]) -> Result<(), StoreError> {
        insert(&self.conn(), reports, &self.secrets)?;
        if !reports.is_empty() {
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Undelivered reports, oldest first: at most `per_destination` of each destination, so a
    /// receiver that is down with a long backlog holds back no other.
    pub fn unsent_reports(&self, per_destination: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT id, destination, idempotency_key, body, attempts, next_at FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY destination ORDER BY id) AS nth
                 FROM report_outbox WHERE sent_at IS NULL)
             WHERE nth <= ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![per_destination as i64], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                destination: r.get(1)?,
                idempotency_key: r.get(2)?,
                body: self.secrets.masked(&r.get::<_, String>(3)?),
                attempts: r.get::<_, i64>(4)? as u32,
                next_at_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Take `id` for `claimant` (an agent's pid) until `until_ms`, unless it is sent or another
    /// agent's claim on it still holds. Answers whether `claimant` may send it now.
    pub fn claim_report(&self, id: i64, claimant: u32, until_ms: u64) -> Result<bool, StoreError> {
        let now = now_ms() as i64;
        let n = self.conn().execute(
            "UPDATE report_outbox SET claimed_by = ?2, claimed_until = ?3
             WHERE id = ?1 AND sent_at IS NULL
               AND (claimed_until IS NULL OR claimed_until < ?4 OR claimed_by = ?2)",
            params![id, claimant, until_ms as i64, now],
        )?;
        Ok(n == 1)
    }

    /// Claims by agents that are gone: at a start under the state dir's lock, no other agent
    /// sends (an upgrade's new agent does not call this: the old one may still be sending).
    pub fn release_report_claims(&self) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE report_outbox SET claimed_by = NULL, claimed_until = NULL WHERE sent_at IS NULL", [])?;
        Ok(())
    }

    /// The receiver took it; delivered rows older than a day are pruned.
    pub fn report_sent(&self, id: i64) -> Result<(), StoreError> {
        let c = self.conn();
        let now = now_ms() as i64;
        c.execute(
            "UPDATE report_outbox SET sent_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            params![id, now],
        )?;
        c.execute("DELETE FROM report_outbox WHERE sent_at IS NOT NULL AND sent_at < ?1", params![now - KEEP_SENT_MS])?;
        Ok(())
    }

    /// An attempt failed: try again at `next_at_ms`.
    pub fn report_failed(&self, id: i64, next_at_ms: u64, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE report_outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, next_at_ms as i64, self.secrets.masked(error)],
        )?;
        Ok(())
    }
}

/// Bodies are masked here: a report holds no secret value, whatever the deploy or worker said.
fn insert(c: &Connection, reports: &[NewReport], secrets: &crate::secrets::Secrets) -> Result<(), StoreError> {
    let now = now_ms() as i64;
    for r in reports {
        c.execute(
            "INSERT INTO report_outbox (destination, idempotency_key, body, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![r.destination, r.idempotency_key, secrets.mask(&r.body), now],
        )?;
    }
    Ok(())
}

fn facts(c: &Connection, id: DeployId) -> Result<Option<DeployFacts>, StoreError> {
    super::deploy_row(c, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(destination: &str, n: usize) -> NewReport {
        NewReport { destination: destination.into(), idempotency_key: format!("{destination}-{n}"), body: "{}".into() }
    }

    #[test]
    fn two_agents_sharing_the_outbox_never_both_send_a_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("agent.db");
        let (old, new) = (
            Store::open(&db, crate::secrets::Secrets::for_test(&[])).expect("open"),
            Store::open(&db, crate::secrets::Secrets::for_test(&[])).expect("open again"),
        );
        old.enqueue_reports(&[report("hook", 0)]).expect("enqueue");
        let id = new.unsent_reports(10).expect("unsent")[0].id;
        let later = now_ms() + 60_000;
        assert!(old.claim_report(id, 100, later).expect("claim"), "the first claim takes it");
        assert!(!new.claim_report(id, 200, later).expect("claim"), "a held claim keeps the other agent off");
        assert!(old.claim_report(id, 100, later).expect("claim"), "the holder may try again");
        // A lapsed claim (its agent died while sending) is taken over.
        assert!(old.claim_report(id, 100, now_ms() - 1).expect("claim"));
        assert!(new.claim_report(id, 200, later).expect("claim"), "a lapsed claim is taken over");
        new.report_sent(id).expect("sent");
        assert!(!old.claim_report(id, 100, later).expect("claim"), "a sent report is never claimed again");
        // A start under the lock releases every claim.
        new.enqueue_reports(&[report("hook", 1)]).expect("enqueue");
        let id = new.unsent_reports(10).expect("unsent")[0].id;
        assert!(new.claim_report(id, 200, later).expect("claim"));
        old.release_report_claims().expect("release");
        assert!(old.claim_report(id, 100, later).expect("claim"));
    }

    #[test]
    fn a_long_backlog_of_one_destination_holds_back_no_other() {
        let store = Store::in_memory();
        let down: Vec<NewReport> = (0..50).map(|n| report("down", n)).collect();
        store.enqueue_reports(&down).expect("enqueue");
        store.enqueue_reports(&[report("up", 0)]).expect("enqueue");

        let rows = store.unsent_reports(10).expect("unsent");
        assert_eq!(rows.iter().filter(|r| r.destination == "down").count(), 10);
        assert!(rows.iter().any(|r| r.destination == "up"), "{rows:?}");
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");

        let up = rows.iter().find(|r| r.destination == "up").expect("up");
        store.report_sent(up.id).expect("sent");
        assert!(store.unsent_reports(10).expect("unsent").iter().all(|r| r.destination == "down"));
    }
}
