//! `auth:` of an app deployed from git: the credential a fetch presents, and for ssh the
//! known_hosts file that says which server keys to trust.
//!
//! Written as a map, as the README shows (`auth: { token_env: GIT_TOKEN }`,
//! `auth: { ssh_key: /etc/deployer/deploy_key, known_hosts: /etc/deployer/known_hosts }`), or with
//! the YAML tags of the first versions (`auth: !token_env GIT_TOKEN`, `auth: !ssh_key /path`).
//! Secrets never sit in the file: a token comes from the environment variable named here, a key
//! from a file only root should read.

use super::{At, ConfigError, ValueError};
use crate::source::{GitAuth, Transport, is_loopback, transport};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, EnumAccess, MapAccess, VariantAccess, Visitor};
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Credentials for an app's `repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// `token_env: GIT_TOKEN`: the environment variable holding an https access token (GitHub,
    /// GitLab, Gitea), sent as the password of the URL's user or of `x-access-token`.
    TokenEnv(String),
    /// `ssh_key: /path/to/key` (no passphrase), and `known_hosts: /path` naming the file of
    /// trusted server keys [default: the agent user's `~/.ssh/known_hosts` and
    /// `/etc/ssh/ssh_known_hosts`]. Relative paths are relative to the config file.
    SshKey { key: PathBuf, known_hosts: Option<PathBuf> },
}

impl AuthConfig {
    /// The credentials a fetch presents; the token is read from the environment now, so a
    /// changed variable needs no restart of the config (`None` when it is not set any more).
    pub fn git_auth(&self) -> Option<GitAuth> {
        match self {
            AuthConfig::TokenEnv(var) => std::env::var(var).ok().filter(|t| !t.is_empty()).map(GitAuth::Token),
            AuthConfig::SshKey { key, known_hosts } => {
                Some(GitAuth::SshKey { key: key.clone(), known_hosts: known_hosts.clone() })
            }
        }
    }
}

