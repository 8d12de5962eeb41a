//! An app's git source: a bare cached clone of its repository, fetched incrementally, from which
//! each deploy's commit is written out as a clean release tree.
//!
//! Start at [`Source::open`], then [`Source::fetch`] and [`Source::materialise`]. Everything here
//! blocks (libgit2 and the file system): the pipeline calls it inside `tokio::task::spawn_blocking`.
//! A [`Source`] holds no open repository, only where it is, so it is `Send + Sync` and can sit in
//! an `Arc` shared by the pipeline and the poller.
//!
//! Invariants: only the configured branch is fetched (into `refs/remotes/origin/<branch>`); the
//! cache is never re-cloned per deploy; refs from the outside pass [`validate_ref`] first and
//! nothing reaches a shell; credentials never appear in errors or logs; each credential is offered
//! once per conversation with the remote; an ssh server is sent nothing until its host key matched
//! the operator's known_hosts files (`auth.rs`, `known_hosts.rs`); a release's large files come
//! from the app's read-only object store (`objects.rs`), never from another release.

mod auth;
mod error;
mod fetch;
mod known_hosts;
mod limits;
mod local;
mod materialise;
mod objects;
mod refname;
mod tree;

#[cfg(test)]
mod fixture;

pub use auth::{GitAuth, Transport, is_loopback, transport};
pub use error::{SourceError, redact_url};
pub use limits::Limits;
pub(crate) use objects::reflink;
pub use objects::{Objects, Sharing};
pub use refname::{BadRef, is_sha_like, validate_ref};

use git2::{ErrorClass, ErrorCode, Repository};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The remote's name in the cached clone.
const REMOTE: &str = "origin";

