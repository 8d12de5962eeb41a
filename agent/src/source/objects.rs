//! Large files written once: the app's object store (`<app dir>/objects/`) holds one pristine,
//! read-only copy of each large blob a release holds, and a release gets the file as a reflink of
//! it (`FICLONE`: a file of its own that shares the blocks), else a hard link to it, else a copy.
//! So a release whose large files (assets, binaries) did not change costs what changed.
//!
//! Why a store, not the previous release: a release belongs to the app's `user:`, who can change
//! its files, and a link into it would carry that change into the next release and into every
//! rollback. An object belongs to the agent (root), is `0444` (`0555` executable) in a `0700`
//! directory, is written under a temporary name, synced and renamed into place, and never written
//! again: the app's user can read it through its link, and can neither write nor chmod it.
//!
//! Hard links share the inode, so they are used only when the app runs as a user other than the
//! agent's and other than root ([`Sharing::Link`]): an app running as root could write through the
//! link. The executable bit is part of the inode, so the key is the blob id plus `.x` for mode
//! `100755`. Symlinks and files under [`LINK_FROM`] are written as before.
//!
//! An object is checked before it is used (a regular file of the agent's, its mode, the blob's
//! size): a crash or a `chmod` makes it be written again. Its bytes are not hashed on each use
//! (that would cost what the store saves): root is trusted here as it is with `repo.git`.

use super::SourceError;
use super::limits::Bytes;
use git2::Oid;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Files at least this large go through the store. Below it, writing the file costs about what
/// linking it does (a 1 MiB write is well under a millisecond), and a 10,000-file repository of
/// source files never touches the store.
pub const LINK_FROM: u64 = 1 << 20;

/// Temporary files in the store start with this; whatever a crash left is removed by
/// [`Objects::collect`].
const TEMP: &str = ".tmp-";

/// How a release may share an object's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Reflink, else hard link, else copy: the app runs as a user who cannot write the agent's
    /// read-only files.
    Link,
    /// Reflink, else the file is written as before: the app runs as root or as the agent's user,
    /// who could write (or chmod) through a hard link.
    CloneOnly,
}

impl Sharing {
    /// What an app whose workers run as `uid` (None: as the agent) may share.
    pub fn for_uid(uid: Option<u32>) -> Sharing {
        let me = nix::unistd::geteuid().as_raw();
        match uid {
            Some(uid) if uid != 0 && uid != me => Sharing::Link,
            _ => Sharing::CloneOnly,
        }
    }
}

/// One app's object store.
#[derive(Debug, Clone)]
pub struct Objects {
    dir: PathBuf,
    sharing: Sharing,
    /// Paths of the release (relative to its root) whose files are written, never taken from
    /// the store: the app's `shared:` paths, which the first release seeds `shared/` with, and
    /// which are the app's to write.
    written: Vec<PathBuf>,
}

/// How one large file got into a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placed {
    Reflinked,
    HardLinked,
    Copied,
}

/// What the file system of a release and the store allow, tried once per materialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Caps {
    reflink: bool,
    hard_link: bool,
}

impl Caps {
    /// Whether the store saves anything: otherwise large files are written as before.
    pub(super) fn useful(self, sharing: Sharing) -> bool {
        self.reflink || (self.hard_link && sharing == Sharing::Link)
    }
}

/// What the store did for one materialise, counted by its writer threads.
#[derive(Debug, Default)]
pub(super) struct Tally {
    reflinked: AtomicU64,
    hard_linked: AtomicU64,
    copied: AtomicU64,
    bytes: AtomicU64,
    stored: AtomicU64,
    stored_bytes: AtomicU64,
}

impl Tally {
    pub(super) fn total(&self) -> Linked {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Linked {
            reflinked: get(&self.reflinked),
            hard_linked: get(&self.hard_linked),
            copied: get(&self.copied),
            bytes: get(&self.bytes),
            stored: get(&self.stored),
            stored_bytes: get(&self.stored_bytes),
        }
    }
}

