//! Fetching from a repository on this host (a path or a `file://` URL) by copying its objects
//! ourselves, instead of through libgit2's local transport.
//!
//! libgit2's local transport builds the pack inside the agent's own process, and its object walk
//! (`pack_objects_insert_tree`, `mark_tree_uninteresting` in `pack-objects.c`) recurses once per
//! directory level: a 30,000-level tree overflowed a blocking thread's stack and aborted the agent
//! during the fetch, before materialise even ran. It also reads every blob whole and keeps up to
//! ten of them per thread for delta search, with nothing that stops it at a size.
//!
//! Here the walk is a loop over an explicit stack; each object's header is read before the
//! object, so a file over `max_file_size` is refused before it is read, and a chain of
//! directories deeper than git's own 4096 levels once it gets there (for a repository on this host
//! both hold for every commit the fetch brings, not only the one deployed, as a git server's
//! refusal of deep trees does); objects are counted against `max_fetch_objects` as they are found
//! and the pack's bytes against `max_fetch_size` as it is written. Objects under [`PACK_BELOW`]
//! go into one pack built by libgit2's pack builder (one thread, each object inserted on its own:
//! no walk of its own), so its delta window holds small objects only; larger blobs are copied one
//! at a time as loose objects, streamed when the source has them loose. A fetch that stops
//! half-way leaves only whole blobs behind, never a tree without its content: trees arrive with
//! the pack, at the end.

use super::fetch::Fetched;
use super::limits::{Bytes, LARGE_OBJECT, Limit};
use super::tree::{MODE_GITLINK, MODE_TREE};
use super::{Source, SourceError};
use git2::{ErrorCode, ObjectType, Odb, Oid, PackBuilder, Repository};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Git's own ceiling on tree depth (`core.maxTreeDepth`, 4096 since git 2.46): a git server
/// refuses to send deeper trees, and so does the copy. The app's `max_depth` (at most 1024)
/// applies to the release, from its `root:`, when it is materialised.
const FETCH_DEPTH: usize = 4096;

/// Objects smaller than this go into the pack (and its delta search, which holds ten of them in
/// memory at once); larger ones are copied alone as loose objects.
const PACK_BELOW: u64 = 1 << 20;

/// One fetch's copy: where objects come from and go to, and what it counted so far.
struct Copy<'a> {
    source: &'a Source,
    from: Odb<'a>,
    to: Odb<'a>,
    pack: PackBuilder<'a>,
    /// Every object found new by this fetch, so a tree or blob shared by many commits or
    /// directories is walked and counted once.
    seen: HashSet<Oid>,
    /// Bytes written as loose objects (the pack's own are counted while it is written).
    loose_bytes: u64,
    /// The commit being copied, for messages.
    commit: Oid,
}

impl Source {
    /// [`Source::fetch`] for a repository at `path` on this host.
    pub(super) fn fetch_local(&self, path: &Path) -> Result<Fetched, SourceError> {
        let from = Repository::open(path).map_err(|e| self.fetch_error(e))?;
        let repo = self.repo()?;
        let previous = self.branch_head(&repo)?;
        let wanted = format!("refs/heads/{}", self.branch);
        let head = match from.refname_to_id(&wanted) {
            Ok(oid) => oid,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(SourceError::BranchNotFound { url: self.display_url(), branch: self.branch.clone() });
            }
            Err(e) => return Err(self.fetch_error(e)),
        };
        let mut fetched = Fetched {
            sha: head.to_string(),
            previous: previous.map(|p| p.to_string()),
            received_objects: 0,
            received_bytes: 0,
        };
        if previous == Some(head) {
            return Ok(fetched);
        }
        let to = repo.odb().map_err(|e| self.git_error(e))?;
        if !to.exists(head) {
            let mut copy = Copy {
                source: self,
                from: from.odb().map_err(|e| self.fetch_error(e))?,
                to,
                pack: from.packbuilder().map_err(|e| self.fetch_error(e))?,
                seen: HashSet::new(),
                loose_bytes: 0,
                commit: head,
            };
            copy.pack.set_threads(1);
            let mut walk = from.revwalk().map_err(|e| self.fetch_error(e))?;
            walk.push(head).map_err(|e| self.fetch_error(e))?;
            // What the cache has, the source need not send: hide every commit the cache's refs
            // name (a commit the source no longer has is no help and is left out).
            for reference in repo.references().map_err(|e| self.git_error(e))?.flatten() {
                if let Some(oid) = reference.target().filter(|oid| copy.from.exists(*oid)) {
                    // hiding is an optimisation: a commit the walk cannot hide is sent again, which is correct
                    let _ = walk.hide(oid);
                }
            }
            let listings = from.odb().map_err(|e| self.fetch_error(e))?;
            for commit in walk {
                let commit = commit.map_err(|e| self.fetch_error(e))?;
                if copy.to.exists(commit) {
                    continue;
                }
                copy.commit(&from, &listings, commit)?;
            }
            fetched.received_objects = copy.seen.len();
            fetched.received_bytes = usize::try_from(copy.finish()?).unwrap_or(usize::MAX);
        }
        repo.reference(&self.tracking_ref(), head, true, "deployer: fetch from a repository on this host")
            .map_err(|e| self.git_error(e))?;
        tracing::debug!(
            url = %self.display_url(),
            branch = %self.branch,
            sha = %head,
            received_objects = fetched.received_objects,
            received_bytes = fetched.received_bytes,
            "fetched by copy"
        );
        Ok(fetched)
    }
}

