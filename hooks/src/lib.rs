//! Inbound git webhooks: is this delivery authentic, and did the watched branch move?
//!
//! Given the headers and raw body of a `POST /hooks/{app}`, [`receive`] checks the
//! signature the host computed with the app's secret (HMAC-SHA256 for GitHub, Gitea/Forgejo
//! and generic senders, a shared token for GitLab), then reads the payload into one
//! [`PushEvent`] whatever the host, or a reason to ignore it, or a [`Rejection`].
//!
//! The crate is pure: no I/O, no async, no logging, no clock and no memory of past
//! deliveries. That keeps it cheap to build, lets it be fuzzed, and leaves every decision
//! with side effects (remembering delivery ids, fetching the branch) to the agent.
//!
//! How the agent answers:
//!
//! | result | answer |
//! | --- | --- |
//! | [`Outcome::Push`] | fetch the branch itself and deploy it: the payload's `after` is a hint, never the code to deploy |
//! | [`Outcome::Ping`] | 200 |
//! | [`Outcome::Ignored`] | 202 with `ignored: <reason>`; also for a delivery id seen before ([`IgnoreReason::DuplicateDelivery`]) |
//! | [`Rejection`] | [`Rejection::kind`]: 401 unauthorized, 413 too large, 400 malformed |
//!
//! ```
//! use hooks::{Headers, Outcome, Provider};
//!
//! let secret = b"It's a Secret to Everybody";
//! let body = br#"{"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
//!     "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "commits": []}"#;
//! let (name, signature) = Provider::GitHub.sign(secret, body);
//! let headers = Headers::new()
//!     .with(name, &signature)
//!     .with("X-GitHub-Event", b"push")
//!     .with("X-GitHub-Delivery", b"72d3162e-cc78-11e3-81ab-4c9367dc0958");
//!
//! let outcome = hooks::receive(&Provider::GitHub, secret, &headers, body, "main").unwrap();
//! let Outcome::Push(push) = outcome else { panic!("expected a push") };
//! assert_eq!(push.after.as_str(), "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod event;
mod headers;
mod outcome;
mod provider;
mod rejection;
mod signature;

pub use headers::Headers;
pub use outcome::{IgnoreReason, Outcome, ParseShaError, PushEvent, Sha};
pub use provider::{DEFAULT_GENERIC_HEADER, ParseProviderError, Provider};
pub use rejection::{PayloadError, Rejection, RejectionKind};
pub use signature::{Verified, verify};

/// The largest body accepted, 1 MiB. Push payloads are a few KiB (GitHub lists at most
/// 2048 commits, GitLab 20); anything bigger is refused before it is hashed. The agent
/// should enforce the same limit while reading the body, so it never buffers more.
pub const MAX_BODY: usize = 1024 * 1024;

/// Verifies a delivery and reads it as a push to `branch` (`main` or `refs/heads/main`).
///
/// The same as [`verify`] then [`Verified::parse`]: nothing in the body, and no header but
/// the signature's, is read before the signature has been checked.
pub fn receive(
    provider: &Provider,
    secret: &[u8],
    headers: &Headers<'_>,
    body: &[u8],
    branch: &str,
) -> Result<Outcome, Rejection> {
    verify(provider, secret, headers, body)?.parse(branch)
}
