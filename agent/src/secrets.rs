//! The secrets the agent holds: the values of the environment variables its config names through
//! a `*_env` key (`tokens[].token_env`, `webhook.secret_env`, `report[].secret_env`,
//! `github_status.token_env`, agent-wide and per app, and git `auth: !token_env`).
//!
//! They decide two things, here and nowhere else:
//! - what a child (worker, install step, hook) starts with: [`Secrets::child_env`] is the agent's
//!   environment without those variables, without any `DEPLOYER_*` one (the agent's own
//!   settings) and without what systemd addresses to the agent (`NOTIFY_SOCKET`, `LISTEN_*`,
//!   `WATCHDOG_*`, `CREDENTIALS_DIRECTORY`), then the app's `env_file`, its `env`, then the
//!   variables of the run;
//! - what is masked as `***` in everything the agent stores or sends: [`Secrets::mask`] is called
//!   by the state store (deploys, events, output tails, report bodies), the log sinks (worker
//!   logs, install output), the API (every JSON answer) and the agent's own log.
//!
//! One owner: the daemon builds the [`Secrets`] from the config it starts with and replaces their
//! content when SIGHUP applies a new one; the store, supervisor and deployer hold clones of the
//! same handle, so a rotated or newly named secret is masked and withheld everywhere at once.
//!
//! Values shorter than [`MIN_MASKED_LEN`] are withheld from children but not masked: a token
//! like `x` would otherwise turn every `x` of every log line into `***`. Only whole values (and
//! whole lines of multi-line values) are masked, never a part: masking a part would tell a
//! program that prints guesses which guesses start a secret. Masking catches a value an app
//! echoes by accident; an app given a value (through `env`) can always print it some other way.

use crate::config::AgentConfig;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// Secret values (and lines of multi-line values) shorter than this are not masked.
pub const MIN_MASKED_LEN: usize = 6;

/// The prefix of the agent's own variables: never passed to a child.
const AGENT_PREFIX: &str = "DEPLOYER_";

/// What systemd hands the agent itself (its notify socket, its listening sockets, its watchdog,
/// its credentials): never passed to a child, which gets its own where it needs one.
const AGENT_ONLY: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
];

/// The agent's secrets, shared: cheap to clone, replaced as a whole on SIGHUP.
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<Arc<Known>>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.known();
        f.debug_struct("Secrets").field("names", &known.names).field("masked", &known.values.len()).finish()
    }
}

#[derive(Default)]
struct Known {
    /// Variables never passed to a child: every one the config names through a `*_env` key.
    names: BTreeSet<String>,
    /// Values masked, longest first, so a secret that contains another is masked whole.
    values: Vec<String>,
    /// The agent's environment minus `names` and `DEPLOYER_*`: the base of every child's.
    base: BTreeMap<String, String>,
}

impl Secrets {
    /// Take the names (and their current values) of a re-read config (SIGHUP).
    pub fn update(&self, config: &AgentConfig) {
        let known = Known::read(names(config), std::env::vars_os());
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(known);
    }

    /// Also withhold and mask what `config` names, keeping what is known: a config file re-read
    /// without SIGHUP (`reload --update-env`, a deploy) may name a secret the running config does
    /// not, and the app then runs with it. Only a SIGHUP forgets a name.
    pub fn include(&self, config: &AgentConfig) {
        let mut cell = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut all = names(config);
        if all.is_subset(&cell.names) {
            return;
        }
        all.extend(cell.names.iter().cloned());
        *cell = Arc::new(Known::read(all, std::env::vars_os()));
    }

    fn known(&self) -> Arc<Known> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        mask_with(&self.known().values, text)
    }

    /// [`Secrets::mask`], owned.
    pub fn masked(&self, text: &str) -> String {
        self.mask(text).into_owned()
    }

    /// The complete environment of a child: the agent's without its secrets and its own
    /// `DEPLOYER_*` settings, then `app` (the app's `env_file` and `env`, as resolved), then
    /// `run` (what describes this process: `PORT`, `DEPLOY_SHA`...).
    pub fn child_env(
        &self,
        app: &BTreeMap<String, String>,
        run: impl IntoIterator<Item = (String, String)>,
    ) -> BTreeMap<String, String> {
        let mut env = self.known().base.clone();
        env.extend(app.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(run);
        env
    }
}

#[cfg(test)]
impl Secrets {
    /// Secrets named `vars`' names with their values, for tests of the modules that mask.
    pub fn for_test(vars: &[(&str, &str)]) -> Secrets {
        let names = vars.iter().map(|(k, _)| k.to_string()).collect();
        let vars = vars.iter().map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v)));
        Secrets(Arc::new(RwLock::new(Arc::new(Known::read(names, vars.collect::<Vec<_>>().into_iter())))))
    }
}

impl Known {
    fn read(names: BTreeSet<String>, vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Known {
        let mut values = BTreeSet::new();
        let mut base = BTreeMap::new();
        for (k, v) in vars {
            // A variable that is not UTF-8 is passed on by no one: the children's env is text.
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else { continue };
            if names.contains(k) {
                values.insert(v.to_string());
                // A multi-line value (a PEM key) shows in logs one line at a time.
                values.extend(v.lines().map(|l| l.trim_end_matches('\r').to_string()));
                // As a JSON string holds it (a report body, an API answer), when that differs.
                if let Ok(json) = serde_json::to_string(v) {
                    values.insert(json[1..json.len() - 1].to_string());
                }
            } else if !k.starts_with(AGENT_PREFIX) && !AGENT_ONLY.contains(&k) {
                base.insert(k.to_string(), v.to_string());
            }
        }
        let mut values: Vec<String> = values.into_iter().filter(|v| v.chars().count() >= MIN_MASKED_LEN).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Known { names, values, base }
    }
}

fn mask_with<'a>(values: &[String], text: &'a str) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for v in values {
        if out.contains(v.as_str()) {
            out = Cow::Owned(out.replace(v.as_str(), MASK));
        }
    }
    out
}

