//! One PM2 app's options as the keys of one deployer app: what maps, and for what does not, why.
//!
//! The table in the README (PM2 option → deployer) is this file read top to bottom: every key
//! [`app`] reads is mapped or named in [`NOT_MAPPED`] with its reason.

use super::read::Origin;
use super::yaml::Node;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A PM2 option left out of the imported config, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// `app.option`, as PM2 spells it.
    pub key: String,
    pub why: String,
}

/// One app, mapped.
#[derive(Debug)]
pub struct Mapped {
    pub name: String,
    /// The deployer keys, in the order `examples/agent.yaml` writes them.
    pub keys: Vec<(String, Node)>,
    pub unmapped: Vec<Unmapped>,
}

/// What every app of one file is read with.
pub struct Context<'a> {
    /// The directory relative `cwd`s start from (the PM2 file's).
    pub base: &'a Path,
    /// `--env NAME`: `env_NAME` is merged over `env`, as `pm2 start --env NAME` does.
    pub env: Option<&'a str>,
    pub origin: Origin,
}

/// PM2 options deployer has no key for, and why; each is reported only when it asks for
/// something (a `watch: false` asks for nothing).
const NOT_MAPPED: &[(&str, &str)] = &[
    (
        "watch",
        "deployer does not restart on file changes: deploy with `repo:` (push, poll or webhook), or run `deployer reload <app>`",
    ),
    ("ignore_watch", "goes with `watch`, which deployer does not do"),
    ("watch_delay", "goes with `watch`, which deployer does not do"),
    ("watch_options", "goes with `watch`, which deployer does not do"),
    (
        "log_file",
        "next to `out_file` or `error_file`: deployer writes each line to one file only (`logs.out`, `logs.err`)",
    ),
    ("disable_logs", "deployer always keeps the app's log (rotated by `logs: { max_size, keep }`)"),
    ("namespace", "deployer has no namespaces: `deployer reload <app>` acts on one app"),
    ("vizion", "deployer records each release's commit itself (apps deployed with `repo:`)"),
    ("post_update", "use `install:` and `hooks:` (run on each deploy from `repo:`)"),
    ("force", "deployer runs one app per name; there is nothing to force"),
    ("instance_var", "deployer sets `NODE_APP_INSTANCE` and `INSTANCE_ID` (0, 1, ...) under fixed names"),
    ("increment_var", "deployer does not increment a variable per instance: read `INSTANCE_ID` (0, 1, ...)"),
    ("source_map_support", "add `--enable-source-maps` to `node_args`"),
    ("gid", "deployer runs workers as `user`'s primary group"),
    ("treekill", "deployer signals the worker; its children are the worker's to stop"),
    ("pmx", "deployer has no PM2 metrics module: it serves `/metrics` (Prometheus)"),
    ("automation", "deployer has no PM2 metrics module: it serves `/metrics` (Prometheus)"),
    ("append_env_to_name", "deployer app names are the keys under `apps:`"),
    ("filter_env", "deployer gives workers the agent's environment plus `env` and `env_file`"),
    ("listen_timeout_ms", "not a PM2 option: did you mean `listen_timeout`?"),
];

/// Options read below, by PM2's names (runtime lists use the `pm_*` and `exec_*` forms).
const READ: &[&str] = &[
    "name",
    "script",
    "pm_exec_path",
    "args",
    "interpreter",
    "exec_interpreter",
    "node_args",
    "interpreter_args",
    "cwd",
    "pm_cwd",
    "instances",
    "exec_mode",
    "env",
    "max_memory_restart",
    "kill_timeout",
    "listen_timeout",
    "max_restarts",
    "min_uptime",
    "exp_backoff_restart_delay",
    "wait_ready",
    "shutdown_with_message",
    "cron_restart",
    "autorestart",
    "restart_delay",
    "stop_exit_codes",
    "user",
    "uid",
    // Every worker of an app already logs into one file.
    "merge_logs",
    "combine_logs",
    "out_file",
    "pm_out_log_path",
    "error_file",
    "pm_err_log_path",
    "log_date_format",
    "log_type",
    // deployer's log lines always start with the time.
    "time",
];

