//! Reading a verified delivery: which event it is, and for pushes, which ref moved where.
//!
//! Only `ref` and `after` decide anything, so only they are required; the other fields are
//! informational and read leniently (absent or null is fine), which keeps a host adding or
//! dropping a field from breaking deploys. A field that is present with the wrong type is
//! still an error: the body is then not the payload we think it is.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::headers::Repeated;
use crate::{Headers, IgnoreReason, Outcome, PayloadError, Provider, PushEvent, Rejection, Sha};

/// Refs longer than this are refused: git has no hard limit, but the ref ends up in the
/// agent's answer and log, and real ones are far shorter.
const MAX_REF: usize = 1024;
const MAX_EVENT: usize = 64;
const MAX_DELIVERY: usize = 128;

/// Where one host keeps the informational fields of its push payload.
struct Shape {
    /// Paths tried in order for [`PushEvent::repo`].
    repo: &'static [&'static str],
    /// Paths tried in order for [`PushEvent::pusher`].
    pusher: &'static [&'static str],
    /// A field holding the total commit count, where the `commits` array may be truncated
    /// (GitLab lists at most 20).
    total: Option<&'static str>,
    /// A field naming the payload's kind, and the values that mean a push.
    kind: Option<(&'static str, &'static [&'static str])>,
}

const GITHUB: Shape = Shape { repo: &["repository.full_name"], pusher: &["pusher.name"], total: None, kind: None };

const GITLAB: Shape = Shape {
    repo: &["project.path_with_namespace"],
    pusher: &["user_username"],
    total: Some("total_commits_count"),
    kind: Some(("object_kind", &["push", "tag_push"])),
};

/// Gitea's user objects carry both `login` and `username`; older versions only `login`.
const GITEA: Shape = Shape {
    repo: &["repository.full_name"],
    pusher: &["pusher.login", "pusher.username"],
    total: Some("total_commits"),
    kind: None,
};

/// Generic senders are asked for a GitHub-shaped body, the one most tools already emit.
const GENERIC: Shape = GITHUB;

pub(crate) fn parse(
    provider: &Provider,
    headers: &Headers<'_>,
    body: &[u8],
    branch: &str,
) -> Result<Outcome, Rejection> {
    let delivery = delivery(provider, headers, body)?;
    let shape = match provider {
        Provider::GitHub => match event(headers, &["X-GitHub-Event"])? {
            "push" => &GITHUB,
            "ping" => return Ok(Outcome::Ping { delivery }),
            other => return Ok(unsupported(delivery, other)),
        },
        // GitLab reports tag pushes as their own event; they share the push payload, and
        // the ref then says "tag".
        Provider::GitLab => match event(headers, &["X-Gitlab-Event"])? {
            "Push Hook" | "Tag Push Hook" => &GITLAB,
            other => return Ok(unsupported(delivery, other)),
        },
        Provider::Gitea => match event(headers, &["X-Gitea-Event", "X-Forgejo-Event"])? {
            "push" => &GITEA,
            other => return Ok(unsupported(delivery, other)),
        },
        Provider::Generic { .. } => &GENERIC,
    };
    push(provider, shape, delivery, body, branch).map_err(Rejection::MalformedPayload)
}

fn unsupported(delivery: String, event: &str) -> Outcome {
    Outcome::Ignored { delivery, reason: IgnoreReason::UnsupportedEvent { event: event.to_owned() } }
}

fn push(
    provider: &Provider,
    shape: &Shape,
    delivery: String,
    body: &[u8],
    branch: &str,
) -> Result<Outcome, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json { line: e.line(), column: e.column() })?;
    let Value::Object(map) = &value else {
        return Err(PayloadError::NotAnObject);
    };
    let doc = Doc(map);
    if let Some((field, allowed)) = shape.kind
        && let Some(kind) = doc.string(field)?
        && !allowed.contains(&kind)
    {
        return Err(PayloadError::Invalid { field, expected: "a push" });
    }

    let git_ref = doc.string("ref")?.ok_or(PayloadError::Missing("ref"))?;
    if git_ref.len() > MAX_REF {
        return Err(PayloadError::Invalid { field: "ref", expected: "a git ref of at most 1024 bytes" });
    }
    let ignore = |reason| Ok(Outcome::Ignored { delivery: delivery.clone(), reason });
    if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        return ignore(IgnoreReason::TagPush { tag: tag.to_owned() });
    }
    let pushed = match git_ref.strip_prefix("refs/heads/") {
        Some(name) if !name.is_empty() => name,
        _ => {
            return ignore(IgnoreReason::NotABranch { git_ref: git_ref.to_owned() });
        }
    };
    let watching = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    if pushed != watching {
        return ignore(IgnoreReason::OtherBranch { branch: pushed.to_owned(), watching: watching.to_owned() });
    }

    let after = doc.sha("after")?.ok_or(PayloadError::Missing("after"))?;
    // GitHub also says `deleted: true`; the zero `after` is what every host sends.
    if after.is_zero() || doc.bool("deleted")? == Some(true) {
        return ignore(IgnoreReason::BranchDeleted { branch: pushed.to_owned() });
    }

    let commits = match shape.total.map(|field| doc.count(field)).transpose()?.flatten() {
        Some(total) => total,
        None => doc.array_len("commits")?.unwrap_or(0),
    };
    Ok(Outcome::Push(PushEvent {
        provider: provider.clone(),
        delivery,
        repo: doc.first_string(shape.repo)?.map(str::to_owned),
        git_ref: git_ref.to_owned(),
        branch: pushed.to_owned(),
        before: doc.sha("before")?,
        after,
        pusher: doc.first_string(shape.pusher)?.map(str::to_owned),
        commits,
    }))
}

