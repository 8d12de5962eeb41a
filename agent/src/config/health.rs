//! `health:` — active health checks: the supervisor probes each online worker of an `http` or
//! `tcp` front on its private port, so a worker that stops answering (a deadlock, a lost
//! database it cannot recover from) leaves the rotation even when no request happens to time
//! out on it.

use super::ValueError;
use super::units::Dur;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `health: { http: /healthz, interval: 5s, timeout: 2s, failures: 3 }` or `{ tcp: true }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// What one probe asks of the worker.
    pub check: HealthCheck,
    /// Time between two probes of the same worker.
    pub interval: Duration,
    /// A probe with no answer within this long failed.
    pub timeout: Duration,
    /// Failed probes in a row after which the worker is unhealthy: it leaves the rotation and is
    /// replaced through the reload path, like passive health (`front.unhealthy_after`).
    pub failures: u32,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET <path>` must answer 2xx.
    Http(String),
    /// The worker's port must accept a connection.
    Tcp,
}

impl<'de> Deserialize<'de> for HealthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked::any::<_, HealthRaw, _>(d, "a map like `{ http: /healthz, interval: 5s }` or `{ tcp: true }`")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthRaw {
    http: Option<String>,
    tcp: Option<bool>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    failures: Option<u32>,
}

impl TryFrom<HealthRaw> for HealthConfig {
    type Error = ValueError;
    fn try_from(r: HealthRaw) -> Result<Self, ValueError> {
        let check = match (r.http, r.tcp) {
            (Some(_), Some(true)) => return Err(ValueError::HealthChecks),
            (Some(path), _) => {
                if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ValueError::ProbePath(path));
                }
                HealthCheck::Http(path)
            }
            (None, Some(true)) => HealthCheck::Tcp,
            (None, _) => return Err(ValueError::HealthNoCheck),
        };
        let interval = r.interval.map_or(Duration::from_secs(5), |d| d.0);
        let timeout = r.timeout.map_or(Duration::from_secs(2), |d| d.0);
        if interval.is_zero() || timeout.is_zero() {
            return Err(ValueError::HealthZero);
        }
        let failures = r.failures.unwrap_or(3);
        if failures == 0 {
            return Err(ValueError::HealthFailures);
        }
        Ok(HealthConfig { check, interval, timeout, failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HealthConfig, String> {
        serde_yaml_ng::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_both_checks() {
        let h = parse("{ http: /healthz }").unwrap();
        assert_eq!(h.check, HealthCheck::Http("/healthz".into()));
        assert_eq!((h.interval, h.timeout, h.failures), (Duration::from_secs(5), Duration::from_secs(2), 3));
        let h = parse("{ tcp: true, interval: 1s, timeout: 300ms, failures: 2 }").unwrap();
        assert_eq!(h.check, HealthCheck::Tcp);
        assert_eq!((h.interval, h.timeout, h.failures), (Duration::from_secs(1), Duration::from_millis(300), 2));
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("{ interval: 5s }", "needs a check"),
            ("{ http: /a, tcp: true }", "one check"),
            ("{ http: healthz }", "write a path"),
            ("{ http: /a, failures: 0 }", "failures: 1"),
            ("{ http: /a, interval: 0s }", "above 0"),
            ("{ http: /a, every: 5s }", "unknown field"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
