//! Reading a PM2 config as data: `ecosystem.config.js` (evaluated by `node`, as PM2 does),
//! `.json`, `.yaml`, or what `pm2 jlist` / `pm2 save` wrote.

use super::ImportError;
use serde_json::{Map, Value};
use std::path::Path;
use std::process::Command;

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
            let text = std::fs::read_to_string(file)
                .map_err(|source| ImportError::Read { file: file.to_path_buf(), source })?;
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
const out = (m) => { process.stdout.write(JSON.stringify(m === undefined ? null : m)); process.exit(0); };
const fail = (e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(3); };
try {
  out(require(file));
} catch (e) {
  if (e && (e.code === "ERR_REQUIRE_ESM" || e.code === "ERR_REQUIRE_ASYNC_MODULE")) {
    import(require("url").pathToFileURL(file).href).then((m) => out(m.default !== undefined ? m.default : m), fail);
  } else {
    fail(e);
  }
}
"#;

fn evaluate(file: &Path) -> Result<Value, ImportError> {
    let abs = std::fs::canonicalize(file).map_err(|source| ImportError::Read { file: file.to_path_buf(), source })?;
    let out = Command::new("node")
        .arg("-e")
        .arg(EVALUATE)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .output()
        .map_err(|source| ImportError::Node { source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ImportError::Evaluate { file: file.to_path_buf(), stderr: stderr.trim().to_string() });
    }
    serde_json::from_slice(&out.stdout)
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
}
