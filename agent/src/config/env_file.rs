//! An app's `env_file`: where it is read from, and its `KEY=VALUE` lines.
//!
//! The agent reads it as root, but a relative `env_file` lives where app code and repo content
//! decide what is there: in a release (any commit), in `shared/` or a `cwd:` (both writable by
//! the app's user). So it is read beneath the app's directory with no link followed
//! ([`crate::beneath`]): a committed `.env -> /etc/shadow` or one planted in `shared/` is
//! refused, never read. An env file kept in `shared/` (`shared: [.env]`) is read from
//! `shared/` itself, not through the release's link to it. Only an absolute `env_file`, written
//! by the operator in the config, is opened as it is. Errors name the file and the line, never
//! what the file holds (it may be somebody else's secret).

use super::{AppConfig, AppSource, ConfigError, GitSource};
use crate::beneath::{BeneathError, Dir};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// An env file is a few lines; anything bigger is a mistake (or a device), not read.
const MAX_BYTES: u64 = 1 << 20;

const IF_MISSING: &str = "create it with `KEY=VALUE` lines, or remove the app's `env_file`";

/// The variables of `cfg`'s `env_file` for workers running in `release` (an app deployed from
/// git; `None` before its first release) or in `cwd`. Empty when there is no `env_file`, or
/// when a release has none (an env file is optional in a repo).
pub fn read_for_app(cfg: &AppConfig, release: Option<&str>) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(file) = &cfg.env_file else { return Ok(BTreeMap::new()) };
    if file.is_absolute() {
        // The operator's own path: trusted, links and all.
        if cfg.source.git().is_some() && !file.exists() {
            return Ok(BTreeMap::new());
        }
        return read_env_file(file);
    }
    // Where the app's user can write, a hard link to a file it could not read is not read either.
    let uid = cfg.run_as.as_ref().map(|r| r.uid);
    match (&cfg.source, release) {
        (AppSource::Dir(cwd), _) => read_beneath(cwd, file, file, Place::Cwd, uid)?.ok_or_else(|| {
            ConfigError::at(&cwd.join(file), 0, 0, "cannot read: no such file".into(), Some(IF_MISSING.into()))
        }),
        (AppSource::Git(GitSource { dir: app_dir, .. }), Some(release)) => {
            let rel = in_release(file).ok_or_else(|| {
                ConfigError::at(
                    &app_dir.join("releases").join(release).join(file),
                    0,
                    0,
                    format!("`env_file: {}` leads out of the release", file.display()),
                    Some("name a file inside the repository, or write an absolute path".into()),
                )
            })?;
            // Kept in `shared/`: the release only holds the agent's link to it.
            let shared = cfg.shared.iter().filter_map(|p| in_release(p)).any(|p| rel.starts_with(&p));
            let beneath =
                if shared { Path::new("shared").join(&rel) } else { Path::new("releases").join(release).join(&rel) };
            let place = if shared { Place::Shared } else { Place::Release };
            Ok(read_beneath(app_dir, &beneath, file, place, uid)?.unwrap_or_default())
        }
        (AppSource::Git(_), None) => Ok(BTreeMap::new()),
    }
}

/// Where an env file is read from, for the hint when it is a link.
#[derive(Clone, Copy)]
enum Place {
    Cwd,
    Release,
    Shared,
}

impl Place {
    fn link_hint(self) -> &'static str {
        match self {
            Place::Cwd => "put the file itself there, or write the absolute path of the file you mean in `env_file`",
            Place::Release => "commit the file itself, or keep it in `shared/` (`shared: [.env]`)",
            Place::Shared => "the app's user owns `shared/` and replaced the file with a link: put the file back",
        }
    }
}

/// Read `rel` beneath `dir` with no link followed (`None`: it does not exist); `env_file` is
/// how the config names it.
fn read_beneath(
    dir: &Path,
    rel: &Path,
    env_file: &Path,
    place: Place,
    uid: Option<u32>,
) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
    let shown = dir.join(rel);
    let fail = |message: String, hint: Option<&str>| ConfigError::at(&shown, 0, 0, message, hint.map(Into::into));
    let bytes = match Dir::open_trusted(dir).and_then(|d| d.read(rel, MAX_BYTES, uid)) {
        Ok(bytes) => bytes,
        Err(BeneathError::Missing(_)) => return Ok(None),
        Err(BeneathError::Link(p)) if p == shown => {
            return Err(fail(
                format!(
                    "`env_file: {}` is a symbolic link; the agent follows no link in a release, `shared/` or `cwd`",
                    env_file.display()
                ),
                Some(place.link_hint()),
            ));
        }
        Err(e @ BeneathError::Link(_)) => {
            return Err(fail(format!("cannot read `env_file: {}`: {e}", env_file.display()), Some(place.link_hint())));
        }
        Err(e) => return Err(fail(format!("cannot read `env_file: {}`: {e}", env_file.display()), None)),
    };
    parse(&shown, &bytes).map(Some)
}

/// `p` as plain components if it stays inside the release (`..` taken back lexically).
fn in_release(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir if out.pop() => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Read an env file at a path the operator wrote (links followed).
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::io(path, e, IF_MISSING))?;
    parse(path, &bytes)
}