/// How the large files of one release got there, for the deploy's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    /// Files that share their blocks with the store's copy (`FICLONE`): files of their own.
    pub reflinked: u64,
    /// Files that are the store's read-only copy (a hard link).
    pub hard_linked: u64,
    /// Files copied from the store (no reflink, no hard link allowed or possible).
    pub copied: u64,
    /// Bytes of the files above.
    pub bytes: u64,
    /// Objects written into the store for this release (blobs it did not hold yet), and their bytes.
    pub stored: u64,
    pub stored_bytes: u64,
}

impl Linked {
    pub fn files(&self) -> u64 {
        self.reflinked + self.hard_linked + self.copied
    }
}

impl std::fmt::Display for Linked {
    /// `3 large files (30M): 2 hard-linked, 1 reflinked; 1 new in the object store (10M)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = self.files();
        write!(f, "{files} large file{} ({})", if files == 1 { "" } else { "s" }, Bytes(self.bytes))?;
        let mut sep = ": ";
        for (n, how) in [(self.hard_linked, "hard-linked"), (self.reflinked, "reflinked"), (self.copied, "copied")] {
            if n > 0 {
                write!(f, "{sep}{n} {how}")?;
                sep = ", ";
            }
        }
        write!(f, "; {} new in the object store ({})", self.stored, Bytes(self.stored_bytes))
    }
}

/// What [`Objects::collect`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub objects: u64,
    pub bytes: u64,
    /// Temporary files a crash left.
    pub temps: u64,
}

/// A large file of a release: which blob, how large, whether executable.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blob {
    pub id: Oid,
    pub size: u64,
    pub executable: bool,
}

/// The store's key for a blob: its id, plus `.x` when it is executable.
pub(super) fn key(blob: Oid, executable: bool) -> String {
    if executable { format!("{blob}.x") } else { blob.to_string() }
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SourceError + 'p {
    move |source| SourceError::Io { action, path: path.to_path_buf(), source }
}

