//! Reading a PM2 config as data: `ecosystem.config.js` (evaluated by `node`, as PM2 does),
//! `.json`, `.yaml`, or what `pm2 jlist` / `pm2 save` wrote.

use super::ImportError;
use serde_json::{Map, Value};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the apps were read from: a config a person wrote, or a list PM2 wrote at runtime (whose
/// apps carry every key PM2 keeps, and the whole environment of the shell that started PM2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Ecosystem,
    Runtime,
}

/// A PM2 file's apps, one object each (a runtime list's many instances of one app are one app).
pub struct Apps {
    pub origin: Origin,
    pub apps: Vec<Map<String, Value>>,
    /// The file's other top-level keys (PM2's `deploy` section).
    pub other: Vec<String>,
}

pub fn apps(file: &Path) -> Result<Apps, ImportError> {
    let value = document(file)?;
    select(value).ok_or_else(|| ImportError::NoApps { file: file.to_path_buf() })
}

/// The file as a JSON value, by its extension.
fn document(file: &Path) -> Result<Value, ImportError> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "js" | "cjs" | "mjs" => evaluate(file),
        _ => {
            let text =
                std::fs::read_to_string(file).map_err(|error| ImportError::Read { file: file.to_path_buf(), error })?;
            let parsed = match ext.as_str() {
                "yaml" | "yml" => serde_yaml_ng::from_str(&text).map_err(|e| e.to_string()),
                // `.json`, `dump.pm2` and `pm2 jlist > apps` (no extension) are JSON.
                _ => serde_json::from_str(&text).map_err(|e| e.to_string()),
            };
            parsed.map_err(|reason| ImportError::Parse { file: file.to_path_buf(), reason })
        }
    }
}

/// What PM2 itself does with an ecosystem file: `require()` it (`import()` for an ES module) and
/// use what it exports. `node` prints it as JSON; functions and `undefined` are dropped.
const EVALUATE: &str = r#"
const file = process.argv[1];
// What the config prints (`console.log` while it loads) goes to stderr: stdout is the JSON alone.
const print = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
// An ES module (through `import()`, or `require()` where Node allows it) exports `default`.
const pick = (m) => (m && typeof m === "object" && "default" in m && !("apps" in m) ? m.default : m);
const out = (m) => { print(JSON.stringify(pick(m) === undefined ? null : pick(m))); process.exit(0); };
const fail = (e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(3); };
try {
  out(require(file));
} catch (e) {
  if (e && (e.code === "ERR_REQUIRE_ESM" || e.code === "ERR_REQUIRE_ASYNC_MODULE")) {
    import(require("url").pathToFileURL(file).href).then(out, fail);
  } else {
    fail(e);
  }
}
"#;

/// How long `node` may take to load the file (one that starts a server never returns).
const EVALUATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a config may print (its apps as JSON, and whatever it logs) before it is ended.
const EVALUATE_MAX_OUTPUT: u64 = 64 << 20;

fn evaluate(file: &Path) -> Result<Value, ImportError> {
    let abs = std::fs::canonicalize(file).map_err(|error| ImportError::Read { file: file.to_path_buf(), error })?;
    // stdout and stderr go to files, not pipes: a child the config starts keeps a pipe open past
    // `node`'s exit, and reading it to its end would wait for that child.
    let scratch = |error| ImportError::Node { error };
    let (mut out_file, mut err_file) = (scratch_file("out").map_err(scratch)?, scratch_file("err").map_err(scratch)?);
    let mut node = Command::new("node");
    node.arg("-e")
        .arg(EVALUATE)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().map_err(scratch)?)
        .stderr(err_file.try_clone().map_err(scratch)?);
    // A session (and group) of its own, so what it leaves running is ended with it; and ended if
    // this process dies first (Ctrl-C no longer reaches a group that is not the terminal's).
    // SAFETY: the hook makes only async-signal-safe syscalls.
    let parent = nix::unistd::getpid().as_raw();
    unsafe { node.pre_exec(move || crate::supervisor::spawn::detach_with_parent_death(parent, None)) };
    let mut child = node.spawn().map_err(|error| ImportError::Node { error })?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let printed = |f: &std::fs::File| f.metadata().map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + EVALUATE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline && printed(&out_file) + printed(&err_file) <= EVALUATE_MAX_OUTPUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            // Out of time or output, or the child cannot be waited for: it is ended either way.
            _ => {
                let _ = child.kill(); // it may have exited since: nothing to end then
                let _ = child.wait(); // reaped so no zombie is left; its status is not needed
                break None;
            }
        }
    };
    // ESRCH: nothing of the group is left running.
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let Some(status) = status else {
        let stderr = format!(
            "it did not finish within {}s, or printed more than {} MiB (does it start something?)",
            EVALUATE_TIMEOUT.as_secs(),
            EVALUATE_MAX_OUTPUT >> 20
        );
        return Err(ImportError::Evaluate { file: file.to_path_buf(), stderr });
    };
    let read_back = |f: &mut std::fs::File| -> Vec<u8> {
        let mut bytes = Vec::new();
        // A scratch file that cannot be read back reads as empty: the error below says no JSON.
        let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.take(EVALUATE_MAX_OUTPUT).read_to_end(&mut bytes));
        bytes
    };
    let (stdout, stderr) = (read_back(&mut out_file), read_back(&mut err_file));
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(ImportError::Evaluate { file: file.to_path_buf(), stderr: stderr.trim().to_string() });
    }
    serde_json::from_slice(&stdout)
        .map_err(|e| ImportError::Parse { file: file.to_path_buf(), reason: format!("`node` printed no JSON: {e}") })
}

