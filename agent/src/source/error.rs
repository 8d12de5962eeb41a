//! What can go wrong with an app's git source, each message naming the value and what to do.
//!
//! URLs in messages have their userinfo (user, password, token) removed, and credentials are never
//! part of any variant: these errors end up in deploy logs and API responses.

use super::limits::Limit;
use super::refname::BadRef;
use std::path::PathBuf;

/// An error from [`Source`](super::Source). Its [`problem`](SourceError::problem) and
/// [`hint`](SourceError::hint) are two fields of an API answer; `Display` writes both, the hint
/// on a `hint:` line, for deploy logs and the agent's log.
#[derive(Debug)]
pub enum SourceError {
    /// A ref or branch name that git would refuse; nothing was looked up.
    BadRef(BadRef),

    /// The repository URL cannot be used at all.
    BadUrl { url: String, reason: &'static str },

    /// The cached clone cannot be opened or created.
    Open { path: PathBuf, message: String },

    /// Talking to the remote failed: network, credentials, or a repository that is not there.
    Fetch { url: String, branch: String, message: String, hint: &'static str },

    /// The ssh server's host key is not one the known_hosts files trust for it: nothing was sent.
    HostKey { url: String, branch: String, message: String, hint: String },

    /// The remote has no such branch.
    BranchNotFound { url: String, branch: String },

    /// The branch was never fetched into the cache, so there is no head to resolve against.
    NotFetched { branch: String },

    /// A name that is neither the fetched branch nor a commit in the cache.
    UnknownRef { rev: String, branch: String },

    /// A commit sha that is not in the cached clone, even after fetching the branch.
    UnknownCommit { sha: String, branch: String },

    /// An abbreviated sha that matches more than one object.
    AmbiguousCommit { prefix: String },

    /// A commit that exists but is not reachable from the branch head, so must not be deployed.
    NotOnBranch { sha: String, branch: String },

    /// The app's `root` is not a directory in that commit.
    RootNotFound { root: String, sha: String },

    /// The commit or the fetch is larger than one of the app's `limits`: nothing was written into
    /// a release (a fetch over a limit stores nothing either).
    LimitExceeded {
        limit: Limit,
        /// The limit's value, as the config writes it (`256`, `100M`).
        value: String,
        /// What went over it, naming the commit and the path where there is one.
        found: String,
    },

    /// The commit nests directories deeper than git itself allows (`core.maxTreeDepth`): no
    /// `limits` setting lets it through, and a git server would not even send it.
    TooDeep { sha: String, depth: usize, at: String },

    /// Writing the release tree failed.
    Materialise { path: PathBuf, message: String },

    /// A file system operation failed.
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// libgit2 failed on the cached clone itself (a damaged object, a lock left behind...).
    Git { path: PathBuf, message: String },
}

impl SourceError {
    /// What went wrong, naming the value.
    pub fn problem(&self) -> String {
        use SourceError::*;
        match self {
            BadRef(bad) => bad.problem(),
            BadUrl { url, reason } => format!("invalid repository URL `{url}`: {reason}"),
            Open { path, message } => format!("cannot open the cached clone `{}`: {message}", path.display()),
            Fetch { url, branch, message, .. } | HostKey { url, branch, message, .. } => {
                format!("cannot fetch branch `{branch}` from `{url}`: {message}")
            }
            BranchNotFound { url, branch } => format!("branch `{branch}` does not exist in `{url}`"),
            NotFetched { branch } => format!("branch `{branch}` has not been fetched into the cache yet"),
            UnknownRef { rev, branch } => format!(
                "unknown ref `{rev}`: only branch `{branch}` is fetched, and `{rev}` is neither that branch nor a commit sha in it"
            ),
            UnknownCommit { sha, branch } => format!(
                "unknown commit `{sha}`: it is not on branch `{branch}` of the repository (not even after fetching it)"
            ),
            AmbiguousCommit { prefix } => {
                format!("commit sha `{prefix}` is ambiguous: more than one object starts with it")
            }
            NotOnBranch { sha, branch } => format!("commit `{sha}` is not on branch `{branch}`"),
            RootNotFound { root, sha } => format!("`root: {root}` is not a directory in commit `{sha}`"),
            LimitExceeded { limit, value, found } => {
                format!("{found}, over the app's limit `limits.{}: {value}`", limit.key())
            }
            TooDeep { sha, depth, at } => format!(
                "commit {sha} nests directories more than {depth} deep, at `{at}`: git itself refuses such trees (`core.maxTreeDepth`)"
            ),
            Materialise { path, message } => format!("cannot write the release `{}`: {message}", path.display()),
            Io { action, path, source } => format!("{action} `{}`: {source}", path.display()),
            Git { path, message } => format!("git error in the cached clone `{}`: {message}", path.display()),
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use SourceError::*;
        let hint = match self {
            BadRef(_) => super::refname::BadRef::HINT.to_string(),
            BadUrl { .. } => "write an https or ssh URL (`https://host/org/repo.git`, `git@host:org/repo.git`), a local path or a `file://` URL".into(),
            Open { .. } => "check the directory's permissions; if it is damaged, delete it and the next deploy clones again".into(),
            Fetch { hint, .. } => (*hint).to_string(),
            HostKey { hint, .. } => hint.clone(),
            BranchNotFound { .. } => "push the branch, or set `branch:` in the app's config to one that exists".into(),
            NotFetched { .. } => "fetch the branch first".into(),
            UnknownRef { branch, .. } => {
                format!("deploy branch `{branch}` or a commit sha (at least 7 hex digits) on it")
            }
            UnknownCommit { branch, .. } => format!("push the commit to branch `{branch}` first, or check the sha"),
            AmbiguousCommit { .. } => "give more hex digits, or the full 40-digit sha".into(),
            NotOnBranch { branch, .. } => format!(
                "only commits reachable from the head of `{branch}` are deployed; merge it into `{branch}` first"
            ),
            RootNotFound { .. } => "set `root:` to the repository subdirectory that holds the app, or `.` for the whole repository".into(),
            LimitExceeded { limit, .. } => format!(
                "nothing of it was deployed; if this commit is what you mean to deploy, raise `limits.{}` in the app's config and deploy again",
                limit.key()
            ),
            TooDeep { .. } => "nothing of it was fetched, nor will any commit after it be (a git server refuses to send it too); rewrite the branch without that commit".into(),
            Git { .. } => "if this persists, delete the directory and the next deploy clones again".into(),
            Materialise { .. } | Io { .. } => return None,
        };
        Some(hint)
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem())?;
        match self.hint() {
            Some(hint) => write!(f, "\n  hint: {hint}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SourceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<BadRef> for SourceError {
    fn from(bad: BadRef) -> SourceError {
        SourceError::BadRef(bad)
    }
}

/// `url` without its secrets, for every message, log line and stored text that shows one (the
/// agent's only redaction of URLs): the userinfo of `https://user:token@host/x` (-> `https://host/x`),
/// and the password of an scp-like `user:pw@host:path` (-> `user@host:path`; the user of
/// `git@host:path` is no secret and stays). A password may hold `@`: the userinfo ends at the
/// last `@` before the path.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => format!("{scheme}://{}{path}", &authority[at + 1..]),
            None => url.to_string(),
        }
    } else {
        let before_path = &url[..url.find('/').unwrap_or(url.len())];
        match before_path.rfind('@').filter(|&at| url[..at].contains(':')) {
            Some(at) => {
                let user = url[..at].split(':').next().unwrap_or("");
                format!("{user}@{}", &url[at + 1..])
            }
            None => url.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(redact_url("https://x-access-token:s3cret@github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(redact_url("https://s3cret@github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(redact_url("https://github.com/o/r.git"), "https://github.com/o/r.git");
        assert_eq!(redact_url("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_url("ssh://git@host:22/o/r.git"), "ssh://host:22/o/r.git");
        assert_eq!(redact_url("git@github.com:o/r.git"), "git@github.com:o/r.git");
        assert_eq!(redact_url("me:pw@host:o/r.git"), "me@host:o/r.git");
        assert_eq!(redact_url("me:p@ss@host:o/r.git"), "me@host:o/r.git", "a password holding `@`");
        assert_eq!(redact_url("me:pw@host:repo.git"), "me@host:repo.git");
        assert_eq!(redact_url("git@host:o/a@b.git"), "git@host:o/a@b.git", "an `@` in the path is no userinfo");
        assert_eq!(redact_url("https://u:p@ss@host/o/r.git"), "https://host/o/r.git");
        assert_eq!(redact_url("/srv/git/app.git"), "/srv/git/app.git");
        assert_eq!(redact_url("file:///srv/git/app.git"), "file:///srv/git/app.git");
    }

    #[test]
    fn messages_name_the_value_and_the_fix() {
        let e = SourceError::NotOnBranch { sha: "abc1234".into(), branch: "main".into() };
        assert_eq!(
            e.to_string(),
            "commit `abc1234` is not on branch `main`\n  hint: only commits reachable from the head of `main` are deployed; merge it into `main` first"
        );
        assert_eq!(e.problem(), "commit `abc1234` is not on branch `main`");
        let bad = SourceError::from(crate::source::validate_ref("-x").unwrap_err());
        assert_eq!((bad.problem(), bad.hint().as_deref()), (bad.problem(), Some(BadRef::HINT)));
        assert!(!bad.problem().contains("hint"), "{bad}");
    }
}
