//! Files beneath a directory, reached without following a symbolic link.
//!
//! The agent runs as root inside directories that code it did not write can change: a release
//! holds whatever a commit holds (links included) and belongs to the app's `user` once given to
//! it; `shared/` belongs to that user too. Root following a link there would read, move, chown
//! or delete whatever the link names (`/etc/shadow`, the agent's own env file). So everything the
//! agent does in those places goes through a [`Dir`]: a path is resolved relative to a directory
//! fd with no link followed and never above that directory (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, or a component-by-component `O_NOFOLLOW` walk where the kernel has no
//! `openat2`), and every change is an `*at` call on such an fd, so a path swapped for a link
//! between a check and the change is refused, not followed.
//!
//! Hard links are mostly the kernel's part: with `fs.protected_hardlinks = 1` (the default of
//! every major distribution) a user cannot link a file it could not already read and write.
//! Where it is off (the agent warns at start), [`Dir::read`] still refuses a linked file that
//! is not the app user's own, and the deploy never gives one to the app's user.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a path beneath a directory was not reached. Each names the path (never a file's content).
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("`{0}` is a symbolic link; the agent follows no link in a release or in `shared/`")]
    Link(PathBuf),
    #[error("`{0}` is not a directory")]
    NotADir(PathBuf),
    #[error("`{0}` is not a regular file")]
    NotAFile(PathBuf),
    #[error("`{0}` leads out of `{1}`")]
    Outside(PathBuf, PathBuf),
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("`{0}` has other hard links and is not the app user's own")]
    HardLinked(PathBuf),
    #[error("`{0}` is larger than {1} bytes")]
    TooLarge(PathBuf, u64),
    #[error("`{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl BeneathError {
    #[cfg(test)]
    pub fn is_missing(&self) -> bool {
        matches!(self, BeneathError::Missing(_))
    }

    fn io(path: PathBuf, e: Errno) -> BeneathError {
        BeneathError::Io { path, source: e.into() }
    }
}

/// What a directory entry is, as `lstat` sees it (a link is a link, never its target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Link,
    /// A fifo, socket or device: nothing the agent reads or moves.
    Other,
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        }
    }
}

/// A directory being emptied by [`Dir::remove_all`]: its entries still to go, its name in the
/// parent.
type Emptying = (Dir, Vec<(OsString, Kind)>, OsString);

/// An open directory: every path given to its methods is resolved beneath it, links refused.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where it is, for messages only (never resolved again).
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