/// A file only this process holds: created private in the temp dir, and unlinked at once.
fn scratch_file(what: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let path = std::env::temp_dir().join(format!("deployer-import-{}-{nanos}.{what}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The apps in whichever shape the file has: `{ apps: [...] }`, `{ apps: {...} }`, one app
/// `{ script, ... }`, or a list (an ecosystem's apps, `pm2 save`'s dump, `pm2 jlist`'s
/// processes with their options under `pm2_env`).
fn select(value: Value) -> Option<Apps> {
    let mut other = Vec::new();
    let list = match value {
        Value::Object(mut top) => {
            let apps = match top.remove("apps") {
                Some(Value::Array(apps)) => apps,
                Some(Value::Object(app)) => vec![Value::Object(app)],
                Some(_) => return None,
                None if top.contains_key("script") => return select(Value::Array(vec![Value::Object(top)])),
                None => return None,
            };
            other = top.keys().cloned().collect();
            apps
        }
        Value::Array(items) => items,
        _ => return None,
    };
    let mut origin = Origin::Ecosystem;
    let mut apps: Vec<Map<String, Value>> = Vec::new();
    for item in list {
        let Value::Object(mut app) = item else { continue };
        if let Some(Value::Object(env)) = app.remove("pm2_env") {
            app = env;
        }
        if app.contains_key("pm_exec_path") || app.contains_key("pm_id") {
            origin = Origin::Runtime;
        }
        // One entry per instance at runtime: the first stands for the app.
        let name = app.get("name").and_then(Value::as_str).map(String::from);
        if name.is_some() && apps.iter().any(|a| a.get("name").and_then(Value::as_str) == name.as_deref()) {
            continue;
        }
        apps.push(app);
    }
    (!apps.is_empty()).then_some(Apps { origin, apps, other })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shape_pm2_writes_gives_its_apps() {
        let eco = json!({ "apps": [{ "name": "a", "script": "a.js" }, { "script": "b.js" }], "deploy": {} });
        let read = select(eco).unwrap();
        assert_eq!((read.origin, read.apps.len(), read.other), (Origin::Ecosystem, 2, vec!["deploy".to_string()]));
        assert_eq!(select(json!({ "script": "a.js" })).unwrap().apps.len(), 1);
        // `pm2 jlist`: one entry per instance, options under `pm2_env`.
        let jlist = json!([
            { "name": "web", "pm_id": 0, "pm2_env": { "name": "web", "pm_exec_path": "/srv/app.js", "pm_id": 0 } },
            { "name": "web", "pm_id": 1, "pm2_env": { "name": "web", "pm_exec_path": "/srv/app.js", "pm_id": 1 } },
        ]);
        let read = select(jlist).unwrap();
        assert_eq!((read.origin, read.apps.len()), (Origin::Runtime, 1));
        assert_eq!(read.apps[0]["pm_exec_path"], "/srv/app.js");
        assert!(select(json!({ "module": 1 })).is_none());
        assert!(select(json!([])).is_none());
    }

    #[test]
    fn javascript_is_evaluated_by_node_as_pm2_loads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cjs = dir.path().join("ecosystem.config.cjs");
        std::fs::write(&cjs, "module.exports = { apps: [{ name: 'a', script: 'a.js', instances: 1 + 1 }] };").unwrap();
        assert_eq!(apps(&cjs).unwrap().apps[0]["instances"], 2);
        let mjs = dir.path().join("ecosystem.config.mjs");
        std::fs::write(&mjs, "export default { apps: [{ name: 'm', script: 'm.js' }] };").unwrap();
        assert_eq!(apps(&mjs).unwrap().apps[0]["name"], "m");
        let bad = dir.path().join("bad.config.js");
        std::fs::write(&bad, "throw new Error('no config here')").unwrap();
        let e = apps(&bad).err().expect("an error").to_string();
        assert!(e.contains("could not evaluate") && e.contains("no config here"), "{e}");
    }

    /// A config that starts something holding `node`'s stdout and stderr, and prints to stdout
    /// itself: it is read as soon as `node` exits, and what `node` left running in its group ends.
    #[test]
    fn a_config_that_leaves_a_child_running_and_prints_is_read_when_node_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let js = dir.path().join("ecosystem.config.js");
        std::fs::write(
            &js,
            format!(
                "const c = require('child_process').spawn('sleep', ['300'], {{ stdio: ['ignore', 'inherit', 'inherit'] }});\n\
                 require('fs').writeFileSync({:?}, String(c.pid)); c.unref();\n\
                 console.log('loading config');\n\
                 module.exports = {{ apps: [{{ name: 'a', script: 'a.js' }}] }};",
                pidfile.display().to_string()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let read = apps(&js).map_err(|e| e.to_string());
        let took = started.elapsed();
        let pid = nix::unistd::Pid::from_raw(std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap());
        let running = || {
            // A zombie (ended, not yet reaped by init) counts as ended.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat.is_empty() && !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = running();
        if left {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL); // the test's own leftover
        }
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert_eq!(read.unwrap().apps[0]["name"], "a");
        assert!(!left, "sleep {pid} still runs");
    }
}