/// What a runtime list records of the process and PM2 itself, not options: skipped quietly.
const RUNTIME_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "TERM",
    "MAIL",
    "HOSTNAME",
    "_",
    "LANG",
    "LANGUAGE",
    "DISPLAY",
    "EDITOR",
    "LS_COLORS",
    "COLORTERM",
    "NODE_APP_INSTANCE",
    "name",
    "unique_id",
    "pm_id",
    "status",
    "km_link",
    "vizion_running",
    "windowsHide",
];

/// `raw` (one app as PM2 reads it) as a deployer app. `index` names an app without a name.
pub fn app(index: usize, raw: &Map<String, Value>, cx: &Context<'_>) -> Result<Mapped, Unmapped> {
    let mut notes = Vec::new();
    let script = text(raw, &["script", "pm_exec_path"]);
    let name = app_name(index, raw, script.as_deref(), &mut notes);
    let note = |notes: &mut Vec<Unmapped>, key: &str, why: String| {
        notes.push(Unmapped { key: format!("{name}.{key}"), why });
    };
    let Some(script) = script else {
        return Err(Unmapped { key: name, why: "has no `script`: nothing to start".into() });
    };
    let mut keys: Vec<(String, Node)> = Vec::new();

    let cwd = match text(raw, &["cwd", "pm_cwd"]) {
        Some(dir) => cx.base.join(dir),
        None => cx.base.to_path_buf(),
    };
    keys.push(("cwd".into(), Node::Text(cwd.display().to_string())));
    let start = start(raw, &script, &cwd, &mut |k, why| note(&mut notes, k, why));
    keys.push(("start".into(), Node::List(start)));

    let instances = instances(raw, &mut |k, why| note(&mut notes, k, why));
    if let Some(n) = &instances {
        keys.push(("instances".into(), n.clone()));
    }
    let (mut env, env_sets) = env(raw, cx, &mut |k, why| note(&mut notes, k, why));
    let port = env.remove("PORT").and_then(|p| p.parse::<u16>().ok().filter(|p| *p > 0));
    // PM2 runs an app with `instances` in cluster mode unless told otherwise.
    let cluster = match text(raw, &["exec_mode"]).as_deref() {
        Some("cluster" | "cluster_mode") => true,
        Some(_) => false,
        None => instances.is_some() && instances != Some(Node::Number(1)),
    };
    match (cluster, port) {
        (true, Some(port)) => {
            keys.push(("port".into(), Node::Number(port.into())));
            keys.push(("proxy".into(), Node::Text("http".into())));
        }
        (true, None) => {
            keys.push(("proxy".into(), Node::Text("none".into())));
            note(
                &mut notes,
                "exec_mode",
                "`cluster` with no `PORT` in `env`: no front was set up; add `port: <public port>` and remove \
                 `proxy: none` to share one port between the workers (each gets its own `PORT`)"
                    .into(),
            );
        }
        (false, port) => {
            if let Some(port) = port {
                keys.push(("port".into(), Node::Number(port.into())));
            }
            keys.push(("proxy".into(), Node::Text("none".into())));
            if port.is_some() && instances.as_ref().is_some_and(|n| *n != Node::Number(1)) {
                note(
                    &mut notes,
                    "exec_mode",
                    "`fork` with several instances on one `PORT`: only one can bind it; remove `proxy: none` \
                     to put the `http` front on the port and give each worker its own"
                        .into(),
                );
            }
        }
    }
    if !env.is_empty() {
        keys.push(("env".into(), Node::Block(env.into_iter().map(|(k, v)| (k, Node::Text(v))).collect())));
    }
    if !env_sets.is_empty() {
        let sets = env_sets
            .into_iter()
            .map(|(name, vars)| (name, Node::Block(vars.into_iter().map(|(k, v)| (k, Node::Text(v))).collect())))
            .collect();
        keys.push(("env_sets".into(), Node::Block(sets)));
    }
    let mut ready = Vec::new();
    let wait_ready = raw.get("wait_ready").is_some_and(truthy);
    if wait_ready {
        // `process.send('ready')` through Node's IPC channel, as PM2 reads it.
        ready.push(("message".into(), Node::Bool(true)));
    }
    if let Some(t) = millis(raw, "listen_timeout", &mut |k, why| note(&mut notes, k, why)) {
        ready.push(("timeout".into(), Node::Text(t)));
    }
    if !ready.is_empty() {
        keys.push(("ready".into(), Node::Flow(ready)));
    }
    if raw.get("shutdown_with_message").is_some_and(truthy) && !wait_ready {
        // The channel for the `shutdown` message (`ready.message` opens it too).
        keys.push(("ipc".into(), Node::Bool(true)));
    }
    if let Some(cron) = text(raw, &["cron_restart"]) {
        note(
            &mut notes,
            "cron_restart",
            format!("mapped to `cron_restart: {cron}`, which deployer reads in UTC (PM2: the host's local time)"),
        );
        keys.push(("cron_restart".into(), Node::Text(cron)));
    }
    if let Some(t) = millis(raw, "kill_timeout", &mut |k, why| note(&mut notes, k, why)) {
        keys.push(("reload".into(), Node::Flow(vec![("kill_timeout".into(), Node::Text(t))])));
    }
    let mut restart = Vec::new();
    match raw.get("max_restarts") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
            Some(n) => restart.push(("max_restarts".into(), Node::Number(n))),
            None => note(&mut notes, "max_restarts", format!("`{v}` is not a count")),
        },
    }
    if let Some(t) = millis(raw, "min_uptime", &mut |k, why| note(&mut notes, k, why)) {
        restart.push(("min_uptime".into(), Node::Text(t)));
    }
    if raw.get("autorestart") == Some(&Value::Bool(false)) {
        restart.push(("autorestart".into(), Node::Bool(false)));
    }
    if let Some(t) = millis(raw, "restart_delay", &mut |k, why| note(&mut notes, k, why)) {
        restart.push(("delay".into(), Node::Text(t)));
    }
    match raw.get("stop_exit_codes") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let codes: Option<Vec<i64>> = match v {
                Value::Array(items) => items.iter().map(Value::as_i64).collect(),
                other => other.as_i64().map(|c| vec![c]),
            };
            match codes {
                Some(codes) => restart.push(("stop_exit_codes".into(), Node::Numbers(codes))),
                None => note(&mut notes, "stop_exit_codes", format!("`{v}` is not an exit code or a list of them")),
            }
        }
    }
    if raw.get("exp_backoff_restart_delay").is_some_and(|v| !v.is_null()) {
        note(
            &mut notes,
            "exp_backoff_restart_delay",
            "deployer always backs off exponentially, from 100ms up to `restart.backoff_max` (15s, PM2's cap too); \
             the first delay is not set"
                .into(),
        );
    }
    if !restart.is_empty() {
        keys.push(("restart".into(), Node::Flow(restart)));
    }
    match raw.get("max_memory_restart") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let written = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            };
            match crate::config::units::Size::parse(&written) {
                Some(_) => keys.push(("max_memory".into(), Node::Text(written))),
                None => note(&mut notes, "max_memory_restart", format!("`{v}` is not a size like `300M` or `1G`")),
            }
        }
    }
    let logs = logs(raw, cx, &mut |k, why| note(&mut notes, k, why));
    if !logs.is_empty() {
        keys.push(("logs".into(), Node::Flow(logs)));
    }
    if let Some(user) = text(raw, &["user"]).or_else(|| raw.get("uid").and_then(number_or_text)) {
        keys.push(("user".into(), Node::Text(user)));
    }
    for (key, value) in raw {
        if READ.contains(&key.as_str()) || key.starts_with("env_") {
            continue;
        }
        match NOT_MAPPED.iter().find(|(k, _)| k == key) {
            Some((_, why)) if asks_for_something(key, value) => note(&mut notes, key, (*why).to_string()),
            Some(_) => {}
            None if cx.origin == Origin::Ecosystem => {
                note(&mut notes, key, "not a PM2 option deployer knows".into());
            }
            // A runtime list holds PM2's own bookkeeping and the environment next to the options.
            None => {}
        }
    }
    Ok(Mapped { name, keys, unmapped: notes })
}