impl Copy<'_> {
    fn over(&self, limit: Limit, found: String) -> SourceError {
        SourceError::LimitExceeded { limit, value: limit.value_in(&self.source.limits), found }
    }

    fn err(&self, e: git2::Error) -> SourceError {
        self.source.fetch_error(e)
    }

    /// Count one more object of this fetch; `false` when it was already counted.
    fn count(&mut self, oid: Oid) -> Result<bool, SourceError> {
        if !self.seen.insert(oid) {
            return Ok(false);
        }
        let max = self.source.limits.max_fetch_objects;
        if self.seen.len() as u64 > max {
            return Err(self.over(
                Limit::FetchObjects,
                format!(
                    "fetching branch `{}` from `{}` would bring more than {max} objects",
                    self.source.branch,
                    self.source.display_url()
                ),
            ));
        }
        Ok(true)
    }

    /// The size of object `oid` from its header, refused over `max_file_size` (`what` names it).
    fn size(&self, oid: Oid, want: ObjectType, what: impl FnOnce() -> String) -> Result<u64, SourceError> {
        let (size, kind) = self.from.read_header(oid).map_err(|e| self.err(e))?;
        if kind != want {
            return Err(self.source.fetch_error(git2::Error::from_str(&format!(
                "object {oid} is a {kind} where the commit names a {want}"
            ))));
        }
        let size = size as u64;
        if size > self.source.limits.max_file_size {
            return Err(
                self.over(Limit::FileSize, format!("{} in commit {} is {}", what(), short(self.commit), Bytes(size)))
            );
        }
        Ok(size)
    }

    /// Add commit `oid`, its tree and everything under it the cache lacks. Trees are read through
    /// `listings`, a handle of their own on the source's objects, so that a listing being walked
    /// does not hold `self`.
    fn commit(&mut self, from: &Repository, listings: &Odb<'_>, oid: Oid) -> Result<(), SourceError> {
        self.commit = oid;
        self.count(oid)?;
        self.size(oid, ObjectType::Commit, || "the commit object".into())?;
        let tree = from.find_commit(oid).map_err(|e| self.err(e))?.tree_id();
        self.pack.insert_object(oid, None).map_err(|e| self.err(e))?;
        if self.to.exists(tree) || !self.count(tree)? {
            return Ok(());
        }
        // Depth first over an explicit stack: no recursion however deep the tree. `path` holds
        // the names down to the tree being listed (in a depth-first walk, the entries before it
        // at lower depths are its ancestors). A tree shared by several directories or commits is
        // walked once, at the first path found.
        let mut pending: Vec<(Oid, usize, Box<[u8]>)> = vec![(tree, 0, Box::default())];
        let mut path: Vec<Box<[u8]>> = Vec::new();
        while let Some((tree, depth, name)) = pending.pop() {
            path.truncate(depth.saturating_sub(1));
            if depth > 0 {
                path.push(name);
            }
            self.size(tree, ObjectType::Tree, || format!("a directory listing (tree {})", short(tree)))?;
            let listing = listings.read(tree).map_err(|e| self.err(e))?;
            for entry in super::tree::entries(listing.data()) {
                let entry = entry.map_err(|e| {
                    self.err(git2::Error::from_str(&format!("tree {tree} of the repository is damaged: {e}")))
                })?;
                let id = entry.id;
                match entry.mode {
                    MODE_TREE => {
                        if self.to.exists(id) || !self.count(id)? {
                            continue;
                        }
                        if depth + 1 > FETCH_DEPTH {
                            return Err(SourceError::TooDeep {
                                sha: short(self.commit),
                                depth: FETCH_DEPTH,
                                at: shown_path(&path, entry.name),
                            });
                        }
                        pending.push((id, depth + 1, entry.name.into()));
                    }
                    // A submodule's commit lives in another repository.
                    MODE_GITLINK => {}
                    _ => {
                        if self.to.exists(id) || !self.count(id)? {
                            continue;
                        }
                        let size = self.size(id, ObjectType::Blob, || {
                            format!("file `{}` (blob {})", shown_path(&path, entry.name), short(id))
                        })?;
                        if size < PACK_BELOW {
                            self.pack.insert_object(id, None).map_err(|e| self.err(e))?;
                        } else {
                            self.copy_loose(id, size)?;
                        }
                    }
                }
            }
            self.pack.insert_object(tree, None).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Copy one large blob as a loose object: streamed when the source has it loose, otherwise
    /// read whole under [`LARGE_OBJECT`].
    fn copy_loose(&mut self, oid: Oid, size: u64) -> Result<(), SourceError> {
        self.loose_bytes += size;
        self.check_bytes(0)?;
        let written = match self.from.reader(oid) {
            Ok((reader, len, kind)) => {
                let mut out = self.to.writer(len, kind).map_err(|e| self.source.git_error(e))?;
                io::copy(&mut reader.take(size), &mut out)
                    .map_err(|e| self.source.git_error(git2::Error::from_str(&e.to_string())))?;
                out.finalize().map_err(|e| self.source.git_error(e))?
            }
            Err(_) => {
                let _one_large_object = LARGE_OBJECT.lock().unwrap_or_else(|p| p.into_inner());
                let object = self.from.read(oid).map_err(|e| self.err(e))?;
                self.to.write(object.kind(), object.data()).map_err(|e| self.source.git_error(e))?
            }
        };
        if written != oid {
            return Err(self.source.git_error(git2::Error::from_str(&format!(
                "object {oid} was copied as {written}: the source's object is damaged"
            ))));
        }
        Ok(())
    }

    /// Refuse the fetch once the loose copies and `pack_bytes` add up to more than `max_fetch_size`.
    fn check_bytes(&self, pack_bytes: u64) -> Result<(), SourceError> {
        check_bytes(self.source, self.loose_bytes + pack_bytes)
    }

    /// Write the pack into the cache, stopping at `max_fetch_size`; the bytes fetched in all.
    fn finish(self) -> Result<u64, SourceError> {
        let Copy { source, to, mut pack, loose_bytes, .. } = self;
        if pack.object_count() == 0 {
            return Ok(loose_bytes);
        }
        let mut into = to.packwriter().map_err(|e| source.git_error(e))?;
        let (mut written, mut outcome) = (loose_bytes, Ok(()));
        let built = pack.foreach(|chunk| {
            written += chunk.len() as u64;
            outcome = check_bytes(source, written).and_then(|()| {
                into.write_all(chunk).map_err(|e| source.git_error(git2::Error::from_str(&e.to_string())))
            });
            outcome.is_ok()
        });
        outcome?;
        built.map_err(|e| source.fetch_error(e))?;
        into.commit().map_err(|e| source.git_error(e))?;
        Ok(written)
    }
}

/// [`SourceError::LimitExceeded`] once a fetch brought more than `max_fetch_size` bytes.
fn check_bytes(source: &Source, bytes: u64) -> Result<(), SourceError> {
    let max = source.limits.max_fetch_size;
    if bytes > max {
        return Err(SourceError::LimitExceeded {
            limit: Limit::FetchSize,
            value: Limit::FetchSize.value_in(&source.limits),
            found: format!(
                "fetching branch `{}` from `{}` would bring more than {}",
                source.branch,
                source.display_url(),
                Bytes(max)
            ),
        });
    }
    Ok(())
}

/// `names` joined by `/`, then `last`, shortened for a message like materialise's paths.
fn shown_path(names: &[Box<[u8]>], last: &[u8]) -> String {
    let path: std::path::PathBuf = names.iter().map(|n| &**n).chain([last]).map(std::ffi::OsStr::from_bytes).collect();
    super::materialise::shown(&path)
}

/// The 7-digit abbreviation git shows.
fn short(oid: Oid) -> String {
    oid.to_string()[..7].to_string()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{GitDaemon, RawRepo, Upstream};
    use super::super::{Limits, Source, SourceError};
    use super::*;

    /// Deterministic bytes that do not compress.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed * 2 + 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn cache() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// The cache holds no object and no ref after a refused fetch.
    fn nothing_stored(source: &Source) {
        assert!(matches!(source.resolve("main"), Err(SourceError::NotFetched { .. })));
        let packs = std::fs::read_dir(source.cache_dir().join("objects/pack")).unwrap().count();
        assert_eq!(packs, 0, "no pack was kept");
    }

    #[test]
    fn a_file_over_max_file_size_stops_the_fetch_before_it_is_read() {
        let raw = RawRepo::new();
        let big = raw.blob(&noise(2 << 20, 1));
        raw.commit(raw.tree(&[("100644", b"a.txt", raw.blob(b"a\n")), ("100644", b"big.bin", big)]));
        let dir = cache();
        let limits = Limits { max_file_size: 1 << 20, ..Limits::default() };
        let source = Source::open(&raw.url(), "main", None, &dir.path().join("r.git")).unwrap().with_limits(limits);
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::FileSize, .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("file `big.bin` (blob {})", &big.to_string()[..7])), "{message}");
        assert!(message.contains("is 2M, over the app's limit `limits.max_file_size: 1M`"), "{message}");
        nothing_stored(&source);
    }

    #[test]
    fn max_fetch_objects_and_max_fetch_size_stop_the_copy() {
        let up = Upstream::new();
        for i in 0..40 {
            std::fs::write(up.path().join(format!("f{i}.bin")), noise(200, i)).unwrap();
        }
        up.commit("forty files");
        let dir = cache();
        let open =
            |limits| Source::open(&up.path_url(), "main", None, &dir.path().join("r.git")).unwrap().with_limits(limits);

        let source = open(Limits { max_fetch_objects: 20, ..Limits::default() });
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::FetchObjects, .. }), "{err}");
        assert!(err.to_string().contains("would bring more than 20 objects"), "{err}");
        nothing_stored(&source);

        let source = open(Limits { max_fetch_size: 4 << 10, ..Limits::default() });
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::FetchSize, .. }), "{err}");
        assert!(err.to_string().contains("would bring more than 4K, over the app's limit `limits.max_fetch_size: 4K`"));
        nothing_stored(&source);

        let fetched = open(Limits::default()).fetch().unwrap();
        // Two commits, two root trees, README and forty files.
        assert_eq!(fetched.received_objects, 45, "{fetched:?}");
        assert!(fetched.received_bytes > 8000, "{fetched:?}");
    }

    /// The smart protocol (here `git://`, as over https or ssh): the pack's object count is known
    /// from its header and its bytes as they arrive, so the download stops at a limit and the
    /// partial pack is dropped.
    #[test]
    fn a_remote_fetch_stops_at_max_fetch_size_and_max_fetch_objects() {
        let raw = RawRepo::new();
        raw.commit(raw.tree(&[("100644", b"noise.bin", raw.blob(&noise(3 << 20, 7)))]));
        let daemon = GitDaemon::serve(raw.dir(), &[]);
        let dir = cache();
        let open = |limits| {
            Source::open(&daemon.url("repo.git"), "main", None, &dir.path().join("r.git")).unwrap().with_limits(limits)
        };

        let source = open(Limits { max_fetch_size: 1 << 20, ..Limits::default() });
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::FetchSize, .. }), "{err}");
        assert!(err.to_string().contains("would bring more than 1M"), "{err}");
        nothing_stored(&source);

        let source = open(Limits { max_fetch_objects: 2, ..Limits::default() });
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::FetchObjects, .. }), "{err}");
        nothing_stored(&source);

        let fetched = open(Limits::default()).fetch().unwrap();
        assert_eq!(fetched.received_objects, 3);
    }

    /// A server that sends a 3,000-level tree (git refuses to, unless `core.maxTreeDepth` is
    /// raised, which a hostile server would do; deeper takes git's own `pack-objects` minutes):
    /// libgit2's indexer takes it without recursion, and the release fails on `max_depth`, all
    /// on a 256 KiB stack.
    #[test]
    fn a_deep_tree_from_a_remote_is_indexed_then_refused_by_max_depth() {
        let raw = RawRepo::new();
        let leaf = raw.tree(&[("100644", b"leaf.txt", raw.blob(b"leaf\n"))]);
        let sha = raw.commit(raw.tree(&[("40000", b"deep", raw.chain(3_000, leaf))]));
        let daemon = GitDaemon::serve(raw.dir(), &["core.maxTreeDepth=100000"]);
        let (url, dir) = (daemon.url("repo.git"), cache());
        let cache_dir = dir.path().join("r.git");
        let err = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let source = Source::open(&url, "main", None, &cache_dir).unwrap();
                let fetched = source.fetch().unwrap();
                assert_eq!(fetched.sha, sha);
                source.materialise(&sha, ".", &cache_dir.with_file_name("release")).unwrap_err()
            })
            .unwrap()
            .join()
            .expect("no stack overflow, no panic");
        assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::Depth, .. }), "{err}");
    }
}
