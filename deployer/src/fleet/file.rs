//! `deployer.yaml`: the app's environments, their hosts (agent URLs), the token's source, and how
//! a push rolls out across the hosts.
//!
//! ```yaml
//! app: web
//! environments:
//!   prod:
//!     hosts: [https://web1.internal:7070, https://web2.internal:7070]
//!     token_env: DEPLOYER_PROD_TOKEN
//!     rollout: { canary: 1, max_parallel: 2, halt_on_failure: true, rollback_on_failure: true }
//! ```
//! Found in the current directory, then at the git work tree's root; `-f PATH` names another.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use deployer_diagnostic::{FileError, locate};
use reqwest::Url;
use serde::Deserialize;

/// What a `token_env` read from the file must start with: a repository's file may name only the
/// variables meant for deployer, never another secret of the CI job that runs it.
pub const TOKEN_ENV_PREFIX: &str = "DEPLOYER_";

/// The file's name, looked for in the current directory and the git root.
pub const FILE_NAME: &str = "deployer.yaml";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// The app every environment deploys, as named in the agents' configs (`--app` overrides).
    #[serde(default)]
    pub app: Option<String>,
    /// Environments by name (`prod`, `staging`).
    pub environments: BTreeMap<String, Environment>,
    /// Where the file was read from (not in the file).
    #[serde(skip)]
    pub path: PathBuf,
}

/// One environment: a set of hosts deployed together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The agents of the environment, by API URL; the first one also keeps the push lock
    /// (direct mode). Not with `nats`.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// Fleet mode: the engine's URLs (`nats://10.0.0.5:4222`) instead of `hosts`; the hosts
    /// join by themselves and carry the rollout out among themselves.
    #[serde(default)]
    pub nats: Vec<String>,
    /// Fleet mode: how the CLI authenticates to the engine, `{ env: DEPLOYER_NATS_CREDS }` (a
    /// `.creds` document or a token in that variable) or `{ file: path }` (a `.creds` file).
    #[serde(default)]
    pub credentials: Option<NatsCredentials>,
    /// The environment variable holding this environment's API token; it must start with
    /// `DEPLOYER_` [default: `--token-env`, itself `DEPLOYER_TOKEN` by default].
    #[serde(default)]
    pub token_env: Option<String>,
    /// A PEM certificate to trust for `https://` hosts (a private CA, or a self-signed agent
    /// certificate), or for the engine's TLS in fleet mode; relative to deployer.yaml.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// An app other than the file's `app`, for this environment.
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub rollout: Rollout,
}

/// How a push moves across the hosts of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// Hosts deployed first, alone; the rest start only if they all went live.
    pub canary: usize,
    /// Hosts deployed at the same time after the canaries.
    pub max_parallel: NonZeroUsize,
    /// After a host fails, start no other host (those already going finish).
    pub halt_on_failure: bool,
    /// After a host fails, put the hosts already moved back on their previous release.
    pub rollback_on_failure: bool,
    /// Fleet mode: how long a host stays live before the next ones start (`30s`).
    pub bake: Option<String>,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            canary: 0,
            max_parallel: NonZeroUsize::MIN,
            halt_on_failure: true,
            rollback_on_failure: false,
            bake: None,
        }
    }
}

/// `credentials:` of a fleet-mode environment: never the secret itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "CredentialsRaw")]
pub enum NatsCredentials {
    /// A variable holding a `.creds` document or a token; it must start with `DEPLOYER_`.
    Env(String),
    /// A `.creds` file, relative to deployer.yaml.
    File(PathBuf),
}

/// An agent's API URL, checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(pub Url);

impl Host {
    /// `web1.internal:7070`: the host as the progress lines and tables show it.
    pub fn label(&self) -> String {
        let url = &self.0;
        let mut label = url.host_str().unwrap_or("?").to_owned();
        if let Some(port) = url.port() {
            label.push_str(&format!(":{port}"));
        }
        let path = url.path().trim_end_matches('/');
        label.push_str(path);
        label
    }
}

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_host(&text).map(Host).map_err(serde::de::Error::custom)
    }
}