/// `out_file`, `error_file` (or `log_file` alone), `merge_logs: false`, `log_date_format` and
/// `log_type: json` as `logs:`. Relative paths are made absolute from the PM2 file's directory
/// (deployer's would start at `state_dir/logs`).
fn logs(raw: &Map<String, Value>, cx: &Context<'_>, note: &mut dyn FnMut(&str, String)) -> Vec<(String, Node)> {
    let mut logs = Vec::new();
    let path = |p: String| Node::Text(cx.base.join(p).display().to_string());
    let out = text(raw, &["out_file", "pm_out_log_path"]);
    let err = text(raw, &["error_file", "pm_err_log_path"]);
    match (out, err, text(raw, &["log_file"])) {
        (None, None, Some(both)) => {
            logs.push(("out".into(), path(both.clone())));
            logs.push(("err".into(), path(both)));
        }
        (out, err, _) => {
            logs.extend(out.map(|p| ("out".to_string(), path(p))));
            logs.extend(err.map(|p| ("err".to_string(), path(p))));
        }
    }
    if raw.get("merge_logs").or(raw.get("combine_logs")) == Some(&Value::Bool(false)) {
        logs.push(("merge".into(), Node::Bool(false)));
    }
    if let Some(format) = text(raw, &["log_date_format"]) {
        match strftime(&format) {
            Some(f) => logs.push(("date_format".into(), Node::Text(f))),
            None => note("log_date_format", format!("`{format}` has a token deployer cannot translate to strftime")),
        }
    }
    match text(raw, &["log_type"]).as_deref() {
        Some("json") => logs.push(("format".into(), Node::Text("json".into()))),
        None | Some("raw" | "text") => {}
        Some(other) => note("log_type", format!("`{other}`: deployer writes `text` or `json`")),
    }
    logs
}

