//! Proving a delivery came from the host that knows the app's secret.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::headers::trim_ows;
use crate::{Headers, MAX_BODY, Outcome, Provider, Rejection};

type HmacSha256 = Hmac<Sha256>;

/// Gitea signs under its own name; Forgejo sends the same signature under both names.
const GITEA_SIGNATURE: &[&str] = &["X-Gitea-Signature", "X-Forgejo-Signature"];

/// A delivery whose signature checked out. Only this type can be parsed, so the agent
/// cannot act on a body it has not verified, even by mistake.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    provider: &'a Provider,
    headers: &'a Headers<'a>,
    body: &'a [u8],
}

impl<'a> Verified<'a> {
    /// Reads the verified delivery as a push to `branch` (`main` or `refs/heads/main`), a
    /// ping, or something to ignore with a reason.
    pub fn parse(&self, branch: &str) -> Result<Outcome, Rejection> {
        crate::event::parse(self.provider, self.headers, self.body, branch)
    }

    /// The body that was verified, for a caller that wants to keep or forward it.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The provider the delivery was verified for.
    pub fn provider(&self) -> &'a Provider {
        self.provider
    }
}

/// Checks the size of `body` and that `headers` carry a valid signature of it (or GitLab's
/// token) for `secret`, before anything in the delivery is believed.
///
/// Signatures and tokens are compared in constant time, so response timing says nothing
/// about how close a forged one was.
pub fn verify<'a>(
    provider: &'a Provider,
    secret: &[u8],
    headers: &'a Headers<'a>,
    body: &'a [u8],
) -> Result<Verified<'a>, Rejection> {
    if body.len() > MAX_BODY {
        return Err(Rejection::TooLarge { len: body.len(), limit: MAX_BODY });
    }
    if secret.is_empty() {
        return Err(Rejection::NoSecret);
    }
    match provider {
        Provider::GitHub => {
            let (name, value) = signature_header(headers, &["X-Hub-Signature-256"])?;
            let Some(hex) = value.strip_prefix(b"sha256=") else {
                return Err(malformed(name, "it does not start with `sha256=`"));
            };
            check_hmac(name, hex, secret, body)?;
        }
        Provider::Gitea => {
            let (name, value) = signature_header(headers, GITEA_SIGNATURE)?;
            check_hmac(name, value, secret, body)?;
        }
        Provider::Generic { header } => {
            let (name, value) = signature_header(headers, &[header.as_str()])?;
            let hex = value.strip_prefix(b"sha256=").unwrap_or(value);
            check_hmac(name, hex, secret, body)?;
        }
        Provider::GitLab => {
            // HTTP drops spaces around a header value, so a token can never carry them:
            // drop them from our copy too rather than refuse a secret that looks right.
            let secret = trim_ows(secret);
            if secret.is_empty() {
                return Err(Rejection::NoSecret);
            }
            let (name, token) = signature_header(headers, &["X-Gitlab-Token"])?;
            // Hashing both sides first makes the comparison constant-time even when the
            // lengths differ, and hides the secret's length.
            let same = Sha256::digest(token).ct_eq(&Sha256::digest(secret));
            if !bool::from(same) {
                return Err(Rejection::BadSignature { header: name.to_owned() });
            }
        }
    }
    Ok(Verified { provider, headers, body })
}

/// The lowercase hex HMAC-SHA256 of `body` under `secret`, the signature GitHub, Gitea and
/// generic senders compute.
pub(crate) fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(keyed(secret).chain_update(body).finalize().into_bytes())
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail; the
    // `expect` documents that rather than a reachable panic.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// The first of `names` that is present and non-empty, with the name it came under.
fn signature_header<'n, 'h>(headers: &Headers<'h>, names: &[&'n str]) -> Result<(&'n str, &'h [u8]), Rejection> {
    for &name in names {
        match headers.one(name) {
            Err(_) => return Err(malformed(name, "it was sent more than once")),
            Ok(Some(value)) if !value.is_empty() => return Ok((name, value)),
            Ok(_) => {}
        }
    }
    let first = names.first().copied().unwrap_or_default();
    Err(Rejection::MissingSignature { header: first.to_owned() })
}

/// Compares the hex signature `hex` from header `name` with the HMAC of `body`.
fn check_hmac(name: &str, hex: &[u8], secret: &[u8], body: &[u8]) -> Result<(), Rejection> {
    let mut claimed = [0u8; 32];
    if hex.len() != 64 {
        return Err(malformed(name, "it is not 64 hex digits"));
    }
    if hex::decode_to_slice(hex, &mut claimed).is_err() {
        return Err(malformed(name, "it is not 64 hex digits"));
    }
    // `verify_slice` compares in constant time.
    keyed(secret)
        .chain_update(body)
        .verify_slice(&claimed)
        .map_err(|_| Rejection::BadSignature { header: name.to_owned() })
}

fn malformed(name: &str, reason: &'static str) -> Rejection {
    Rejection::MalformedSignature { header: name.to_owned(), reason }
}
