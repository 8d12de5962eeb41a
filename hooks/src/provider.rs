//! Which git host sent a delivery, and so how it is signed and shaped.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The header a `generic` provider reads when the config names none.
pub const DEFAULT_GENERIC_HEADER: &str = "X-Signature";

/// The git host an app's webhook comes from.
///
/// Each host signs differently, so the agent's config must say which one to expect rather
/// than us guessing from the headers: guessing would let a caller pick the weakest check.
///
/// In config it reads `github`, `gitlab`, `gitea` (or `forgejo`, which signs the same way),
/// `generic`, or `{ generic: { header: X-My-Signature } }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provider {
    /// `X-Hub-Signature-256: sha256=<hex>`, events in `X-GitHub-Event`.
    GitHub,
    /// A shared token in `X-Gitlab-Token` (GitLab does not sign the body), events in
    /// `X-Gitlab-Event`.
    GitLab,
    /// Gitea and Forgejo: `X-Gitea-Signature: <hex>` (or `X-Forgejo-Signature`), events in
    /// `X-Gitea-Event` (or `X-Forgejo-Event`).
    Gitea,
    /// Anything else that can send an HMAC-SHA256 of the body, as `<hex>` or `sha256=<hex>`,
    /// in `header`, with a GitHub-shaped JSON body. Every delivery is taken as a push.
    Generic {
        /// Name of the header carrying the signature, compared case-insensitively.
        header: String,
    },
}

impl Provider {
    /// The header this provider's signature (or token) arrives in.
    pub fn signature_header(&self) -> &str {
        match self {
            Provider::GitHub => "X-Hub-Signature-256",
            Provider::GitLab => "X-Gitlab-Token",
            Provider::Gitea => "X-Gitea-Signature",
            Provider::Generic { header } => header,
        }
    }

    /// The signature header and value this provider would send for `body`, so that the
    /// agent's tests and tools can make deliveries the way the host does.
    pub fn sign(&self, secret: &[u8], body: &[u8]) -> (&str, Vec<u8>) {
        let value = match self {
            Provider::GitHub => format!("sha256={}", crate::signature::hmac_hex(secret, body)).into_bytes(),
            Provider::GitLab => secret.to_vec(),
            Provider::Gitea | Provider::Generic { .. } => crate::signature::hmac_hex(secret, body).into_bytes(),
        };
        (self.signature_header(), value)
    }

    /// The event header and value this host sends with a push (none for generic senders,
    /// whose every delivery is a push), for the same tests and tools as [`Provider::sign`].
    pub fn push_event_header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Provider::GitHub => Some(("X-GitHub-Event", "push")),
            Provider::GitLab => Some(("X-Gitlab-Event", "Push Hook")),
            Provider::Gitea => Some(("X-Gitea-Event", "push")),
            Provider::Generic { .. } => None,
        }
    }

    /// The name used in config; `generic` alone when the header is the default.
    fn name(&self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Generic { .. } => "generic",
        }
    }
}

/// Prints the config spelling, which [`FromStr`] reads back.
impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Generic { header } => write!(f, "generic:{header}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A provider name that is not one we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseProviderError {
    /// Not one of the names.
    #[error(
        "unknown webhook provider `{0}`\n  hint: use `github`, `gitlab`, `gitea`, `forgejo`, `generic` or `generic:<Header-Name>`"
    )]
    Unknown(String),
    /// `generic:` with something that cannot be an HTTP header name.
    #[error("`{0}` is not a valid HTTP header name\n  hint: use letters, digits and `-`, like `X-Signature`")]
    BadHeader(String),
}

impl FromStr for Provider {
    type Err = ParseProviderError;

    /// Reads `github`, `gitlab`, `gitea`, `forgejo`, `generic` or `generic:<Header-Name>`,
    /// case-insensitively, so a provider fits on a command line as well as in config.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((kind, header)) = s.split_once(':') {
            if kind.trim().eq_ignore_ascii_case("generic") {
                return generic(header.trim());
            }
            return Err(ParseProviderError::Unknown(s.to_owned()));
        }
        match s.to_ascii_lowercase().as_str() {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            "gitea" | "forgejo" => Ok(Provider::Gitea),
            "generic" => generic(DEFAULT_GENERIC_HEADER),
            _ => Err(ParseProviderError::Unknown(s.to_owned())),
        }
    }
}

fn generic(header: &str) -> Result<Provider, ParseProviderError> {
    if is_header_name(header) {
        Ok(Provider::Generic { header: header.to_owned() })
    } else {
        Err(ParseProviderError::BadHeader(header.to_owned()))
    }
}

/// An RFC 9110 token: what can legally stand before the colon of a header line.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Provider::Generic { header } => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("generic", &GenericConfig { header: header.clone() })?;
                map.end()
            }
            other => serializer.serialize_str(other.name()),
        }
    }
}

/// The body of `{ generic: { header: ... } }`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericConfig {
    header: String,
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProviderVisitor)
    }
}

/// A hand-written visitor rather than `#[serde(untagged)]`, so that a typo gets our
/// message naming the valid choices instead of "data did not match any variant".
struct ProviderVisitor;

impl<'de> Visitor<'de> for ProviderVisitor {
    type Value = Provider;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`github`, `gitlab`, `gitea`, `forgejo`, `generic` or `{ generic: { header: <name> } }`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Provider, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Provider, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        if key != "generic" {
            return Err(de::Error::unknown_variant(&key, &["generic"]));
        }
        let config: GenericConfig = map.next_value()?;
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "unexpected `{extra}`: a provider is one of `github`, `gitlab`, `gitea`, `forgejo`, `generic`"
            )));
        }
        generic(config.header.trim()).map_err(de::Error::custom)
    }
}
