//! An app's directory on disk: `repo.git` (the cached clone), `releases/<seq>-<shortsha>/`,
//! `shared/`, `logs/`, `objects/` (the large files releases link, `source/objects.rs`) and the
//! `current` symlink (written by the supervisor, `supervisor/live.rs`).
//!
//! Private by default: the directory is the agent's (root's), `0700`, or `0750` with the group of
//! the app's `user` so that user reaches its releases and `shared/` and nothing else of the agent
//! (`repo.git`, `logs/` and `objects/` stay `0700`, deploy logs `0600`).
//!
//! A release holds whatever a commit holds, and belongs to the app's user once given to it;
//! `shared/` belongs to that user too. So linking and giving them is done through
//! [`crate::beneath`]: every create, move, delete and chown relative to a directory fd opened
//! with no link followed. A link where a shared path's parent should be (committed, or planted
//! in `shared/` by the app) fails the deploy, naming it, before anything is moved or changed.

use crate::beneath::{BeneathError, Dir, Kind};
use crate::config::RunAs;
use crate::source::{Objects, Sharing};
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct AppDir {
    root: PathBuf,
}

/// Why a shared path could not be linked into a release or given to the app's user.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("shared path `{}`: {source}", path.display())]
    Path { path: PathBuf, source: BeneathError },
    #[error("shared path `{}` must be a relative path inside the release", .0.display())]
    Invalid(PathBuf),
    #[error(transparent)]
    Dir(#[from] BeneathError),
}

/// A directory's mode and group: the app's user reaches it through its group, nobody else.
fn private_mode(run_as: Option<&RunAs>) -> u32 {
    if run_as.is_some() { 0o750 } else { 0o700 }
}

impl AppDir {
    pub fn new(root: PathBuf) -> AppDir {
        AppDir { root }
    }

