//! The keys that start deploys without a person: `webhook:` (signed pushes from the git host) and
//! `cron:` (pull mode on a schedule; `poll:` is the interval flavour).

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// `webhook: { provider: github, secret_env: GH_WEBHOOK_SECRET }`: `POST /hooks/<app>` deploys the
/// branch when the host says it moved. The secret comes from the environment, never this file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Who signs the deliveries: `github`, `gitlab`, `gitea` (or `forgejo`), or `generic`.
    pub provider: hooks::Provider,
    /// The environment variable holding the secret set on the hook at the git host.
    pub secret_env: String,
    /// For `generic` only: the header carrying `sha256=<hex hmac of the body>` (`X-Signature`).
    #[serde(default)]
    pub header: Option<String>,
}

impl WebhookConfig {
    /// The provider with `header` applied; an error for a header on a provider that has its own.
    pub fn resolved_provider(&self) -> Result<hooks::Provider, String> {
        match (&self.provider, &self.header) {
            (p, None) => Ok(p.clone()),
            (hooks::Provider::Generic { .. }, Some(h)) => {
                format!("generic:{h}").parse::<hooks::Provider>().map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
            }
            (p, Some(_)) => Err(format!("`header` is for `provider: generic`; `{p}` always signs in `{}`", p.signature_header())),
        }
    }

    /// The secret, read now (so a SIGHUP or a restart picks up a rotated one). `None` when unset
    /// or empty: then every delivery is refused.
    pub fn secret(&self) -> Option<String> {
        std::env::var(&self.secret_env).ok().filter(|s| !s.is_empty())
    }
}

/// `cron: "*/5 * * * *"`: check the branch head at these times (five fields, or six with seconds
/// first), in UTC.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CronSchedule {
    pub text: String,
    pub cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl TryFrom<String> for CronSchedule {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let cron = croner::Cron::from_str(text.trim())
            .map_err(|e| format!("invalid `cron: {text}`: {e}; write five fields like `*/5 * * * *` (minute hour day month weekday)"))?;
        Ok(CronSchedule { text, cron })
    }
}

impl CronSchedule {
    /// How long from `now` until the next tick.
    pub fn until_next(&self, now: chrono::DateTime<chrono::Utc>) -> Option<std::time::Duration> {
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        (next - now).to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_ticks_on_its_schedule() {
        let every5: CronSchedule = "*/5 * * * *".to_string().try_into().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:03:30Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(every5.until_next(now), Some(std::time::Duration::from_secs(90)));
        let every_second: CronSchedule = "* * * * * *".to_string().try_into().unwrap();
        assert_eq!(every_second.until_next(now), Some(std::time::Duration::from_secs(1)));
        assert!(CronSchedule::try_from("every day".to_string()).unwrap_err().contains("`cron: every day`"));
    }

    #[test]
    fn header_only_for_generic() {
        let w = |p: &str, h: Option<&str>| WebhookConfig { provider: p.parse().unwrap(), secret_env: "S".into(), header: h.map(String::from) };
        assert_eq!(w("generic", Some("X-Sig")).resolved_provider().unwrap(), hooks::Provider::Generic { header: "X-Sig".into() });
        assert!(w("github", Some("X-Sig")).resolved_provider().unwrap_err().contains("X-Hub-Signature-256"));
        assert!(w("generic", Some("bad header")).resolved_provider().is_err());
    }
}
