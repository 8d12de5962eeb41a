//! The database schema, versioned with `PRAGMA user_version`: each step runs once, in order.

use rusqlite::Connection;

const STEPS: &[&str] = &[
    // 1: deploys, their events, releases, the current release per app.
    "CREATE TABLE deploys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        git_ref TEXT NOT NULL,
        sha TEXT,
        trigger TEXT NOT NULL,
        state TEXT NOT NULL,
        who TEXT,
        release TEXT,
        queued_at INTEGER NOT NULL,
        finished_at INTEGER,
        message TEXT,
        output_tail TEXT
    );
    CREATE INDEX deploys_by_app ON deploys (app, id);
    CREATE TABLE deploy_events (
        deploy_id INTEGER NOT NULL REFERENCES deploys (id),
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (deploy_id, seq)
    );
    CREATE TABLE releases (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sha TEXT NOT NULL,
        ok INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE current_release (
        app TEXT PRIMARY KEY,
        release TEXT NOT NULL,
        deploy_id INTEGER,
        at INTEGER NOT NULL
    );",
    // 2: webhook deliveries seen (redeliveries are ignored), and the report outbox.
    "CREATE TABLE webhook_deliveries (
        app TEXT NOT NULL,
        delivery TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (app, delivery)
    );
    CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (at);
    CREATE TABLE report_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT,
        sent_at INTEGER
    );
    CREATE INDEX report_outbox_unsent ON report_outbox (sent_at, id);",
    // 3: the name of the API token a deploy was asked with (`who` is what the request said).
    "ALTER TABLE deploys ADD COLUMN token TEXT;",
    // 4: one row per app, owned by the supervisor: the live release (the `current` symlink mirrors
    // it), a runtime scale with the config's `instances` it overrides, and a stop by request. It
    // replaces `current_release`, which was written and never read: an app without a row adopts
    // what its `current` symlink points at, once.
    "CREATE TABLE app_state (
        app TEXT PRIMARY KEY,
        release TEXT,
        instances INTEGER,
        instances_over TEXT,
        stopped INTEGER NOT NULL DEFAULT 0,
        at INTEGER NOT NULL
    );
    DROP TABLE current_release;",
    // 5: a report being sent is claimed by the agent sending it (its pid, until a deadline): during
    // an upgrade two agents share the outbox for a moment, and only one sends each report.
    "ALTER TABLE report_outbox ADD COLUMN claimed_by INTEGER;
    ALTER TABLE report_outbox ADD COLUMN claimed_until INTEGER;",
    // 6: bake windows in progress, so the next agent (an upgrade's, a restart's) watches the rest.
    "CREATE TABLE bakes (
        deploy_id INTEGER PRIMARY KEY REFERENCES deploys (id),
        app TEXT NOT NULL,
        release TEXT NOT NULL,
        previous TEXT,
        until_ms INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        live TEXT NOT NULL
    );",
    // 7: each release's install key (`deploy/install_cache.rs`): the inputs of its install step.
    "ALTER TABLE releases ADD COLUMN install_key TEXT;",
];

pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, step) in STEPS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!("BEGIN; {step}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_version_3_gains_app_state_and_loses_the_unread_current_release() {
        let conn = Connection::open_in_memory().unwrap();
        for (i, step) in STEPS.iter().enumerate().take(3) {
            conn.execute_batch(&format!("BEGIN; {step}; PRAGMA user_version = {}; COMMIT;", i + 1)).unwrap();
        }
        conn.execute("INSERT INTO current_release (app, release, at) VALUES ('web', '1-abc', 0)", []).unwrap();
        migrate(&conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, STEPS.len() as i64);
        let tables: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        };
        assert!(tables.contains(&"app_state".to_string()), "{tables:?}");
        assert!(!tables.contains(&"current_release".to_string()), "{tables:?}");
        // No row: the agent adopts what `current` points at (`supervisor/live.rs`).
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM app_state", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0);
        migrate(&conn).unwrap();
    }
}
