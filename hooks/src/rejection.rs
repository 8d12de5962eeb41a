//! Why a delivery was refused.
//!
//! Every message here is built from static text, header *names* and numbers, never from a
//! header value, the body or the secret: the agent sends these messages back to whoever
//! called it (possibly an attacker) and writes them to its log.

/// A delivery that the agent must refuse, with the reason.
///
/// The variant decides the HTTP answer through [`Rejection::kind`]: a caller who cannot prove
/// it knows the secret gets 401, an over-long body 413, and a signed body we cannot read 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The body is longer than the limit. Checked before the signature so that an
    /// unauthenticated caller cannot make us hash an unbounded body.
    #[error("body is {len} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Length of the body received.
        len: usize,
        /// The limit, [`crate::MAX_BODY`].
        limit: usize,
    },

    /// The app has an empty secret. Anyone can compute an HMAC with an empty key, and GitLab
    /// sends an empty token when none is set, so an empty secret would accept everything: we
    /// fail closed instead.
    #[error("no webhook secret is configured for this app, so no delivery can be trusted")]
    NoSecret,

    /// The header that carries the signature (or GitLab's token) is absent or empty.
    #[error("missing `{header}` header")]
    MissingSignature {
        /// The header that was expected.
        header: String,
    },

    /// The signature header is present but cannot be a signature: wrong prefix, not hex,
    /// wrong length, or sent twice (two signatures would leave us guessing which one counts).
    #[error("`{header}` header is not a valid signature: {reason}")]
    MalformedSignature {
        /// The header that was read.
        header: String,
        /// What is wrong with it, in words that do not quote the value.
        reason: &'static str,
    },

    /// The signature is well formed but does not match the body for our secret (or GitLab's
    /// token differs from ours).
    #[error("`{header}` does not match the body for this app's secret")]
    BadSignature {
        /// The header that was checked.
        header: String,
    },

    /// A signed delivery without the header that names its event.
    #[error("missing `{header}` header")]
    MissingEvent {
        /// The header that was expected.
        header: &'static str,
    },

    /// A signed delivery whose event or delivery-id header is unusable.
    #[error("`{header}` header {reason}")]
    MalformedHeader {
        /// The header that was read.
        header: &'static str,
        /// What is wrong with it, without quoting it.
        reason: &'static str,
    },

    /// A signed push event whose body is not the JSON we expect.
    #[error("payload is not a push event we can read: {0}")]
    MalformedPayload(#[from] PayloadError),
}

/// The three answers a rejection can lead to, so the agent maps them to status codes in one
/// place without this crate depending on an HTTP library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The caller did not prove it knows the secret: 401.
    Unauthorized,
    /// The body is over [`crate::MAX_BODY`]: 413.
    TooLarge,
    /// The delivery is authentic but unreadable: 400.
    Malformed,
}

impl Rejection {
    /// Which kind of answer this rejection calls for.
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::TooLarge { .. } => RejectionKind::TooLarge,
            Rejection::NoSecret
            | Rejection::MissingSignature { .. }
            | Rejection::MalformedSignature { .. }
            | Rejection::BadSignature { .. } => RejectionKind::Unauthorized,
            Rejection::MissingEvent { .. } | Rejection::MalformedHeader { .. } | Rejection::MalformedPayload(_) => {
                RejectionKind::Malformed
            }
        }
    }

    /// What the operator can do about it, kept apart from the message so an answer carries it in
    /// a field of its own. Static text: nothing of the delivery is quoted.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Rejection::NoSecret => {
                Some("set a non-empty `secret` in the app's webhook config and the same one at the git host")
            }
            Rejection::MissingSignature { .. } => {
                Some("set a secret on the webhook at the git host; unsigned deliveries are refused")
            }
            Rejection::BadSignature { .. } => {
                Some("check that the secret in the agent's config is the one set on the webhook")
            }
            _ => None,
        }
    }

    /// True when the delivery failed authentication (answer 401). Everything that is not
    /// unauthorized was signed correctly, so it is safe to describe in detail.
    pub fn is_unauthorized(&self) -> bool {
        self.kind() == RejectionKind::Unauthorized
    }
}

/// What is wrong with a signed body. Field names are the provider's JSON paths, written by
/// us; values from the body are never quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The body is not JSON at all (or nests deeper than serde_json allows).
    #[error("body is not valid JSON (error at line {line}, column {column})")]
    Json {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },

    /// The body is JSON but its top level is not an object.
    #[error("body is JSON but not an object")]
    NotAnObject,

    /// A field the decision depends on is absent or null.
    #[error("missing field `{0}`")]
    Missing(&'static str),

    /// A field is present with the wrong type or shape.
    #[error("field `{field}` is not {expected}")]
    Invalid {
        /// Dotted JSON path of the field.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
}
