//! Writing one commit's tree out as a release directory: a clean tree, not a work tree, so no
//! `.git`, no index, no leftovers from the previous release.
//!
//! The tree is listed first, then written into `.<dest>.partial` next to `dest`, then renamed into
//! place: a `dest` that exists is complete. Blobs are written by a few threads, each with its own
//! handle on the object database; symlinks are created last, so no file is ever written through one.
//! This is a hand-written walk rather than libgit2's checkout because, with two writer threads, it
//! is 1.5 to 2 times as fast into a fresh directory (10,000 files: ~0.3-0.4 s against ~0.6-0.7 s on
//! a 2-core VM, see `examples/bench_source.rs`), and it applies no `.gitattributes` filters: a
//! release holds the bytes that were committed. Creating inodes dominates either way.

use super::{Source, SourceError};
use git2::{ObjectType, Odb, Oid, Repository, Tree};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Below this many files one thread is as fast as several.
const PARALLEL_FROM: usize = 512;
/// The most files a writer thread claims at a time. A claim never spans two directories: threads
/// creating files in one directory take turns on its lock, in different ones they do not.
const BATCH: usize = 128;
/// Writing is mostly system calls; past a few threads the file system is the bottleneck.
const MAX_THREADS: usize = 4;

/// Git's file modes, by type (`mode & TYPE_MASK`).
const TYPE_MASK: i32 = 0o170000;
const MODE_TREE: i32 = 0o040000;
const MODE_BLOB: i32 = 0o100000;
const MODE_LINK: i32 = 0o120000;
const MODE_GITLINK: i32 = 0o160000;

/// What to create, relative to the release root, in order: directories (parents first), files, links.
#[derive(Default)]
struct Plan {
    dirs: Vec<PathBuf>,
    files: Vec<FileEntry>,
    links: Vec<(PathBuf, Oid)>,
    /// `files` cut into claims for the writer threads: at most `BATCH`, all in one directory.
    batches: Vec<Range<usize>>,
}

struct FileEntry {
    path: PathBuf,
    blob: Oid,
    executable: bool,
}

impl Source {
    /// Write the tree of commit `sha` (or of its subdirectory `root`; `.` or empty for the whole
    /// repository) into `dest`, which must not exist yet. Regular files keep their executable bit
    /// (modes 0644/0755, less the umask, as git does), symlinks stay symlinks, submodules become
    /// empty directories (with a warning), and there is no `.git`.
    ///
    /// The commit must be in the cache ([`Source::fetch`] first). A `.<name>.partial` directory next
    /// to `dest` holds the tree while it is written; one left by a crash is removed by the next call.
    pub fn materialise(&self, sha: &str, root: impl AsRef<Path>, dest: &Path) -> Result<(), SourceError> {
        let root = root.as_ref();
        match fs::symlink_metadata(dest) {
            Ok(_) => {
                return Err(SourceError::Materialise {
                    path: dest.to_path_buf(),
                    message: "it already exists\n  hint: each release is written into a new directory".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SourceError::Io { action: "cannot inspect", path: dest.to_path_buf(), source: e }),
        }
        let repo = self.repo()?;
        let commit = self.find_commit(&repo, sha)?;
        let tree = self.root_tree(&repo, commit, root)?;
        let plan = self.plan(&repo, &tree, dest)?;

        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let Some(name) = dest.file_name() else {
            return Err(SourceError::Materialise {
                path: dest.to_path_buf(),
                message: "the path has no file name".into(),
            });
        };
        fs::create_dir_all(parent).map_err(|e| SourceError::Io {
            action: "cannot create",
            path: parent.to_path_buf(),
            source: e,
        })?;
        let partial = parent.join(format!(".{}.partial", name.to_string_lossy()));
        if fs::symlink_metadata(&partial).is_ok() {
            fs::remove_dir_all(&partial).map_err(|e| SourceError::Io {
                action: "cannot remove",
                path: partial.clone(),
                source: e,
            })?;
        }
        if let Err(e) = self.write(&repo, &plan, &partial, dest) {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
        fs::rename(&partial, dest).map_err(|e| {
            let _ = fs::remove_dir_all(&partial);
            SourceError::Io { action: "cannot rename the written release to", path: dest.to_path_buf(), source: e }
        })?;
        tracing::debug!(sha, root = %root.display(), dest = %dest.display(), files = plan.files.len(), "materialised");
        Ok(())
    }

    /// The tree of `commit`, or of its subdirectory `root`.
    fn root_tree<'r>(&self, repo: &'r Repository, commit: Oid, root: &Path) -> Result<Tree<'r>, SourceError> {
        let git_err = |e| self.git_error(e);
        let not_found = || SourceError::RootNotFound { root: root.display().to_string(), sha: commit.to_string() };
        let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(git_err)?;
        let mut rel = PathBuf::new();
        for component in root.components() {
            match component {
                Component::CurDir => {}
                Component::Normal(part) => rel.push(part),
                _ => return Err(not_found()),
            }
        }
        if rel.as_os_str().is_empty() {
            return Ok(tree);
        }
        let entry = match tree.get_path(&rel) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(not_found()),
            Err(e) => return Err(git_err(e)),
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(not_found());
        }
        repo.find_tree(entry.id()).map_err(git_err)
    }