    /// Create the app's directory and its parts (`releases/`, `shared/`, `logs/`, an empty
    /// `repo.git` the clone is made in) and make them private, see [`AppDir::secure`].
    pub fn create(&self, run_as: Option<&RunAs>) -> io::Result<()> {
        if let Some(parent) = self.root.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(private_mode(run_as)).create(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        only_root_can_change(&self.root)?;
        for (dir, mode) in [
            (self.releases(), private_mode(run_as)),
            (self.shared(), 0o750),
            (self.logs(), 0o700),
            (self.repo(), 0o700),
            (self.objects(), 0o700),
        ] {
            match std::fs::DirBuilder::new().mode(mode).create(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        self.secure(run_as)
    }

    /// Set the modes this directory must have (an older agent made everything `0755`/`0644`):
    /// itself and `releases/` `0750` with the group of `run_as` (`0700` without), `repo.git` and
    /// `logs/` `0700`, each deploy log `0600`. `shared/` and the releases are the app user's.
    pub fn secure(&self, run_as: Option<&RunAs>) -> io::Result<()> {
        only_root_can_change(&self.root)?;
        let mode = private_mode(run_as);
        for dir in [&self.root, &self.releases()] {
            if let Some(r) = run_as {
                std::os::unix::fs::chown(dir, None, Some(r.gid))?;
            }
            set_mode(dir, mode)?;
        }
        for dir in [self.repo(), self.logs(), self.objects()] {
            if dir.is_dir() {
                set_mode(&dir, 0o700)?;
            }
        }
        if let Ok(logs) = Dir::open_trusted(&self.root).and_then(|d| d.open_dir(Path::new("logs"))) {
            private_files(&logs).map_err(io::Error::other)?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    pub fn release(&self, name: &str) -> PathBuf {
        self.releases().join(name)
    }
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    /// The object store: one read-only copy of each large file of the releases.
    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }
    /// The object store as releases of an app running as `run_as` may share it: hard links only
    /// when that user cannot write the agent's read-only files (not root, not the agent's user).
    pub fn object_store(&self, run_as: Option<&RunAs>) -> Objects {
        Objects::new(self.objects(), Sharing::for_uid(run_as.map(|r| r.uid)))
    }
    /// Install and hook output, one file per deploy.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Link each `shared` path into the release: the first release seeds `shared/` with the
    /// repo's copy if it has one; a path that exists nowhere starts as an empty directory (or an
    /// empty file when its name has an extension or starts with a dot, like `.env`).
    ///
    /// Nothing is followed: every parent of a shared path, in the release and in `shared/`, is
    /// checked first (a link or a file there fails, naming it, before anything changed), and
    /// each step is then done on directory fds opened with no link followed.
    pub fn link_shared(&self, release_dir: &Path, paths: &[PathBuf]) -> Result<(), SharedError> {
        let app = Dir::open_trusted(&self.root)?;
        let release = app.open_dir(&self.release_rel(release_dir)?)?;
        let shared = app.create_dirs(Path::new("shared"), 0o750)?;
        let mut split = Vec::new();
        for p in paths {
            let (parent, name) = split_shared(p)?;
            let at = |source| SharedError::Path { path: p.clone(), source };
            let mut parents = Vec::new();
            for side in [&release, &shared] {
                match side.open_dir(&parent) {
                    Ok(d) => parents.push(Some(d)),
                    Err(BeneathError::Missing(_)) => parents.push(None),
                    Err(e) => return Err(at(e)),
                }
            }
            // `shared/` is never seeded with a link: it would stay there, and be read, for good.
            if let [Some(in_release), in_shared] = parents.as_slice() {
                let seeding = match in_shared {
                    Some(d) => d.kind(&name).map_err(at)?.is_none(),
                    None => true,
                };
                if seeding && in_release.kind(&name).map_err(at)? == Some(Kind::Link) {
                    return Err(at(BeneathError::Link(in_release.path().join(&name))));
                }
            }
            split.push((p, parent, name));
        }
        for (p, parent, name) in split {
            let at = |source| SharedError::Path { path: p.clone(), source };
            let in_release = release.create_dirs(&parent, 0o755).map_err(at)?;
            let in_shared = shared.create_dirs(&parent, 0o755).map_err(at)?;
            let name = name.as_os_str();
            if in_shared.kind(name).map_err(at)?.is_none() {
                match in_release.kind(name).map_err(at)? {
                    // Seeded from the release, whatever it is (a committed link moves as a link).
                    Some(_) => in_release.move_to(name, &in_shared, name),
                    None if looks_like_file(p) => in_shared.create_file(name, 0o644),
                    None => in_shared.create_dir(name, 0o755),
                }
                .map_err(at)?;
            }
            if in_release.kind(name).map_err(at)?.is_some() {
                in_release.remove_all(name).map_err(at)?;
            }
            in_release.symlink(name, &self.shared().join(p)).map_err(at)?;
        }
        Ok(())
    }

    /// `releases/<name>` for a release directory of this app.
    fn release_rel(&self, release_dir: &Path) -> Result<PathBuf, BeneathError> {
        match release_dir.strip_prefix(self.releases()).ok().map(|r| r.components().collect::<Vec<_>>()) {
            Some(c) if matches!(c.as_slice(), [Component::Normal(_)]) => Ok(Path::new("releases").join(c[0])),
            _ => Err(BeneathError::Outside(release_dir.to_path_buf(), self.releases())),
        }
    }

    /// Release directories on disk (names), whatever the database says.
    pub fn on_disk(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.releases()) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Give `shared/` and each shared path (not what is inside a shared directory: that is the
    /// app's data, written by it) to the app's `user`. The app's user owns `shared/` and may have
    /// put links there: a link is given as itself, a link on the way to a path fails.
    pub fn give_shared(&self, paths: &[PathBuf], to: &RunAs) -> Result<(), SharedError> {
        let shared = match Dir::open_trusted(&self.root)?.open_dir(Path::new("shared")) {
            Err(BeneathError::Missing(_)) => return Ok(()),
            other => other?,
        };
        shared.chown_self(to.uid, to.gid)?;
        for p in paths {
            let (parent, name) = split_shared(p)?;
            let at = |source| SharedError::Path { path: p.clone(), source };
            let dir = match shared.open_dir(&parent) {
                Err(BeneathError::Missing(_)) => continue,
                other => other.map_err(at)?,
            };
            give(&dir, name.as_os_str(), to).map_err(at)?;
        }
        Ok(())
    }

    /// Half-written release trees (`.<name>.partial`) a crash mid-materialise left behind.
    pub fn partials(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.releases()) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".partial")))
            .map(|e| e.path())
            .collect()
    }

    pub fn remove_release(&self, name: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.release(name))
    }
}

