//! The state dir is private: it holds the database (install output, report bodies, deploy
//! history), worker and deploy logs, the git caches and the pid records, none of which another
//! local user may read.
//!
//! | path | mode |
//! |---|---|
//! | `state_dir/`, `apps/`, `run/` | `0700`; `0711` when an app has `user:` (traversable, never listable) |
//! | `agent.db` (and `-wal`, `-shm`) | `0600` |
//! | `logs/` | `0700`, its files `0600` |
//! | `run/` files | `0600`; a worker's `NOTIFY_SOCKET` belongs to the app's user |
//! | `apps/<app>/` (or an app's `path:`) | see [`AppDir::secure`]: `0750` root:<the user's group>, or `0700` |
//!
//! Modes are set explicitly on what the agent creates, never through the umask, so workers
//! inherit the agent's umask unchanged. [`secure`] runs at start (an older agent left
//! `0755`/`0644` everywhere: it is tightened, with a warning) and after each SIGHUP (a new app
//! with `user:` may need to traverse).

use crate::beneath::Dir;
use crate::config::AgentConfig;
use crate::deploy::release::{AppDir, private_files};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state dir cannot be created: the agent cannot run.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the state dir `{}`: {source}", path.display())]
pub struct StateDirError {
    path: PathBuf,
    source: io::Error,
}

/// Create the state dir if needed and give it, and every app directory in the config, the
/// modes above. A mode that cannot be set is a warning (the agent still runs); a state dir
/// that cannot be created is an error.
pub fn secure(config: &AgentConfig) -> Result<(), StateDirError> {
    let dir = &config.state_dir;
    let fail = |source| StateDirError { path: dir.clone(), source };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    mkdir(dir, 0o700).map_err(fail)?;
    // An app's user passes through the state dir to its releases (`apps/<app>/`) and to its
    // workers' `NOTIFY_SOCKET` (`run/`, each socket its own).
    let traverse = config.apps.values().any(|a| a.run_as.is_some());
    let pass = if traverse { 0o711 } else { 0o700 };
    tighten(dir, pass, "state dir");
    for (sub, mode) in [("logs", 0o700), ("run", pass), ("apps", pass)] {
        let p = dir.join(sub);
        if let Err(e) = mkdir(&p, mode) {
            tracing::warn!(path = %p.display(), error = %e, "cannot create a state directory");
            continue;
        }
        tighten(&p, mode, "state dir");
    }
    for sub in ["logs", "run"] {
        if let Err(e) = Dir::open_trusted(dir).and_then(|d| d.open_dir(Path::new(sub))).and_then(|d| private_files(&d))
        {
            tracing::warn!(error = %e, "cannot make the agent's files private");
        }
    }
    // SQLite gives its `-wal` and `-shm` files the database's own mode.
    let db = dir.join("agent.db");
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&db) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{suffix}", db.display()));
                if p.exists() {
                    tighten(&p, 0o600, "state file");
                }
            }
        }
        Err(e) => tracing::warn!(path = %db.display(), error = %e, "cannot create the database file"),
    }
    for (name, app) in &config.apps {
        if let Some(path) = app.source.app_dir()
            && path.is_dir()
            && let Err(e) = AppDir::new(path.to_path_buf()).secure(app.run_as.as_ref())
        {
            tracing::warn!(app = %name, path = %path.display(), error = %e, "cannot make the app's directory private");
        }
    }
    if std::fs::read_to_string("/proc/sys/fs/protected_hardlinks").is_ok_and(|v| v.trim() == "0") {
        tracing::warn!(
            "fs.protected_hardlinks is 0: an app's user can hard-link files it cannot read into its own \
             directories; set it to 1 (sysctl fs.protected_hardlinks=1)"
        );
    }
    Ok(())
}

/// Create `p` with `mode` if it does not exist (its parent must).
fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Set `p`'s mode to `mode`; warn when it was readable or writable by others before, or when
/// it cannot be changed.
fn tighten(p: &Path, mode: u32, what: &str) {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => return tracing::warn!(path = %p.display(), error = %e, "cannot read the mode of the {what}"),
    };
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        tracing::warn!(path = %p.display(), owner = meta.uid(), "the {what} belongs to another user, who can read it");
    }
    let now = meta.mode() & 0o7777;
    if now == mode {
        return;
    }
    let loose = now & 0o066 & !mode != 0;
    match std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
        Ok(()) if loose => tracing::warn!(
            path = %p.display(),
            was = format!("{now:o}"),
            now = format!("{mode:o}"),
            "the {what} was open to other users: made private"
        ),
        Ok(()) => {}
        Err(e) if loose => tracing::warn!(
            path = %p.display(),
            mode = format!("{now:o}"),
            error = %e,
            "the {what} is open to other users and cannot be made private"
        ),
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot set the mode of the {what}"),
    }
}
