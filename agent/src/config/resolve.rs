//! The third step of loading a config: what the values name on this host. Relative paths become
//! absolute (from the config file's directory), files and directories the config names must
//! exist, variables it names must be set (their values stay in the environment, except the API
//! tokens), and `user:` becomes an account.

use super::{
    AgentConfig, AppConfig, AppSource, At, ConfigError, GitSource, ReportConfig, ResolvedToken, RunAs, TokenConfig,
    auth, report,
};
use std::path::{Path, PathBuf};

/// `state_dir` and the API's TLS files.
pub(super) fn agent(config: &mut AgentConfig, base: &Path, at: &At<'_>) -> Result<(), ConfigError> {
    absolute(&mut config.state_dir, base);
    if let Some(tls) = &mut config.tls {
        for (key, file) in [("cert", &mut tls.cert), ("key", &mut tls.key)] {
            absolute(file, base);
            if !file.is_file() {
                return Err(at(
                    &["tls", key],
                    format!("`tls.{key}`: no file `{}`", file.display()),
                    Some("name a PEM file, relative to this config file".into()),
                ));
            }
        }
    }
    Ok(())
}

/// App `name` on this host: its [`AppSource`], the variables its webhook and reports read, and
/// its `user`.
pub(super) fn app(
    name: &str,
    app: &mut AppConfig,
    base: &Path,
    state_dir: &Path,
    at: &At<'_>,
) -> Result<(), ConfigError> {
    app.source = source(name, app, base, state_dir, at)?;
    if let Some(hook) = &app.webhook
        && hook.secret().is_none()
    {
        return Err(at(
            &["apps", name, "webhook"],
            format!("app `{name}` reads its webhook secret from `{}`, which is not set", hook.secret_env),
            Some(format!(
                "export {}=<the secret set on the hook at the git host> before starting the agent",
                hook.secret_env
            )),
        ));
    }
    let repo = app.source.repo().map(String::from);
    for (i, r) in app.report.iter_mut().enumerate() {
        report(r, Some(repo.as_deref()), &["apps", name, "report"], i, at)?;
        if let ReportConfig::GithubStatus(gh) = r {
            gh.repo = gh.repo.take().or_else(|| repo.as_deref().and_then(report::github_repo_of));
        }
    }
    if let Some(user) = &app.user {
        app.run_as = Some(run_as(name, user, at)?);
    }
    Ok(())
}

/// `cwd` (an existing directory), or `repo` with its credentials and the app's directory.
fn source(
    name: &str,
    app: &mut AppConfig,
    base: &Path,
    state_dir: &Path,
    at: &At<'_>,
) -> Result<AppSource, ConfigError> {
    let Some(repo) = &app.repo else {
        // `validate` made sure there is one of `cwd` and `repo`.
        let mut cwd = app.cwd.clone().unwrap_or_default();
        absolute(&mut cwd, base);
        if !cwd.is_dir() {
            return Err(at(
                &["apps", name, "cwd"],
                format!("`cwd` of app `{name}` is not a directory: `{}`", cwd.display()),
                Some("paths are relative to the config file's directory".into()),
            ));
        }
        return Ok(AppSource::Dir(cwd));
    };
    // A local path is relative to the config file, like every other path here.
    let repo = if !repo.contains("://") && !repo.contains('@') && Path::new(repo.as_str()).is_relative() {
        base.join(repo.as_str()).display().to_string()
    } else {
        repo.clone()
    };
    let mut dir = app.path.clone().unwrap_or_else(|| PathBuf::from("apps").join(name));
    absolute(&mut dir, state_dir);
    let mut git = GitSource { repo, branch: app.branch.clone(), root: app.root.clone(), auth: app.auth.clone(), dir };
    if let Some(credentials) = &mut git.auth {
        auth::check(name, &git.repo, credentials, base, at)?;
    }
    Ok(AppSource::Git(git))
}

fn run_as(name: &str, user: &str, at: &At<'_>) -> Result<RunAs, ConfigError> {
    let keys = ["apps", name, "user"];
    let run_as = RunAs::resolve(user).map_err(|e| {
        at(&keys, e.to_string(), Some("name an account of this host, e.g. `user: www-data`, or a uid".into()))
    })?;
    if !run_as.can_switch() {
        return Err(at(
            &keys,
            format!("app `{name}` runs as `{}`, which needs the agent to run as root", run_as.user),
            Some("start the agent as root (it starts the workers as `user`), or remove `user:`".into()),
        ));
    }
    Ok(run_as)
}

/// A report's secret is set, and an app's GitHub status report knows its repository (`app_repo`
/// is `None` for the agent-wide list, whose statuses find the repository of each app's `repo`).
pub(super) fn report(
    r: &ReportConfig,
    app_repo: Option<Option<&str>>,
    keys: &[&str],
    i: usize,
    at: &At<'_>,
) -> Result<(), ConfigError> {
    if let Some(var) = r.secret_env().filter(|var| !std::env::var(var).is_ok_and(|v| !v.is_empty())) {
        return Err(at(
            keys,
            format!("report {} reads its secret from `{var}`, which is not set", i + 1),
            Some(format!("export {var}=<secret> before starting the agent")),
        ));
    }
    if let (ReportConfig::GithubStatus(gh), Some(repo)) = (r, app_repo)
        && gh.repo.is_none()
        && repo.and_then(report::github_repo_of).is_none()
    {
        return Err(at(
            keys,
            "`github_status` needs `repo: owner/name`: the app's `repo` is not a github.com URL".into(),
            Some("write `github_status: { token_env: GH_TOKEN, repo: acme/web }`".into()),
        ));
    }
    Ok(())
}

/// The API tokens' values, read from the variables the config names.
pub(super) fn tokens(tokens: &[TokenConfig], at: &At<'_>) -> Result<Vec<ResolvedToken>, ConfigError> {
    let mut out = Vec::new();
    for t in tokens {
        let Ok(value) = std::env::var(&t.token_env) else {
            return Err(at(
                &["tokens"],
                format!("token `{}` reads environment variable `{}`, which is not set", t.name, t.token_env),
                Some(format!("export {}=<a long random secret> before starting the agent", t.token_env)),
            ));
        };
        if value.len() < 8 {
            return Err(at(
                &["tokens"],
                format!("token `{}` (from `{}`) is shorter than 8 characters", t.name, t.token_env),
                Some("use a long random value, e.g. `openssl rand -hex 24`".into()),
            ));
        }
        out.push(ResolvedToken { name: t.name.clone(), value, scopes: t.scopes.clone() });
    }
    Ok(out)
}

fn absolute(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}
