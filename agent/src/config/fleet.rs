//! `fleet:`: this agent joins an environment on the fleet engine (NATS JetStream) instead of (or
//! as well as) being driven host by host over its API.

use super::{At, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `fleet: { nats: [urls], env: prod, host: web1, labels: {...}, credentials: {...}, tls: {...} }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The engine's URLs (`nats://10.0.0.5:4222`, `tls://...`); any one that answers will do.
    pub nats: Vec<String>,
    /// The environment this host belongs to (`prod`): `deployer push prod` deploys it.
    pub env: String,
    /// This host's name in the environment; the agent's `host`, else the machine's hostname.
    #[serde(default)]
    pub host: Option<String>,
    /// Free-form labels shown by `deployer status <env>` (`region: eu`, `role: web`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How the agent authenticates to the engine: `{ env: VAR }` (a `.creds` document or a token
    /// in that variable) or `{ file: path }` (a `.creds` file). Never the secret itself.
    #[serde(default)]
    pub credentials: Option<FleetCredentials>,
    /// `{ ca_cert: path }`: the engine's certificate must chain to this CA (TLS required).
    #[serde(default)]
    pub tls: Option<FleetTls>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "CredentialsRaw")]
pub enum FleetCredentials {
    /// The variable holding a `.creds` document or a token.
    Env(String),
    /// A `.creds` file, relative to the config file.
    File(PathBuf),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetTls {
    /// A PEM CA certificate, relative to the config file.
    pub ca_cert: PathBuf,
}

impl FleetConfig {
    /// The host name in the engine: `fleet.host`, else `host`, else the machine's hostname.
    pub fn host_name(&self, agent_host: Option<&str>) -> String {
        match (&self.host, agent_host) {
            (Some(h), _) => h.clone(),
            (None, Some(h)) => deployer_fleet::proto::host_name_of(h),
            (None, None) => deployer_fleet::proto::host_name_of(&crate::report::hostname()),
        }
    }
}

/// Names that go into bucket names, keys and subjects, files that exist, variables that are set.
pub(super) fn resolve(fleet: &mut FleetConfig, base: &Path, at: &At<'_>) -> Result<(), ConfigError> {
    let name_hint = "letters, digits, `-` and `_` only (it names buckets, keys and subjects in the engine)";
    if !deployer_fleet::proto::valid_name(&fleet.env) {
        return Err(at(
            &["fleet", "env"],
            format!("`fleet.env: {}` cannot name an environment", fleet.env),
            Some(name_hint.into()),
        ));
    }
    if let Some(host) = &fleet.host
        && !deployer_fleet::proto::valid_name(host)
    {
        return Err(at(&["fleet", "host"], format!("`fleet.host: {host}` cannot name a host"), Some(name_hint.into())));
    }
    if fleet.nats.is_empty() {
        return Err(at(
            &["fleet", "nats"],
            "`fleet.nats` names no server".into(),
            Some("write the engine's URLs, e.g. `nats: [nats://10.0.0.5:4222]`".into()),
        ));
    }
    for url in &fleet.nats {
        if url.parse::<async_nats::ServerAddr>().is_err() {
            return Err(at(
                &["fleet", "nats"],
                format!("`{url}` in `fleet.nats` is not a server URL"),
                Some("write `nats://host:4222` (or `tls://host:4222`)".into()),
            ));
        }
    }
    match &mut fleet.credentials {
        Some(FleetCredentials::Env(var)) if std::env::var_os(&*var).is_none() => {
            return Err(at(
                &["fleet", "credentials"],
                format!("`fleet.credentials` reads `{var}`, which is not set"),
                Some(format!("export {var}=<the .creds document or token> before starting the agent")),
            ));
        }
        Some(FleetCredentials::File(path)) => {
            if path.is_relative() {
                *path = base.join(&*path);
            }
            if !path.is_file() {
                return Err(at(
                    &["fleet", "credentials"],
                    format!("`fleet.credentials`: no file `{}`", path.display()),
                    Some("name a `.creds` file, relative to this config file".into()),
                ));
            }
        }
        _ => {}
    }
    if let Some(tls) = &mut fleet.tls {
        if tls.ca_cert.is_relative() {
            tls.ca_cert = base.join(&tls.ca_cert);
        }
        if !tls.ca_cert.is_file() {
            return Err(at(
                &["fleet", "tls", "ca_cert"],
                format!("`fleet.tls.ca_cert`: no file `{}`", tls.ca_cert.display()),
                Some("name a PEM CA certificate, relative to this config file".into()),
            ));
        }
    }
    Ok(())
}

/// `{ env: VAR }` or `{ file: path }` as written (YAML maps, not tags).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRaw {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<CredentialsRaw> for FleetCredentials {
    type Error = String;
    fn try_from(raw: CredentialsRaw) -> Result<Self, String> {
        match (raw.env, raw.file) {
            (Some(var), None) => Ok(FleetCredentials::Env(var)),
            (None, Some(path)) => Ok(FleetCredentials::File(path)),
            _ => Err(
                "write `credentials: { env: VARIABLE }` or `credentials: { file: path/to/user.creds }` (one of them)"
                    .into(),
            ),
        }
    }
}