fn parse_host(text: &str) -> Result<Url, String> {
    if !text.contains("://") {
        return Err(format!("host `{text}` has no scheme; write `http://{text}`"));
    }
    let url = Url::parse(text).map_err(|e| format!("host `{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err(format!("host `{text}` names no host")),
        other => Err(format!("host `{text}`: the agent speaks `http` or `https`, not `{other}`")),
    }
}

impl FleetFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<FleetFile, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e, "check the path given to `-f`"))?;
        FleetFile::parse(path, &text)
    }

    /// Parses and checks `text`; errors name `path` and the line and column of the mistake.
    pub fn parse(path: &Path, text: &str) -> Result<FleetFile, FileError> {
        let mut file: FleetFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
        file.path = path.to_path_buf();
        // Names are printed on the terminal and sent in URLs: a repository's file must not smuggle
        // escape sequences in through them (nor name an app no agent could have).
        if let Some(app) = file.app.as_deref().filter(|a| !valid_app_name(a)) {
            let (line, col) = locate::key(text, &["app"]).unwrap_or((0, 0));
            return Err(bad_app_name(path, line, col, app));
        }
        if let Some(name) = file.environments.keys().find(|n| n.is_empty() || n.chars().any(char::is_control)) {
            let (line, col) = locate::key(text, &["environments"]).unwrap_or((0, 0));
            return Err(FileError::at(
                path,
                line,
                col,
                format!("an environment's name `{}` is empty or holds control characters", name.escape_debug()),
                Some("name environments with letters, digits, `-`, `_` or `.`, like `prod`".into()),
            ));
        }
        for (name, env) in &file.environments {
            if let Some(app) = env.app.as_deref().filter(|a| !valid_app_name(a)) {
                let (line, col) = locate::key(text, &["environments", name, "app"]).unwrap_or((0, 0));
                return Err(bad_app_name(path, line, col, app));
            }
            // At the key, else at its environment; `(0, 0)` (no place) when neither is written.
            let at = |key: &str| {
                locate::key(text, &["environments", name, key])
                    .or_else(|| locate::key(text, &["environments", name]))
                    .unwrap_or((0, 0))
            };
            if !env.nats.is_empty() && !env.hosts.is_empty() {
                let (line, col) = at("nats");
                return Err(FileError::at(
                    path,
                    line,
                    col,
                    format!("environment `{name}` has both `hosts` and `nats`"),
                    Some("keep `hosts:` (direct mode: the CLI drives each agent) or `nats:` (fleet mode: the agents join the engine), not both".into()),
                ));
            }
            if !env.nats.is_empty() {
                if !deployer_fleet::proto::valid_name(name) {
                    let (line, col) = at("nats");
                    return Err(FileError::at(
                        path,
                        line,
                        col,
                        format!("environment `{name}` cannot be a fleet-mode environment's name"),
                        Some("name it with letters, digits, `-` and `_` only: it names buckets and subjects in the engine".into()),
                    ));
                }
                if let Some(NatsCredentials::Env(var)) = &env.credentials
                    && !var.starts_with(TOKEN_ENV_PREFIX)
                {
                    let (line, col) = at("credentials");
                    return Err(FileError::at(
                        path,
                        line,
                        col,
                        format!(
                            "environment `{name}`: `credentials.env` names a variable that does not start with `{TOKEN_ENV_PREFIX}`"
                        ),
                        Some(format!(
                            "rename the variable, like `{TOKEN_ENV_PREFIX}NATS_CREDS`: deployer.yaml comes with the repository, so it may only name the variables meant for deployer"
                        )),
                    ));
                }
                if let Some(bake) = &env.rollout.bake
                    && humantime::parse_duration(bake).is_err()
                {
                    let (line, col) =
                        locate::key(text, &["environments", name, "rollout", "bake"]).unwrap_or_else(|| at("rollout"));
                    return Err(FileError::at(
                        path,
                        line,
                        col,
                        format!("`bake: {bake}` is not a duration"),
                        Some("write it like `30s` or `2m`".into()),
                    ));
                }
                continue;
            }
            if env.hosts.is_empty() {
                let (line, col) = at("hosts");
                return Err(FileError::at(
                    path,
                    line,
                    col,
                    format!("environment `{name}` has no hosts"),
                    Some("write `hosts: [http://127.0.0.1:7070]`, one agent URL per host, or `nats: [nats://127.0.0.1:4222]` for fleet mode".into()),
                ));
            }
            if env.rollout.canary >= env.hosts.len() && env.rollout.canary > 0 {
                let (line, col) =
                    locate::key(text, &["environments", name, "rollout", "canary"]).unwrap_or_else(|| at("rollout"));
                return Err(FileError::at(
                    path,
                    line,
                    col,
                    format!(
                        "environment `{name}` has {} hosts, so `canary: {}` leaves none for the rollout",
                        env.hosts.len(),
                        env.rollout.canary
                    ),
                    Some(format!("write `canary: {}` or fewer", env.hosts.len().saturating_sub(1))),
                ));
            }
            // The value is not echoed: it may be a token pasted in by mistake.
            if env
                .token_env
                .as_ref()
                .is_some_and(|v| v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                let (line, col) = at("token_env");
                let problem = format!("environment `{name}`: `token_env` is not an environment variable name");
                let hint = "write the variable's name (letters, digits, `_`), like `token_env: DEPLOYER_PROD_TOKEN`, \
                            never the token";
                return Err(FileError::at(path, line, col, problem, Some(hint.into())));
            }
            // The file comes with the repository, which a pull request changes: it must not pick
            // which of CI's secrets is sent, and to whom. The name is not echoed either.
            if env.token_env.as_ref().is_some_and(|v| !v.starts_with(TOKEN_ENV_PREFIX)) {
                let (line, col) = at("token_env");
                return Err(FileError::at(
                    path,
                    line,
                    col,
                    format!(
                        "environment `{name}`: `token_env` names a variable that does not start with \
                         `{TOKEN_ENV_PREFIX}`; deployer.yaml comes with the repository, so it may only name the \
                         variables meant for deployer"
                    ),
                    Some(format!(
                        "rename the variable, like `token_env: {TOKEN_ENV_PREFIX}PROD_TOKEN`, or remove `token_env` \
                         here and pass `--token-env NAME` on the command line, which may name any variable"
                    )),
                ));
            }
        }
        Ok(file)
    }

    /// `deployer.yaml` in `dir`, else at the root of the git work tree `dir` is in.
    pub fn discover(dir: &Path) -> Option<PathBuf> {
        let here = dir.join(FILE_NAME);
        if here.is_file() {
            return Some(here);
        }
        let root = super::git::work_tree_root(dir)?;
        let there = root.join(FILE_NAME);
        there.is_file().then_some(there)
    }

    /// The environment `name`, or an error listing the ones there are.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// The names of the environments, for error hints.
    pub fn names(&self) -> String {
        self.environments.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The agents' rule for app names (they name files and URL paths there).
fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn bad_app_name(path: &Path, line: usize, col: usize, app: &str) -> FileError {
    FileError::at(
        path,
        line,
        col,
        format!("invalid app name `{}`", app.escape_debug()),
        Some("write the app's name as the agents' configs have it: letters, digits, `-` and `_`".into()),
    )
}

/// serde's error, located, with a hint for the one key the file cannot do without.
fn yaml_error(path: &Path, e: serde_yaml_ng::Error) -> FileError {
    let mut err = FileError::from_yaml(path, e);
    if err.hint.is_none() && err.message.contains("missing field `environments`") {
        err.hint = Some(
            "add `environments:` with at least one, e.g. `staging: { hosts: [http://127.0.0.1:7070] }`".to_owned(),
        );
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetFile, FileError> {
        FleetFile::parse(Path::new("deployer.yaml"), text)
    }

    #[test]
    fn the_example_reads() {
        let f = parse(
            "app: web\nenvironments:\n  prod:\n    hosts: [https://web1.internal:7070, http://10.0.0.2:7070]\n    token_env: DEPLOYER_PROD_TOKEN\n    rollout: { canary: 1, max_parallel: 2, halt_on_failure: true }\n  staging:\n    hosts: [http://127.0.0.1:7070]\n",
        )
        .unwrap();
        let prod = f.environment("prod").unwrap();
        assert_eq!(prod.hosts.len(), 2);
        assert_eq!(prod.hosts[0].label(), "web1.internal:7070");
        assert_eq!((prod.rollout.canary, prod.rollout.max_parallel.get()), (1, 2));
        assert!(prod.rollout.halt_on_failure && !prod.rollout.rollback_on_failure);
        let staging = f.environment("staging").unwrap();
        assert_eq!((staging.rollout.canary, staging.rollout.max_parallel.get()), (0, 1));
    }

    #[test]
    fn the_shipped_fleet_mode_example_reads() {
        let f = parse(include_str!("../../../examples/deployer-fleet.yaml")).unwrap();
        let prod = f.environment("prod").unwrap();
        assert_eq!((prod.nats.len(), prod.hosts.len(), prod.rollout.max_parallel.get()), (3, 0, 25));
        assert_eq!(prod.rollout.bake.as_deref(), Some("30s"));
        assert!(matches!(&prod.credentials, Some(NatsCredentials::Env(v)) if v == "DEPLOYER_NATS_CREDS"));
    }

    #[test]
    fn a_fleet_mode_environment_is_refused_with_hosts_or_a_foreign_variable() {
        let both =
            parse("environments:\n  prod:\n    hosts: [http://127.0.0.1:7070]\n    nats: [nats://127.0.0.1:4222]\n")
                .unwrap_err()
                .to_string();
        assert!(both.contains("has both `hosts` and `nats`"), "{both}");
        let foreign =
            parse("environments:\n  prod:\n    nats: [nats://127.0.0.1:4222]\n    credentials: { env: AWS_SECRET }\n")
                .unwrap_err()
                .to_string();
        assert!(foreign.contains("does not start with `DEPLOYER_`"), "{foreign}");
        let bake = parse("environments:\n  prod:\n    nats: [nats://127.0.0.1:4222]\n    rollout: { bake: soon }\n")
            .unwrap_err()
            .to_string();
        assert!(bake.contains("`bake: soon` is not a duration"), "{bake}");
    }

    #[test]
    fn the_shipped_example_reads() {
        let f = parse(include_str!("../../../examples/deployer.yaml")).unwrap();
        let prod = f.environment("prod").unwrap();
        assert_eq!((prod.hosts.len(), prod.rollout.canary, prod.rollout.max_parallel.get()), (3, 1, 2));
        assert!(prod.rollout.rollback_on_failure);
        assert_eq!(prod.token_env.as_deref(), Some("DEPLOYER_PROD_TOKEN"));
    }

    #[test]
    fn unknown_keys_name_the_place_and_the_fix() {
        let e = parse(
            "app: web\nenvironments:\n  prod:\n    hosts: [http://a:1]\n    rollout: { canary: 0, max_paralel: 2 }\n",
        )
        .unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("deployer.yaml:5:"), "{shown}");
        assert!(shown.contains("unknown field `max_paralel`"), "{shown}");
        assert!(shown.contains("hint: did you mean `max_parallel`?"), "{shown}");
    }

    #[test]
    fn a_file_without_environments_says_what_to_add() {
        let e = parse("app: web\n").unwrap_err();
        assert!(e.message.contains("missing field `environments`"), "{e}");
        assert!(e.hint.as_deref().is_some_and(|h| h.starts_with("add `environments:`")), "{e}");
    }

    #[test]
    fn hosts_must_be_agent_urls() {
        let e = parse("environments:\n  prod:\n    hosts:\n      - http://a:1\n      - 10.0.0.5:7070\n")
            .unwrap_err()
            .to_string();
        // serde_yaml_ng places a wrong element at the start of its list.
        assert!(e.starts_with("deployer.yaml:4:7: environments.prod.hosts: host `10.0.0.5:7070` has no scheme"), "{e}");
        assert!(e.contains("write `http://10.0.0.5:7070`"), "{e}");
    }

    #[test]
    fn rollout_numbers_are_checked_where_written() {
        let e = parse("environments:\n  prod:\n    hosts: [http://a:1]\n    rollout:\n      canary: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("deployer.yaml:5:7: environment `prod` has 1 hosts"), "{e}");
        assert!(e.contains("hint: write `canary: 0` or fewer"), "{e}");
        let e = parse("environments:\n  prod:\n    hosts: [http://a:1]\n    rollout: { canary: 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("deployer.yaml:4:16: environment `prod` has 1 hosts"), "{e}");
        let e = parse("environments:\n  prod:\n    hosts: [http://a:1]\n    rollout: { max_parallel: 0 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("deployer.yaml:4:"), "{e}");
        let e = parse("environments:\n  prod:\n    hosts: [http://a:1]\n    token_env: \"s3cr3t-token!\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("deployer.yaml:4:5: environment `prod`: `token_env` is not an environment variable name"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "the value may be a secret: {e}");
        let e = parse("environments:\n  prod:\n    hosts: []\n").unwrap_err().to_string();
        assert!(e.starts_with("deployer.yaml:3:5: environment `prod` has no hosts"), "{e}");
    }

    #[test]
    fn a_token_env_must_be_a_deployer_variable() {
        let e = parse("environments:\n  prod:\n    hosts: [https://evil.example]\n    token_env: SOME_CI_SECRET\n")
            .unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("deployer.yaml:4:5: environment `prod`: `token_env` names a variable that does not start with `DEPLOYER_`"), "{shown}");
        assert!(e.hint.as_deref().is_some_and(|h| h.contains("--token-env NAME")), "{shown}");
        assert!(!shown.contains("SOME_CI_SECRET"), "the name is not echoed (it may be a token): {shown}");
        let f = parse("environments:\n  prod:\n    hosts: [https://a]\n    token_env: DEPLOYER_PROD_TOKEN\n").unwrap();
        assert_eq!(f.environment("prod").unwrap().token_env.as_deref(), Some("DEPLOYER_PROD_TOKEN"));
    }

    #[test]
    fn names_cannot_smuggle_escape_sequences() {
        let e = parse("app: \"web\\e]0;pwned\\a\"\nenvironments:\n  prod: { hosts: [http://a:1] }\n").unwrap_err();
        assert!(e.to_string().starts_with("deployer.yaml:1:1: invalid app name `web\\u{1b}]0;pwned\\u{7}`"), "{e}");
        let e = parse("environments:\n  \"prod\\e[2J\": { hosts: [http://a:1] }\n").unwrap_err();
        assert!(e.message.contains("holds control characters"), "{e}");
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
        let e = parse("environments:\n  prod: { hosts: [http://a:1], app: \"a b\" }\n").unwrap_err();
        assert!(e.message.contains("invalid app name `a b`"), "{e}");
    }
}

/// `{ env: VAR }` or `{ file: path }` as written (YAML maps, not tags).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRaw {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<CredentialsRaw> for NatsCredentials {
    type Error = String;
    fn try_from(raw: CredentialsRaw) -> Result<Self, String> {
        match (raw.env, raw.file) {
            (Some(var), None) => Ok(NatsCredentials::Env(var)),
            (None, Some(path)) => Ok(NatsCredentials::File(path)),
            _ => Err(
                "write `credentials: { env: VARIABLE }` or `credentials: { file: path/to/user.creds }` (one of them)"
                    .into(),
            ),
        }
    }
}
