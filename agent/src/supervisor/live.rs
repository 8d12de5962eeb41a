//! Which release an app deployed from git runs: one fact with one owner.
//!
//! The owner is the app's state in the supervisor ([`super::App`]); it is written to SQLite
//! (`app_state.release`, `store/apps.rs`) and mirrored on disk by the `current`
//! symlink, for people and scripts. A move to a new release writes both in one step, the mirror
//! first and the record last: the record's write is the moment the release goes live. If the
//! record cannot be written, the mirror is put back and the workers go back too.
//!
//! **At start the record wins.** A crash between the two writes leaves `current` on the new
//! release while the record still names the old one (the deploy then reads `interrupted`): the
//! agent starts the recorded release and points `current` back at it. Only where the record
//! cannot be used does the symlink count: an app without a row (first start of an agent of this
//! version) adopts what `current` points at, once; a recorded release whose directory is gone
//! falls back to `current` if that is a release directory, with an error in the log.

use crate::store::{Store, StoreError};
use std::io;
use std::path::{Path, PathBuf};

/// A release directory the app's workers run from (`releases/<seq>-<shortsha>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRelease {
    pub name: String,
    pub dir: PathBuf,
}

impl ActiveRelease {
    /// `releases/<name>` of the app directory `app_dir`.
    pub fn of(app_dir: &Path, name: &str) -> ActiveRelease {
        ActiveRelease { name: name.to_string(), dir: app_dir.join("releases").join(name) }
    }
}

/// Where the `current` symlink of an app directory points, if it points at a directory. Only
/// for adopting an app without a record (and a gone recorded release): the agent reads the record.
pub fn current_release(app_dir: &Path) -> Option<ActiveRelease> {
    let link = app_dir.join("current");
    let target = std::fs::read_link(&link).ok()?;
    let dir = if target.is_absolute() { target } else { app_dir.join(target) };
    let name = dir.file_name()?.to_str()?.to_string();
    dir.is_dir().then_some(ActiveRelease { name, dir })
}

/// The release `app` would run if the agent started now, by the rule above ([`settle`]), found
/// without writing anything: for `deployer-agent check`. The record is read from
/// `state_dir/agent.db` opened read-only; where it cannot be read (no database yet, one an older
/// agent wrote, a locked one) `current` counts, as it does at start for an app without a record.
pub fn recorded_release(state_dir: &Path, app: &str, app_dir: &Path) -> Option<ActiveRelease> {
    match crate::store::peek::recorded_release(&state_dir.join("agent.db"), app) {
        Ok(Some(Some(name))) if app_dir.join("releases").join(&name).is_dir() => {
            Some(ActiveRelease::of(app_dir, &name))
        }
        // Recorded as none: a first release that never went live is not run.
        Ok(Some(None)) => None,
        // No row, a recorded release whose directory is gone, or no readable record.
        _ => current_release(app_dir),
    }
}

/// Point `current` at `release` (or remove it for none), atomically: a new symlink renamed over
/// the old one, made durable before the record is written.
pub(super) fn mirror(app_dir: &Path, release: Option<&str>) -> io::Result<()> {
    let current = app_dir.join("current");
    match release {
        Some(name) => {
            let tmp = app_dir.join(format!(".current.{}", std::process::id()));
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::os::unix::fs::symlink(Path::new("releases").join(name), &tmp)?;
            if let Err(e) = std::fs::rename(&tmp, &current) {
                // The temporary link is ours; the error that matters is the rename's.
                if let Err(cleanup) = std::fs::remove_file(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %cleanup, "cannot remove a temporary link");
                }
                return Err(e);
            }
        }
        None => match std::fs::remove_file(&current) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    std::fs::File::open(app_dir)?.sync_all()
}

