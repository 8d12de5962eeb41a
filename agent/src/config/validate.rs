//! The second step of loading a config: each app's values fit together (one source, a pull mode
//! or webhook only with a repo, a port per front, probes its front can make). Nothing is looked
//! up on this host here; that is [`super::resolve`].

use super::{AppConfig, At, ConfigError, ProxyMode, ReadyCheck, install_cache, limits, valid_app_name};
use std::collections::BTreeMap;
use std::path::{Component, Path};

/// The public ports taken so far (in file order), and the agent's own.
pub(super) struct Ports {
    listen: u16,
    taken: BTreeMap<u16, String>,
}

impl Ports {
    pub(super) fn new(listen: u16) -> Ports {
        Ports { listen, taken: BTreeMap::new() }
    }
}

/// Every check of app `name`, in the order a person reads its keys.
pub(super) fn app(name: &str, app: &AppConfig, ports: &mut Ports, at: &At<'_>) -> Result<(), ConfigError> {
    if !valid_app_name(name) {
        return Err(at(
            &["apps", name],
            format!("invalid app name `{name}`"),
            Some("use letters, digits, `-` and `_` (it names files and URL paths)".into()),
        ));
    }
    source(name, app, at)?;
    triggers(name, app, at)?;
    limits::check(name, &app.limits, at)?;
    install_cache::check(name, &app.install_cache, !app.install.0.is_empty(), at)?;
    if app.reload.max_surge == Some(0) {
        return Err(at(
            &["apps", name, "reload", "max_surge"],
            "`max_surge: 0` would never replace a worker".into(),
            Some("write `max_surge: 1` or more".into()),
        ));
    }
    front(name, app, ports, at)?;
    if app.reload.reuse_port && !(app.proxy == ProxyMode::None && app.port.is_some()) {
        return Err(at(
            &["apps", name, "reload", "reuse_port"],
            "`reuse_port` is for apps that bind their own `port` (`proxy: none`)".into(),
            Some(format!(
                "remove it: `proxy: {}` reloads start each new worker before the old one stops already",
                app.proxy.as_str()
            )),
        ));
    }
    probes(name, app, at)
}

/// `repo` or `cwd`, exactly one; a repo's `branch`, `root` and `shared` stay inside it.
fn source(name: &str, app: &AppConfig, at: &At<'_>) -> Result<(), ConfigError> {
    match (&app.cwd, &app.repo) {
        (Some(_), Some(_)) => Err(at(
            &["apps", name, "cwd"],
            format!("app `{name}` has both `cwd` and `repo`"),
            Some("an app with `repo` runs in its current release; use `root` for a subdirectory of the repo".into()),
        )),
        (None, None) => Err(at(
            &["apps", name],
            format!("app `{name}` has neither `cwd` nor `repo`"),
            Some(
                "add `repo: <git URL or path>` to deploy from git, or `cwd: <dir>` to run a directory as it is".into(),
            ),
        )),
        (Some(_), None) => Ok(()),
        (None, Some(_)) => {
            if let Err(e) = crate::source::validate_ref(&app.branch) {
                return Err(at(&["apps", name, "branch"], e.to_string(), None));
            }
            if leaves(&app.root) {
                return Err(at(
                    &["apps", name, "root"],
                    format!("`root: {}` must stay inside the repository", app.root.display()),
                    Some("write a relative path like `services/web`".into()),
                ));
            }
            match app.shared.iter().find(|p| leaves(p)) {
                Some(p) => Err(at(
                    &["apps", name, "shared"],
                    format!("shared path `{}` must stay inside the release", p.display()),
                    None,
                )),
                None => Ok(()),
            }
        }
    }
}

/// An absolute path, or one that climbs out with `..`.
fn leaves(p: &Path) -> bool {
    p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir))
}

/// Pull mode and webhooks are about git deploys; a webhook's `header` fits its provider.
fn triggers(name: &str, app: &AppConfig, at: &At<'_>) -> Result<(), ConfigError> {
    if app.repo.is_none() {
        for (key, set) in
            [("poll", app.poll.is_some()), ("cron", app.cron.is_some()), ("webhook", app.webhook.is_some())]
        {
            if set {
                return Err(at(
                    &["apps", name, key],
                    format!("app `{name}` has `{key}` but no `repo`"),
                    Some("pull mode, webhooks and reports are about git deploys: add `repo:` to the app".into()),
                ));
            }
        }
    }
    if let Some(hook) = &app.webhook {
        hook.resolved_provider().map_err(|e| at(&["apps", name, "webhook"], e.to_string(), None))?;
    }
    Ok(())
}

/// A front needs a port of its own, not the agent's.
fn front(name: &str, app: &AppConfig, ports: &mut Ports, at: &At<'_>) -> Result<(), ConfigError> {
    match (app.proxy, app.port) {
        (ProxyMode::None, _) => Ok(()),
        (mode, None) => Err(at(
            &["apps", name, "proxy"],
            format!("app `{name}` has `proxy: {}` but no `port`", mode.as_str()),
            Some("add `port: 3000` (the public port), or `proxy: none` for processes without a front".into()),
        )),
        (_, Some(port)) => {
            if let Some(other) = ports.taken.insert(port, name.to_string()) {
                return Err(at(
                    &["apps", name, "port"],
                    format!("port {port} is used by both `{other}` and `{name}`"),
                    Some("give each app its own `port`".into()),
                ));
            }
            if port == ports.listen {
                return Err(at(
                    &["apps", name, "port"],
                    format!("port {port} of app `{name}` is the agent's own `listen` port"),
                    Some("give the app another `port`, or move the agent's API with `listen: 127.0.0.1:7070`".into()),
                ));
            }
            Ok(())
        }
    }
}

/// Health and readiness probes need a private port per worker to probe.
fn probes(name: &str, app: &AppConfig, at: &At<'_>) -> Result<(), ConfigError> {
    if app.health.is_some() && !matches!(app.proxy, ProxyMode::Http | ProxyMode::Tcp) {
        return Err(at(
            &["apps", name, "health"],
            format!("`proxy: {}` workers have no private port the agent can probe one by one", app.proxy.as_str()),
            Some("remove `health`, or use `proxy: http` or `proxy: tcp`".into()),
        ));
    }
    let probe = match app.ready.check {
        ReadyCheck::Tcp => "tcp",
        ReadyCheck::Http(_) => "http",
        ReadyCheck::Notify | ReadyCheck::Message | ReadyCheck::Alive(_) => return Ok(()),
    };
    match (app.proxy, app.port) {
        (ProxyMode::Fd, _) => Err(at(
            &["apps", name, "ready", probe],
            "`proxy: fd` workers share one socket, so they cannot be probed one by one".into(),
            Some("use `ready: { notify: true }` (sd_notify) or `ready: { alive: 1s }`".into()),
        )),
        (ProxyMode::None, None) => Err(at(
            &["apps", name, "ready", probe],
            format!("app `{name}` has `proxy: none` and no `port`, so `ready: {{ {probe}: ... }}` has nothing to probe"),
            Some(
                "add `port: 3000` (handed to the workers as `PORT`), or use `ready: { notify: true }` or `ready: { alive: 1s }`"
                    .into(),
            ),
        )),
        _ => Ok(()),
    }
}