/// A moment.js date format (PM2's `log_date_format`, e.g. `YYYY-MM-DD HH:mm:ss Z`) as strftime;
/// `None` for a letter token it does not know. Text in `[...]` is literal, as in moment.
fn strftime(moment: &str) -> Option<String> {
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("YY", "%y"),
        ("MMMM", "%B"),
        ("MMM", "%b"),
        ("MM", "%m"),
        ("M", "%-m"),
        ("DD", "%d"),
        ("D", "%-d"),
        ("dddd", "%A"),
        ("ddd", "%a"),
        ("HH", "%H"),
        ("H", "%-H"),
        ("hh", "%I"),
        ("h", "%-I"),
        ("mm", "%M"),
        ("m", "%-M"),
        ("ss", "%S"),
        ("s", "%-S"),
        ("SSS", "%3f"),
        ("ZZ", "%z"),
        ("Z", "%:z"),
        ("A", "%p"),
        ("a", "%P"),
        ("X", "%s"),
    ];
    let mut out = String::new();
    let mut rest = moment;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            let end = rest.find(']')?;
            out.push_str(&rest[1..end].replace('%', "%%"));
            rest = &rest[end + 1..];
        } else if c.is_ascii_alphabetic() {
            let (token, f) = TOKENS.iter().find(|(t, _)| rest.starts_with(t))?;
            out.push_str(f);
            rest = &rest[token.len()..];
        } else {
            out.push_str(if c == '%' { "%%" } else { &rest[..c.len_utf8()] });
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(out)
}

/// The app's name as a deployer app name (it names files and URL paths).
fn app_name(index: usize, raw: &Map<String, Value>, script: Option<&str>, notes: &mut Vec<Unmapped>) -> String {
    let written = text(raw, &["name"]).or_else(|| {
        let stem = Path::new(script?).file_stem()?.to_str()?;
        Some(stem.to_string())
    });
    let Some(written) = written else { return format!("app{index}") };
    let mut name: String =
        written.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    name = name.trim_start_matches('-').chars().take(64).collect();
    if name.is_empty() {
        name = format!("app{index}");
    }
    if name != written {
        notes.push(Unmapped {
            key: format!("{name}.name"),
            why: format!("`{written}` is written `{name}`: app names are letters, digits, `-` and `_`"),
        });
    }
    name
}

/// `script`, `args`, `interpreter` and `node_args` as one argv, as PM2 would start it.
fn start(raw: &Map<String, Value>, script: &str, cwd: &Path, note: &mut dyn FnMut(&str, String)) -> Vec<String> {
    let interpreter =
        text(raw, &["interpreter", "exec_interpreter"]).or_else(|| by_extension(script).map(String::from));
    let mut argv = Vec::new();
    let direct = matches!(interpreter.as_deref(), None | Some("none" | ""));
    if direct {
        // PM2 runs `script` from `cwd` when it is a file there; a bare name is looked up in PATH.
        let local = !script.contains('/') && cwd.join(script).is_file();
        argv.push(if local { format!("./{script}") } else { script.to_string() });
    } else {
        argv.push(interpreter.clone().unwrap_or_default());
        argv.extend(words(raw, &["node_args", "interpreter_args"], note));
        argv.push(script.to_string());
    }
    argv.extend(words(raw, &["args"], note));
    argv
}