/// One app's repository: where it is fetched from, which branch, and the cached clone on disk.
pub struct Source {
    url: String,
    branch: String,
    auth: Option<GitAuth>,
    cache_dir: PathBuf,
    /// How much a commit or a fetch may make this source do.
    limits: Limits,
    /// Where large files are written once and linked from; None: every file is written.
    objects: Option<Objects>,
    /// Two fetches into one clone would fight over ref locks; a deploy and a poll may overlap.
    fetch_lock: Mutex<()>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.display_url())
            .field("branch", &self.branch)
            .field("auth", &self.auth)
            .field("cache_dir", &self.cache_dir)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Source {
    /// Open the bare cached clone at `cache_dir` (the app's `repo.git`), creating it if it does not
    /// exist, with remote `origin` pointing at `url` and fetching only `branch`.
    ///
    /// A changed `url` or `branch` in the config is written into the clone, which keeps its objects,
    /// so the next fetch is still incremental. Nothing is fetched here.
    pub fn open(url: &str, branch: &str, auth: Option<GitAuth>, cache_dir: &Path) -> Result<Source, SourceError> {
        configure_libgit2();
        check_url(url)?;
        validate_ref(branch)?;
        let source = Source {
            url: url.to_string(),
            branch: branch.to_string(),
            auth,
            cache_dir: cache_dir.to_path_buf(),
            limits: Limits::default(),
            objects: None,
            fetch_lock: Mutex::new(()),
        };
        // A deploy and a `check` (or a poll) may open one cache at once: one makes it and sets
        // its remote, the other then finds it so (the temporary directory has one name, so a
        // crash leaves one to clean up; git's `config.lock` would refuse the second writer).
        static OPENING: Mutex<()> = Mutex::new(());
        let _opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        let repo = source.open_or_init()?;
        source.configure_remote(&repo)?;
        Ok(source)
    }

    /// Hold fetches and materialised trees to `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Source {
        self.limits = limits;
        self
    }

    /// Take the large files of materialised trees from `objects` (see [`Objects`]).
    pub fn with_objects(mut self, objects: Objects) -> Source {
        self.objects = Some(objects);
        self
    }

    /// The repository URL without any userinfo, fit for logs and messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The bare cached clone.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The ref the branch is fetched into.
    fn tracking_ref(&self) -> String {
        format!("refs/remotes/{REMOTE}/{}", self.branch)
    }

    fn refspec(&self) -> String {
        format!("+refs/heads/{b}:refs/remotes/{REMOTE}/{b}", b = self.branch)
    }

    /// A fresh handle on the cached clone; cheap, and it keeps `Source` free of libgit2's `!Sync`.
    fn repo(&self) -> Result<Repository, SourceError> {
        Repository::open_bare(&self.cache_dir)
            .map_err(|e| SourceError::Open { path: self.cache_dir.clone(), message: e.message().to_string() })
    }

    /// Open the clone, or create it: in a sibling directory renamed into place, so that an agent
    /// killed half-way never leaves a half-initialised `repo.git` behind.
    fn open_or_init(&self) -> Result<Repository, SourceError> {
        let dir = &self.cache_dir;
        let open_err = |message: String| SourceError::Open { path: dir.clone(), message };
        if dir.exists() {
            let empty = dir.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty {
                return self.repo();
            }
            let mut opts = git2::RepositoryInitOptions::new();
            opts.bare(true);
            return Repository::init_opts(dir, &opts).map_err(|e| open_err(e.message().to_string()));
        }
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| SourceError::Io {
            action: "cannot create",
            path: parent.to_path_buf(),
            source: e,
        })?;
        let name = dir.file_name().ok_or_else(|| open_err("the path has no file name".into()))?;
        let tmp = parent.join(format!(".{}.partial", name.to_string_lossy()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| SourceError::Io {
                action: "cannot remove",
                path: tmp.clone(),
                source: e,
            })?;
        }
        let mut opts = git2::RepositoryInitOptions::new();
        opts.bare(true);
        drop(Repository::init_opts(&tmp, &opts).map_err(|e| open_err(e.message().to_string()))?);
        std::fs::rename(&tmp, dir).map_err(|e| SourceError::Io {
            action: "cannot rename into",
            path: dir.clone(),
            source: e,
        })?;
        self.repo()
    }

    /// Point `origin` at the configured URL and branch, creating it if needed.
    fn configure_remote(&self, repo: &Repository) -> Result<(), SourceError> {
        let git_err = |e: git2::Error| self.git_error(e);
        let refspec = self.refspec();
        match repo.find_remote(REMOTE) {
            Ok(remote) => {
                if remote.url_bytes() != self.url.as_bytes() {
                    repo.remote_set_url(REMOTE, &self.url).map_err(git_err)?;
                }
                let specs = remote.fetch_refspecs().map_err(git_err)?;
                if specs.len() != 1 || specs.get_bytes(0) != Some(refspec.as_bytes()) {
                    repo.config()
                        .map_err(git_err)?
                        .set_multivar("remote.origin.fetch", ".*", &refspec)
                        .map_err(git_err)?;
                    if repo.find_remote(REMOTE).map_err(git_err)?.fetch_refspecs().map_err(git_err)?.is_empty() {
                        repo.remote_add_fetch(REMOTE, &refspec).map_err(git_err)?;
                    }
                }
            }
            Err(e) if e.code() == ErrorCode::NotFound => {
                repo.remote_with_fetch(REMOTE, &self.url, &refspec).map_err(git_err)?;
            }
            Err(e) => return Err(git_err(e)),
        }
        Ok(())
    }

    /// An error while talking to the remote, with a hint matching its cause.
    fn fetch_error(&self, e: git2::Error) -> SourceError {
        let hint = match (e.code(), e.class()) {
            (ErrorCode::Auth, _) => "check the app's `auth:` (an https token, or an ssh key the remote accepts)",
            (ErrorCode::Certificate, _) | (_, ErrorClass::Ssl) => {
                "the remote's https certificate was not accepted: it must be signed by a CA of this host's trust store"
            }
            (ErrorCode::Owner, _) => {
                "the local repository belongs to another user; run the agent as its owner or fetch over a URL"
            }
            (_, ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Os) => {
                "check the URL and that this host can reach it"
            }
            _ => "check `repo:` in the app's config, the network, and the credentials",
        };
        if let Some(path) = self.local_path().filter(|p| !p.exists()) {
            return SourceError::Fetch {
                url: self.display_url(),
                branch: self.branch.clone(),
                message: format!("there is no repository at `{}`", path.display()),
                hint: "check `repo:` in the app's config; a relative path is relative to the config file",
            };
        }
        SourceError::Fetch {
            url: self.display_url(),
            branch: self.branch.clone(),
            message: self.scrub(e.message()),
            hint,
        }
    }

    /// The repository's path when the URL is a local path or a `file://` URL: every URL that
    /// libgit2 would fetch through its local transport (an existing directory is one, whatever
    /// its name looks like), so that none of them reaches it.
    fn local_path(&self) -> Option<PathBuf> {
        if let Some(path) = self.url.strip_prefix("file://") {
            return Some(PathBuf::from(percent_decoded(path)));
        }
        if Path::new(&self.url).is_dir() {
            return Some(PathBuf::from(&self.url));
        }
        let scp_like = self.url.split_once(':').is_some_and(|(host, _)| !host.contains('/'));
        (!self.url.contains("://") && !scp_like).then(|| PathBuf::from(&self.url))
    }

    /// An unexpected libgit2 error on the cached clone.
    fn git_error(&self, e: git2::Error) -> SourceError {
        SourceError::Git { path: self.cache_dir.clone(), message: self.scrub(e.message()) }
    }
}