/// Give a release tree to the app's `user`, so its install step can write into it (links
/// themselves, never what they point at). Walked by directory fd, each opened with no link
/// followed from its parent's: a running worker of the app that swaps a directory for a link
/// while the walk runs gets its link given to itself, nothing else.
pub fn give_tree(root: &Path, to: &RunAs) -> Result<(), BeneathError> {
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(BeneathError::NotADir(root.to_path_buf()));
    };
    let top = Dir::open_trusted(parent)?.open_dir(Path::new(name))?;
    top.chown_self(to.uid, to.gid)?;
    let list = top.entries()?;
    let mut stack = vec![(top, list)];
    while let Some((dir, todo)) = stack.last_mut() {
        let Some((name, kind)) = todo.pop() else {
            stack.pop();
            continue;
        };
        if kind != Kind::Dir {
            give(dir, &name, to)?;
            continue;
        }
        match dir.open_dir(Path::new(&name)) {
            Ok(sub) => {
                sub.chown_self(to.uid, to.gid)?;
                let list = sub.entries()?;
                stack.push((sub, list));
            }
            // Swapped since it was listed: give what is there now, as itself.
            Err(BeneathError::Link(_) | BeneathError::NotADir(_)) => give(dir, &name, to)?,
            Err(BeneathError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Give the entry `name` (never what a link points at) to `to`. A regular file with other hard
/// links is left alone: it is the object store's read-only copy (`source/objects.rs`), or
/// somebody else's file linked in (where the kernel allows it).
fn give(dir: &Dir, name: &OsStr, to: &RunAs) -> Result<(), BeneathError> {
    match dir.stat(name)? {
        None => Ok(()),
        Some(st) if st.st_nlink > 1 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG => {
            if st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o222 == 0 {
                return Ok(());
            }
            tracing::warn!(
                path = %dir.path().join(name).display(),
                "not given to the app's user: it has other hard links"
            );
            Ok(())
        }
        Some(_) => dir.chown(name, to.uid, to.gid),
    }
}

/// A shared path's parent (in the release and in `shared/`) and its name; refuses anything but
/// a relative path of plain components (the config checks this too).
fn split_shared(p: &Path) -> Result<(PathBuf, std::ffi::OsString), SharedError> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            _ => return Err(SharedError::Invalid(p.to_path_buf())),
        }
    }
    let name = parts.pop().ok_or_else(|| SharedError::Invalid(p.to_path_buf()))?;
    Ok((parts.iter().collect(), name.to_os_string()))
}

/// `chmod`, when the mode is not already `mode`.
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    let now = std::fs::symlink_metadata(p)?.mode() & 0o7777;
    if now != mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Every regular file directly in `dir` made `0600` (logs; no link followed).
pub(crate) fn private_files(dir: &Dir) -> Result<(), BeneathError> {
    for (name, kind) in dir.entries()? {
        if kind == Kind::File
            && let Some(st) = dir.stat(&name)?
            && st.st_mode & 0o077 != 0
        {
            dir.chmod(&name, 0o600)?;
        }
    }
    Ok(())
}

fn looks_like_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || p.extension().is_some()
}