/// The event name, which must be sent once and be short printable ASCII (it is echoed in
/// the reason for ignoring it).
fn event<'h>(headers: &Headers<'h>, names: &[&'static str]) -> Result<&'h str, Rejection> {
    match headers.first_of(names) {
        Err(Repeated(header)) => Err(Rejection::MalformedHeader { header, reason: "was sent more than once" }),
        Ok(None) => Err(Rejection::MissingEvent { header: names[0] }),
        Ok(Some((header, value))) => text(header, value, MAX_EVENT, true),
    }
}

/// The host's delivery id, or a hash of the body when it sent none.
fn delivery(provider: &Provider, headers: &Headers<'_>, body: &[u8]) -> Result<String, Rejection> {
    let names: &[&'static str] = match provider {
        Provider::GitHub => &["X-GitHub-Delivery"],
        // `Idempotency-Key` (GitLab 17.4+) is the one documented to survive retries.
        Provider::GitLab => &["Idempotency-Key", "X-Gitlab-Event-UUID"],
        Provider::Gitea => &["X-Gitea-Delivery", "X-Forgejo-Delivery"],
        Provider::Generic { .. } => &["X-Delivery-Id"],
    };
    match headers.first_of(names) {
        Err(Repeated(header)) => Err(Rejection::MalformedHeader { header, reason: "was sent more than once" }),
        Ok(Some((header, value))) if !value.is_empty() => text(header, value, MAX_DELIVERY, false).map(str::to_owned),
        Ok(_) => Ok(format!("sha256:{}", hex::encode(Sha256::digest(body)))),
    }
}

/// A header value we echo back: printable ASCII only, so it cannot smuggle control
/// characters into a log line or a response.
fn text<'h>(header: &'static str, value: &'h [u8], max: usize, spaces: bool) -> Result<&'h str, Rejection> {
    let reason = if value.is_empty() {
        "is empty"
    } else if value.len() > max {
        "is too long"
    } else if !value.iter().all(|&b| b.is_ascii_graphic() || (spaces && b == b' ')) {
        "is not printable ASCII"
    } else {
        // Printable ASCII is UTF-8.
        return std::str::from_utf8(value).map_err(|_| Rejection::MalformedHeader { header, reason: "is not UTF-8" });
    };
    Err(Rejection::MalformedHeader { header, reason })
}

/// Typed, path-based access to the top-level JSON object.
struct Doc<'v>(&'v Map<String, Value>);

impl<'v> Doc<'v> {
    /// The value at a dotted path; absent, null, or under a non-object are all "not there".
    fn get(&self, path: &str) -> Option<&'v Value> {
        let mut parts = path.split('.');
        let mut value = self.0.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }

    fn string(&self, path: &'static str) -> Result<Option<&'v str>, PayloadError> {
        self.get(path)
            .map(|v| v.as_str().ok_or(PayloadError::Invalid { field: path, expected: "a string" }))
            .transpose()
    }

    fn first_string(&self, paths: &[&'static str]) -> Result<Option<&'v str>, PayloadError> {
        for &path in paths {
            if let Some(found) = self.string(path)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn bool(&self, path: &'static str) -> Result<Option<bool>, PayloadError> {
        self.get(path)
            .map(|v| v.as_bool().ok_or(PayloadError::Invalid { field: path, expected: "true or false" }))
            .transpose()
    }

    fn count(&self, path: &'static str) -> Result<Option<usize>, PayloadError> {
        self.get(path)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(PayloadError::Invalid { field: path, expected: "a non-negative integer" })
            })
            .transpose()
    }

    fn array_len(&self, path: &'static str) -> Result<Option<usize>, PayloadError> {
        self.get(path)
            .map(|v| v.as_array().map(Vec::len).ok_or(PayloadError::Invalid { field: path, expected: "an array" }))
            .transpose()
    }

    fn sha(&self, path: &'static str) -> Result<Option<Sha>, PayloadError> {
        self.string(path)?
            .map(|s| {
                s.parse().map_err(|_| PayloadError::Invalid { field: path, expected: "a 40 or 64 digit hex commit id" })
            })
            .transpose()
    }
}