/// Bound what libgit2 keeps in memory for the whole process. Called by [`Source::open`], the one
/// way into libgit2, so it runs (once) before any libgit2 object of the agent exists, and never
/// in an agent without git apps: initialising libgit2 initialises OpenSSL, which touches about
/// 2.5 MB of libcrypto (a third of the agent's own memory at start).
///
/// libgit2's defaults suit a desktop git client, not a small daemon: a 256 MiB object cache, and
/// pack windows of 1 GiB mapped up to 8 GiB, whose touched pages all count in the agent's RSS.
/// Trees are not cached at all: the cache weighs a tree by its raw size (~30 bytes for one entry)
/// while a parsed tree costs about a kilobyte, so listing a 30,000-level tree through libgit2's
/// `Tree` once kept ~22 MB cached under a "16 MiB" cap. (The walks now read trees' bytes
/// themselves, `tree.rs`; the `root:` lookup still goes through `Tree`.)
/// Smaller windows cost a few more `mmap` calls on large packs.
pub fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2's options are process globals without locking; this runs once, before
        // the first `Source` exists (every other caller of `Source::open` waits in `call_once`),
        // so no thread uses libgit2's caches or pack windows while they are set.
        let set = unsafe {
            git2::opts::set_cache_max_size(16 << 20)
                .and_then(|()| git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 0))
                .and_then(|()| git2::opts::set_mwindow_size(32 << 20))
                .and_then(|()| git2::opts::set_mwindow_mapped_limit(128 << 20))
        };
        if let Err(e) = set {
            tracing::warn!(error = %e, "cannot bound libgit2's caches; it keeps its defaults");
        }
    });
}

/// A `file://` URL's path with `%XX` escapes decoded, as git and libgit2 read it.
fn percent_decoded(path: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Refuse URLs that cannot be right before libgit2 sees them.
fn check_url(url: &str) -> Result<(), SourceError> {
    let bad = |reason| Err(SourceError::BadUrl { url: redact_url(url), reason });
    if url.is_empty() {
        return bad("it is empty");
    }
    if url.starts_with('-') {
        return bad("it may not start with `-`");
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return bad("it may not contain spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fixture::Upstream;
    use super::*;

    #[test]
    fn open_creates_a_bare_clone_and_reopens_it() {
        let up = Upstream::new();
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("app/repo.git");
        let source = Source::open(&up.path_url(), "main", None, &dir).unwrap();
        let repo = Repository::open_bare(&dir).unwrap();
        assert!(repo.is_bare());
        assert_eq!(repo.find_remote("origin").unwrap().url().unwrap(), up.path_url());
        assert!(!cache.path().join("app/.repo.git.partial").exists());
        drop(source);
        Source::open(&up.path_url(), "main", None, &dir).unwrap();
    }

    /// A deploy and a `check` (or a poll) open the same cache at once: before, the second
    /// removed the first's half-made `.repo.git.partial` and one of them got "not a repository".
    #[test]
    fn concurrent_opens_of_a_new_cache_all_succeed() {
        let up = Upstream::new();
        for _ in 0..20 {
            let cache = tempfile::tempdir().unwrap();
            let dir = cache.path().join("repo.git");
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (url, dir) = (up.path_url(), dir.clone());
                    std::thread::spawn(move || Source::open(&url, "main", None, &dir).map(drop))
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn open_updates_a_changed_url_and_branch() {
        let up = Upstream::new();
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("repo.git");
        Source::open("/nowhere/old.git", "old", None, &dir).unwrap();
        Source::open(&up.file_url(), "main", None, &dir).unwrap();
        let repo = Repository::open_bare(&dir).unwrap();
        let remote = repo.find_remote("origin").unwrap();
        assert_eq!(remote.url().unwrap(), up.file_url());
        let specs: Vec<String> =
            remote.fetch_refspecs().unwrap().iter().map(|s| s.unwrap().unwrap().to_string()).collect();
        assert_eq!(specs, ["+refs/heads/main:refs/remotes/origin/main"]);
    }

    #[test]
    fn open_refuses_a_bad_branch_or_url() {
        let cache = tempfile::tempdir().unwrap();
        let err = Source::open("/x", "-rf", None, &cache.path().join("r.git")).unwrap_err();
        assert!(matches!(err, SourceError::BadRef(_)), "{err}");
        let err = Source::open("--upload-pack=touch", "main", None, &cache.path().join("r.git")).unwrap_err();
        assert!(matches!(err, SourceError::BadUrl { .. }), "{err}");
    }

    #[test]
    fn open_refuses_a_directory_that_is_not_a_repository() {
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(cache.path().join("junk"), "x").unwrap();
        let err = Source::open("/x", "main", None, cache.path()).unwrap_err();
        assert!(matches!(err, SourceError::Open { .. }), "{err}");
        assert!(err.to_string().contains("hint: check the directory's permissions"), "{err}");
    }

    #[test]
    fn a_source_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Source>();
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let auth = GitAuth::Token("s3cret-token".into());
        assert_eq!(format!("{auth:?}"), "Token(***)");
        let cache = tempfile::tempdir().unwrap();
        let url = "https://user:s3cret-pw@127.0.0.1:1/o/r.git";
        let source = Source::open(url, "main", Some(auth), &cache.path().join("r.git")).unwrap();
        assert!(!format!("{source:?}").contains("s3cret-token"));
        let err = source.fetch().unwrap_err().to_string();
        assert!(err.contains("`https://127.0.0.1:1/o/r.git`"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
