//! Named leases: the lock `deployer push` takes on an environment so two pushes do not interleave.
//!
//! A lease lasts `ttl` unless its holder renews it; one whose holder vanished (a killed CLI, a
//! lost laptop) lapses by itself. Kept in memory: an agent restart frees every lock, which is the
//! safe direction for a lock that only keeps people from stepping on each other.

use deployer_wire::LockStatus;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The longest lease one request may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock names are 1 to 64 letters, digits, `.`, `_` or `-`, not `{0}`")]
    BadName(String),
    #[error("a lease lasts 1 ms to 1 hour, not {0} ms")]
    BadTtl(u64),
    #[error("`{name}` is held by {holder} under another lease")]
    HeldByOther { name: String, holder: String },
}

#[derive(Debug, Clone)]
struct Lease {
    holder: String,
    secret: String,
    since_ms: u64,
    expires_at_ms: u64,
}

#[derive(Debug, Default)]
pub struct Locks {
    held: Mutex<HashMap<String, Lease>>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Locks {
    /// Take `name` if it is free or lapsed, renew it if `lease` holds it; otherwise answer who does.
    pub fn acquire(
        &self,
        name: &str,
        holder: &str,
        lease: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<LockStatus, LockError> {
        if !valid_name(name) {
            return Err(LockError::BadName(name.into()));
        }
        if ttl_ms == 0 || ttl_ms > MAX_TTL.as_millis() as u64 {
            return Err(LockError::BadTtl(ttl_ms));
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let current = held.get(name).filter(|l| l.expires_at_ms > now_ms).cloned();
        let (acquired, lease) = match current {
            Some(l) if l.secret != lease => (false, l),
            Some(mut l) => {
                l.expires_at_ms = now_ms + ttl_ms;
                l.holder = holder.to_string();
                (true, l)
            }
            None => (
                true,
                Lease { holder: holder.into(), secret: lease.into(), since_ms: now_ms, expires_at_ms: now_ms + ttl_ms },
            ),
        };
        if acquired {
            held.insert(name.to_string(), lease.clone());
        }
        Ok(LockStatus {
            name: name.into(),
            acquired,
            holder: lease.holder,
            since_ms: lease.since_ms,
            expires_at_ms: lease.expires_at_ms,
        })
    }

    /// Give `name` back. Releasing a lock nobody holds (or that lapsed) is fine.
    pub fn release(&self, name: &str, lease: &str, now_ms: u64) -> Result<(), LockError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.get(name) {
            Some(l) if l.expires_at_ms > now_ms && l.secret != lease => {
                Err(LockError::HeldByOther { name: name.into(), holder: l.holder.clone() })
            }
            _ => {
                held.remove(name);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_lapses() {
        let locks = Locks::default();
        let a = locks.acquire("push-prod", "ana", "s1", 1000, 0).unwrap();
        assert!(a.acquired);
        let b = locks.acquire("push-prod", "bob", "s2", 1000, 500).unwrap();
        assert!(!b.acquired);
        assert_eq!((b.holder.as_str(), b.since_ms), ("ana", 0));
        // Renewal keeps `since` and moves the expiry.
        let renewed = locks.acquire("push-prod", "ana", "s1", 1000, 900).unwrap();
        assert!(renewed.acquired && renewed.since_ms == 0 && renewed.expires_at_ms == 1900);
        assert!(!locks.acquire("push-prod", "bob", "s2", 1000, 1800).unwrap().acquired);
        // Abandoned: lapses.
        let taken = locks.acquire("push-prod", "bob", "s2", 1000, 1901).unwrap();
        assert!(taken.acquired && taken.since_ms == 1901);
        assert!(locks.release("push-prod", "s1", 2000).is_err());
        locks.release("push-prod", "s2", 2000).unwrap();
        assert!(locks.acquire("push-prod", "ana", "s1", 1000, 2001).unwrap().acquired);
    }

    #[test]
    fn names_and_ttls_are_checked() {
        let locks = Locks::default();
        assert!(matches!(locks.acquire("../x", "a", "s", 10, 0), Err(LockError::BadName(_))));
        assert!(matches!(locks.acquire("x", "a", "s", 0, 0), Err(LockError::BadTtl(0))));
    }
}