/// Share `from`'s blocks with `to` (`FICLONE`); an error where the file system cannot (ext4:
/// `EOPNOTSUPP`; two file systems: `EXDEV`).
pub(crate) fn reflink(from: &impl AsFd, to: &impl AsFd) -> io::Result<()> {
    // SAFETY: both are open file descriptors borrowed for the whole call.
    if unsafe { libc::ioctl(to.as_fd().as_raw_fd(), libc::FICLONE, from.as_fd().as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Objects {
    /// The store in `dir` (created on first use, `0700`), shared with releases as `sharing` allows.
    pub fn new(dir: PathBuf, sharing: Sharing) -> Objects {
        Objects { dir, sharing, written: Vec::new() }
    }

    /// Files at or below any of `paths` (relative to the release) are written, not linked.
    pub fn except(mut self, paths: &[PathBuf]) -> Objects {
        self.written = paths
            .iter()
            .map(|p| p.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect())
            .collect();
        self
    }

    /// Whether the file at `path` (relative to the release) may come from the store.
    pub(super) fn takes(&self, path: &Path) -> bool {
        !self.written.iter().any(|w| path.starts_with(w))
    }

    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    /// Create the store if needed and find out what the file system of `release` (a directory
    /// being written) and the store allow, with two one-byte files.
    pub(super) fn probe(&self, release: &Path) -> Result<Caps, SourceError> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err("cannot create the object store", &self.dir)(e));
            }
            _ => {}
        }
        let meta = fs::symlink_metadata(&self.dir).map_err(io_err("cannot inspect", &self.dir))?;
        if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
            return Err(SourceError::Materialise {
                path: self.dir.clone(),
                message: "the object store must be a directory of the agent's that nobody else can write".into(),
            });
        }
        let source = self.dir.join(temp_name("probe"));
        let (from, to) = (source.as_path(), release.join(temp_name("probe")));
        let result = (|| {
            let mut f = new_file(from, 0o600).map_err(io_err("cannot create", from))?;
            io::Write::write_all(&mut f, b"x").map_err(io_err("cannot write", from))?;
            let out = new_file(&to, 0o600).map_err(io_err("cannot create", &to))?;
            let reflink = reflink(&f, &out).is_ok();
            drop(out);
            fs::remove_file(&to).map_err(io_err("cannot remove", &to))?;
            let hard_link = fs::hard_link(from, &to).is_ok();
            if hard_link {
                fs::remove_file(&to).map_err(io_err("cannot remove", &to))?;
            }
            Ok(Caps { reflink, hard_link })
        })();
        // best effort: the probe's own error (if any) is the one to report; a leftover temp
        // file is removed by the next `collect`
        let _ = fs::remove_file(from);
        result
    }

    /// Put the blob `key` (`size` bytes) at `dest`, a path that does not exist yet: from the
    /// store, writing it there first with `write` when it is not in the store yet.
    pub(super) fn place(
        &self,
        caps: Caps,
        blob: Blob,
        dest: &Path,
        tally: &Tally,
        write: impl FnOnce(&mut fs::File) -> Result<(), SourceError>,
    ) -> Result<Placed, SourceError> {
        let (size, executable) = (blob.size, blob.executable);
        let object = self.dir.join(key(blob.id, executable));
        let mode = if executable { 0o555 } else { 0o444 };
        if !self.intact(&object, size, mode)? {
            self.store(&object, mode, write)?;
            tally.stored.fetch_add(1, Ordering::Relaxed);
            tally.stored_bytes.fetch_add(size, Ordering::Relaxed);
        }
        let release_mode = if executable { 0o755 } else { 0o644 };
        let placed = 'placed: {
            if caps.reflink {
                let from = fs::File::open(&object).map_err(io_err("cannot open", &object))?;
                let to = new_file(dest, release_mode).map_err(io_err("cannot create", dest))?;
                if reflink(&from, &to).is_ok() {
                    break 'placed Placed::Reflinked;
                }
                drop(to);
                fs::remove_file(dest).map_err(io_err("cannot remove", dest))?;
            }
            // EMLINK (too many links), EXDEV: copied instead.
            if caps.hard_link && self.sharing == Sharing::Link && fs::hard_link(&object, dest).is_ok() {
                break 'placed Placed::HardLinked;
            }
            let mut from = fs::File::open(&object).map_err(io_err("cannot open", &object))?;
            let mut to = new_file(dest, release_mode).map_err(io_err("cannot create", dest))?;
            io::copy(&mut from, &mut to).map_err(io_err("cannot copy the object store's file into", dest))?;
            Placed::Copied
        };
        let counter = match placed {
            Placed::Reflinked => &tally.reflinked,
            Placed::HardLinked => &tally.hard_linked,
            Placed::Copied => &tally.copied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tally.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(placed)
    }

    /// Whether `object` is as the store wrote it: a regular file of the agent's, read-only with
    /// `mode`, of the blob's size. One that is not (a crash before its data reached the disk, a
    /// `chmod`) is written again.
    fn intact(&self, object: &Path, size: u64, mode: u32) -> Result<bool, SourceError> {
        match fs::symlink_metadata(object) {
            Ok(m) => {
                let ok = m.file_type().is_file()
                    && m.uid() == nix::unistd::geteuid().as_raw()
                    && m.mode() & 0o7777 == mode
                    && m.len() == size;
                if !ok {
                    tracing::warn!(object = %object.display(), "an object of the store is not as written: writing it again");
                }
                Ok(ok)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("cannot inspect", object)(e)),
        }
    }

    /// Write an object: into a temporary file, synced, made read-only, renamed into place. A
    /// failure (a full disk) removes the temporary file: no partial object is ever in the store.
    fn store(
        &self,
        object: &Path,
        mode: u32,
        write: impl FnOnce(&mut fs::File) -> Result<(), SourceError>,
    ) -> Result<(), SourceError> {
        let name = object.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = self.dir.join(temp_name(&name));
        let result = (|| {
            let mut f = new_file(&temp, 0o600).map_err(io_err("cannot create", &temp))?;
            // Its error names the release's file and the cause (a full disk).
            write(&mut f)?;
            f.sync_all().map_err(io_err("cannot sync", &temp))?;
            f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("cannot chmod", &temp))?;
            fs::rename(&temp, object).map_err(io_err("cannot rename into place", object))
        })();
        if result.is_err() {
            // best effort: the write's error is the one to report, and `collect` removes a leftover
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Remove the temporary files a crash left (a materialise removes its own on failure).
    pub fn remove_temps(&self) -> Result<u64, SourceError> {
        let mut removed = 0;
        for (name, path, _) in self.list()? {
            if name.starts_with(TEMP) {
                remove(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The store's entries: name, path, metadata (none when there is no store yet).
    fn list(&self) -> Result<Vec<(String, PathBuf, fs::Metadata)>, SourceError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &self.dir)(e)),
        };
        let mut list = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot list", &self.dir))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot inspect", &path)(e)),
            };
            list.push((entry.file_name().to_string_lossy().into_owned(), path, meta));
        }
        Ok(list)
    }

    /// Remove what no release needs: temporary files a crash left, and each object that no
    /// release links (only the store holds it) and that `referenced` (called only when there
    /// is such an object: the keys of the large blobs of the releases kept, which may hold
    /// reflinks or copies of it) does not name. When `referenced` fails nothing is removed
    /// but temporary files. Called where no materialise of the app runs (the app's queue).
    pub fn collect(
        &self,
        referenced: impl FnOnce() -> Result<HashSet<String>, SourceError>,
    ) -> Result<Collected, SourceError> {
        let mut done = Collected { temps: self.remove_temps()?, ..Collected::default() };
        let unlinked: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|(name, _, meta)| !name.starts_with(TEMP) && meta.nlink() == 1)
            .map(|(name, path, meta)| (name, path, meta.len()))
            .collect();
        if unlinked.is_empty() {
            return Ok(done);
        }
        let keep = match referenced() {
            Ok(keep) => keep,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the large files of the releases kept: the object store keeps every object");
                return Ok(done);
            }
        };
        for (name, path, len) in unlinked {
            if !keep.contains(&name) {
                remove(&path)?;
                done.objects += 1;
                done.bytes += len;
            }
        }
        Ok(done)
    }
}

