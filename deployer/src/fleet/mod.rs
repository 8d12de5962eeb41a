//! Fleets: the environments of `deployer.yaml` and the commands that act on every host of one
//! (push, status, history, rollback, reload, logs, monit).
//!
//! `file` reads the YAML, `git` asks the local repository which commit to push, `rollout` moves
//! hosts from one release to another (canaries, parallelism, halting, rolling back), `lock` keeps
//! two pushes of one environment apart, `progress` shows one line per host.

pub mod file;
pub mod git;
pub mod lock;
pub mod nats;
pub mod progress;
pub mod rollout;

use std::path::{Path, PathBuf};

use crate::client::{Client, Token, agent_label, carries_tokens};
use crate::report::Hinted;
use file::{Environment, FleetFile, Host};

/// One environment, ready to talk to: its hosts' clients and the app they run.
pub struct Fleet {
    pub name: String,
    pub env: Environment,
    pub app: String,
    pub hosts: Vec<(Host, Client)>,
    /// Where `git` resolves the ref: the current directory (deployer.yaml may live elsewhere,
    /// given with `--file`).
    pub repo_dir: PathBuf,
}

impl Fleet {
    /// Clients for every host of `name`, with the environment's token (`token_env`, else
    /// `default_token_env`). `app` (from `--app`) wins over the file's.
    pub fn open(
        file: &FleetFile,
        name: &str,
        app: Option<&str>,
        base: &Client,
        default_token_env: &str,
    ) -> anyhow::Result<Fleet> {
        let env = file.environment(name).ok_or_else(|| unknown_environment(file, name))?.clone();
        let app = app.map(str::to_owned).or_else(|| env.app.clone()).or_else(|| file.app.clone()).ok_or_else(|| {
            Hinted::new(
                format!("`{}` names no app for environment `{name}`", file.path.display()),
                "add `app: <name>` at the top of deployer.yaml, or pass --app NAME",
            )
        })?;
        let hosts = clients(file, name, &env, base, default_token_env)?;
        let repo_dir = std::env::current_dir().unwrap_or_else(|_| file_dir(file));
        Ok(Fleet { name: name.to_owned(), env, app, hosts, repo_dir })
    }
}

/// A client for every host of the environment `name`, whatever app they run (`monit` shows them
/// all), with the environment's token (`token_env`, else `default_token_env`) and `ca_cert`.
pub fn hosts(
    file: &FleetFile,
    name: &str,
    base: &Client,
    default_token_env: &str,
) -> anyhow::Result<Vec<(Host, Client)>> {
    let env = file.environment(name).ok_or_else(|| unknown_environment(file, name))?;
    clients(file, name, env, base, default_token_env)
}

fn clients(
    file: &FleetFile,
    name: &str,
    env: &Environment,
    base: &Client,
    default_token_env: &str,
) -> anyhow::Result<Vec<(Host, Client)>> {
    let token = Token::from_env(env.token_env.as_deref().unwrap_or(default_token_env));
    if token.is_set()
        && let Some(host) = env.hosts.iter().find(|h| !carries_tokens(&h.0))
    {
        return Err(Hinted::new(
            format!(
                "environment `{name}` lists `{}`, a plain http host that is not this machine: the token in `{}` \
                 would cross the network in clear text, so nothing was sent",
                agent_label(&host.0),
                token.var
            ),
            "serve the agent's API over TLS (`tls:` in its agent.yaml) and write its `https://` URL in \
             deployer.yaml, or reach it through an ssh tunnel to loopback (`ssh -N -L 7070:127.0.0.1:7070 <host>`, \
             host `http://127.0.0.1:7070`)",
        )
        .into());
    }
    let client = match &env.ca_cert {
        None => base.clone(),
        Some(ca) => {
            let path = file_dir(file).join(ca);
            let pem = std::fs::read(&path).map_err(|e| {
                Hinted::new(
                    format!("cannot read `ca_cert` `{}` of environment `{name}`: {e}", path.display()),
                    "name a PEM file, relative to deployer.yaml",
                )
            })?;
            let first = env.hosts[0].0.clone();
            Client::with_ca(first, token.clone(), &pem).map(|c| c.keep_raw_text(base.raw_text())).map_err(|e| {
                Hinted::new(
                    format!("`{}` is not a PEM certificate: {e}", path.display()),
                    "write the CA's (or the agent's self-signed) certificate in PEM form",
                )
            })?
        }
    };
    Ok(env.hosts.iter().map(|h| (h.clone(), client.for_agent(h.0.clone(), token.clone()))).collect())
}

/// The directory of deployer.yaml (`.` when it was named without one).
fn file_dir(file: &FleetFile) -> PathBuf {
    let dir = file.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir }
}

fn unknown_environment(file: &FleetFile, name: &str) -> anyhow::Error {
    Hinted::new(
        format!("`{}` has no environment `{name}`", file.path.display()),
        format!("its environments are {}", file.names()),
    )
    .into()
}

/// Where `deployer.yaml` is: `-f PATH` as given, else found from the current directory.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => FleetFile::discover(&std::env::current_dir().ok()?),
    }
}