const EXPECTING: &str = "a map like `{ token_env: GIT_TOKEN }` (https) or `{ ssh_key: /path/to/key }` (ssh)";

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_any` hands a tagged value (`!token_env X`) to `visit_enum`, a map to
        // `visit_map`; both are checked inside the read, so errors point at the value.
        d.deserialize_any(AuthVisitor)
    }
}

struct AuthVisitor;

/// The tag of `!token_env GIT_TOKEN` or `!ssh_key /path`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Tag {
    TokenEnv,
    SshKey,
}

/// The map form, as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthMap {
    token_env: Option<String>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
}

impl<'de> Visitor<'de> for AuthVisitor {
    type Value = AuthConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AuthConfig, A::Error> {
        let raw = AuthMap::deserialize(MapAccessDeserializer::new(map))?;
        AuthConfig::try_from(raw).map_err(de::Error::custom)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<AuthConfig, A::Error> {
        let (tag, value) = data.variant::<Tag>()?;
        match tag {
            Tag::TokenEnv => value.newtype_variant().map(AuthConfig::TokenEnv),
            Tag::SshKey => value.newtype_variant().map(|key| AuthConfig::SshKey { key, known_hosts: None }),
        }
    }
}

impl TryFrom<AuthMap> for AuthConfig {
    type Error = ValueError;
    fn try_from(raw: AuthMap) -> Result<Self, ValueError> {
        match (raw.token_env, raw.ssh_key, raw.known_hosts) {
            (Some(_), Some(_), _) => Err(ValueError::AuthBoth),
            (Some(_), None, Some(_)) => Err(ValueError::AuthKnownHosts),
            (Some(var), None, None) => Ok(AuthConfig::TokenEnv(var)),
            (None, Some(key), known_hosts) => Ok(AuthConfig::SshKey { key, known_hosts }),
            (None, None, _) => Err(ValueError::AuthNone(EXPECTING)),
        }
    }
}

fn absolute(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// Checks of an app's `auth` against its `repo`, made when the config is loaded: the token's
/// variable is set, a token never travels in clear text to another host, key files exist and are
/// private. Relative paths become absolute (`base` is the config file's directory).
pub(super) fn check(
    name: &str,
    repo: &str,
    auth: &mut AuthConfig,
    base: &Path,
    at: &At<'_>,
) -> Result<(), ConfigError> {
    let keys = ["apps", name, "auth"];
    match auth {
        AuthConfig::TokenEnv(var) => {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                // The value is not echoed: it may be the token itself, pasted by mistake.
                return Err(at(
                    &keys,
                    format!("app `{name}`: `token_env` is not an environment variable name"),
                    Some("write the variable's name, like `auth: { token_env: GIT_TOKEN }`, never the token".into()),
                ));
            }
            if std::env::var_os(&*var).is_none_or(|v| v.is_empty()) {
                return Err(at(
                    &keys,
                    format!("app `{name}` reads its git token from `{var}`, which is not set"),
                    Some(format!("export {var}=<token> before starting the agent")),
                ));
            }
            match transport(repo) {
                Transport::Ssh => {
                    return Err(at(
                        &keys,
                        format!("app `{name}` has an https `token_env` for an ssh `repo`"),
                        Some("use `auth: { ssh_key: /path/to/deploy_key }` for ssh, or an https URL".into()),
                    ));
                }
                Transport::Http { tls: false, host } if !is_loopback(&host) => {
                    return Err(at(
                        &keys,
                        format!("app `{name}` would send its git token in clear text to `{host}` (`repo` is http://)"),
                        Some("use an `https://` URL; plain http carries a token only to this host's loopback".into()),
                    ));
                }
                _ => {}
            }
        }
        AuthConfig::SshKey { key, known_hosts } => {
            if matches!(transport(repo), Transport::Http { .. }) {
                return Err(at(
                    &keys,
                    format!("app `{name}` has an `ssh_key` for an http(s) `repo`"),
                    Some("use an ssh URL (`git@host:org/repo.git`), or `auth: { token_env: NAME }` for https".into()),
                ));
            }
            let missing = |what: &str, path: &Path, hint: &str| {
                at(&keys, format!("app `{name}`: `{what}` names no file: `{}`", path.display()), Some(hint.into()))
            };
            absolute(key, base);
            let meta = std::fs::metadata(&*key).ok().filter(|m| m.is_file()).ok_or_else(|| {
                missing(
                    "ssh_key",
                    key,
                    "create a deploy key with `ssh-keygen -t ed25519 -N '' -f <path>` and give its `.pub` to the git \
                     host (read-only)",
                )
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(at(
                    &keys,
                    format!("app `{name}`: the `ssh_key` file `{}` can be read by other users", key.display()),
                    Some(format!("`chmod 600 {}`, as ssh itself requires", key.display())),
                ));
            }
            if let Some(file) = known_hosts {
                absolute(file, base);
                if !file.is_file() {
                    return Err(missing(
                        "known_hosts",
                        file,
                        "fill it with the server's keys: `ssh-keyscan <host> >> <path>`",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AuthConfig, String> {
        #[derive(serde::Deserialize)]
        struct App {
            auth: AuthConfig,
        }
        serde_yaml_ng::from_str::<App>(yaml).map(|a| a.auth).map_err(|e| e.to_string())
    }

    #[test]
    fn the_readme_example_parses() {
        // README: `auth: { token_env: GIT_TOKEN }          # or { ssh_key: /path/to/key }`.
        assert_eq!(parse("auth: { token_env: GIT_TOKEN }").unwrap(), AuthConfig::TokenEnv("GIT_TOKEN".into()));
        assert_eq!(
            parse("auth: { ssh_key: /path/to/key }").unwrap(),
            AuthConfig::SshKey { key: "/path/to/key".into(), known_hosts: None }
        );
        assert_eq!(
            parse("auth:\n  ssh_key: /etc/deployer/key\n  known_hosts: /etc/deployer/known_hosts\n").unwrap(),
            AuthConfig::SshKey {
                key: "/etc/deployer/key".into(),
                known_hosts: Some("/etc/deployer/known_hosts".into())
            }
        );
    }

    /// Every YAML example in the README that has an `auth:` reads as an agent config (the shape
    /// only: the variables and files it names do not exist here).
    #[test]
    fn the_readme_snippets_with_auth_read() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("auth:"))
            .collect();
        assert!(!blocks.is_empty(), "the README shows `auth:` in a YAML example");
        for block in blocks {
            let config: super::super::AgentConfig =
                serde_yaml_ng::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            assert!(config.apps.values().any(|a| a.auth.is_some()), "{block}");
        }
    }

    #[test]
    fn the_tag_forms_still_parse() {
        assert_eq!(parse("auth: !token_env GIT_TOKEN").unwrap(), AuthConfig::TokenEnv("GIT_TOKEN".into()));
        assert_eq!(
            parse("auth: !ssh_key /path/to/key").unwrap(),
            AuthConfig::SshKey { key: "/path/to/key".into(), known_hosts: None }
        );
        assert!(parse("auth: !password x").unwrap_err().contains("unknown variant `password`"));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        let e = parse("auth: { token_env: A, ssh_key: /k }").unwrap_err();
        assert!(e.contains("takes one credential"), "{e}");
        let e = parse("auth: { token_env: A, known_hosts: /k }").unwrap_err();
        assert!(e.contains("`known_hosts` is for ssh servers"), "{e}");
        let e = parse("auth: { }").unwrap_err();
        assert!(e.contains("names no credential"), "{e}");
        let e = parse("auth: { token: A }").unwrap_err();
        assert!(e.contains("unknown field `token`"), "{e}");
        let e = parse("auth: GIT_TOKEN").unwrap_err();
        assert!(e.contains("expected a map like `{ token_env: GIT_TOKEN }`"), "{e}");
    }

    /// An agent config with one app deploying `repo` with `auth`, in a temp dir.
    fn load(dir: &Path, repo: &str, auth: &str) -> Result<AuthConfig, ConfigError> {
        let text =
            format!("apps:\n  web:\n    repo: {repo}\n    auth: {auth}\n    start: node app.js\n    port: 3000\n");
        let loaded = super::super::parse(&dir.join("agent.yaml"), &text)?;
        Ok(loaded.config.apps["web"].source.git().and_then(|g| g.auth.clone()).unwrap())
    }

    #[test]
    fn a_token_goes_only_over_https_or_to_loopback() {
        let dir = tempfile::tempdir().unwrap();
        // `PATH` is always set: it stands for the token's variable.
        let https = load(dir.path(), "https://git.example.com/a/b.git", "{ token_env: PATH }").unwrap();
        assert_eq!(https, AuthConfig::TokenEnv("PATH".into()));
        load(dir.path(), "http://127.0.0.1:8080/b.git", "{ token_env: PATH }").unwrap();
        let e = load(dir.path(), "http://git.example.com/a/b.git", "{ token_env: PATH }").unwrap_err();
        assert!(e.message.contains("would send its git token in clear text to `git.example.com`"), "{e}");
        assert_eq!((e.line, e.col), (4, 5), "{e}");
        let e = load(dir.path(), "git@github.com:a/b.git", "{ token_env: PATH }").unwrap_err();
        assert!(e.message.contains("https `token_env` for an ssh `repo`"), "{e}");
        let e = load(dir.path(), "https://h/b.git", "{ token_env: DEPLOYER_TEST_UNSET_VARIABLE }").unwrap_err();
        assert!(e.message.contains("`DEPLOYER_TEST_UNSET_VARIABLE`, which is not set"), "{e}");
        let e = load(dir.path(), "https://h/b.git", "{ token_env: \"ghp_abc def\" }").unwrap_err();
        assert!(!e.to_string().contains("ghp_abc"), "the value may be the token itself: {e}");
    }

    #[test]
    fn key_files_must_exist_be_private_and_are_found_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let repo = "ssh://git@127.0.0.1:2222/srv/app.git";
        let e = load(&dir, repo, "{ ssh_key: keys/deploy }").unwrap_err();
        assert!(e.message.contains("`ssh_key` names no file"), "{e}");
        std::fs::create_dir(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/deploy"), "key").unwrap();
        std::fs::set_permissions(dir.join("keys/deploy"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&dir, repo, "{ ssh_key: keys/deploy }").unwrap_err();
        assert!(e.message.contains("can be read by other users"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("chmod 600"), "{e}");
        std::fs::set_permissions(dir.join("keys/deploy"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&dir, repo, "{ ssh_key: keys/deploy, known_hosts: keys/known_hosts }").unwrap_err();
        assert!(e.message.contains("`known_hosts` names no file"), "{e}");
        std::fs::write(dir.join("keys/known_hosts"), "").unwrap();
        let auth = load(&dir, repo, "{ ssh_key: keys/deploy, known_hosts: keys/known_hosts }").unwrap();
        assert_eq!(
            auth,
            AuthConfig::SshKey { key: dir.join("keys/deploy"), known_hosts: Some(dir.join("keys/known_hosts")) }
        );
        let e = load(&dir, "https://h/b.git", "{ ssh_key: keys/deploy }").unwrap_err();
        assert!(e.message.contains("`ssh_key` for an http(s) `repo`"), "{e}");
        // The tag form reads the same way.
        assert_eq!(
            load(&dir, repo, "!ssh_key keys/deploy").unwrap(),
            AuthConfig::SshKey { key: dir.join("keys/deploy"), known_hosts: None }
        );
    }

    #[test]
    fn mistakes_in_the_map_are_located_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path(), "https://h/b.git", "{ tokn_env: PATH }").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("unknown field `tokn_env`"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `token_env`?"), "{e}");
        let e = load(dir.path(), "https://h/b.git", "{ token_env: PATH, ssh_key: /k }").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("takes one credential"), "{e}");
    }
}
