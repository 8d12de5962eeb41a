//! Bearer tokens with scopes, compared in constant time.

use crate::config::{ResolvedToken, Scope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The scopes of the token presented, if it is one of ours.
///
/// Both sides are hashed first so the comparison has a fixed length, and every configured token
/// is compared, so timing tells nothing about which one matched or how much of it.
pub fn scopes_of(tokens: &[ResolvedToken], presented: &str) -> Option<(String, Vec<Scope>)> {
    let digest = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for t in tokens {
        let theirs = Sha256::digest(t.value.as_bytes());
        if bool::from(theirs.ct_eq(&digest)) {
            found = Some((t.name.clone(), t.scopes.clone()));
        }
    }
    found
}

/// `deploy` includes `read`: a token that may change things may also look at them.
pub fn allows(scopes: &[Scope], need: Scope) -> bool {
    scopes.contains(&need) || (need == Scope::Read && scopes.contains(&Scope::Deploy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let tokens = vec![
            ResolvedToken { name: "ro".into(), value: "read-only-secret".into(), scopes: vec![Scope::Read] },
            ResolvedToken {
                name: "admin".into(),
                value: "admin-secret-123".into(),
                scopes: vec![Scope::Read, Scope::Deploy],
            },
        ];
        assert_eq!(scopes_of(&tokens, "read-only-secret"), Some(("ro".into(), vec![Scope::Read])));
        assert_eq!(scopes_of(&tokens, "admin-secret-123"), Some(("admin".into(), vec![Scope::Read, Scope::Deploy])));
        assert_eq!(scopes_of(&tokens, "admin-secret-12"), None);
        assert_eq!(scopes_of(&tokens, ""), None);
        assert!(allows(&[Scope::Deploy], Scope::Read));
        assert!(!allows(&[Scope::Read], Scope::Deploy));
    }
}
