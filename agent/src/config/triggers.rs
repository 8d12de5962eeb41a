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

/// A `webhook:` whose keys do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The `generic` provider refused the header (its own words, first line).
    #[error("{0}")]
    Header(String),
    #[error("`header` is for `provider: generic`; `{provider}` always signs in `{signs_in}`")]
    HeaderNotGeneric { provider: String, signs_in: String },
}

impl WebhookConfig {
    /// The provider with `header` applied; an error for a header on a provider that has its own.
    pub fn resolved_provider(&self) -> Result<hooks::Provider, WebhookError> {
        match (&self.provider, &self.header) {
            (p, None) => Ok(p.clone()),
            (hooks::Provider::Generic { .. }, Some(h)) => format!("generic:{h}")
                .parse::<hooks::Provider>()
                .map_err(|e| WebhookError::Header(e.to_string().lines().next().unwrap_or_default().to_string())),
            (p, Some(_)) => Err(WebhookError::HeaderNotGeneric {
                provider: p.to_string(),
                signs_in: p.signature_header().to_string(),
            }),
        }
    }

    /// The secret, read now (so a SIGHUP or a restart picks up a rotated one). `None` when unset
    /// or empty: then every delivery is refused.
    pub fn secret(&self) -> Option<String> {
        std::env::var(&self.secret_env).ok().filter(|s| !s.is_empty())
    }
}

/// `cron: "*/5 * * * *"`: check the branch head at these times (five fields, or six with seconds
/// first), in UTC. Read as text by serde and parsed by the config checks, so that a mistake is
/// reported at the `cron` key.
#[derive(Clone)]
pub struct CronSchedule {
    pub text: String,
    pub cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A `cron:` text that is not a schedule: croner's reason, without its final period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `cron: {text}`: {reason}")]
pub struct CronError {
    pub text: String,
    pub reason: String,
}

impl FromStr for CronSchedule {
    type Err = CronError;
    fn from_str(text: &str) -> Result<Self, CronError> {
        let cron = croner::Cron::from_str(text.trim()).map_err(|e| CronError {
            text: text.to_string(),
            reason: e.to_string().trim_end_matches('.').to_string(),
        })?;
        Ok(CronSchedule { text: text.to_string(), cron })
    }
}

/// Two schedules are the same when they are written the same.
impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// When pull mode looks: `poll: 30s` or `cron: "*/5 * * * *"` (one of them: checked when the
/// config is loaded, where the cron text is parsed too).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// This often (the poller adds up to 10% jitter so a fleet does not hit the git server at once).
    Every(std::time::Duration),
    /// At each tick of the schedule (UTC).
    Cron(Box<CronSchedule>),
}

impl Schedule {
    /// The trigger name deploys it queues carry.
    pub fn trigger(&self) -> deployer_wire::Trigger {
        match self {
            Schedule::Every(_) => deployer_wire::Trigger::Poll,
            Schedule::Cron(_) => deployer_wire::Trigger::Cron,
        }
    }