/// Refuse `dir` unless nobody but the agent's user (root) can replace it or any directory above
/// it: every directory from `/` down is the agent's (or root's) and writable by nobody else, or
/// sticky (`/tmp`: others cannot rename what is not theirs), and `dir` itself is a directory, not
/// a link. Otherwise an app's user could swap the app dir for a link (an app kept in its home,
/// `path: /home/deploy/web`) and have root chmod, chown and write wherever it points. This is
/// sshd's `StrictModes` rule.
pub fn only_root_can_change(dir: &Path) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("`{}` is not a directory (a link is not followed here)", dir.display())));
    }
    let real = std::fs::canonicalize(dir)?;
    for p in real.ancestors() {
        let m = std::fs::metadata(p)?;
        if m.uid() != me && m.uid() != 0 {
            return Err(io::Error::other(format!(
                "`{}` belongs to uid {}, who could swap `{}` for a link: keep app directories where only root can \
                 write (the default, under `state_dir`), or give `{}` to root",
                p.display(),
                m.uid(),
                dir.display(),
                p.display()
            )));
        }
        // A sticky directory (`/tmp`) lets others rename only what is theirs, and what is below
        // it was just checked to be root's.
        let sticky = m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !(sticky && p != real) {
            return Err(io::Error::other(format!(
                "`{}` is writable by other users (mode {:o}), who could swap `{}` for a link: `chmod go-w {}`",
                p.display(),
                m.mode() & 0o7777,
                dir.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// The sequence number of a release name `<seq>-<shortsha>`.
pub fn seq_of(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// Below this many bytes free for the agent, a step that failed is taken to have failed for the
/// full disk: a deploy's release, install output and final state need more than that.
pub const DISK_FULL_BELOW: u64 = 1 << 20;

/// How full the filesystem of `path` is: bytes available to unprivileged writers, and the size.
/// None when it cannot be read (then nothing is decided on it).
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = s.fragment_size() as u64;
    Some((s.blocks_available() as u64 * frsize, s.blocks() as u64 * frsize))
}

/// Whether the filesystem of `path` is full (see [`DISK_FULL_BELOW`]).
pub fn disk_full(path: &Path) -> bool {
    disk_space(path).is_some_and(|(free, _)| free < DISK_FULL_BELOW)
}

/// How many failed releases are kept for inspection: the newest two, the newest one only when
/// the disk is full (what it needs is room, and the newest failure is the one to look at).
pub const fn keep_failed(disk_full: bool) -> usize {
    if disk_full { 1 } else { 2 }
}

/// Which releases to delete: keep `keep` good ones (the newest; the current and the previous are
/// never deleted and count among them), and the newest `keep_failed` failed ones (kept for
/// inspection; [`keep_failed`]). `releases` is (name, ok), any order.
pub fn prune_plan(
    releases: &[(String, bool)],
    keep: usize,
    keep_failed: usize,
    current: Option<&str>,
    previous: Option<&str>,
) -> Vec<String> {
    let mut sorted: Vec<&(String, bool)> = releases.iter().collect();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(seq_of(n).unwrap_or(0)));
    let (mut good, mut bad) = (0, 0);
    let mut remove = Vec::new();
    for (name, ok) in sorted {
        // The current and previous releases are never removed, and count towards `keep`.
        if Some(name.as_str()) == current || Some(name.as_str()) == previous {
            good += usize::from(*ok);
            continue;
        }
        let kept = if *ok {
            good += 1;
            good <= keep
        } else {
            bad += 1;
            bad <= keep_failed
        };
        if !kept {
            remove.push(name.clone());
        }
    }
    remove
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_current_previous_and_two_failed() {
        let rel: Vec<(String, bool)> = (1..=10).map(|i| (format!("{i}-abc"), i % 3 != 0)).collect();
        // good: 1 2 4 5 7 8 10 ; failed: 3 6 9
        let removed = prune_plan(&rel, 2, 2, Some("10-abc"), Some("2-abc"));
        let mut removed: Vec<u64> = removed.iter().filter_map(|n| seq_of(n)).collect();
        removed.sort();
        // Kept: 10 (current), 8 (good, the second of two), 9 and 6 (the newest two failed), 2 (previous).
        assert_eq!(removed, vec![1, 3, 4, 5, 7]);
    }

    #[test]
    fn a_full_disk_keeps_only_the_newest_failed_release() {
        let rel: Vec<(String, bool)> = (1..=10).map(|i| (format!("{i}-abc"), i % 3 != 0)).collect();
        let removed = prune_plan(&rel, 2, keep_failed(true), Some("10-abc"), Some("2-abc"));
        let mut removed: Vec<u64> = removed.iter().filter_map(|n| seq_of(n)).collect();
        removed.sort();
        // As above, and the failed 6 goes too: only 9, the newest failure, is kept.
        assert_eq!(removed, vec![1, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn switch_and_shared() {
        let t = tempfile::tempdir().unwrap();
        let d = AppDir::new(t.path().to_path_buf());
        d.create(None).unwrap();
        for n in ["1-aaa", "2-bbb"] {
            std::fs::create_dir_all(d.release(n)).unwrap();
        }
        std::fs::create_dir_all(d.release("1-aaa").join("uploads")).unwrap();
        std::fs::write(d.release("1-aaa").join("uploads/a.png"), "x").unwrap();
        d.link_shared(&d.release("1-aaa"), &["uploads".into(), ".env".into()]).unwrap();
        assert!(d.shared().join("uploads/a.png").exists(), "seeded from the first release");
        assert!(d.shared().join(".env").is_file());
        d.link_shared(&d.release("2-bbb"), &["uploads".into(), ".env".into()]).unwrap();
        assert!(d.release("2-bbb").join("uploads/a.png").exists());
        let mut disk = d.on_disk();
        disk.sort();
        assert_eq!(disk, ["1-aaa", "2-bbb"]);
    }

    /// An app dir with releases `1-aaa` and `2-bbb`, and an `outside/data` dir with a file.
    fn app_and_outside() -> (tempfile::TempDir, AppDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let d = AppDir::new(t.path().join("app"));
        d.create(None).unwrap();
        for n in ["1-aaa", "2-bbb"] {
            std::fs::create_dir_all(d.release(n)).unwrap();
        }
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("data")).unwrap();
        std::fs::write(outside.join("data/keep"), "x").unwrap();
        (t, d, outside)
    }

    #[test]
    fn a_shared_path_below_a_committed_link_fails_before_anything_moves() {
        let (_t, d, outside) = app_and_outside();
        std::os::unix::fs::symlink(&outside, d.release("1-aaa").join("cfg")).unwrap();
        let e = d.link_shared(&d.release("1-aaa"), &[".env".into(), "cfg/data".into()]).unwrap_err().to_string();
        assert!(e.contains("`cfg/data`") && e.contains("releases/1-aaa/cfg`") && e.contains("symbolic link"), "{e}");
        assert!(outside.join("data/keep").exists(), "moved out of the decoy");
        assert!(!d.shared().join("cfg").exists() && !d.shared().join(".env").exists(), "changed before failing");
        // A file where a directory should be, too.
        std::fs::write(d.release("2-bbb").join("cfg"), "x").unwrap();
        let e = d.link_shared(&d.release("2-bbb"), &["cfg/data".into()]).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn a_link_planted_in_shared_is_refused_and_never_followed() {
        let (_t, d, outside) = app_and_outside();
        d.link_shared(&d.release("1-aaa"), &["cfg/data".into()]).unwrap();
        // The app's user owns `shared/`: it swaps `cfg` for a link out.
        std::fs::rename(d.shared().join("cfg"), d.shared().join("cfg.old")).unwrap();
        std::os::unix::fs::symlink(&outside, d.shared().join("cfg")).unwrap();
        let e = d.link_shared(&d.release("2-bbb"), &["cfg/data".into()]).unwrap_err().to_string();
        assert!(e.contains("shared/cfg`") && e.contains("symbolic link"), "{e}");
        if nix::unistd::geteuid().is_root() {
            let nobody = RunAs { user: "x".into(), uid: 12345, gid: 12345, home: "/".into() };
            let e = d.give_shared(&["cfg/data".into()], &nobody).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
            assert_eq!(std::fs::metadata(outside.join("data")).unwrap().uid(), 0, "chowned through the link");
        }
        assert!(outside.join("data/keep").exists());
    }

    #[test]
    fn shared_is_never_seeded_with_a_committed_link() {
        let (_t, d, outside) = app_and_outside();
        std::os::unix::fs::symlink(outside.join("data/keep"), d.release("1-aaa").join(".env")).unwrap();
        let e = d.link_shared(&d.release("1-aaa"), &[".env".into()]).unwrap_err().to_string();
        assert!(e.contains("releases/1-aaa/.env`") && e.contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(d.shared().join(".env")).is_err(), "seeded with the link");
        // Once `shared/` has its own copy, a committed link is simply replaced by the agent's.
        std::fs::write(d.shared().join(".env"), "A=1\n").unwrap();
        d.link_shared(&d.release("1-aaa"), &[".env".into()]).unwrap();
        assert_eq!(std::fs::read_link(d.release("1-aaa").join(".env")).unwrap(), d.shared().join(".env"));
    }

    #[test]
    fn the_repo_copy_of_a_shared_dir_is_replaced_without_following_its_links() {
        let (_t, d, outside) = app_and_outside();
        d.link_shared(&d.release("1-aaa"), &["uploads".into()]).unwrap();
        std::fs::create_dir_all(d.release("2-bbb").join("uploads/deep")).unwrap();
        std::os::unix::fs::symlink(&outside, d.release("2-bbb").join("uploads/deep/out")).unwrap();
        d.link_shared(&d.release("2-bbb"), &["uploads".into()]).unwrap();
        assert!(std::fs::symlink_metadata(d.release("2-bbb").join("uploads")).unwrap().file_type().is_symlink());
        assert!(outside.join("data/keep").exists(), "deleted through a link");
    }

    #[test]
    fn give_tree_gives_links_as_themselves() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let (_t, d, outside) = app_and_outside();
        let rel = d.release("1-aaa");
        std::fs::create_dir_all(rel.join("a/b")).unwrap();
        std::fs::write(rel.join("a/b/f"), "f").unwrap();
        std::os::unix::fs::symlink(&outside, rel.join("a/out")).unwrap();
        let to = RunAs { user: "x".into(), uid: 12345, gid: 12346, home: "/".into() };
        give_tree(&rel, &to).unwrap();
        for p in ["", "a", "a/b", "a/b/f", "a/out"] {
            let m = std::fs::symlink_metadata(rel.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (12345, 12346), "{p}");
        }
        assert_eq!(std::fs::metadata(outside.join("data")).unwrap().uid(), 0, "followed a link");
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0, "followed a link");
    }

    #[test]
    fn the_app_dir_is_private() {
        let (_t, d, _) = app_and_outside();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(d.root().to_path_buf()), 0o700);
        assert_eq!(mode(d.repo()), 0o700);
        assert_eq!(mode(d.logs()), 0o700);
        assert_eq!(mode(d.releases()), 0o700);
        if nix::unistd::geteuid().is_root() {
            let to = RunAs { user: "x".into(), uid: 12345, gid: 12346, home: "/".into() };
            d.secure(Some(&to)).unwrap();
            assert_eq!(mode(d.root().to_path_buf()), 0o750);
            assert_eq!(std::fs::metadata(d.root()).unwrap().gid(), 12346);
            assert_eq!(mode(d.repo()), 0o700);
        }
    }

    #[test]
    fn an_app_dir_that_someone_else_could_swap_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("app");
        std::fs::create_dir(&dir).unwrap();
        assert!(only_root_can_change(&dir).is_ok(), "a dir under a private temp dir");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = only_root_can_change(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by other users") && e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(only_root_can_change(&dir).is_ok(), "a sticky parent, like /tmp");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&dir, t.path().join("link")).unwrap();
        assert!(only_root_can_change(&t.path().join("link")).is_err(), "a link is not an app dir");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(t.path(), Some(65534), None).unwrap();
            let e = only_root_can_change(&dir).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
        }
    }
}
