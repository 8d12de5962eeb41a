//! `deployer-agent import`: a PM2 config (`ecosystem.config.js`, `.json`, `.yaml`, or what
//! `pm2 jlist` / `pm2 save` wrote) as an `agent.yaml`.
//!
//! [`read`] turns the file into data (JavaScript is evaluated by `node`, as PM2 does; there is no
//! JavaScript parser here), [`pm2`] maps each app's options and names what it could not map,
//! [`yaml`] writes the result. The result is checked as `deployer-agent check` would check it.

mod pm2;
mod read;
mod yaml;

use pm2::{Mapped, Unmapped};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use yaml::Node;

/// Why a PM2 file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read `{}`: {error}", file.display())]
    Read { file: PathBuf, error: std::io::Error },
    #[error(
        "cannot run `node` to evaluate the config: {error}\n  hint: install Node.js, or export the apps as JSON with `pm2 jlist > apps.json` and import that"
    )]
    Node { error: std::io::Error },
    #[error("`node` could not evaluate `{}`:\n{stderr}", file.display())]
    Evaluate { file: PathBuf, stderr: String },
    #[error("`{}` is not valid: {reason}", file.display())]
    Parse { file: PathBuf, reason: String },
    #[error("`{}` holds no apps\n  hint: PM2 files export `{{ apps: [{{ name, script, ... }}] }}`; `pm2 jlist` and `pm2 save` write a list", file.display())]
    NoApps { file: PathBuf },
    #[error(
        "no app has `env_{0}`\n  hint: `--env NAME` merges each app's `env_NAME` over its `env`; leave it out to import `env` only"
    )]
    NoEnvSet(String),
    #[error("`{}` exists\n  hint: pass `--force` to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write `{}`: {error}", file.display())]
    Write { file: PathBuf, error: std::io::Error },
}

/// What `deployer-agent import` was asked.
pub struct Request<'a> {
    pub file: &'a Path,
    /// `--env NAME`.
    pub env: Option<&'a str>,
    /// `-o FILE`; stdout when absent.
    pub output: Option<&'a Path>,
    pub force: bool,
}

