//! Values checked while the YAML parser still knows where they are.
//!
//! serde_yaml_ng gives an error the position of the innermost value being read when the error was
//! made. `#[serde(try_from)]` checks only after the value was read, so a failed check used to be
//! reported at the enclosing map (the app's first key). These helpers run the check inside the
//! value's own read, so `instances: 0` is reported on its own line, under `apps.web.instances`.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A value in the config that does not say something the agent can do. Each message names the
/// value and what to write instead; the parser puts it at the value's line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("cannot split `{text}` into arguments: {reason}")]
    CannotSplit { text: String, reason: String },
    #[error("`start` is empty: write the command that runs one worker, like `node app.js`")]
    EmptyStart,
    #[error("empty command: write one like `npm ci --omit=dev`")]
    EmptyCommand,
    #[error("`{0}` is not a command: a command starts with the program to run, like `npm ci --verbose`")]
    FlagAsCommand(String),
    #[error("`start` runs one command: write its argv as one list like `[node, app.js]`, or a line like `node app.js`")]
    StartNested,
    #[error(
        "`{written}` is a list of commands, and `{flag}` is not a command: to run one command with these arguments, \
         write `{nested}` (a list of one argv) or `{line}` (one line, split like a shell would)"
    )]
    ArgvAsCommands { flag: String, written: String, nested: String, line: String },
    #[error("`instances: {0}` is out of range: write 1 to 1024, or `max`")]
    InstancesOutOfRange(i64),
    #[error("invalid `instances: {0}`: write a number like `2`, or `max` for one per CPU")]
    Instances(String),
    #[error("invalid `http: {0}`: write a path like `/healthz`")]
    ProbePath(String),
    #[error("`ready` takes one check: `tcp: true`, `http: /path`, `notify: true`, `message: true` or `alive: 1s`")]
    ReadyChecks,
    #[error("unknown signal `{0}`: write a name like `SIGUSR2`, `SIGTERM` or `SIGINT`")]
    Signal(String),
    #[error("invalid `date_format: {0}`: write a strftime format like `%Y-%m-%d %H:%M:%S` (`%z` for the offset)")]
    DateFormat(String),
    #[error("invalid duration `{0}`: write a number with a unit, like `500ms`, `30s` or `5m`")]
    Duration(String),
    #[error("invalid address block `{0}`: write one like `10.0.0.0/8`, `fd00::/8` or `192.168.1.10`")]
    Cidr(String),
    #[error("`health` takes one check: `http: /healthz` or `tcp: true`")]
    HealthChecks,
    #[error("`health` needs a check: `http: /healthz` or `tcp: true`")]
    HealthNoCheck,
    #[error("`health` needs an `interval` and a `timeout` above 0, like `interval: 5s, timeout: 2s`")]
    HealthZero,
    #[error("`failures: 0` would find every worker unhealthy: write `failures: 1` or more")]
    HealthFailures,
    #[error("report `url: {0}` must start with `https://` (or `http://`)")]
    ReportUrl(String),
    #[error("`api_url: {0}` must start with `https://`")]
    ApiUrl(String),
    #[error("`secret_env` belongs to a `url` report; `github_status` takes `token_env`")]
    ReportSecretEnv,
    #[error(
        "a report is either `{{ url, secret_env }}` or `{{ github_status: {{...}} }}`, not both: write two list items"
    )]
    ReportBoth,
    #[error("a report needs `url: https://...` or `github_status: {{ token_env: ... }}`")]
    ReportNone,
    #[error("`auth` takes one credential: `token_env` (an https token) or `ssh_key` (an ssh key), not both")]
    AuthBoth,
    #[error("`known_hosts` is for ssh servers: use it with `ssh_key`, not with an https `token_env`")]
    AuthKnownHosts,
    #[error("`auth` names no credential: write {0}")]
    AuthNone(&'static str),
    #[error("install cache key file `{0}` must be a relative path inside the release (`*` only in its last name)")]
    CacheKeyFile(String),
    #[error("install cache path `{0}` must be a relative path inside the release, like `node_modules`")]
    CachePath(String),
    #[error("install cache `paths` is empty: list what the install step writes, like `[node_modules]`")]
    CacheNoPaths,
    #[error("`{0}` is not an environment variable name: write one like `NODE_ENV`")]
    CacheEnv(String),
}

/// Read a `Raw` of any shape (scalar, list or map), then turn it into a `T` or a located error.
pub fn any<'de, D, Raw, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = ValueError>,
{
    d.deserialize_any(Checked::<Raw, T> { expecting, _types: PhantomData })
}

/// Read a scalar as text (`30` too, so the check can say what is wrong with it), then check it.
pub fn text<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = ValueError>,
{
    d.deserialize_str(Checked::<String, T> { expecting, _types: PhantomData })
}

struct Checked<Raw, T> {
    expecting: &'static str,
    _types: PhantomData<fn() -> (Raw, T)>,
}

impl<'de, Raw, T> Checked<Raw, T>
where
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = ValueError>,
{
    fn check<D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::try_from(Raw::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl<'de, Raw, T> Visitor<'de> for Checked<Raw, T>
where
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = ValueError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Self::check(().into_deserializer())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        Self::check(SeqAccessDeserializer::new(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        Self::check(MapAccessDeserializer::new(map))
    }
}