/// The release `app` runs when the agent starts, by the rule above, with `current` made to
/// mirror it (a mirror that cannot be written is logged: the record still decides).
pub(super) fn settle(store: &Store, app: &str, app_dir: &Path) -> Result<Option<ActiveRelease>, StoreError> {
    let linked = current_release(app_dir);
    let live = match store.app_record(app)? {
        None => {
            // Before this record existed, `current` was the only one: adopted once.
            let name = linked.as_ref().map(|r| r.name.as_str());
            store.set_live_release(app, name)?;
            if let Some(r) = &linked {
                tracing::info!(app, release = %r.name, "recorded the release `current` points at");
            }
            return Ok(linked);
        }
        Some(record) => match record.release {
            Some(name) if app_dir.join("releases").join(&name).is_dir() => Some(ActiveRelease::of(app_dir, &name)),
            Some(name) => {
                tracing::error!(
                    app,
                    release = %name,
                    current = ?linked.as_ref().map(|r| &r.name),
                    "the recorded release's directory is gone; running what `current` points at"
                );
                store.set_live_release(app, linked.as_ref().map(|r| r.name.as_str()))?;
                linked.clone()
            }
            None => None,
        },
    };
    if live != linked {
        tracing::warn!(
            app,
            recorded = ?live.as_ref().map(|r| &r.name),
            current = ?linked.as_ref().map(|r| &r.name),
            "`current` disagrees with the recorded release (the agent stopped between the two writes); \
             the record wins and `current` is rewritten"
        );
        if let Err(e) = mirror(app_dir, live.as_ref().map(|r| r.name.as_str())) {
            tracing::error!(app, error = %e, "cannot rewrite `current`; the recorded release runs all the same");
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_dir(releases: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for r in releases {
            std::fs::create_dir_all(t.path().join("releases").join(r)).unwrap();
        }
        t
    }

    fn linked(dir: &Path) -> Option<String> {
        current_release(dir).map(|r| r.name)
    }

    #[test]
    fn the_mirror_is_switched_by_rename_and_removed_for_none() {
        let t = app_dir(&["1-aaa", "2-bbb"]);
        mirror(t.path(), Some("1-aaa")).unwrap();
        mirror(t.path(), Some("2-bbb")).unwrap();
        assert_eq!(std::fs::read_link(t.path().join("current")).unwrap(), Path::new("releases/2-bbb"));
        mirror(t.path(), None).unwrap();
        assert_eq!(linked(t.path()), None);
        mirror(t.path(), None).unwrap();
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["releases"], "no temporary link is left behind");
    }

    #[test]
    fn a_crash_between_the_switch_and_the_record_starts_the_recorded_release() {
        let t = app_dir(&["1-aaa", "2-bbb"]);
        let store = Store::in_memory();
        store.set_live_release("web", Some("1-aaa")).unwrap();
        // The deploy of 2-bbb switched `current`, and the agent died before the record.
        mirror(t.path(), Some("2-bbb")).unwrap();
        let live = settle(&store, "web", t.path()).unwrap();
        assert_eq!(live.map(|r| r.name).as_deref(), Some("1-aaa"));
        assert_eq!(linked(t.path()).as_deref(), Some("1-aaa"), "`current` mirrors the record again");
    }

    #[test]
    fn a_first_release_not_recorded_is_not_run() {
        let t = app_dir(&["1-aaa"]);
        let store = Store::in_memory();
        store.set_live_release("web", None).unwrap();
        mirror(t.path(), Some("1-aaa")).unwrap();
        assert_eq!(settle(&store, "web", t.path()).unwrap(), None);
        assert_eq!(linked(t.path()), None);
    }

    #[test]
    fn an_app_without_a_record_adopts_current_once() {
        let t = app_dir(&["1-aaa", "2-bbb"]);
        let store = Store::in_memory();
        mirror(t.path(), Some("2-bbb")).unwrap();
        assert_eq!(settle(&store, "web", t.path()).unwrap().map(|r| r.name).as_deref(), Some("2-bbb"));
        assert_eq!(store.app_record("web").unwrap().and_then(|r| r.release).as_deref(), Some("2-bbb"));
        // From now on the record decides.
        mirror(t.path(), Some("1-aaa")).unwrap();
        assert_eq!(settle(&store, "web", t.path()).unwrap().map(|r| r.name).as_deref(), Some("2-bbb"));
    }

    #[test]
    fn a_recorded_release_that_is_gone_falls_back_to_current() {
        let t = app_dir(&["1-aaa"]);
        let store = Store::in_memory();
        store.set_live_release("web", Some("2-bbb")).unwrap();
        mirror(t.path(), Some("1-aaa")).unwrap();
        assert_eq!(settle(&store, "web", t.path()).unwrap().map(|r| r.name).as_deref(), Some("1-aaa"));
        assert_eq!(store.app_record("web").unwrap().and_then(|r| r.release).as_deref(), Some("1-aaa"));
    }

    /// `deployer-agent check` resolves what the agent would run: the record, not `current`,
    /// and it writes nothing (neither the mirror nor a database that does not exist).
    #[test]
    fn check_reads_the_record_read_only_and_falls_back_to_current_without_one() {
        let state = tempfile::tempdir().unwrap();
        let t = app_dir(&["1-aaa", "2-bbb"]);
        mirror(t.path(), Some("2-bbb")).unwrap();
        let found = |app| recorded_release(state.path(), app, t.path()).map(|r| r.name);

        assert_eq!(found("web").as_deref(), Some("2-bbb"), "no database: `current` counts");
        assert!(!state.path().join("agent.db").exists(), "the database is not created");

        let store = Store::open(&state.path().join("agent.db"), Default::default()).unwrap();
        store.set_live_release("web", Some("1-aaa")).unwrap();
        store.set_live_release("new", None).unwrap();
        assert_eq!(found("web").as_deref(), Some("1-aaa"), "the record wins over `current`");
        assert_eq!(linked(t.path()).as_deref(), Some("2-bbb"), "`current` is left as it is");
        assert_eq!(found("new"), None, "a release recorded as none is not run");
        assert_eq!(found("other").as_deref(), Some("2-bbb"), "no row: `current` counts");
        store.set_live_release("web", Some("3-ccc")).unwrap();
        assert_eq!(found("web").as_deref(), Some("2-bbb"), "a recorded release that is gone: `current`");
    }
}