fn remove(path: &Path) -> Result<(), SourceError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", path)(e)),
        _ => Ok(()),
    }
}

/// A new file, never following or replacing anything there.
fn new_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    // Readable too: a reflink's source must be.
    fs::OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(path)
}

/// A temporary name no other writer of this process or another one uses.
fn temp_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{TEMP}{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::super::Source;
    use super::super::fixture::Upstream;
    use super::*;

    /// A release of 2 MiB `big.txt`, the same bytes as an executable `tool`, a link to it and a
    /// small file, materialised through a store that may hard-link.
    struct Fixture {
        up: Upstream,
        dir: tempfile::TempDir,
        source: Source,
    }

    fn big() -> String {
        "0123456789abcdef".repeat(128 << 10)
    }

    impl Fixture {
        fn new() -> Fixture {
            let up = Upstream::new();
            up.write("big.txt", &big());
            let tool = up.write("tool", &big());
            fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::symlink("big.txt", up.path().join("link")).unwrap();
            up.commit("large files");
            let dir = tempfile::tempdir().unwrap();
            let source = Source::open(&up.path_url(), "main", None, &dir.path().join("repo.git"))
                .unwrap()
                .with_objects(Objects::new(dir.path().join("objects"), Sharing::Link));
            source.fetch().unwrap();
            Fixture { up, dir, source }
        }

        fn store(&self) -> Objects {
            Objects::new(self.dir.path().join("objects"), Sharing::Link)
        }

        fn release(&self, name: &str) -> (PathBuf, Linked) {
            let dest = self.dir.path().join("releases").join(name);
            let sha = self.source.fetch().unwrap().sha;
            let linked = self.source.materialise(&sha, ".", &dest).unwrap();
            (dest, linked)
        }

        /// The store's entries, sorted.
        fn objects(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path().join("objects"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn ino(p: &Path) -> u64 {
        fs::symlink_metadata(p).unwrap().ino()
    }

    #[test]
    fn one_blob_with_two_modes_is_two_objects_and_links_stay_links() {
        let f = Fixture::new();
        let (r1, linked) = f.release("1");
        assert_eq!((linked.files(), linked.copied, linked.stored), (2, 0, 2), "{linked}");
        let blob = f.up.git(&["rev-parse", "HEAD:big.txt"]).trim().to_string();
        assert_eq!(f.objects(), [blob.clone(), format!("{blob}.x")]);
        // A hard link is the store's read-only file; a reflink is a file of the release's own.
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        let ro = if linked.hard_linked > 0 { 0o444 } else { 0o644 };
        assert_eq!((mode(&r1.join("big.txt")), mode(&r1.join("tool"))), (ro, ro | 0o111));
        assert!(fs::symlink_metadata(r1.join("link")).unwrap().file_type().is_symlink());

        let (r2, linked) = f.release("2");
        assert_eq!((linked.files(), linked.copied, linked.stored), (2, 0, 0), "{linked}");
        let shared = ino(&r1.join("big.txt")) == ino(&r2.join("big.txt"));
        assert_eq!(shared, linked.hard_linked > 0, "{linked}");
        assert_eq!(fs::read_to_string(r2.join("big.txt")).unwrap(), big());
    }

    #[test]
    fn files_under_a_shared_path_are_written_not_linked() {
        let f = Fixture::new();
        let dest = f.dir.path().join("releases/1");
        let sha = f.source.fetch().unwrap().sha;
        let store = f.store().except(&["./big.txt".into()]);
        let source =
            Source::open(&f.up.path_url(), "main", None, &f.dir.path().join("repo.git")).unwrap().with_objects(store);
        let linked = source.materialise(&sha, ".", &dest).unwrap();
        assert_eq!((linked.files(), linked.stored), (1, 1), "{linked}");
        let big = fs::metadata(dest.join("big.txt")).unwrap();
        assert_eq!((big.nlink(), big.mode() & 0o777), (1, 0o644));
    }

    #[test]
    fn an_object_not_as_written_is_written_again() {
        let f = Fixture::new();
        let (r1, _) = f.release("1");
        let blob = f.up.git(&["rev-parse", "HEAD:big.txt"]).trim().to_string();
        let object = f.dir.path().join("objects").join(&blob);
        // A crash before its data reached the disk leaves it short; a chmod makes it writable.
        fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&object, "short").unwrap();
        fs::set_permissions(f.dir.path().join("objects").join(format!("{blob}.x")), fs::Permissions::from_mode(0o755))
            .unwrap();
        let (r2, linked) = f.release("2");
        assert_eq!((linked.files(), linked.stored), (2, 2), "{linked}");
        assert_eq!(fs::read_to_string(r2.join("big.txt")).unwrap(), big());
        assert_ne!(ino(&r1.join("big.txt")), ino(&r2.join("big.txt")));
        assert_eq!(fs::metadata(&object).unwrap().mode() & 0o7777, 0o444);
    }

    #[test]
    fn a_failed_write_leaves_no_object_and_no_temporary_file() {
        let f = Fixture::new();
        let store = f.store();
        let caps = store.probe(f.dir.path()).unwrap();
        let dest = f.dir.path().join("placed");
        let full = || SourceError::Materialise { path: dest.clone(), message: "No space left on device".into() };
        let e = store
            .place(caps, Blob { id: Oid::ZERO_SHA1, size: 10, executable: false }, &dest, &Tally::default(), |out| {
                io::Write::write_all(out, b"half").unwrap();
                Err(full())
            })
            .unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert!(f.objects().is_empty(), "{:?}", f.objects());
        assert!(!dest.exists());
    }

    /// A full disk, for real: a 5 MiB tmpfs holds the release and the store (root only).
    #[test]
    fn a_full_disk_fails_the_release_and_leaves_only_whole_objects() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root mounts a tmpfs");
            return;
        }
        let up = Upstream::new();
        for i in 0..4 {
            up.write(&format!("big{i}.txt"), &format!("{i}").repeat(2 << 20));
        }
        up.commit("8 MiB of large files");
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mount = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status().unwrap().success();
        if !mount(&["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", mnt.to_str().unwrap()]) {
            eprintln!("skipped: cannot mount a tmpfs here");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                // best effort: a test's temp dir; a leftover mount is visible in `mount`
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&mnt);
        let source = Source::open(&up.path_url(), "main", None, &dir.path().join("repo.git"))
            .unwrap()
            .with_objects(Objects::new(mnt.join("objects"), Sharing::Link));
        let sha = source.fetch().unwrap().sha;
        let dest = mnt.join("releases/1");
        let e = source.materialise(&sha, ".", &dest).unwrap_err().to_string();
        eprintln!("{e}");
        assert!(e.contains("No space left on device") && e.contains("releases/1/big"), "{e}");
        assert!(!dest.exists() && !mnt.join("releases/.1.partial").exists());
        for entry in fs::read_dir(mnt.join("objects")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(TEMP), "a temporary file is left: {name}");
            assert_eq!(entry.metadata().unwrap().len(), 2 << 20, "a partial object: {name}");
        }
    }

    #[test]
    fn collect_keeps_what_a_kept_release_holds_and_removes_the_rest() {
        let f = Fixture::new();
        let (r1, linked) = f.release("1");
        let blob = f.up.git(&["rev-parse", "HEAD:big.txt"]).trim().to_string();
        // A crash while an object was written.
        fs::write(f.dir.path().join("objects").join(format!("{TEMP}x-1-1")), "half").unwrap();
        let sha = f.source.fetch().unwrap().sha;
        let keys = f.source.large_files(&sha, ".").unwrap();
        assert_eq!(keys, HashSet::from([blob.clone(), format!("{blob}.x")]));
        // Every object hard-linked: no tree is read. Reflinked: the release's commit keeps them.
        let hard_linked = linked.hard_linked == 2;
        let referenced = || -> Result<HashSet<String>, SourceError> {
            assert!(!hard_linked, "trees read with every object linked");
            Ok(keys.clone())
        };
        assert_eq!(f.store().collect(referenced).unwrap(), Collected { temps: 1, ..Collected::default() });

        // Release 1 pruned: what a release of the commit would hold (a reflink, a copy) is kept
        // while that commit's release is, then removed.
        fs::remove_dir_all(&r1).unwrap();
        assert_eq!(f.store().collect(|| Ok(keys.clone())).unwrap(), Collected::default());
        assert_eq!(f.objects().len(), 2);
        let gone = f.store().collect(|| Ok(HashSet::new())).unwrap();
        assert_eq!((gone.objects, gone.bytes), (2, 2 * big().len() as u64));
        assert!(f.objects().is_empty());
    }

    #[test]
    fn an_app_that_could_write_through_a_hard_link_gets_none() {
        assert_eq!(Sharing::for_uid(None), Sharing::CloneOnly);
        assert_eq!(Sharing::for_uid(Some(0)), Sharing::CloneOnly);
        assert_eq!(Sharing::for_uid(Some(nix::unistd::geteuid().as_raw())), Sharing::CloneOnly);
        let caps = Caps { reflink: false, hard_link: true };
        assert!(!caps.useful(Sharing::CloneOnly) && caps.useful(Sharing::Link));
    }
}
