//! `install_cache:` of an app: when a release's install inputs are those of the release it
//! follows, the install step is skipped and its outputs are copied from that release
//! (`deploy/install_cache.rs` does it; this is only what the key says).
//!
//! Absent (or `true`): the built-in default for the lockfile the release holds (npm, yarn, pnpm,
//! pip, poetry, uv, bundler), for an app with an `install:` step. `false`: off. A map declares
//! the inputs and outputs itself.

use super::ValueError;
use super::{At, ConfigError};
use serde::{Deserialize, Deserializer};
use std::path::{Component, Path, PathBuf};

/// `install_cache: false`, or `{ key: [package-lock.json], env: [NODE_ENV], paths: [node_modules],
/// warm: true }`. Each list may be left out to keep the built-in default's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallCacheConfig {
    /// `install_cache: false`: every deploy runs the install step.
    pub off: bool,
    /// Files whose contents make the key, relative to the release; `*` matches within one name
    /// (`requirements*.txt`). None: the default's, found from the lockfile in the release.
    pub key: Option<Vec<String>>,
    /// Variables of the install step's environment whose values make the key too.
    pub env: Vec<String>,
    /// What the install step writes, relative to the release (`node_modules`). None: the
    /// default's.
    pub paths: Option<Vec<PathBuf>>,
    /// When the key changed, copy the previous release's outputs first, so an install command
    /// that updates in place (`npm install`, not `npm ci`, which deletes them) starts warm.
    pub warm: bool,
}

impl<'de> Deserialize<'de> for InstallCacheConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked::any::<_, Raw, _>(
            d,
            "`false`, or a map like `{ key: [package-lock.json], paths: [node_modules] }`",
        )
    }
}

/// `true`/`false` or the map, read so that a mistake inside the map keeps its own message
/// (an untagged enum would only say that nothing matched).
enum Raw {
    Switch(bool),
    Spec(SpecRaw),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`false`, or a map like `{ key: [package-lock.json], paths: [node_modules] }`")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Raw, A::Error> {
                SpecRaw::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Raw::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecRaw {
    key: Option<Vec<String>>,
    #[serde(default)]
    env: Vec<String>,
    paths: Option<Vec<PathBuf>>,
    #[serde(default)]
    warm: bool,
}

impl TryFrom<Raw> for InstallCacheConfig {
    type Error = ValueError;
    fn try_from(raw: Raw) -> Result<Self, ValueError> {
        let s = match raw {
            Raw::Switch(on) => return Ok(InstallCacheConfig { off: !on, ..Default::default() }),
            Raw::Spec(s) => s,
        };
        for k in s.key.iter().flatten() {
            let p = Path::new(k);
            let wild_parent = p.parent().is_some_and(|parent| parent.to_string_lossy().contains('*'));
            if !inside(p) || wild_parent {
                return Err(ValueError::CacheKeyFile(k.clone()));
            }
        }
        for p in s.paths.iter().flatten() {
            if !inside(p) || p.to_string_lossy().contains('*') {
                return Err(ValueError::CachePath(p.display().to_string()));
            }
        }
        if s.paths.as_ref().is_some_and(Vec::is_empty) {
            return Err(ValueError::CacheNoPaths);
        }
        if let Some(v) = s.env.iter().find(|v| !env_name(v)) {
            return Err(ValueError::CacheEnv(v.clone()));
        }
        Ok(InstallCacheConfig { off: false, key: s.key, env: s.env, paths: s.paths, warm: s.warm })
    }
}

/// A relative path of plain components, at least one.
fn inside(p: &Path) -> bool {
    let mut plain = 0;
    for c in p.components() {
        match c {
            Component::Normal(_) => plain += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    plain > 0
}

fn env_name(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What fits together with the app's other keys: a declared cache needs an install step to
/// skip, and a key of its own needs the outputs it stands for.
pub(super) fn check(name: &str, cache: &InstallCacheConfig, has_install: bool, at: &At<'_>) -> Result<(), ConfigError> {
    let declared = cache.key.is_some() || cache.paths.is_some() || !cache.env.is_empty() || cache.warm;
    if declared && !has_install {
        return Err(at(
            &["apps", name, "install_cache"],
            format!("app `{name}` has `install_cache` but no `install` step to skip"),
            Some("add `install: npm ci --omit=dev` (or your install command), or remove `install_cache`".into()),
        ));
    }
    if cache.key.is_some() && cache.paths.is_none() {
        return Err(at(
            &["apps", name, "install_cache", "key"],
            format!("`install_cache.key` of app `{name}` has no `paths`: the cache would not know what to copy"),
            Some("add `paths: [node_modules]`: the directories the install step writes".into()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<InstallCacheConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shapes_it_takes() {
        assert!(read("false").unwrap().off);
        assert_eq!(read("true").unwrap(), InstallCacheConfig::default());
        let c = read(
            "{ key: [package-lock.json, 'requirements*.txt'], env: [NODE_ENV], paths: [node_modules], warm: true }",
        )
        .unwrap();
        assert_eq!(c.key.unwrap(), ["package-lock.json", "requirements*.txt"]);
        assert_eq!(c.paths.unwrap(), [PathBuf::from("node_modules")]);
        assert_eq!(c.env, ["NODE_ENV"]);
        assert!(c.warm);
    }

    #[test]
    fn mistakes_are_located_at_their_key() {
        let yaml = |cache: &str, install: &str| {
            format!(
                "apps:\n  web:\n    repo: /srv/web.git\n    start: node app.js\n{install}    install_cache: {cache}\n"
            )
        };
        let e = super::super::parse(Path::new("/x/agent.yaml"), &yaml("{ paths: [node_modules] }", "")).unwrap_err();
        assert_eq!((e.line, e.col), (5, 5), "{e}");
        assert!(e.message.contains("no `install` step"), "{e}");
        let text = yaml("\n      key: [package-lock.json]", "    install: npm ci\n");
        let e = super::super::parse(Path::new("/x/agent.yaml"), &text).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("has no `paths`"), "{e}");
        let text = yaml("\n      paths: [../up]", "    install: npm ci\n");
        let e = super::super::parse(Path::new("/x/agent.yaml"), &text).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("`../up`"), "{e}");
    }

    #[test]
    fn paths_and_names_that_leave_the_release_are_refused() {
        for (yaml, says) in [
            ("{ key: [../secret], paths: [a] }", "`../secret`"),
            ("{ key: ['*/lock'], paths: [a] }", "`*/lock`"),
            ("{ key: [a], paths: [/etc] }", "`/etc`"),
            ("{ key: [a], paths: [] }", "`paths` is empty"),
            ("{ env: ['A-B'] }", "`A-B`"),
            ("{ kee: [a] }", "unknown field"),
        ] {
            let e = read(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