/// Import, print what was not mapped on stderr, write the config.
pub fn run(req: &Request<'_>) -> Result<ExitCode, ImportError> {
    let read::Apps { origin, apps: raw, other } = read::apps(req.file)?;
    let base = req.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    if let Some(set) = req.env
        && !raw.iter().any(|app| app.contains_key(&format!("env_{set}")))
    {
        return Err(ImportError::NoEnvSet(set.to_string()));
    }
    let cx = pm2::Context { base: &base, env: req.env, origin };
    let mut apps: Vec<Mapped> = Vec::new();
    let mut unmapped: Vec<Unmapped> = Vec::new();
    for (i, app) in raw.iter().enumerate() {
        match pm2::app(i, app, &cx) {
            Ok(mut m) => {
                // Two PM2 apps may share a name (different namespaces): the second gets a suffix.
                let taken = |n: &str| apps.iter().any(|a| a.name == n);
                if taken(&m.name) {
                    let new = (2..).map(|k| format!("{}-{k}", m.name)).find(|n| !taken(n)).unwrap_or_default();
                    m.unmapped.push(Unmapped {
                        key: format!("{new}.name"),
                        why: format!("`{}` is taken by an earlier app", m.name),
                    });
                    m.name = new;
                }
                unmapped.append(&mut m.unmapped);
                apps.push(m);
            }
            Err(skipped) => unmapped.push(skipped),
        }
    }
    for key in other {
        let why = match key.as_str() {
            "deploy" => {
                "PM2's deploy section: deployer deploys from git with `repo:` on the app and `deployer deploy` (see `deployer.yaml`)"
            }
            _ => "not a PM2 section deployer knows",
        };
        unmapped.push(Unmapped { key, why: why.into() });
    }
    let text = render(req.file, &apps, &unmapped);

    let mut err = std::io::stderr().lock();
    // stderr is the user's terminal; a closed one loses nothing the file does not hold.
    let _ = writeln!(err, "imported {} app(s) from `{}`", apps.len(), req.file.display());
    if !unmapped.is_empty() {
        let _ = writeln!(err, "not mapped:");
        for u in &unmapped {
            let _ = writeln!(err, "  {}: {}", u.key, u.why);
        }
    }
    let target = req.output.map(Path::to_path_buf).unwrap_or_else(|| base.join("agent.yaml"));
    if let Err(e) = crate::config::parse(&target, &text) {
        let _ = writeln!(err, "warning: the imported config does not pass `deployer-agent check` yet:\n{e}");
    }
    match req.output {
        Some(path) => write_new(path, &text, req.force)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|error| ImportError::Write { file: "<stdout>".into(), error })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole `agent.yaml`: a header saying where it came from and what was left out, the
/// agent's own keys (defaults, written so they can be changed), the apps.
fn render(from: &Path, apps: &[Mapped], unmapped: &[Unmapped]) -> String {
    let mut out = format!(
        "# deployer-agent config imported from `{}` by `deployer-agent import`.\n\
         # Check it with `deployer-agent check --config <this file>`; run it with `deployer-agent --config <this file>`.\n\
         # The `deployer` CLI needs an API token: add\n\
         #   tokens:\n\
         #     - {{ name: admin, token_env: DEPLOYER_TOKEN, scopes: [read, deploy] }}\n\
         # and start the agent with DEPLOYER_TOKEN set.\n",
        comment(&from.display().to_string())
    );
    if !unmapped.is_empty() {
        out.push_str("#\n# Not mapped:\n");
        for u in unmapped {
            out.push_str(&format!("#   {}: {}\n", comment(&u.key), comment(&u.why)));
        }
    }
    let top = vec![
        ("listen".to_string(), Node::Text("127.0.0.1:7070".into())),
        ("state_dir".to_string(), Node::Text("state".into())),
    ];
    yaml::block(&mut out, 0, &top);
    let apps: Vec<(String, Node)> = apps.iter().map(|a| (a.name.clone(), Node::Block(a.keys.clone()))).collect();
    yaml::block(&mut out, 0, &[("apps".to_string(), Node::Block(apps))]);
    out
}

/// `text` (a key or value from the PM2 file) on one comment line: a line break (YAML also breaks
/// lines at `\r`, NEL, LS and PS) would end the comment and let the file write keys of its own;
/// other controls are refused by YAML. A newline reads as a space, the rest as escapes.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => " ".to_string(),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                c.escape_unicode().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

/// Write `path`, refusing to replace a file unless `force`.
fn write_new(path: &Path, text: &str, force: bool) -> Result<(), ImportError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let mut file = open.open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => ImportError::Exists(path.to_path_buf()),
        _ => ImportError::Write { file: path.to_path_buf(), error },
    })?;
    file.write_all(text.as_bytes()).map_err(|error| ImportError::Write { file: path.to_path_buf(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile or unlucky PM2 file: keys and names with line breaks (which YAML also reads in
    /// `\r`, NEL, LS and PS) and characters YAML refuses (DEL, C1 controls).
    #[test]
    fn what_a_pm2_file_names_cannot_add_keys_to_the_written_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ecosystem.json");
        let evil = "x\ntokens:\n  - { name: evil, token: hunter2hunter2hunter2, scopes: [deploy] }\n#";
        let app = serde_json::json!({
            "apps": [{
                "name": "web\rtokens: [1]",
                "script": "app.js",
                evil: 1,
                "y\u{85}listen: 0.0.0.0:1": 1,
                "env": { "A": "del\u{7f}c1\u{9f}", "B": "ls\u{2028}ps\u{2029}" },
            }]
        });
        std::fs::write(&file, app.to_string()).unwrap();
        let read::Apps { origin, apps: raw, other } = read::apps(&file).unwrap();
        let cx = pm2::Context { base: dir.path(), env: None, origin };
        let mut mapped = Vec::new();
        let mut unmapped = Vec::new();
        for (i, app) in raw.iter().enumerate() {
            let Ok(mut m) = pm2::app(i, app, &cx) else { panic!("app {i} not mapped") };
            unmapped.append(&mut m.unmapped);
            mapped.push(m);
        }
        for key in other {
            unmapped.push(pm2::Unmapped { key, why: String::new() });
        }
        let text = render(&dir.path().join("a\nlisten: x"), &mapped, &unmapped);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let top: Vec<&str> = v.as_mapping().unwrap().keys().filter_map(|k| k.as_str()).collect();
        assert_eq!(top, ["listen", "state_dir", "apps"], "{text}");
        assert_eq!(v["listen"], "127.0.0.1:7070", "{text}");
        let env = &v["apps"][mapped[0].name.as_str()]["env"];
        assert_eq!(env["A"], "del\u{7f}c1\u{9f}", "{text}");
        assert_eq!(env["B"], "ls\u{2028}ps\u{2029}", "{text}");
    }
}