    /// `poll: 30s` or `cron: "*/5 * * * *"`, to log and to tell a changed schedule.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(every) => format!("poll: {}", humantime::format_duration(*every)),
            Schedule::Cron(c) => format!("cron: \"{}\"", c.text),
        }
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
        let every5: CronSchedule = "*/5 * * * *".parse().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:03:30Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(every5.until_next(now), Some(std::time::Duration::from_secs(90)));
        let every_second: CronSchedule = "* * * * * *".parse().unwrap();
        assert_eq!(every_second.until_next(now), Some(std::time::Duration::from_secs(1)));
        assert!("every day".parse::<CronSchedule>().unwrap_err().to_string().contains("`cron: every day`"));
    }

    fn parse(yaml: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
        crate::config::parse(std::path::Path::new("/nonexistent/agent.yaml"), yaml)
    }

    const APP: &str =
        "apps:\n  web:\n    repo: https://github.com/acme/web.git\n    start: node app.js\n    proxy: none\n";

    #[test]
    fn poll_and_cron_together_is_an_error_naming_both() {
        let e = parse(&format!("{APP}    poll: 30s\n    cron: \"*/5 * * * *\"\n")).unwrap_err();
        assert_eq!((e.line, e.col), (7, 5), "{e}");
        assert!(e.message.contains("both `poll` and `cron`"), "{e}");
        let ok = parse(&format!("{APP}    cron: \"*/5 * * * *\"\n")).unwrap();
        assert_eq!(ok.config.apps["web"].cron.as_deref(), Some("*/5 * * * *"));
    }

    #[test]
    fn a_bad_cron_is_located() {
        let e = parse(&format!("{APP}    cron: \"every 5 minutes\"\n")).unwrap_err();
        assert_eq!((e.line, e.col), (6, 5), "{e}");
        assert!(e.message.contains("invalid `cron: every 5 minutes`"), "{e}");
        assert!(e.hint.as_deref().is_some_and(|h| h.contains("*/5 * * * *")), "{e}");
    }

    #[test]
    fn a_webhook_needs_its_secret_in_the_environment() {
        let e = parse(&format!("{APP}    webhook: {{ provider: github, secret_env: DEPLOYER_TEST_UNSET_SECRET }}\n"))
            .unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("`DEPLOYER_TEST_UNSET_SECRET`, which is not set"), "{e}");
        let e =
            parse(&format!("{APP}    webhook: {{ provider: gitlab, secret_env: PATH, header: X-Sig }}\n")).unwrap_err();
        assert!(e.message.contains("`header` is for `provider: generic`"), "{e}");
        let e = parse(&format!("{APP}    webhook: {{ provider: bitbucket, secret_env: PATH }}\n")).unwrap_err();
        assert!(e.message.contains("unknown webhook provider `bitbucket`"), "{e}");
        // PATH is always set: a stand-in secret.
        let ok =
            parse(&format!("{APP}    webhook: {{ provider: generic, secret_env: PATH, header: X-Sig }}\n")).unwrap();
        let hook = ok.config.apps["web"].webhook.clone().unwrap();
        assert_eq!(hook.resolved_provider().unwrap(), hooks::Provider::Generic { header: "X-Sig".into() });
    }

    #[test]
    fn reports_are_checked_and_github_repos_derived() {
        let reports = "[{ github_status: { token_env: PATH } }, { url: https://hooks.example/d, secret_env: PATH }]";
        let ok = parse(&format!("{APP}    report: {reports}\n")).unwrap();
        let reports = &ok.config.apps["web"].report;
        let crate::config::ReportConfig::GithubStatus(gh) = &reports[0] else { panic!("{reports:?}") };
        assert_eq!((gh.repo.as_deref(), gh.api_url.as_str()), (Some("acme/web"), "https://api.github.com"));
        let e = parse(&format!("{APP}    report: [{{ url: ftp://x }}]\n")).unwrap_err();
        assert!(e.message.contains("must start with `https://`"), "{e}");
        let e = parse(&format!("report: [{{ url: https://x, secret_env: DEPLOYER_TEST_UNSET_SECRET }}]\n{APP}"))
            .unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("`DEPLOYER_TEST_UNSET_SECRET`, which is not set"), "{e}");
    }

    #[test]
    fn header_only_for_generic() {
        let w = |p: &str, h: Option<&str>| WebhookConfig {
            provider: p.parse().unwrap(),
            secret_env: "S".into(),
            header: h.map(String::from),
        };
        assert_eq!(
            w("generic", Some("X-Sig")).resolved_provider().unwrap(),
            hooks::Provider::Generic { header: "X-Sig".into() }
        );
        assert!(
            w("github", Some("X-Sig")).resolved_provider().unwrap_err().to_string().contains("X-Hub-Signature-256")
        );
        assert!(w("generic", Some("bad header")).resolved_provider().is_err());
    }
}