/// `KEY=VALUE` lines: `#` comments, blank lines, optional `export `, optional quotes. A mistake
/// names the line, never its text: the file may not be the app's own (a link, a wrong path).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::at(path, line, 1, format!("line {line} is not UTF-8 text"), None)
    })?;
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError::at(
                path,
                n,
                1,
                format!("expected `KEY=VALUE` on line {n}"),
                Some("write one `KEY=VALUE` per line; `#` starts a comment".into()),
            ));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::at(
                path,
                n,
                1,
                format!("line {n}: the variable name is not letters, digits and `_`"),
                Some("use letters, digits and `_` before the `=`".into()),
            ));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SECRET: &str = "s3cr3t-value";

    fn app(yaml: &str, dir: &Path) -> AppConfig {
        let mut cfg: AppConfig = serde_yaml_ng::from_str(yaml).unwrap();
        cfg.source = match &cfg.repo {
            Some(repo) => AppSource::Git(GitSource {
                repo: repo.clone(),
                branch: cfg.branch.clone(),
                root: cfg.root.clone(),
                auth: None,
                dir: dir.join("app"),
            }),
            None => AppSource::Dir(cfg.cwd.clone().unwrap_or_default()),
        };
        cfg
    }

    /// An app dir with release `1-abc` holding `.env`, and `shared/`.
    fn layout() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("app/releases/1-abc/sub")).unwrap();
        std::fs::create_dir_all(t.path().join("app/shared")).unwrap();
        std::fs::write(t.path().join("app/releases/1-abc/.env"), "A=from-release\n").unwrap();
        std::fs::write(t.path().join("secret.env"), format!("S={SECRET}\n")).unwrap();
        t
    }

    #[test]
    fn a_release_env_file_is_read_and_a_missing_one_is_no_error() {
        let t = layout();
        let cfg = app("{ repo: x, start: x, env_file: .env }", t.path());
        assert_eq!(read_for_app(&cfg, Some("1-abc")).unwrap()["A"], "from-release");
        std::fs::remove_file(t.path().join("app/releases/1-abc/.env")).unwrap();
        assert!(read_for_app(&cfg, Some("1-abc")).unwrap().is_empty());
    }

    #[test]
    fn a_committed_link_is_refused_by_name_without_reading_it() {
        let t = layout();
        let env = t.path().join("app/releases/1-abc/.env");
        std::fs::remove_file(&env).unwrap();
        symlink(t.path().join("secret.env"), &env).unwrap();
        let cfg = app("{ repo: x, start: x, env_file: .env }", t.path());
        let e = read_for_app(&cfg, Some("1-abc")).unwrap_err().to_string();
        assert!(e.contains("releases/1-abc/.env") && e.contains("symbolic link"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        // A link on the way (`sub -> /`) too.
        let cfg = app("{ repo: x, start: x, env_file: up/secret.env }", t.path());
        symlink(t.path(), t.path().join("app/releases/1-abc/up")).unwrap();
        let e = read_for_app(&cfg, Some("1-abc")).unwrap_err().to_string();
        assert!(e.contains("releases/1-abc/up`") && e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_shared_env_file_is_read_from_shared_not_through_the_release_link() {
        let t = layout();
        let shared_env = t.path().join("app/shared/.env");
        std::fs::write(&shared_env, "A=from-shared\n").unwrap();
        let env = t.path().join("app/releases/1-abc/.env");
        std::fs::remove_file(&env).unwrap();
        symlink(&shared_env, &env).unwrap();
        let cfg = app("{ repo: x, start: x, env_file: .env, shared: [.env] }", t.path());
        assert_eq!(read_for_app(&cfg, Some("1-abc")).unwrap()["A"], "from-shared");
        // The app's user owns `shared/` and plants a link there: refused.
        std::fs::remove_file(&shared_env).unwrap();
        symlink(t.path().join("secret.env"), &shared_env).unwrap();
        let e = read_for_app(&cfg, Some("1-abc")).unwrap_err().to_string();
        assert!(e.contains("shared/.env") && e.contains("symbolic link") && !e.contains(SECRET), "{e}");
    }

    #[test]
    fn a_cwd_env_file_is_read_beneath_the_cwd_and_an_absolute_one_as_written() {
        let t = layout();
        let cwd = t.path().join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        symlink(t.path().join("secret.env"), cwd.join(".env")).unwrap();
        let mut cfg = app("{ cwd: x, start: x, env_file: .env }", t.path());
        cfg.source = AppSource::Dir(cwd.clone());
        let e = read_for_app(&cfg, None).unwrap_err().to_string();
        assert!(e.contains("symbolic link") && !e.contains(SECRET), "{e}");
        cfg.env_file = Some(cwd.join(".env"));
        assert_eq!(read_for_app(&cfg, None).unwrap()["S"], SECRET, "the operator's absolute path is trusted");
    }

    #[test]
    fn a_path_out_of_the_release_is_refused() {
        let t = layout();
        let cfg = app("{ repo: x, start: x, env_file: ../../../secret.env }", t.path());
        let e = read_for_app(&cfg, Some("1-abc")).unwrap_err().to_string();
        assert!(e.contains("leads out of the release"), "{e}");
    }

    #[test]
    fn a_line_that_does_not_parse_is_named_not_shown() {
        let p = Path::new("x/.env");
        let e = parse(p, format!("A=1\nroot:{SECRET}:0:0\n").as_bytes()).unwrap_err();
        assert_eq!((e.line, e.col), (2, 1));
        assert!(e.to_string().contains("expected `KEY=VALUE` on line 2") && !e.to_string().contains(SECRET), "{e}");
        let e = parse(p, format!("{SECRET}-x=1\n").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("line 1") && !e.to_string().contains(SECRET), "{e}");
        let e = parse(p, b"A=1\nB=\xff\n").unwrap_err();
        assert!(e.to_string().contains("line 2 is not UTF-8"), "{e}");
    }
}
