//! What can go wrong with an app's git source, each message naming the value and what to do.
//!
//! URLs in messages have their userinfo (user, password, token) removed, and credentials are never
//! part of any variant: these errors end up in deploy logs and API responses.

use super::limits::Limit;
use super::refname::BadRef;
use std::path::PathBuf;

/// An error from [`Source`](super::Source).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A ref or branch name that git would refuse; nothing was looked up.
    #[error(transparent)]
    BadRef(#[from] BadRef),

    /// The repository URL cannot be used at all.
    #[error(
        "invalid repository URL `{url}`: {reason}\n  hint: write an https or ssh URL (`https://host/org/repo.git`, `git@host:org/repo.git`), a local path or a `file://` URL"
    )]
    BadUrl { url: String, reason: &'static str },

    /// The cached clone cannot be opened or created.
    #[error("cannot open the cached clone `{}`: {message}\n  hint: check the directory's permissions; if it is damaged, delete it and the next deploy clones again", path.display())]
    Open { path: PathBuf, message: String },

    /// Talking to the remote failed: network, credentials, or a repository that is not there.
    #[error("cannot fetch branch `{branch}` from `{url}`: {message}\n  hint: {hint}")]
    Fetch { url: String, branch: String, message: String, hint: &'static str },

    /// The ssh server's host key is not one the known_hosts files trust for it: nothing was sent.
    #[error("cannot fetch branch `{branch}` from `{url}`: {message}\n  hint: {hint}")]
    HostKey { url: String, branch: String, message: String, hint: String },

    /// The remote has no such branch.
    #[error(
        "branch `{branch}` does not exist in `{url}`\n  hint: push the branch, or set `branch:` in the app's config to one that exists"
    )]
    BranchNotFound { url: String, branch: String },

    /// The branch was never fetched into the cache, so there is no head to resolve against.
    #[error("branch `{branch}` has not been fetched into the cache yet\n  hint: fetch the branch first")]
    NotFetched { branch: String },

    /// A name that is neither the fetched branch nor a commit in the cache.
    #[error(
        "unknown ref `{rev}`: only branch `{branch}` is fetched, and `{rev}` is neither that branch nor a commit sha in it\n  hint: deploy branch `{branch}` or a commit sha (at least 7 hex digits) on it"
    )]
    UnknownRef { rev: String, branch: String },

    /// A commit sha that is not in the cached clone, even after fetching the branch.
    #[error(
        "unknown commit `{sha}`: it is not on branch `{branch}` of the repository (not even after fetching it)\n  hint: push the commit to branch `{branch}` first, or check the sha"
    )]
    UnknownCommit { sha: String, branch: String },

    /// An abbreviated sha that matches more than one object.
    #[error(
        "commit sha `{prefix}` is ambiguous: more than one object starts with it\n  hint: give more hex digits, or the full 40-digit sha"
    )]
    AmbiguousCommit { prefix: String },

    /// A commit that exists but is not reachable from the branch head, so must not be deployed.
    #[error(
        "commit `{sha}` is not on branch `{branch}`\n  hint: only commits reachable from the head of `{branch}` are deployed; merge it into `{branch}` first"
    )]
    NotOnBranch { sha: String, branch: String },

    /// The app's `root` is not a directory in that commit.
    #[error(
        "`root: {root}` is not a directory in commit `{sha}`\n  hint: set `root:` to the repository subdirectory that holds the app, or `.` for the whole repository"
    )]
    RootNotFound { root: String, sha: String },

    /// The commit or the fetch is larger than one of the app's `limits`: nothing was written into
    /// a release (a fetch over a limit stores nothing either).
    #[error(
        "{found}, over the app's limit `limits.{}: {value}`\n  hint: nothing of it was deployed; if this commit is what you mean to deploy, raise `limits.{}` in the app's config and deploy again",
        limit.key(),
        limit.key()
    )]
    LimitExceeded {
        limit: Limit,
        /// The limit's value, as the config writes it (`256`, `100M`).
        value: String,
        /// What went over it, naming the commit and the path where there is one.
        found: String,
    },

    /// The commit nests directories deeper than git itself allows (`core.maxTreeDepth`): no
    /// `limits` setting lets it through, and a git server would not even send it.
    #[error(
        "commit {sha} nests directories more than {depth} deep, at `{at}`: git itself refuses such trees (`core.maxTreeDepth`)\n  hint: nothing of it was fetched, nor will any commit after it be (a git server refuses to send it too); rewrite the branch without that commit"
    )]
    TooDeep { sha: String, depth: usize, at: String },

    /// Writing the release tree failed.
    #[error("cannot write the release `{}`: {message}", path.display())]
    Materialise { path: PathBuf, message: String },

    /// A file system operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// libgit2 failed on the cached clone itself (a damaged object, a lock left behind...).
    #[error("git error in the cached clone `{}`: {message}\n  hint: if this persists, delete the directory and the next deploy clones again", path.display())]
    Git { path: PathBuf, message: String },
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
    }
}
