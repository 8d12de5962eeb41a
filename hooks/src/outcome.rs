//! What a verified delivery means for the app.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::Provider;

/// The result of reading a verified delivery.
///
/// A webhook never chooses the code that gets deployed: even a [`Outcome::Push`] only tells
/// the agent "this branch moved", and the agent fetches the branch itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The watched branch moved.
    Push(PushEvent),
    /// The host is checking that the hook works (GitHub sends one when a hook is created).
    Ping {
        /// See [`PushEvent::delivery`].
        delivery: String,
    },
    /// Authentic, but nothing to deploy. The agent answers 202 with the reason, so the host
    /// shows the delivery as received and does not retry it.
    Ignored {
        /// See [`PushEvent::delivery`].
        delivery: String,
        /// Why nothing happens.
        reason: IgnoreReason,
    },
}

impl Outcome {
    /// The delivery id, for the agent's "seen before" check.
    pub fn delivery(&self) -> &str {
        match self {
            Outcome::Push(push) => &push.delivery,
            Outcome::Ping { delivery } | Outcome::Ignored { delivery, .. } => delivery,
        }
    }
}

/// A push to the watched branch, the same fields whichever host sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushEvent {
    /// Who sent it.
    pub provider: Provider,
    /// The host's id for this delivery, which stays the same when the host retries it:
    /// `X-GitHub-Delivery`, GitLab's `Idempotency-Key` or `X-Gitlab-Event-UUID`,
    /// `X-Gitea-Delivery`/`X-Forgejo-Delivery`, or `X-Delivery-Id` for generic senders.
    /// Without one it is `sha256:<hex>` of the body, as a retry resends the same body.
    ///
    /// Headers are not signed, so this id only recognises retries: someone replaying a
    /// captured body with a new id gets past it, which is harmless because a push only
    /// makes the agent fetch the branch again.
    pub delivery: String,
    /// The repository as the host names it (`owner/name`, or GitLab's `group/sub/name`), if
    /// the payload says.
    pub repo: Option<String>,
    /// The full ref, `refs/heads/<branch>`.
    pub git_ref: String,
    /// The branch, always the watched one.
    pub branch: String,
    /// Where the branch was before the push; all zeros for a new branch.
    pub before: Option<Sha>,
    /// Where the branch is now; never all zeros (that is a deletion, which is ignored).
    pub after: Sha,
    /// Who pushed, as the host's user name, if the payload says.
    pub pusher: Option<String>,
    /// How many commits the push added, as the host counts them; 0 if the payload does not
    /// say.
    pub commits: usize,
}

/// Why an authentic delivery leads to nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IgnoreReason {
    /// A tag was pushed (or deleted); apps deploy branches.
    TagPush {
        /// The tag name, without `refs/tags/`.
        tag: String,
    },
    /// The watched branch was deleted. There is nothing to deploy, and the running release
    /// stays as it is.
    BranchDeleted {
        /// The branch name.
        branch: String,
    },
    /// Another branch moved.
    OtherBranch {
        /// The branch that moved.
        branch: String,
        /// The branch this app deploys.
        watching: String,
    },
    /// A ref that is neither a branch nor a tag (`refs/notes/...`, `refs/pull/...`).
    NotABranch {
        /// The full ref.
        git_ref: String,
    },
    /// An event other than a push or ping, as named by the host's event header.
    UnsupportedEvent {
        /// The event name.
        event: String,
    },
    /// The agent has already handled this delivery id. This crate keeps no state and never
    /// returns it; the agent, which remembers ids, does, so that every ignored delivery is
    /// reported the same way.
    DuplicateDelivery {
        /// The repeated id.
        delivery: String,
    },
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::TagPush { tag } => {
                write!(f, "push of tag `{tag}`; only branch pushes deploy")
            }
            IgnoreReason::BranchDeleted { branch } => {
                write!(f, "branch `{branch}` was deleted; the running release stays")
            }
            IgnoreReason::OtherBranch { branch, watching } => {
                write!(f, "push to branch `{branch}`; this app deploys `{watching}`")
            }
            IgnoreReason::NotABranch { git_ref } => write!(f, "ref `{git_ref}` is not a branch"),
            IgnoreReason::UnsupportedEvent { event } => {
                write!(f, "event `{event}` is not a push; the hook needs only push events")
            }
            IgnoreReason::DuplicateDelivery { delivery } => {
                write!(f, "delivery `{delivery}` was already received")
            }
        }
    }
}

/// A git object id: 40 hex digits (SHA-1), or 64 for repositories using SHA-256. Kept in
/// lowercase so ids from different hosts compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sha(String);

impl Sha {
    /// The id in lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// All zeros: how hosts say "no commit", the `after` of a deletion or the `before` of a
    /// new branch.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The string is not 40 or 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a git object id: expected 40 or 64 hex digits")]
pub struct ParseShaError;

impl FromStr for Sha {
    type Err = ParseShaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha(s.to_ascii_lowercase()))
        } else {
            Err(ParseShaError)
        }
    }
}
