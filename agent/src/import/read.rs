//! Reading a PM2 config as data: `ecosystem.config.js` (evaluated by `node`, as PM2 does),
//! `.json`, `.yaml`, or what `pm2 jlist` / `pm2 save` wrote.

use super::ImportError;
use serde_json::{Map, Value};
use std::io::Read;
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
// An ES module (through `import()`, or `require()` where Node allows it) exports `default`.
const pick = (m) => (m && typeof m === "object" && "default" in m && !("apps" in m) ? m.default : m);
const out = (m) => { process.stdout.write(JSON.stringify(pick(m) === undefined ? null : pick(m))); process.exit(0); };
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

fn evaluate(file: &Path) -> Result<Value, ImportError> {
    let abs = std::fs::canonicalize(file).map_err(|error| ImportError::Read { file: file.to_path_buf(), error })?;
    let mut child = Command::new("node")
        .arg("-e")
        .arg(EVALUATE)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| ImportError::Node { error })?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    // Both pipes are read while the child runs (a full pipe would stall it); the readers end
    // when it exits or is killed.
    let status = std::thread::scope(|s| {
        s.spawn(|| out_pipe.map(|mut p| p.read_to_end(&mut stdout)));
        s.spawn(|| err_pipe.map(|mut p| p.read_to_end(&mut stderr)));
        let deadline = Instant::now() + EVALUATE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                // Out of time, or the child cannot be waited for: it is ended either way.
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    });
    let Some(status) = status else {
        let stderr = format!("it did not finish within {}s (does it start something?)", EVALUATE_TIMEOUT.as_secs());
        return Err(ImportError::Evaluate { file: file.to_path_buf(), stderr });
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(ImportError::Evaluate { file: file.to_path_buf(), stderr: stderr.trim().to_string() });
    }
    serde_json::from_slice(&stdout)
        .map_err(|e| ImportError::Parse { file: file.to_path_buf(), reason: format!("`node` printed no JSON: {e}") })
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
}