    /// List everything under `tree`, refusing entry names that could escape the release.
    fn plan(&self, repo: &Repository, tree: &Tree<'_>, dest: &Path) -> Result<Plan, SourceError> {
        fn walk(
            source: &Source,
            repo: &Repository,
            tree: &Tree<'_>,
            dir: &Path,
            dest: &Path,
            plan: &mut Plan,
        ) -> Result<(), SourceError> {
            for entry in tree.iter() {
                let name = entry.name_bytes();
                let path = dir.join(OsStr::from_bytes(name));
                if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                    return Err(SourceError::Materialise {
                        path: dest.join(&path),
                        message: "the commit holds a file name that is not allowed in a tree".into(),
                    });
                }
                if name.eq_ignore_ascii_case(b".git") {
                    tracing::warn!(path = %path.display(), "skipped `.git` inside the commit's tree");
                    continue;
                }
                let mode = entry.filemode();
                match mode & TYPE_MASK {
                    MODE_TREE => {
                        let sub = repo.find_tree(entry.id()).map_err(|e| source.git_error(e))?;
                        plan.dirs.push(path.clone());
                        walk(source, repo, &sub, &path, dest, plan)?;
                    }
                    MODE_BLOB => plan.files.push(FileEntry { path, blob: entry.id(), executable: mode & 0o100 != 0 }),
                    MODE_LINK => plan.links.push((path, entry.id())),
                    MODE_GITLINK => {
                        tracing::warn!(path = %path.display(), commit = %entry.id(), "submodule not included in the release: it is left as an empty directory");
                        plan.dirs.push(path);
                    }
                    _ => {
                        return Err(SourceError::Materialise {
                            path: dest.join(&path),
                            message: format!("unknown file mode {mode:o} in the commit's tree"),
                        });
                    }
                }
            }
            Ok(())
        }
        let mut plan = Plan::default();
        walk(self, repo, tree, Path::new(""), dest, &mut plan)?;
        let mut start = 0;
        for i in 1..=plan.files.len() {
            if i == plan.files.len()
                || i - start == BATCH
                || plan.files[i].path.parent() != plan.files[start].path.parent()
            {
                plan.batches.push(start..i);
                start = i;
            }
        }
        Ok(plan)
    }

    /// Create the planned tree under `into` (named as under `dest` in errors).
    fn write(&self, repo: &Repository, plan: &Plan, into: &Path, dest: &Path) -> Result<(), SourceError> {
        let failed =
            |rel: &Path, e: io::Error| SourceError::Materialise { path: dest.join(rel), message: e.to_string() };
        let mut dirs = fs::DirBuilder::new();
        dirs.mode(0o755);
        dirs.create(into).map_err(|e| failed(Path::new(""), e))?;
        for dir in &plan.dirs {
            dirs.create(into.join(dir)).map_err(|e| failed(dir, e))?;
        }

        let threads = if plan.files.len() < PARALLEL_FROM {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS)
        };
        if threads == 1 {
            let odb = repo.odb().map_err(|e| self.git_error(e))?;
            let next = AtomicUsize::new(0);
            self.write_files(&odb, plan, &next, &AtomicBool::new(false), into, dest)?;
        } else {
            let next = AtomicUsize::new(0);
            let stop = AtomicBool::new(false);
            let first_error = Mutex::new(None);
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        // libgit2 handles are not shared across threads: each writer opens its own.
                        let result = self.repo().and_then(|repo| {
                            let odb = repo.odb().map_err(|e| self.git_error(e))?;
                            self.write_files(&odb, plan, &next, &stop, into, dest)
                        });
                        if let Err(e) = result {
                            stop.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        }
                    });
                }
            });
            if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
        }

        let odb = repo.odb().map_err(|e| self.git_error(e))?;
        for (path, blob) in &plan.links {
            let target = odb.read(*blob).map_err(|e| self.git_error(e))?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target.data()), into.join(path))
                .map_err(|e| failed(path, e))?;
        }
        Ok(())
    }

    /// Write the planned files, claiming batches through `next` until none are left or `stop`.
    fn write_files(
        &self,
        odb: &Odb<'_>,
        plan: &Plan,
        next: &AtomicUsize,
        stop: &AtomicBool,
        into: &Path,
        dest: &Path,
    ) -> Result<(), SourceError> {
        loop {
            let claimed = next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = plan.batches.get(claimed) else { return Ok(()) };
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            for file in &plan.files[batch.clone()] {
                let blob = odb.read(file.blob).map_err(|e| self.git_error(e))?;
                let write = || -> io::Result<()> {
                    // `create_new`: never follow or overwrite anything already there.
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(if file.executable { 0o755 } else { 0o644 })
                        .open(into.join(&file.path))?;
                    out.write_all(blob.data())
                };
                write()
                    .map_err(|e| SourceError::Materialise { path: dest.join(&file.path), message: e.to_string() })?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Upstream;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fetched(up: &Upstream) -> (Source, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let source = Source::open(&up.path_url(), "main", None, &dir.path().join("repo.git")).unwrap();
        let sha = source.fetch().unwrap().sha;
        (source, sha, dir)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_a_clean_tree_with_exec_bits_and_symlinks() {
        let up = Upstream::new();
        let run = up.write("bin/run.sh", "#!/bin/sh\necho hi\n");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        up.write("src/app.js", "console.log(1)\n");
        std::os::unix::fs::symlink("src/app.js", up.path().join("main.js")).unwrap();
        std::os::unix::fs::symlink("../README.md", up.path().join("src/readme")).unwrap();
        up.commit("files");
        let (source, sha, dir) = fetched(&up);

        let dest = dir.path().join("releases/1-abc");
        source.materialise(&sha, ".", &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("README.md")).unwrap(), "hello\n");
        assert_eq!(fs::read_to_string(dest.join("src/app.js")).unwrap(), "console.log(1)\n");
        assert_ne!(mode(&dest.join("bin/run.sh")) & 0o111, 0, "the exec bit is kept");
        assert_eq!(mode(&dest.join("src/app.js")) & 0o111, 0);
        assert_eq!(fs::read_link(dest.join("main.js")).unwrap(), Path::new("src/app.js"));
        assert_eq!(fs::read_link(dest.join("src/readme")).unwrap(), Path::new("../README.md"));
        assert_eq!(fs::read_to_string(dest.join("src/readme")).unwrap(), "hello\n");
        assert!(!dest.join(".git").exists());
        let mut names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["1-abc"], "no partial directory is left behind");
    }

    #[test]
    fn writes_only_the_root_subdirectory() {
        let up = Upstream::new();
        up.write("services/web/package.json", "{}\n");
        up.write("services/web/lib/index.js", "x\n");
        up.write("services/api/main.go", "package main\n");
        up.commit("monorepo");
        let (source, sha, dir) = fetched(&up);

        let dest = dir.path().join("web");
        source.materialise(&sha[..10], "services/web", &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("package.json")).unwrap(), "{}\n");
        assert_eq!(fs::read_to_string(dest.join("lib/index.js")).unwrap(), "x\n");
        assert!(!dest.join("services").exists() && !dest.join("README.md").exists());

        source.materialise(&sha, "./services/web/", &dir.path().join("web2")).unwrap();
        assert!(dir.path().join("web2/package.json").is_file());

        for bad in ["services/nope", "README.md", "../x", "/etc"] {
            let err = source.materialise(&sha, bad, &dir.path().join("bad")).unwrap_err();
            assert!(matches!(err, SourceError::RootNotFound { .. }), "{bad}: {err}");
            assert!(!dir.path().join("bad").exists());
        }
    }

    #[test]
    fn refuses_an_existing_dest() {
        let up = Upstream::new();
        let (source, sha, dir) = fetched(&up);
        let dest = dir.path().join("release");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), "mine").unwrap();
        let err = source.materialise(&sha, ".", &dest).unwrap_err();
        assert!(matches!(err, SourceError::Materialise { .. }), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(fs::read_to_string(dest.join("keep")).unwrap(), "mine", "left untouched");
    }

    #[test]
    fn an_unknown_commit_writes_nothing() {
        let up = Upstream::new();
        let (source, _sha, dir) = fetched(&up);
        let dest = dir.path().join("release");
        let err = source.materialise(&"3".repeat(40), ".", &dest).unwrap_err();
        assert!(matches!(err, SourceError::UnknownCommit { .. }), "{err}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_partial_left_by_a_crash_is_replaced() {
        let up = Upstream::new();
        let (source, sha, dir) = fetched(&up);
        let partial = dir.path().join(".release.partial");
        fs::create_dir_all(partial.join("junk")).unwrap();
        source.materialise(&sha, ".", &dir.path().join("release")).unwrap();
        assert!(!partial.exists());
        assert!(!dir.path().join("release/junk").exists());
    }

    #[test]
    fn many_files_are_written_by_several_threads() {
        let up = Upstream::new();
        for d in 0..10 {
            for f in 0..100 {
                up.write(&format!("d{d}/f{f}.txt"), &format!("{d}/{f}\n"));
            }
        }
        up.commit("a thousand files");
        let (source, sha, dir) = fetched(&up);
        let dest = dir.path().join("release");
        source.materialise(&sha, ".", &dest).unwrap();
        for d in 0..10 {
            for f in 0..100 {
                assert_eq!(fs::read_to_string(dest.join(format!("d{d}/f{f}.txt"))).unwrap(), format!("{d}/{f}\n"));
            }
        }
    }

    #[test]
    fn a_submodule_becomes_an_empty_directory() {
        let up = Upstream::new();
        let sub = Upstream::new();
        up.git(&["-c", "protocol.file.allow=always", "submodule", "add", "-q", &sub.path_url(), "vendor/lib"]);
        up.commit("submodule");
        let (source, sha, dir) = fetched(&up);
        let dest = dir.path().join("release");
        source.materialise(&sha, ".", &dest).unwrap();
        assert!(dest.join("vendor/lib").is_dir());
        assert_eq!(fs::read_dir(dest.join("vendor/lib")).unwrap().count(), 0);
        assert!(dest.join(".gitmodules").is_file());
    }
}
