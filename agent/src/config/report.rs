//! `report:`: where a deploy's progress goes, per app and agent-wide.

use serde::Deserialize;

/// One destination of reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ReportRaw")]
pub enum ReportConfig {
    /// `{ url: https://..., secret_env: REPORT_SECRET }`: a JSON event per step, signed with
    /// `X-Deployer-Signature: sha256=<hex hmac of the body>`.
    Webhook { url: String, secret_env: Option<String> },
    /// `{ github_status: { token_env: GH_TOKEN } }`: commit statuses on the deployed sha.
    GithubStatus(GithubStatusConfig),
}

/// `github_status: { token_env, api_url, repo, context }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubStatusConfig {
    /// The environment variable holding a token allowed to write commit statuses.
    pub token_env: String,
    /// The REST API base URL (GitHub Enterprise, or a test server).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// `owner/name`; taken from the app's `repo` URL when it is on github.com.
    #[serde(default)]
    pub repo: Option<String>,
    /// The status's name on the commit.
    #[serde(default = "default_context")]
    pub context: String,
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}
fn default_context() -> String {
    "deployer".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRaw {
    url: Option<String>,
    secret_env: Option<String>,
    github_status: Option<GithubStatusConfig>,
}

impl TryFrom<ReportRaw> for ReportConfig {
    type Error = super::ValueError;
    fn try_from(r: ReportRaw) -> Result<Self, super::ValueError> {
        use super::ValueError;
        match (r.url, r.github_status) {
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ValueError::ReportUrl(url));
                }
                Ok(ReportConfig::Webhook { url, secret_env: r.secret_env })
            }
            (None, Some(gh)) if r.secret_env.is_none() => {
                if !(gh.api_url.starts_with("http://") || gh.api_url.starts_with("https://")) {
                    return Err(ValueError::ApiUrl(gh.api_url));
                }
                Ok(ReportConfig::GithubStatus(gh))
            }
            (None, Some(_)) => Err(ValueError::ReportSecretEnv),
            (Some(_), Some(_)) => Err(ValueError::ReportBoth),
            (None, None) => Err(ValueError::ReportNone),
        }
    }
}

impl ReportConfig {
    /// The environment variable this report reads its secret from.
    pub fn secret_env(&self) -> Option<&str> {
        match self {
            ReportConfig::Webhook { secret_env, .. } => secret_env.as_deref(),
            ReportConfig::GithubStatus(gh) => Some(&gh.token_env),
        }
    }
}

/// `owner/name` of a GitHub repository URL (https, ssh or scp-like), if it is one.
pub fn github_repo_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.split_once("@github.com/").map(|(_, r)| r))?;
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    let (owner, name) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (ok(owner) && ok(name)).then(|| format!("{owner}/{name}"))
}

/// `report_retry: { first: 1s, max: 30s }`: the backoff between attempts to deliver a report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The wait after the first failed attempt; it doubles after each further one.
    pub first: super::units::Dur,
    /// The longest wait between two attempts.
    pub max: super::units::Dur,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            first: super::units::Dur(std::time::Duration::from_secs(1)),
            max: super::units::Dur(std::time::Duration::from_secs(30)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_repos_from_urls() {
        assert_eq!(github_repo_of("https://github.com/acme/web.git").as_deref(), Some("acme/web"));
        assert_eq!(github_repo_of("git@github.com:acme/web.git").as_deref(), Some("acme/web"));
        assert_eq!(github_repo_of("https://x-access-token:t@github.com/acme/web").as_deref(), Some("acme/web"));
        assert_eq!(github_repo_of("https://gitlab.com/acme/web.git"), None);
        assert_eq!(github_repo_of("/srv/git/web"), None);
    }
}