/// Every environment variable `config` names through a `*_env` key.
pub fn names(config: &AgentConfig) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = config.tokens.iter().map(|t| t.token_env.clone()).collect();
    let reports = config.report.iter().chain(config.apps.values().flat_map(|a| a.report.iter()));
    names.extend(reports.filter_map(|r| r.secret_env()).map(String::from));
    for app in config.apps.values() {
        if let Some(hook) = &app.webhook {
            names.insert(hook.secret_env.clone());
        }
        if let Some(var) = app.git_token_env() {
            names.insert(var.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn known(names: &[&str], vars: &[(&str, &str)]) -> Secrets {
        let vars = vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect::<Vec<_>>();
        let known = Known::read(names.iter().map(|n| n.to_string()).collect(), vars.into_iter());
        Secrets(Arc::new(RwLock::new(Arc::new(known))))
    }

    #[test]
    fn an_update_applies_to_every_holder_of_the_handle() {
        let s = Secrets::default();
        let held = s.clone();
        assert_eq!(held.mask("path=/usr/bin"), "path=/usr/bin");
        let path = std::env::var("PATH").expect("PATH");
        let config: AgentConfig =
            serde_yaml_ng::from_str("tokens: [{ name: a, token_env: PATH, scopes: [read] }]").expect("config");
        s.update(&config);
        assert_eq!(held.mask(&format!("path={path}")), "path=***");
        assert!(!held.child_env(&BTreeMap::new(), []).contains_key("PATH"));
        // A config read without SIGHUP adds names and forgets none; SIGHUP's update replaces them.
        let other: AgentConfig =
            serde_yaml_ng::from_str("tokens: [{ name: a, token_env: HOME, scopes: [read] }]").expect("config");
        s.include(&other);
        let env = held.child_env(&BTreeMap::new(), []);
        assert!(!env.contains_key("PATH") && !env.contains_key("HOME"), "{env:?}");
        s.update(&other);
        assert!(held.child_env(&BTreeMap::new(), []).contains_key("PATH"));
    }

    #[test]
    fn every_env_key_of_the_config_names_a_secret() {
        let yaml = "
tokens: [{ name: admin, token_env: T_API, scopes: [read] }]
report:
  - { url: https://r.example/a, secret_env: T_REPORT }
  - { github_status: { token_env: T_GH, repo: acme/web } }
apps:
  web:
    repo: https://github.com/acme/web.git
    start: node app.js
    auth: !token_env T_GIT
    webhook: { provider: github, secret_env: T_HOOK }
    report: [{ github_status: { token_env: T_APP_GH } }, { url: https://r.example/b, secret_env: T_APP_REPORT }]
  other:
    cwd: /
    start: node app.js
    report: [{ url: https://r.example/b }]
";
        // The checks that the variables are set are the config loader's; names need none.
        let config: AgentConfig = serde_yaml_ng::from_str(yaml).expect("config");
        let all: Vec<String> = names(&config).into_iter().collect();
        assert_eq!(all, ["T_API", "T_APP_GH", "T_APP_REPORT", "T_GH", "T_GIT", "T_HOOK", "T_REPORT"]);
    }

    #[test]
    fn children_get_neither_named_variables_nor_the_agents_own() {
        let s = known(
            &["HOOK_SECRET", "GIT_TOKEN"],
            &[
                ("PATH", "/usr/bin"),
                ("HOOK_SECRET", "hook-secret-value"),
                ("GIT_TOKEN", "git-token-value"),
                ("DEPLOYER_TOKEN", "api-token-value"),
                ("DEPLOYER_ANYTHING", "x"),
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
                ("LANG", "C.UTF-8"),
            ],
        );
        let app = BTreeMap::from([("GREETING".to_string(), "hi".to_string()), ("LANG".to_string(), "fr".to_string())]);
        let env = s.child_env(&app, [("PORT".to_string(), "3000".to_string())]);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["GREETING", "LANG", "PATH", "PORT"]);
        assert_eq!(env["LANG"], "fr", "the app's env comes after the agent's");
    }

    #[test]
    fn values_are_masked_longest_first_and_short_ones_not_at_all() {
        let s = known(
            &["A", "B", "C", "D"],
            &[("A", "s3cret-token"), ("B", "s3cret-token-longer"), ("C", "x"), ("D", "-----BEGIN\nkey-line-2\n")],
        );
        assert_eq!(s.mask("a s3cret-token-longer and s3cret-token"), "a *** and ***");
        assert_eq!(s.mask("x marks the spot"), "x marks the spot");
        assert!(matches!(s.mask("nothing here"), Cow::Borrowed(_)));
        assert_eq!(s.mask("key-line-2"), "***", "a line of a multi-line secret");
        assert_eq!(s.mask(r#"{"k":"-----BEGIN\nkey-line-2\n"}"#), r#"{"k":"***"}"#, "as JSON holds it");
        assert_eq!(Secrets::default().mask("s3cret-token"), "s3cret-token");
    }
}