impl Dir {
    /// Open a directory the operator named (the config's `path:`, `cwd:`): links in `path` are
    /// followed, as the operator wrote them.
    pub fn open_trusted(path: &Path) -> Result<Dir, BeneathError> {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                Errno::ENOENT => BeneathError::Missing(path.to_path_buf()),
                Errno::ENOTDIR => BeneathError::NotADir(path.to_path_buf()),
                e => BeneathError::io(path.to_path_buf(), e),
            })?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// Where this directory is (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory at `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<Dir, BeneathError> {
        let parts = self.parts(rel)?;
        let fd = self.open_parts(&parts, DIR_FLAGS)?;
        Ok(Dir { fd, path: self.shown(&parts) })
    }

    /// The directory at `rel` beneath this one, created (with `mode`, less the umask) where
    /// missing, one component at a time.
    pub fn create_dirs(&self, rel: &Path, mode: u32) -> Result<Dir, BeneathError> {
        let parts = self.parts(rel)?;
        let mut cur = Dir { fd: self.reopen()?, path: self.path.clone() };
        for part in &parts {
            cur = match cur.open_dir(Path::new(part)) {
                Err(BeneathError::Missing(_)) => {
                    match nix::sys::stat::mkdirat(cur.fd.as_fd(), *part, Mode::from_bits_truncate(mode)) {
                        // Made by someone else in between: opened (with no link followed) below.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(BeneathError::io(cur.path.join(part), e)),
                    }
                    cur.open_dir(Path::new(part))?
                }
                other => other?,
            };
        }
        Ok(cur)
    }

    /// Read the regular file at `rel` beneath this one, up to `limit` bytes. Where `uid` (an
    /// app's user) can write, pass it: a file with other hard links is then read only if it is
    /// `uid`'s own (a link to somebody else's file, made where the kernel allows it, is not).
    pub fn read(&self, rel: &Path, limit: u64, uid: Option<u32>) -> Result<Vec<u8>, BeneathError> {
        let parts = self.parts(rel)?;
        let shown = self.shown(&parts);
        if parts.is_empty() {
            return Err(BeneathError::NotAFile(shown));
        }
        // Non-blocking: a fifo planted in place of the file must not hang the agent.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = self.open_parts(&parts, flags)?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| BeneathError::io(shown.clone(), e))?;
        if Kind::of(&st) != Kind::File {
            return Err(BeneathError::NotAFile(shown));
        }
        if uid.is_some_and(|uid| st.st_nlink > 1 && st.st_uid != uid) {
            return Err(BeneathError::HardLinked(shown));
        }
        if st.st_size as u64 > limit {
            return Err(BeneathError::TooLarge(shown, limit));
        }
        let mut bytes = Vec::with_capacity(st.st_size as usize);
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| BeneathError::Io { path: shown.clone(), source })?;
        if bytes.len() as u64 > limit {
            return Err(BeneathError::TooLarge(shown, limit));
        }
        Ok(bytes)
    }

    /// What `name` (one entry of this directory) is, without following it; `None` when absent.
    pub fn stat(&self, name: &OsStr) -> Result<Option<FileStat>, BeneathError> {
        let name = self.name(name)?;
        match nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(BeneathError::io(self.path.join(name), e)),
        }
    }

    /// [`Dir::stat`], as a [`Kind`].
    pub fn kind(&self, name: &OsStr) -> Result<Option<Kind>, BeneathError> {
        Ok(self.stat(name)?.as_ref().map(Kind::of))
    }

    /// Create an empty regular file `name`; fails if anything is there already.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(mode))
            .map(drop)
            .map_err(|e| BeneathError::io(self.path.join(name), e))
    }

    /// Create the directory `name`; fails if anything is there already.
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        nix::sys::stat::mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode))
            .map_err(|e| BeneathError::io(self.path.join(name), e))
    }

    /// Create a symbolic link `name` -> `target` (the link is made, never followed).
    pub fn symlink(&self, name: &OsStr, target: &Path) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        nix::unistd::symlinkat(target, self.fd.as_fd(), name).map_err(|e| BeneathError::io(self.path.join(name), e))
    }

    /// Move the entry `name` to `to_name` in `to`, whatever it is (a link moves as a link).
    /// Refuses to replace anything at the destination.
    pub fn move_to(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> Result<(), BeneathError> {
        let (name, to_name) = (self.name(name)?, to.name(to_name)?);
        let fail = |e| BeneathError::io(self.path.join(name), e);
        match nix::fcntl::renameat2(self.fd.as_fd(), name, to.fd.as_fd(), to_name, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => Ok(()),
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            Err(Errno::EINVAL) => match to.stat(to_name)? {
                Some(_) => Err(fail(Errno::EEXIST)),
                None => nix::fcntl::renameat(self.fd.as_fd(), name, to.fd.as_fd(), to_name).map_err(fail),
            },
            Err(e) => Err(fail(e)),
        }
    }

    /// Give `name` to `uid:gid`: a link itself, never what it points at.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        nix::unistd::fchownat(
            self.fd.as_fd(),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| BeneathError::io(self.path.join(name), e))
    }

    /// Give this directory itself to `uid:gid`.
    pub fn chown_self(&self, uid: u32, gid: u32) -> Result<(), BeneathError> {
        nix::unistd::fchown(self.fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| BeneathError::io(self.path.clone(), e))
    }

    /// Set the mode of the regular file `name` (opened with no link followed, so the mode
    /// lands on the file that is there, never on a link's target).
    pub fn chmod(&self, name: &OsStr, mode: u32) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        let shown = || self.path.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = nix::fcntl::openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP => BeneathError::Link(shown()),
            e => BeneathError::io(shown(), e),
        })?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| BeneathError::io(shown(), e))?;
        if Kind::of(&st) != Kind::File {
            return Err(BeneathError::NotAFile(shown()));
        }
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(|e| BeneathError::io(shown(), e))
    }

    /// Remove the entry `name` and, if it is a directory, everything in it, without following
    /// a link anywhere (each level is opened `O_NOFOLLOW` from its parent's fd). Iterative: one
    /// fd per level of depth, no recursion.
    pub fn remove_all(&self, name: &OsStr) -> Result<(), BeneathError> {
        let name = self.name(name)?;
        if self.kind(name)? != Some(Kind::Dir) {
            return self.unlink(name, false);
        }
        let mut stack: Vec<Emptying> = vec![(self.open_dir(Path::new(name))?, Vec::new(), name.to_os_string())];
        let mut listed = false;
        while let Some((dir, todo, _)) = stack.last_mut() {
            if !listed {
                *todo = dir.entries()?;
                listed = true;
            }
            match todo.pop() {
                Some((child, Kind::Dir)) => {
                    let sub = dir.open_dir(Path::new(&child))?;
                    stack.push((sub, Vec::new(), child));
                    listed = false;
                }
                Some((child, _)) => dir.unlink(&child, false)?,
                None => {
                    if let Some((_, _, done)) = stack.pop() {
                        stack.last().map_or(self, |(parent, _, _)| parent).unlink(&done, true)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The entries of this directory (without `.` and `..`), each with its [`Kind`].
    pub fn entries(&self) -> Result<Vec<(OsString, Kind)>, BeneathError> {
        // A new open file description, so that listing never moves another reader's offset.
        let fd = self.reopen()?;
        let mut list = nix::dir::Dir::from_fd(fd).map_err(|e| BeneathError::io(self.path.clone(), e))?;
        let mut out = Vec::new();
        for entry in list.iter() {
            let entry = entry.map_err(|e| BeneathError::io(self.path.clone(), e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::File) => Kind::File,
                Some(nix::dir::Type::Symlink) => Kind::Link,
                Some(_) => Kind::Other,
                // Filesystems that do not fill `d_type`: ask.
                None => match self.kind(name)? {
                    Some(k) => k,
                    None => continue,
                },
            };
            out.push((name.to_os_string(), kind));
        }
        Ok(out)
    }

    fn unlink(&self, name: &OsStr, dir: bool) -> Result<(), BeneathError> {
        let flag = if dir { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        nix::unistd::unlinkat(self.fd.as_fd(), name, flag).map_err(|e| BeneathError::io(self.path.join(name), e))
    }

    /// A fresh fd on this same directory.
    fn reopen(&self) -> Result<OwnedFd, BeneathError> {
        nix::fcntl::openat(self.fd.as_fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| BeneathError::io(self.path.clone(), e))
    }

    /// One entry's name: a single plain component.
    fn name<'a>(&self, name: &'a OsStr) -> Result<&'a OsStr, BeneathError> {
        let mut c = Path::new(name).components();
        match (c.next(), c.next()) {
            (Some(Component::Normal(n)), None) => Ok(n),
            _ => Err(BeneathError::Outside(PathBuf::from(name), self.path.clone())),
        }
    }

    /// `rel` as plain components: `.` dropped, `..` taken back lexically, never above this
    /// directory (so a walk and `openat2` agree on what a path names).
    fn parts<'a>(&self, rel: &'a Path) -> Result<Vec<&'a OsStr>, BeneathError> {
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => parts.push(n),
                Component::CurDir => {}
                Component::ParentDir if parts.pop().is_some() => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(BeneathError::Outside(rel.to_path_buf(), self.path.clone()));
                }
            }
        }
        Ok(parts)
    }

    fn shown(&self, parts: &[&OsStr]) -> PathBuf {
        let mut p = self.path.clone();
        p.extend(parts);
        p
    }

    /// Open `parts` beneath this directory with `flags` on the last one.
    fn open_parts(&self, parts: &[&OsStr], flags: OFlag) -> Result<OwnedFd, BeneathError> {
        if parts.is_empty() {
            return self.reopen();
        }
        if OPENAT2.load(Ordering::Relaxed) {
            let joined: PathBuf = parts.iter().collect();
            match openat2(self.fd.as_fd(), &joined, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => return Err(BeneathError::Missing(self.shown(parts))),
                // Not in this kernel (or filtered by a seccomp profile): walk, from now on.
                Err(Errno::ENOSYS | Errno::EPERM) => OPENAT2.store(false, Ordering::Relaxed),
                // A link, a file where a directory should be: the walk says which component.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {}
                Err(e) => return Err(BeneathError::io(self.shown(parts), e)),
            }
        }
        self.walk(parts, flags)
    }

    /// Component by component: every directory opened `O_NOFOLLOW | O_DIRECTORY` from its
    /// parent's fd, the last one with `flags | O_NOFOLLOW`.
    fn walk(&self, parts: &[&OsStr], flags: OFlag) -> Result<OwnedFd, BeneathError> {
        let mut cur: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let f = if last { flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC } else { DIR_FLAGS };
            let at: BorrowedFd<'_> = cur.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let shown = || self.shown(&parts[..=i]);
            match nix::fcntl::openat(at, *part, f, Mode::empty()) {
                Ok(fd) => cur = Some(fd),
                Err(Errno::ENOENT) => return Err(BeneathError::Missing(shown())),
                Err(Errno::ELOOP) => return Err(BeneathError::Link(shown())),
                Err(Errno::ENOTDIR) => {
                    return Err(match nix::sys::stat::fstatat(at, *part, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) if Kind::of(&st) == Kind::Link => BeneathError::Link(shown()),
                        _ => BeneathError::NotADir(shown()),
                    });
                }
                Err(e) => return Err(BeneathError::io(shown(), e)),
            }
        }
        cur.map_or_else(|| self.reopen(), Ok)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `openat2` is worth trying (cleared the first time the kernel says it has none).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// `openat2(dir, path, { flags, resolve: BENEATH | NO_SYMLINKS | NO_MAGICLINKS })`.
