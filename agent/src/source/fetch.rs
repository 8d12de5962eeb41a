//! Talking to the remote: fetch the branch into the cached clone, look up its head without
//! fetching (poll mode), and turn refs and shas into commits known to be on the branch.

use super::auth::Attempt;
use super::limits::{Bytes, Limit};
use super::refname::is_sha_like;
use super::{REMOTE, Source, SourceError, validate_ref};
use git2::{AutotagOption, Direction, ErrorCode, FetchOptions, FetchPrune, Oid, Repository};
use std::cell::Cell;

/// The outcome of a [`Source::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The branch head on the remote, now in the cache: 40 lowercase hex digits.
    pub sha: String,
    /// The branch head the cache had before, if it had one.
    pub previous: Option<String>,
    /// Objects downloaded by this fetch (an up-to-date cache downloads none).
    pub received_objects: usize,
    /// Bytes downloaded by this fetch.
    pub received_bytes: usize,
}

impl Fetched {
    /// Did the branch move since the last fetch?
    #[cfg(test)]
    pub fn changed(&self) -> bool {
        self.previous.as_deref() != Some(self.sha.as_str())
    }
}

impl Source {
    /// Fetch the branch, and only it (no tags, no other branches), into
    /// `refs/remotes/origin/<branch>`. Only objects the cache lacks are downloaded.
    ///
    /// A fetch over the source's `max_fetch_size` or `max_fetch_objects` stops as soon as it
    /// goes over, stores nothing, and is [`SourceError::LimitExceeded`]. A repository on this host
    /// is copied by [`Source::fetch_local`] instead of libgit2's local transport (see `local.rs`).
    pub fn fetch(&self) -> Result<Fetched, SourceError> {
        let _one_at_a_time = self.fetch_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(path) = self.local_path() {
            return self.fetch_local(&path);
        }
        let repo = self.repo()?;
        let previous = self.branch_head(&repo)?;
        let mut remote = repo.find_remote(REMOTE).map_err(|e| self.git_error(e))?;
        let attempt = Attempt::default();
        let over = Cell::new(None);
        let mut callbacks = self.callbacks(&attempt);
        // The pack's header says how many objects follow, and bytes are counted as they arrive:
        // returning `false` makes libgit2 stop reading and drop the partial pack.
        callbacks.transfer_progress(|progress| {
            let limits = &self.limits;
            if progress.total_objects() as u64 > limits.max_fetch_objects {
                over.set(Some(Limit::FetchObjects));
            } else if progress.received_bytes() as u64 > limits.max_fetch_size {
                over.set(Some(Limit::FetchSize));
            }
            over.get().is_none()
        });
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks)
            .proxy_options(self.proxy())
            .download_tags(AutotagOption::None)
            .prune(FetchPrune::Off)
            .update_fetchhead(false);
        let result = remote.fetch(&[self.refspec()], Some(&mut opts), Some("deployer: fetch"));
        if let Some(limit) = over.get() {
            let what = match limit {
                Limit::FetchObjects => format!("more than {} objects", self.limits.max_fetch_objects),
                _ => format!("more than {}", Bytes(self.limits.max_fetch_size)),
            };
            return Err(SourceError::LimitExceeded {
                limit,
                value: limit.value_in(&self.limits),
                found: format!("fetching branch `{}` from `{}` would bring {what}", self.branch, self.display_url()),
            });
        }
        result.map_err(|e| self.attempt_error(e, &attempt))?;
        let stats = remote.stats();
        let (received_objects, received_bytes) = (stats.received_objects(), stats.received_bytes());
        // The refs the remote advertised: a branch deleted upstream must not look like "unchanged".
        let wanted = format!("refs/heads/{}", self.branch);
        let advertised =
            remote.list().map_err(|e| self.fetch_error(e))?.iter().find(|h| h.name() == wanted).map(|h| h.oid());
        let Some(oid) = advertised else {
            return Err(SourceError::BranchNotFound { url: self.display_url(), branch: self.branch.clone() });
        };
        let head = self.branch_head(&repo)?;
        if head != Some(oid) {
            return Err(self.git_error(git2::Error::from_str(&format!(
                "`{}` is at {}, but the remote's branch is at {oid} after fetching",
                self.tracking_ref(),
                head.map_or("nothing".to_string(), |h| h.to_string())
            ))));
        }
        tracing::debug!(
            url = %self.display_url(),
            branch = %self.branch,
            sha = %oid,
            received_objects,
            received_bytes,
            "fetched"
        );
        Ok(Fetched {
            sha: oid.to_string(),
            previous: previous.map(|p| p.to_string()),
            received_objects,
            received_bytes,
        })
    }

    /// The head of the branch on the remote, without fetching: what `git ls-remote` shows. Poll
    /// mode calls this and fetches only when it differs from the deployed commit.
    pub fn remote_head(&self) -> Result<String, SourceError> {
        let repo = self.repo()?;
        let mut remote = repo.find_remote(REMOTE).map_err(|e| self.git_error(e))?;
        let attempt = Attempt::default();
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks(&attempt)), Some(self.proxy()))
            .map_err(|e| self.attempt_error(e, &attempt))?;
        let wanted = format!("refs/heads/{}", self.branch);
        let head =
            connection.list().map_err(|e| self.fetch_error(e))?.iter().find(|h| h.name() == wanted).map(|h| h.oid());
        head.map(|oid| oid.to_string())
            .ok_or_else(|| SourceError::BranchNotFound { url: self.display_url(), branch: self.branch.clone() })
    }

    /// A full sha for `rev`: the branch name (its head as last fetched), a full sha, or an
    /// abbreviated sha of at least 7 hex digits, of a commit in the cache. Nothing is fetched.
    pub fn resolve(&self, rev: &str) -> Result<String, SourceError> {
        validate_ref(rev)?;
        let repo = self.repo()?;
        if rev.len() == 40 && is_sha_like(rev) {
            return self.find_commit(&repo, rev).map(|oid| oid.to_string());
        }
        if rev == self.branch {
            return Ok(self.fetched_head(&repo)?.to_string());
        }
        if is_sha_like(rev) {
            return self.find_commit(&repo, rev).map(|oid| oid.to_string());
        }
        Err(SourceError::UnknownRef { rev: rev.to_string(), branch: self.branch.clone() })
    }

    /// Is commit `sha` reachable from the branch head as last fetched? A webhook may name any sha;
    /// only one on the branch may be deployed.
    pub fn branch_contains(&self, sha: &str) -> Result<bool, SourceError> {
        validate_ref(sha)?;
        let repo = self.repo()?;
        let commit = self.find_commit(&repo, sha)?;
        let head = self.fetched_head(&repo)?;
        Ok(head == commit || repo.graph_descendant_of(head, commit).map_err(|e| self.git_error(e))?)
    }

    /// [`Source::branch_contains`] as a check: [`SourceError::NotOnBranch`] when it is not.
    pub fn require_on_branch(&self, sha: &str) -> Result<(), SourceError> {
        if self.branch_contains(sha)? {
            Ok(())
        } else {
            Err(SourceError::NotOnBranch { sha: sha.to_string(), branch: self.branch.clone() })
        }
    }

    /// The fetched branch head, if the branch was ever fetched.
    pub(super) fn branch_head(&self, repo: &Repository) -> Result<Option<Oid>, SourceError> {
        match repo.refname_to_id(&self.tracking_ref()) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.git_error(e)),
        }
    }

    /// The fetched branch head; an error naming the fix if the branch was never fetched.
    fn fetched_head(&self, repo: &Repository) -> Result<Oid, SourceError> {
        self.branch_head(repo)?.ok_or_else(|| SourceError::NotFetched { branch: self.branch.clone() })
    }

    /// The commit a full or abbreviated sha names in the cache.
    pub(super) fn find_commit(&self, repo: &Repository, sha: &str) -> Result<Oid, SourceError> {
        let unknown = || SourceError::UnknownCommit { sha: sha.to_string(), branch: self.branch.clone() };
        if !is_sha_like(sha) {
            return Err(unknown());
        }
        match repo.find_commit_by_prefix(sha) {
            Ok(commit) => Ok(commit.id()),
            Err(e) if e.code() == ErrorCode::Ambiguous => Err(SourceError::AmbiguousCommit { prefix: sha.to_string() }),
            // Not found, or an object that is not a commit (a tree or a blob with that prefix).
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::NotFound | ErrorCode::InvalidSpec | ErrorCode::Invalid | ErrorCode::Peel
                ) =>
            {
                Err(unknown())
            }
            Err(e) if e.class() == git2::ErrorClass::Object => Err(unknown()),
            Err(e) => Err(self.git_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Upstream;
    use super::*;
    use std::time::Instant;

    fn open(url: &str) -> (Source, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        let source = Source::open(url, "main", None, &cache.path().join("repo.git")).unwrap();
        (source, cache)
    }

    #[test]
    fn fetches_from_a_local_path() {
        let up = Upstream::new();
        let (source, _cache) = open(&up.path_url());
        let fetched = source.fetch().unwrap();
        assert_eq!(fetched.sha, up.git(&["rev-parse", "main"]));
        assert_eq!(fetched.previous, None);
        assert!(fetched.changed());
        assert!(fetched.received_objects > 0);
    }

    #[test]
    fn fetches_from_a_file_url() {
        let up = Upstream::new();
        let (source, _cache) = open(&up.file_url());
        assert_eq!(source.fetch().unwrap().sha, up.git(&["rev-parse", "main"]));
    }

    #[test]
    fn fetches_only_the_branch_and_no_tags() {
        let up = Upstream::new();
        up.git(&["branch", "other"]);
        up.git(&["tag", "v1"]);
        let (source, _cache) = open(&up.path_url());
        source.fetch().unwrap();
        let repo = Repository::open_bare(source.cache_dir()).unwrap();
        let refs: Vec<String> = repo.references().unwrap().flatten().map(|r| r.name().unwrap().to_string()).collect();
        assert_eq!(refs, ["refs/remotes/origin/main"]);
    }

    #[test]
    fn a_second_fetch_downloads_only_the_new_commit() {
        let up = Upstream::new();
        for i in 0..50 {
            up.write(&format!("dir/file{i}.txt"), &format!("content {i}\n"));
        }
        let first = up.commit("many files");
        let (source, cache) = open(&up.path_url());
        let fetched = source.fetch().unwrap();
        assert_eq!(fetched.sha, first);
        assert!(fetched.received_objects >= 50, "{fetched:?}");

        let unchanged = source.fetch().unwrap();
        assert_eq!((unchanged.received_objects, unchanged.changed()), (0, false), "{unchanged:?}");

        up.write("dir/file1.txt", "changed\n");
        let second = up.commit("one change");
        // A new `Source` on the same directory, as after an agent restart: the cache is reused.
        let source = Source::open(&up.path_url(), "main", None, &cache.path().join("repo.git")).unwrap();
        let started = Instant::now();
        let fetched = source.fetch().unwrap();
        assert_eq!(fetched.sha, second);
        assert_eq!(fetched.previous.as_deref(), Some(first.as_str()));
        // The commit, the root tree, `dir/` and one blob.
        assert!(fetched.received_objects <= 4, "{fetched:?}");
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn a_missing_branch_or_remote_is_an_error_naming_it() {
        let up = Upstream::new();
        let cache = tempfile::tempdir().unwrap();
        let source = Source::open(&up.path_url(), "nope", None, &cache.path().join("r.git")).unwrap();
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::BranchNotFound { .. }), "{err}");
        assert!(err.to_string().starts_with("branch `nope` does not exist in `"), "{err}");

        let source = Source::open("/does/not/exist.git", "main", None, &cache.path().join("r2.git")).unwrap();
        let err = source.fetch().unwrap_err();
        assert!(matches!(err, SourceError::Fetch { .. }), "{err}");
        assert!(err.to_string().contains("there is no repository at `/does/not/exist.git`"), "{err}");
    }

    #[test]
    fn resolves_branch_full_and_short_sha() {
        let up = Upstream::new();
        let (source, _cache) = open(&up.path_url());
        assert!(matches!(source.resolve("main"), Err(SourceError::NotFetched { .. })));
        let head = source.fetch().unwrap().sha;
        assert_eq!(source.resolve("main").unwrap(), head);
        assert_eq!(source.resolve(&head).unwrap(), head);
        assert_eq!(source.resolve(&head[..7]).unwrap(), head);
        assert_eq!(source.resolve(&head[..12].to_uppercase()).unwrap(), head);

        let err = source.resolve("develop").unwrap_err();
        assert!(matches!(err, SourceError::UnknownRef { .. }), "{err}");
        assert!(err.to_string().starts_with("unknown ref `develop`"), "{err}");
        let err = source.resolve(&"0".repeat(40)).unwrap_err();
        assert!(matches!(err, SourceError::UnknownCommit { .. }), "{err}");
        assert!(matches!(source.resolve("deadbee"), Err(SourceError::UnknownCommit { .. })));
        assert!(matches!(source.resolve("a..b"), Err(SourceError::BadRef(_))));
        // The root tree's sha names an object, but not a commit.
        let tree = up.git(&["rev-parse", "main^{tree}"]);
        assert!(matches!(source.resolve(&tree), Err(SourceError::UnknownCommit { .. })));
    }

    #[test]
    fn remote_head_sees_a_new_commit_without_fetching() {
        let up = Upstream::new();
        let (source, _cache) = open(&up.file_url());
        let first = source.fetch().unwrap().sha;
        let second = up.commit("second");
        assert_eq!(source.remote_head().unwrap(), second);
        assert_eq!(source.resolve("main").unwrap(), first, "remote_head does not move the fetched branch");
        assert!(matches!(source.resolve(&second), Err(SourceError::UnknownCommit { .. })), "nor download objects");

        let cache = tempfile::tempdir().unwrap();
        let missing = Source::open(&up.file_url(), "gone", None, &cache.path().join("r.git")).unwrap();
        assert!(matches!(missing.remote_head(), Err(SourceError::BranchNotFound { .. })));
    }

    #[test]
    fn branch_contains_only_commits_reachable_from_the_head() {
        let up = Upstream::new();
        let first = up.git(&["rev-parse", "HEAD"]);
        up.git(&["checkout", "-q", "-b", "feature"]);
        let feature = up.commit("on feature only");
        up.git(&["checkout", "-q", "main"]);
        let second = up.commit("on main");
        // Merged into main: every commit so far is on it.
        up.git(&["merge", "-q", "--no-edit", "feature"]);
        let merged = up.git(&["rev-parse", "HEAD"]);
        let (source, _cache) = open(&up.path_url());
        source.fetch().unwrap();
        for sha in [&first, &second, &feature, &merged] {
            assert!(source.branch_contains(sha).unwrap(), "{sha}");
        }

        up.git(&["reset", "-q", "--hard", &second]);
        up.git(&["checkout", "-q", "-b", "side"]);
        let side = up.commit("on side only");
        up.git(&["checkout", "-q", "main"]);
        // `side` reaches the cache through a fetch of another source on the same clone.
        let cache = source.cache_dir().to_path_buf();
        Source::open(&up.path_url(), "side", None, &cache).unwrap().fetch().unwrap();
        let source = Source::open(&up.path_url(), "main", None, &cache).unwrap();
        source.fetch().unwrap();
        assert!(source.branch_contains(&second).unwrap());
        assert!(!source.branch_contains(&side).unwrap());
        assert!(!source.branch_contains(&merged).unwrap(), "main was reset before the merge");
        let err = source.require_on_branch(&side).unwrap_err();
        assert!(matches!(err, SourceError::NotOnBranch { .. }), "{err}");
        assert!(matches!(source.branch_contains(&"2".repeat(40)), Err(SourceError::UnknownCommit { .. })));
    }
}