/// PM2's interpreter for a script by its extension (`node` for JavaScript); `None` runs the
/// script itself (a binary, or a file with a `#!` line).
fn by_extension(script: &str) -> Option<&'static str> {
    let ext = Path::new(script).extension()?.to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "ts" | "tsx" => "ts-node",
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        "sh" => "bash",
        "pl" => "perl",
        "coffee" => "coffee",
        "ls" => "lsc",
        _ => return None,
    })
}

/// A string split like a shell would, or a list, from the first of `keys` that is set.
fn words(raw: &Map<String, Value>, keys: &[&str], note: &mut dyn FnMut(&str, String)) -> Vec<String> {
    let Some((key, value)) = keys.iter().find_map(|k| raw.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v))) else {
        return Vec::new();
    };
    match value {
        Value::String(s) => shell_words::split(s).unwrap_or_else(|e| {
            note(key, format!("cannot split `{s}` into arguments: {e}"));
            Vec::new()
        }),
        Value::Array(items) => items.iter().filter_map(number_or_text).collect(),
        other => {
            note(key, format!("`{other}` is not a list of arguments"));
            Vec::new()
        }
    }
}

/// `instances`: a count, `max` (or `0`, as PM2 reads it), `-1` (all CPUs but one).
fn instances(raw: &Map<String, Value>, note: &mut dyn FnMut(&str, String)) -> Option<Node> {
    let v = raw.get("instances").filter(|v| !v.is_null())?;
    let n = match v {
        Value::String(s) if s.trim() == "max" => return Some(Node::Text("max".into())),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        other => other.as_i64(),
    };
    match n {
        Some(0) => Some(Node::Text("max".into())),
        Some(n) if n < 0 => {
            note("instances", format!("`{n}` (all CPUs but {}) is written `max` (all CPUs)", -n));
            Some(Node::Text("max".into()))
        }
        Some(n) if n <= 1024 => Some(Node::Number(n as u64)),
        _ => {
            note("instances", format!("`{v}` is not a count deployer runs (1 to 1024, or `max`)"));
            None
        }
    }
}

/// `env`, with `env_<name>` merged over it for `--env name`; every other `env_<name>` becomes
/// the named set `name` (`env_sets`, chosen with `deployer reload|deploy --env name`).
type Vars = BTreeMap<String, String>;
fn env(raw: &Map<String, Value>, cx: &Context<'_>, note: &mut dyn FnMut(&str, String)) -> (Vars, Vec<(String, Vars)>) {
    let mut env = BTreeMap::new();
    let mut sets = Vec::new();
    let mut dropped = Vec::new();
    let mut merge =
        |set: &str, value: &Value, env: &mut BTreeMap<String, String>, note: &mut dyn FnMut(&str, String)| {
            let Value::Object(vars) = value else {
                note(set, format!("`{value}` is not a map of variables"));
                return;
            };
            for (k, v) in vars {
                if cx.origin == Origin::Runtime && (RUNTIME_ENV.contains(&k.as_str()) || k.starts_with("PM2_")) {
                    dropped.push(k.clone());
                    continue;
                }
                match number_or_text(v) {
                    Some(v) => {
                        env.insert(k.clone(), v);
                    }
                    None if v.is_null() => {}
                    None => note(&format!("{set}.{k}"), format!("`{v}` is not a text, number or boolean")),
                }
            }
        };
    if let Some(value) = raw.get("env") {
        merge("env", value, &mut env, note);
    }
    for (key, value) in raw {
        let Some(set) = key.strip_prefix("env_") else { continue };
        if cx.env == Some(set) {
            merge(key, value, &mut env, note);
        } else {
            let mut vars = BTreeMap::new();
            merge(key, value, &mut vars, note);
            sets.push((set.to_string(), vars));
        }
    }
    if !dropped.is_empty() {
        dropped.sort();
        dropped.dedup();
        note("env", format!("left out what PM2 recorded of its own shell's environment: {}", dropped.join(", ")));
    }
    (env, sets)
}