fn openat2(dir: BorrowedFd<'_>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `open_how` is plain integers; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags.bits() as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the pointers are valid for the call; the size is the struct's own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel answered a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Make `openat2` look absent, so a test covers the walk (the fallback of older kernels).
#[cfg(test)]
fn without_openat2<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    OPENAT2.store(false, Ordering::Relaxed);
    let out = f();
    OPENAT2.store(true, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// `app/` with `rel/.env`, `rel/sub/f`, links out and in, and a secret outside.
    fn tree() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("secret.env");
        std::fs::write(&outside, "SECRET=1\n").unwrap();
        let app = t.path().join("app");
        std::fs::create_dir_all(app.join("rel/sub")).unwrap();
        std::fs::write(app.join("rel/.env"), "A=1\n").unwrap();
        std::fs::write(app.join("rel/sub/f"), "f\n").unwrap();
        symlink(&outside, app.join("rel/out.env")).unwrap();
        symlink("sub", app.join("rel/inner")).unwrap();
        symlink(t.path(), app.join("rel/up")).unwrap();
        let dir = Dir::open_trusted(&app).unwrap();
        (t, dir)
    }

    fn both(f: impl Fn()) {
        f();
        without_openat2(f);
    }

    #[test]
    fn reads_a_plain_file_beneath() {
        both(|| {
            let (_t, app) = tree();
            assert_eq!(app.read(Path::new("rel/.env"), 1024, None).unwrap(), b"A=1\n");
            assert_eq!(app.read(Path::new("./rel/sub/../.env"), 1024, None).unwrap(), b"A=1\n");
            assert_eq!(app.open_dir(Path::new("rel/sub")).unwrap().read(Path::new("f"), 10, None).unwrap(), b"f\n");
        });
    }

    #[test]
    fn refuses_every_link_and_names_it() {
        both(|| {
            let (_t, app) = tree();
            for (rel, named) in
                [("rel/out.env", "rel/out.env"), ("rel/inner/f", "rel/inner"), ("rel/up/secret.env", "rel/up")]
            {
                match app.read(Path::new(rel), 1024, None) {
                    Err(BeneathError::Link(p)) => assert!(p.ends_with(named), "{rel}: named {}", p.display()),
                    other => panic!("{rel}: {other:?}"),
                }
            }
            assert!(matches!(app.open_dir(Path::new("rel/inner")), Err(BeneathError::Link(_))));
        });
    }

    #[test]
    fn refuses_paths_that_leave_the_directory() {
        let (_t, app) = tree();
        for rel in ["../secret.env", "rel/../../secret.env", "/etc/passwd"] {
            assert!(matches!(app.read(Path::new(rel), 1024, None), Err(BeneathError::Outside(..))), "{rel}");
        }
    }

    #[test]
    fn tells_missing_from_not_a_directory_and_not_a_file() {
        both(|| {
            let (_t, app) = tree();
            assert!(app.read(Path::new("rel/nope"), 10, None).unwrap_err().is_missing());
            assert!(matches!(app.read(Path::new("rel/.env/x"), 10, None), Err(BeneathError::NotADir(_))));
            assert!(matches!(app.read(Path::new("rel/sub"), 10, None), Err(BeneathError::NotAFile(_))));
        });
    }

    #[test]
    fn a_fifo_a_hard_link_and_a_big_file_are_refused() {
        let (t, app) = tree();
        nix::unistd::mkfifo(&t.path().join("app/rel/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(app.read(Path::new("rel/fifo"), 10, None), Err(BeneathError::NotAFile(_))));
        std::fs::hard_link(t.path().join("app/rel/.env"), t.path().join("app/rel/linked")).unwrap();
        assert!(matches!(app.read(Path::new("rel/linked"), 10, Some(12345)), Err(BeneathError::HardLinked(_))));
        assert!(app.read(Path::new("rel/linked"), 10, Some(nix::unistd::geteuid().as_raw())).is_ok());
        assert!(app.read(Path::new("rel/linked"), 10, None).is_ok());
        std::fs::write(t.path().join("app/rel/big"), vec![b'x'; 100]).unwrap();
        assert!(matches!(app.read(Path::new("rel/big"), 99, None), Err(BeneathError::TooLarge(_, 99))));
    }

    #[test]
    fn create_dirs_makes_what_is_missing_and_stops_at_a_link() {
        both(|| {
            let (t, app) = tree();
            let d = app.create_dirs(Path::new("rel/new/deeper"), 0o755).unwrap();
            d.create_file(OsStr::new("x"), 0o644).unwrap();
            assert!(t.path().join("app/rel/new/deeper/x").is_file());
            assert!(matches!(app.create_dirs(Path::new("rel/up/made"), 0o755), Err(BeneathError::Link(_))));
            assert!(!t.path().join("made").exists(), "created through the link");
        });
    }

    #[test]
    fn remove_all_deletes_a_tree_but_only_links_to_outside() {
        let (t, app) = tree();
        let rel = app.open_dir(Path::new("rel")).unwrap();
        rel.remove_all(OsStr::new("up")).unwrap();
        assert!(t.path().join("secret.env").exists(), "followed the link");
        assert!(t.path().join("app").exists());
        // A deep tree holding a link out.
        let mut deep = t.path().join("app/rel/sub");
        for i in 0..50 {
            deep = deep.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        symlink(t.path(), deep.join("out")).unwrap();
        rel.remove_all(OsStr::new("sub")).unwrap();
        assert!(!t.path().join("app/rel/sub").exists());
        assert!(t.path().join("secret.env").exists());
        assert_eq!(rel.kind(OsStr::new(".env")).unwrap(), Some(Kind::File));
    }

    #[test]
    fn moves_chowns_and_links_without_following() {
        let (t, app) = tree();
        let rel = app.open_dir(Path::new("rel")).unwrap();
        let other = app.create_dirs(Path::new("other"), 0o755).unwrap();
        rel.move_to(OsStr::new("out.env"), &other, OsStr::new("moved")).unwrap();
        assert_eq!(other.kind(OsStr::new("moved")).unwrap(), Some(Kind::Link));
        assert!(matches!(rel.move_to(OsStr::new(".env"), &other, OsStr::new("moved")), Err(BeneathError::Io { .. })));
        other.symlink(OsStr::new("l"), Path::new("/nowhere")).unwrap();
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::MetadataExt;
            let before = std::fs::metadata(t.path().join("secret.env")).unwrap().uid();
            other.chown(OsStr::new("moved"), 12345, 12345).unwrap();
            assert_eq!(std::fs::metadata(t.path().join("secret.env")).unwrap().uid(), before, "chowned the target");
            assert_eq!(std::fs::symlink_metadata(t.path().join("app/other/moved")).unwrap().uid(), 12345);
        }
        assert!(matches!(rel.chown(OsStr::new("a/b"), 0, 0), Err(BeneathError::Outside(..))));
    }
}