/// A PM2 duration (milliseconds, as a number or digits, or text like `1s`, `1m`) as `1600ms`.
fn millis(raw: &Map<String, Value>, key: &str, note: &mut dyn FnMut(&str, String)) -> Option<String> {
    let v = raw.get(key).filter(|v| !v.is_null())?;
    let d = match v {
        Value::Number(n) => n.as_u64().map(Duration::from_millis),
        Value::String(s) => match s.trim().parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => humantime::parse_duration(s.trim()).ok(),
        },
        _ => None,
    };
    match d {
        Some(d) if d.subsec_millis() == 0 => Some(format!("{}s", d.as_secs())),
        Some(d) => Some(format!("{}ms", d.as_millis())),
        None => {
            note(key, format!("`{v}` is not a duration (milliseconds, or like `1s`)"));
            None
        }
    }
}

/// The first of `keys` that holds a non-empty string.
fn text(raw: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| raw.get(*k)?.as_str().filter(|s| !s.trim().is_empty()).map(String::from))
}

fn number_or_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false)) && v.as_u64() != Some(0) && v.as_str() != Some("")
}

/// Whether an option deployer has no key for asks for something other than what deployer does
/// anyway (`autorestart: true`, `watch: false` and `treekill: true` do not).
fn asks_for_something(key: &str, v: &Value) -> bool {
    match key {
        "autorestart" | "treekill" | "vizion" => matches!(v, Value::Bool(false)),
        "disable_logs" | "force" | "source_map_support" | "pmx" | "automation" | "append_env_to_name" | "watch" => {
            truthy(v)
        }
        _ => truthy(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value, env: Option<&str>, origin: Origin) -> Mapped {
        let Value::Object(raw) = v else { panic!("an object") };
        let cx = Context { base: Path::new("/srv"), env, origin };
        app(0, &raw, &cx).unwrap()
    }
    fn get<'a>(m: &'a Mapped, key: &str) -> Option<&'a Node> {
        m.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn unmapped(m: &Mapped) -> Vec<&str> {
        m.unmapped.iter().map(|u| u.key.as_str()).collect()
    }

    #[test]
    fn a_cluster_app_with_a_port_gets_the_http_front_and_its_limits() {
        let m = map(
            json!({
                "name": "api", "script": "server.js", "args": "--title 'a b'", "node_args": ["--max-old-space-size=512"],
                "instances": "max", "exec_mode": "cluster", "max_memory_restart": "300M", "kill_timeout": 1600,
                "listen_timeout": "8000", "max_restarts": 5, "min_uptime": "2s", "cwd": "api",
                "env": { "PORT": 3000, "DEBUG": false }, "env_production": { "NODE_ENV": "production" },
                "watch": false, "autorestart": true,
            }),
            Some("production"),
            Origin::Ecosystem,
        );
        assert_eq!(m.name, "api");
        assert_eq!(get(&m, "cwd"), Some(&Node::Text("/srv/api".into())));
        let argv = ["node", "--max-old-space-size=512", "server.js", "--title", "a b"];
        assert_eq!(get(&m, "start"), Some(&Node::List(argv.iter().map(|s| s.to_string()).collect())));
        assert_eq!(get(&m, "instances"), Some(&Node::Text("max".into())));
        assert_eq!(get(&m, "port"), Some(&Node::Number(3000)));
        assert_eq!(get(&m, "proxy"), Some(&Node::Text("http".into())));
        let env =
            vec![("DEBUG".into(), Node::Text("false".into())), ("NODE_ENV".into(), Node::Text("production".into()))];
        assert_eq!(get(&m, "env"), Some(&Node::Block(env)), "PORT is the front's");
        assert_eq!(get(&m, "ready"), Some(&Node::Flow(vec![("timeout".into(), Node::Text("8s".into()))])));
        assert_eq!(get(&m, "reload"), Some(&Node::Flow(vec![("kill_timeout".into(), Node::Text("1600ms".into()))])));
        assert_eq!(get(&m, "max_memory"), Some(&Node::Text("300M".into())));
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
    }

    #[test]
    fn a_fork_app_runs_without_a_front_and_what_does_not_map_says_why() {
        let m = map(
            json!({ "script": "worker.py", "instances": -1, "exec_mode": "fork", "watch": true, "cron_restart": "0 3 * * *",
                    "env_staging": { "A": "1" }, "wait_ready": true, "colour": "blue" }),
            None,
            Origin::Ecosystem,
        );
        assert_eq!(m.name, "worker");
        assert_eq!(get(&m, "start"), Some(&Node::List(vec!["python3".into(), "worker.py".into()])));
        assert_eq!(get(&m, "proxy"), Some(&Node::Text("none".into())));
        assert_eq!(get(&m, "instances"), Some(&Node::Text("max".into())));
        let keys = unmapped(&m);
        for key in ["instances", "watch", "colour"] {
            assert!(keys.contains(&format!("worker.{key}").as_str()), "{key} not reported: {keys:?}");
        }
        // PM2's process control maps to deployer's own keys.
        assert_eq!(get(&m, "cron_restart"), Some(&Node::Text("0 3 * * *".into())));
        assert!(keys.contains(&"worker.cron_restart"), "the time zone is said: {keys:?}");
        assert_eq!(get(&m, "ready"), Some(&Node::Flow(vec![("message".into(), Node::Bool(true))])));
        let staging = Node::Block(vec![("staging".into(), Node::Block(vec![("A".into(), Node::Text("1".into()))]))]);
        assert_eq!(get(&m, "env_sets"), Some(&staging));
        assert!(!keys.contains(&"worker.env_staging") && !keys.contains(&"worker.wait_ready"), "{keys:?}");
        assert!(m.unmapped.iter().all(|u| !u.why.is_empty()));
    }

    #[test]
    fn pm2_process_control_maps_to_restart_ipc_and_env_sets() {
        let m = map(
            json!({ "name": "job", "script": "job.js", "autorestart": false, "restart_delay": 2000,
                    "stop_exit_codes": [0, 3], "shutdown_with_message": true }),
            None,
            Origin::Ecosystem,
        );
        let restart = vec![
            ("autorestart".into(), Node::Bool(false)),
            ("delay".into(), Node::Text("2s".into())),
            ("stop_exit_codes".into(), Node::Numbers(vec![0, 3])),
        ];
        assert_eq!(get(&m, "restart"), Some(&Node::Flow(restart)));
        assert_eq!(get(&m, "ipc"), Some(&Node::Bool(true)));
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
        let mut out = String::new();
        super::super::yaml::block(&mut out, 0, &m.keys);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).expect("yaml");
        assert_eq!(v["restart"]["stop_exit_codes"][1], 3, "exit codes are numbers: {out}");
    }

    #[test]
    fn a_runtime_dump_leaves_out_the_shell_environment_and_pm2_bookkeeping() {
        let m = map(
            json!({ "name": "web", "pm_exec_path": "/srv/app.js", "pm_cwd": "/srv", "exec_interpreter": "node",
                    "exec_mode": "fork_mode", "pm_id": 0, "restart_time": 3, "PATH": "/usr/bin",
                    "env": { "PATH": "/usr/bin", "HOME": "/root", "PM2_HOME": "/root/.pm2", "GREETING": "hi" } }),
            None,
            Origin::Runtime,
        );
        assert_eq!(get(&m, "start"), Some(&Node::List(vec!["node".into(), "/srv/app.js".into()])));
        assert_eq!(get(&m, "env"), Some(&Node::Block(vec![("GREETING".into(), Node::Text("hi".into()))])));
        assert_eq!(unmapped(&m), ["web.env"], "{:?}", m.unmapped);
    }

    #[test]
    fn log_files_formats_and_dates_map_to_logs() {
        let m = map(
            json!({ "script": "a.js", "out_file": "logs/a.out", "error_file": "/var/log/a.err", "log_type": "json",
                    "log_date_format": "YYYY-MM-DD HH:mm:ss.SSS Z", "merge_logs": false, "time": true }),
            None,
            Origin::Ecosystem,
        );
        let logs = vec![
            ("out".to_string(), Node::Text("/srv/logs/a.out".into())),
            ("err".to_string(), Node::Text("/var/log/a.err".into())),
            ("merge".to_string(), Node::Bool(false)),
            ("date_format".to_string(), Node::Text("%Y-%m-%d %H:%M:%S.%3f %:z".into())),
            ("format".to_string(), Node::Text("json".into())),
        ];
        assert_eq!(get(&m, "logs"), Some(&Node::Flow(logs)));
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
        assert_eq!(strftime("[at] HH:mm"), Some("at %H:%M".into()));
        assert_eq!(strftime("Qo"), None);
    }

    #[test]
    fn names_become_app_names() {
        let m = map(json!({ "name": "my app!", "script": "a.js" }), None, Origin::Ecosystem);
        assert_eq!(m.name, "my-app-");
        assert_eq!(unmapped(&m), ["my-app-.name"]);
    }
}
