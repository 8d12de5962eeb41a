//! The install cache: a release whose install inputs are those of the release it follows gets
//! that release's install outputs copied in, and its install step is skipped.
//!
//! The *key* is a list of inputs, one `name=digest` line each: the install command, the output
//! paths, every key file's contents (a pattern that matches nothing says so), the listed
//! variables' values, and for a Node app the `node` on the install step's `PATH` (its path, size
//! and modification time: a new Node changes it; the agent runs only commands from its config, so
//! it does not ask `node --version`). It is recorded on the release's row in SQLite
//! (`store/install_keys.rs`), never in the release, which is the app user's to write.
//!
//! Key files are read and outputs copied through [`crate::beneath`]: no link is followed, in the
//! new release (whatever the commit holds) or in the previous one (whatever its workers wrote).
//! A key file that is a link, or an output path the commit already holds, turns the cache off
//! for that deploy (the install step runs as without it), saying why.
//!
//! Outputs are copied, never hard-linked: each file is a reflink (`FICLONE`, shared blocks, copy
//! on write) where the filesystem has them, else an in-kernel copy. A release's files belong to
//! the app's user, who could write or `chmod` a hard-linked file and so change the release a
//! rollback goes back to; a reflink or a copy is a file of its own.

use super::release::AppDir;
use crate::beneath::{BeneathError, Dir, Kind};
use crate::config::{AppConfig, InstallCacheConfig};
use crate::source::reflink;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The largest key file read (lockfiles of large monorepos are a few MiB).
const MAX_KEY_FILE: u64 = 64 << 20;
/// How deeply an output tree may nest (one fd per level while copying).
const MAX_DEPTH: usize = 256;
/// Files in an output's `bin/` up to this size are checked for the old release's path.
const MAX_SCRIPT: i64 = 1 << 20;

/// Why the cache was not used (the install step runs as without it), or could not be.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "no lockfile the built-in default knows is in the release ({}): declare `install_cache: {{ key: [...], paths: [...] }}`",
        KNOWN_LOCKFILES
    )]
    NoDefault,
    #[error(
        "`{0}` is not a dependency install the built-in default knows: put builds in `post_install` (it always runs), or declare `install_cache: {{ key: [...], paths: [...] }}` to cache the whole step"
    )]
    NotAnInstall(String),
    #[error("{0}")]
    Beneath(#[from] BeneathError),
    #[error("`{}` is in the commit: the install step makes it", .0.display())]
    InCommit(PathBuf),
    #[error("release {release} has no `{}`", path.display())]
    Missing { release: String, path: PathBuf },
    #[error("`{}` is nested over {MAX_DEPTH} levels deep", .0.display())]
    TooDeep(PathBuf),
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

const KNOWN_LOCKFILES: &str =
    "package-lock.json, yarn.lock, pnpm-lock.yaml, requirements*.txt, poetry.lock, uv.lock, Gemfile.lock";

/// The built-in defaults: the first whose lockfile the release holds applies.
struct Default {
    lockfile: &'static str,
    /// Key files on top of the lockfile (each may be absent).
    more: &'static [&'static str],
    paths: &'static [&'static str],
    node: bool,
}

const DEFAULTS: &[Default] = &[
    Default { lockfile: "package-lock.json", more: &[".npmrc"], paths: &["node_modules"], node: true },
    Default { lockfile: "npm-shrinkwrap.json", more: &[".npmrc"], paths: &["node_modules"], node: true },
    Default { lockfile: "pnpm-lock.yaml", more: &[".npmrc"], paths: &["node_modules"], node: true },
    Default {
        lockfile: "yarn.lock",
        more: &[".npmrc", ".yarnrc", ".yarnrc.yml"],
        paths: &["node_modules"],
        node: true,
    },
    Default { lockfile: "Gemfile.lock", more: &[".bundle/config"], paths: &["vendor/bundle"], node: false },
    Default { lockfile: "uv.lock", more: &["pyproject.toml", ".python-version"], paths: &[".venv"], node: false },
    Default { lockfile: "poetry.lock", more: &["pyproject.toml"], paths: &[".venv"], node: false },
    Default { lockfile: "requirements*.txt", more: &[".python-version"], paths: &[".venv"], node: false },
];

/// What one release's install step reads and writes, as far as the cache knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key, one `name=digest` line per input, in a fixed order.
    pub key: String,
    /// What the install step writes, relative to the release.
    pub paths: Vec<PathBuf>,
    /// Copy the previous outputs before a changed key's install step.
    pub warm: bool,
}

/// The cache plan of a new release, or None when the cache is off (`install_cache: false`, or
/// no install step). `release` is the new release's directory; `env` the install step's.
pub fn plan(cfg: &AppConfig, release: &Dir, env: &BTreeMap<String, String>) -> Result<Option<Plan>, CacheError> {
    let c: &InstallCacheConfig = &cfg.install_cache;
    if c.off || cfg.install.0.is_empty() {
        return Ok(None);
    }
    let default = match (&c.key, &c.paths) {
        (Some(_), Some(_)) => None,
        _ => {
            // A skipped step must not skip a build: the default caches dependency installs only.
            if let Some(argv) = cfg.install.0.iter().find(|argv| !installs_dependencies(argv)) {
                return Err(CacheError::NotAnInstall(shell_words::join(argv)));
            }
            Some(find_default(release)?.ok_or(CacheError::NoDefault)?)
        }
    };
    let key_files: Vec<String> = match (&c.key, default) {
        (Some(k), _) => k.clone(),
        (None, Some(d)) => std::iter::once(d.lockfile).chain(d.more.iter().copied()).map(String::from).collect(),
        (None, None) => Vec::new(),
    };
    let paths: Vec<PathBuf> = match (&c.paths, default) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.paths.iter().map(PathBuf::from).collect(),
        (None, None) => Vec::new(),
    };
    let node = default.is_some_and(|d| d.node) || runs_node(cfg);
    let mut lines = vec![
        format!("install={}", digest(format!("{:?}", cfg.install.0).as_bytes())),
        format!("paths={}", digest(format!("{paths:?}").as_bytes())),
    ];
    for pattern in &key_files {
        let found = matching(release, pattern)?;
        if found.is_empty() {
            lines.push(format!("file:{pattern}=absent"));
        }
        for rel in found {
            // The release is the app user's already: a file linked in from elsewhere is refused.
            let bytes = release.read(Path::new(&rel), MAX_KEY_FILE, cfg.run_as.as_ref().map(|r| r.uid))?;
            lines.push(format!("file:{rel}={}", digest(&bytes)));
        }
    }
    for var in &c.env {
        let value = env.get(var).map_or_else(|| "unset".to_string(), |v| digest(v.as_bytes()));
        lines.push(format!("env:{var}={value}"));
    }
    if node {
        lines.push(format!("node={}", node_identity(env)));
    }
    Ok(Some(Plan { key: lines.join("\n"), paths, warm: c.warm }))
}

/// The first built-in default whose lockfile the release holds.
fn find_default(release: &Dir) -> Result<Option<&'static Default>, CacheError> {
    for d in DEFAULTS {
        if !matching(release, d.lockfile)?.is_empty() {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Whether `argv` only installs dependencies (`npm ci`, `pip install -r requirements.txt`,
/// `bundle install`...), so that skipping it skips nothing but what the outputs hold.
fn installs_dependencies(argv: &[String]) -> bool {
    let name = argv.first().and_then(|a| Path::new(a).file_name()).and_then(OsStr::to_str).unwrap_or("");
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    match (name, args.as_slice()) {
        ("npm", [sub, ..]) => matches!(*sub, "ci" | "install" | "i" | "clean-install"),
        ("pnpm", [sub, ..]) => matches!(*sub, "install" | "i"),
        ("yarn", []) | ("yarn", ["install", ..]) => true,
        ("pip" | "pip3", ["install", ..]) => true,
        ("python" | "python3", ["pip", "install", ..]) => argv.iter().any(|a| a == "-m"),
        ("python" | "python3", ["venv", ..]) => argv.iter().any(|a| a == "-m"),
        ("uv", [sub, ..]) => matches!(*sub, "sync" | "venv") || args.starts_with(&["pip", "install"]),
        ("poetry", ["install", ..]) => true,
        ("bundle" | "bundler", [sub, ..]) => matches!(*sub, "install" | "config"),
        _ => false,
    }
}

/// Whether the app's install step or workers are Node's tools.
fn runs_node(cfg: &AppConfig) -> bool {
    let is_node = |argv0: &str| {
        let name = Path::new(argv0).file_name().and_then(OsStr::to_str).unwrap_or("");
        matches!(name, "node" | "npm" | "npx" | "yarn" | "pnpm" | "corepack")
    };
    cfg.install.0.iter().filter_map(|argv| argv.first()).any(|a| is_node(a))
        || cfg.start.0.first().is_some_and(|a| is_node(a))
}

/// The `node` the install step would run: the first on its `PATH`, by path, size and
/// modification time.
fn node_identity(env: &BTreeMap<String, String>) -> String {
    let path = env.get("PATH").map(String::as_str).unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in std::env::split_paths(path) {
        let candidate = dir.join("node");
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
        {
            use std::os::unix::fs::MetadataExt;
            let real = std::fs::canonicalize(&candidate).unwrap_or(candidate);
            return digest(format!("{}:{}:{}.{}", real.display(), m.size(), m.mtime(), m.mtime_nsec()).as_bytes());
        }
    }
    "none".into()
}

/// The files `pattern` names in the release (a `*` matches within the last name), sorted.
/// A link where a key file or its directory should be is an error: the agent reads no link.
fn matching(release: &Dir, pattern: &str) -> Result<Vec<String>, CacheError> {
    if !pattern.contains('*') {
        return match release.open_dir(Path::new(pattern)) {
            Ok(_) => Ok(Vec::new()),
            Err(BeneathError::Missing(_)) => Ok(Vec::new()),
            Err(BeneathError::NotADir(_)) => Ok(vec![pattern.to_string()]),
            Err(e) => Err(e.into()),
        };
    }
    let p = Path::new(pattern);
    let parent = p.parent().unwrap_or(Path::new(""));
    let glob = p.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let dir = match release.open_dir(parent) {
        Err(BeneathError::Missing(_) | BeneathError::NotADir(_)) => return Ok(Vec::new()),
        other => other?,
    };
    let mut found = Vec::new();
    for (name, kind) in dir.entries()? {
        if !glob_match(glob, name.as_bytes()) {
            continue;
        }
        let rel = parent.join(&name);
        match kind {
            Kind::File => found.push(rel.to_string_lossy().into_owned()),
            Kind::Link => return Err(BeneathError::Link(dir.path().join(&name)).into()),
            Kind::Dir | Kind::Other => {}
        }
    }
    found.sort();
    Ok(found)
}

/// `*` matches any run of bytes; everything else itself.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.iter().position(|&b| b == b'*') {
        None => pattern == name,
        Some(i) => {
            let (head, rest) = (&pattern[..i], &pattern[i + 1..]);
            name.starts_with(head) && (head.len()..=name.len()).any(|j| glob_match(rest, &name[j..]))
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// The inputs whose digests differ between two keys, for people: `package-lock.json`, `the
/// install command`, `NODE_ENV`, `node`.
pub fn changed(previous: &str, now: &str) -> Vec<String> {
    let parse = |k: &str| -> BTreeMap<String, String> {
        k.lines().filter_map(|l| l.split_once('=')).map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    let (was, is) = (parse(previous), parse(now));
    let names: std::collections::BTreeSet<&String> = was.keys().chain(is.keys()).collect();
    names
        .into_iter()
        .filter(|n| was.get(*n) != is.get(*n))
        .map(|n| match n.as_str() {
            "install" => "the install command".to_string(),
            "paths" => "the output paths".to_string(),
            other => other.trim_start_matches("file:").trim_start_matches("env:").to_string(),
        })
        .collect()
}

/// What a copy of outputs did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Files that share their blocks with the source (`FICLONE`).
    pub reflinked: u64,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.reflinked == self.files && self.files > 0 { "reflinked" } else { "copied" };
        write!(f, "{how} {} files, {:.1} MiB", self.files, self.bytes as f64 / f64::from(1 << 20))
    }
}

/// Whether release `name` of `dir` still has every output path, as directories or files
/// (a link there is not an output).
pub fn has_outputs(dir: &AppDir, name: &str, paths: &[PathBuf]) -> Result<(), CacheError> {
    let release = Dir::open_trusted(&dir.release(name))?;
    for p in paths {
        let (parent, leaf) = split(p)?;
        let missing = || CacheError::Missing { release: name.to_string(), path: p.clone() };
        let at = match release.open_dir(&parent) {
            Err(BeneathError::Missing(_) | BeneathError::NotADir(_)) => return Err(missing()),
            other => other?,
        };
        match at.kind(&leaf)? {
            Some(Kind::Dir | Kind::File) => {}
            Some(Kind::Link) => return Err(BeneathError::Link(at.path().join(&leaf)).into()),
            _ => return Err(missing()),
        }
    }
    Ok(())
}

/// Copy `paths` of release `from` into release `to` (neither may hold a link on the way, and
/// `to` must not hold them yet), owned by `owner` (uid, gid) or the agent. Each path is copied
/// under a temporary name and renamed into place, so a failed copy leaves nothing half-done
/// where the install step would look.
pub fn copy_outputs(
    dir: &AppDir,
    from: &str,
    to: &str,
    paths: &[PathBuf],
    owner: Option<(u32, u32)>,
) -> Result<Copied, CacheError> {
    let src_root = Dir::open_trusted(&dir.release(from))?;
    let dst_root = Dir::open_trusted(&dir.release(to))?;
    let rewrite = Rewrite {
        from: dir.release(from).as_os_str().as_bytes().to_vec(),
        to: dir.release(to).as_os_str().as_bytes().to_vec(),
    };
    let mut copied = Copied::default();
    for p in paths {
        let (parent, leaf) = split(p)?;
        let src_parent = match src_root.open_dir(&parent) {
            Err(BeneathError::Missing(_) | BeneathError::NotADir(_)) => {
                return Err(CacheError::Missing { release: from.to_string(), path: p.clone() });
            }
            other => other?,
        };
        let dst_parent = create_dirs(&dst_root, &parent, owner)?;
        if dst_parent.kind(&leaf)?.is_some() {
            return Err(CacheError::InCommit(p.clone()));
        }
        let mut partial = OsString::from(".");
        partial.push(&leaf);
        partial.push(".cache-partial");
        if dst_parent.kind(&partial)?.is_some() {
            dst_parent.remove_all(&partial)?;
        }
        let done = copy_entry(&src_parent, &leaf, &dst_parent, &partial, owner, &rewrite, &mut copied)
            .and_then(|()| dst_parent.move_to(&partial, &dst_parent, &leaf).map_err(CacheError::from));
        if let Err(e) = done {
            if let Err(left) = dst_parent.remove_all(&partial) {
                tracing::warn!(error = %left, "cannot remove a half-copied install output");
            }
            return Err(e);
        }
    }
    Ok(copied)
}

/// A release's own directory in the scripts of an output's `bin/` (a Python venv's entry points
/// start `#!<release>/.venv/bin/python`): the copy names the new release instead.
struct Rewrite {
    from: Vec<u8>,
    to: Vec<u8>,
}

/// `rel` as its parent and its last name, plain components only.
fn split(rel: &Path) -> Result<(PathBuf, OsString), CacheError> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            _ => return Err(BeneathError::Outside(rel.to_path_buf(), PathBuf::from(".")).into()),
        }
    }
    let leaf = parts.pop().ok_or_else(|| BeneathError::Outside(rel.to_path_buf(), PathBuf::from(".")))?;
    Ok((parts.iter().collect(), leaf.to_os_string()))
}

/// The directory `rel` beneath `root`, each missing level made and given to `owner`.
fn create_dirs(root: &Dir, rel: &Path, owner: Option<(u32, u32)>) -> Result<Dir, CacheError> {
    let mut cur = root.open_dir(Path::new(""))?;
    for part in rel.iter() {
        if cur.kind(part)?.is_none() {
            cur.create_dir(part, 0o755)?;
            if let Some((uid, gid)) = owner {
                cur.chown(part, uid, gid)?;
            }
        }
        cur = cur.open_dir(Path::new(part))?;
    }
    Ok(cur)
}

/// One directory being copied: the source, the copy, the entries still to copy, and whether it
/// is an output's `bin/`.
struct Level {
    src: Dir,
    dst: Dir,
    todo: Vec<(OsString, Kind)>,
    bin: bool,
}

/// Copy the entry `name` of `src` to `to_name` in `dst`: a directory with all it holds
/// (iteratively, one fd per level), a file, or a link as a link.
fn copy_entry(
    src: &Dir,
    name: &OsStr,
    dst: &Dir,
    to_name: &OsStr,
    owner: Option<(u32, u32)>,
    rewrite: &Rewrite,
    copied: &mut Copied,
) -> Result<(), CacheError> {
    let kind = src.kind(name)?;
    if kind != Some(Kind::Dir) {
        return copy_one(src, name, kind, dst, to_name, owner, None, copied);
    }
    make_dir(src, name, dst, to_name, owner)?;
    let (s, d) = (src.open_dir(Path::new(name))?, dst.open_dir(Path::new(to_name))?);
    let todo = s.entries()?;
    let mut stack = vec![Level { src: s, dst: d, todo, bin: false }];
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else { break };
        let Some((child, kind)) = level.todo.pop() else {
            stack.pop();
            continue;
        };
        if kind != Kind::Dir {
            let rw = level.bin.then_some(rewrite);
            copy_one(&level.src, &child, Some(kind), &level.dst, &child, owner, rw, copied)?;
            continue;
        }
        if depth >= MAX_DEPTH {
            return Err(CacheError::TooDeep(level.src.path().join(&child)));
        }
        make_dir(&level.src, &child, &level.dst, &child, owner)?;
        let (s, d) = (level.src.open_dir(Path::new(&child))?, level.dst.open_dir(Path::new(&child))?);
        let todo = s.entries()?;
        let bin = depth == 1 && child == "bin";
        stack.push(Level { src: s, dst: d, todo, bin });
    }
    Ok(())
}

/// Make `to_name` in `dst` with the mode of the directory `name` in `src`, given to `owner`.
fn make_dir(src: &Dir, name: &OsStr, dst: &Dir, to_name: &OsStr, owner: Option<(u32, u32)>) -> Result<(), CacheError> {
    let mode = src.stat(name)?.map_or(0o755, |st| st.st_mode & 0o7777);
    dst.create_dir(to_name, 0o700)?;
    let made = dst.open_dir(Path::new(to_name))?;
    if let Some((uid, gid)) = owner {
        made.chown_self(uid, gid)?;
    }
    nix::sys::stat::fchmod(made.as_fd(), Mode::from_bits_truncate(mode & 0o777)).map_err(|e| io_at(made.path(), e))?;
    Ok(())
}

fn io_at(path: &Path, e: Errno) -> CacheError {
    CacheError::Io { path: path.to_path_buf(), source: e.into() }
}

/// Copy one entry that is not a directory: a link as a link, a regular file (reflinked where the
/// filesystem can), nothing else (a fifo or socket is no install output).
#[allow(clippy::too_many_arguments)]
fn copy_one(
    src: &Dir,
    name: &OsStr,
    kind: Option<Kind>,
    dst: &Dir,
    to_name: &OsStr,
    owner: Option<(u32, u32)>,
    rewrite: Option<&Rewrite>,
    copied: &mut Copied,
) -> Result<(), CacheError> {
    let shown = || src.path().join(name);
    match kind {
        Some(Kind::Link) => {
            let target = nix::fcntl::readlinkat(src.as_fd(), name).map_err(|e| io_at(&shown(), e))?;
            dst.symlink(to_name, Path::new(&target))?;
            if let Some((uid, gid)) = owner {
                dst.chown(to_name, uid, gid)?;
            }
            Ok(())
        }
        Some(Kind::File) => {
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            let from = match nix::fcntl::openat(src.as_fd(), name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ELOOP) => return Err(BeneathError::Link(shown()).into()),
                Err(e) => return Err(io_at(&shown(), e)),
            };
            let st = nix::sys::stat::fstat(from.as_fd()).map_err(|e| io_at(&shown(), e))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Ok(());
            }
            // Somebody else's file linked in (where the kernel lets users link what they do
            // not own): never read into a file the app's user gets.
            let mine = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
            if st.st_nlink > 1 && st.st_uid != mine {
                return Err(BeneathError::HardLinked(shown()).into());
            }
            let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let to = nix::fcntl::openat(dst.as_fd(), to_name, create, Mode::from_bits_truncate(0o600))
                .map_err(|e| io_at(&dst.path().join(to_name), e))?;
            let shown_to = dst.path().join(to_name);
            match rewrite.filter(|_| st.st_size <= MAX_SCRIPT) {
                Some(rw) => {
                    write_rewritten(from, &to, rw).map_err(|source| CacheError::Io { path: shown(), source })?
                }
                None => {
                    if reflink(&from, &to).is_ok() {
                        copied.reflinked += 1;
                    } else {
                        let (mut r, mut w) = (
                            std::fs::File::from(from),
                            std::fs::File::from(
                                to.try_clone().map_err(|source| CacheError::Io { path: shown_to.clone(), source })?,
                            ),
                        );
                        std::io::copy(&mut r, &mut w).map_err(|source| CacheError::Io { path: shown(), source })?;
                    }
                }
            }
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(
                    to.as_fd(),
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .map_err(|e| io_at(&shown_to, e))?;
            }
            nix::sys::stat::fchmod(to.as_fd(), Mode::from_bits_truncate(file_mode(&st)))
                .map_err(|e| io_at(&shown_to, e))?;
            copied.files += 1;
            copied.bytes += st.st_size as u64;
            Ok(())
        }
        // Gone since it was listed, or a fifo, socket or device.
        _ => Ok(()),
    }
}

/// The permission bits a copy keeps: no set-id bits (the copy belongs to another owner).
fn file_mode(st: &FileStat) -> u32 {
    st.st_mode & 0o777
}

/// A script of an output's `bin/`, with the old release's directory replaced by the new one's.
fn write_rewritten(from: OwnedFd, to: &OwnedFd, rw: &Rewrite) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    std::fs::File::from(from).take(MAX_SCRIPT as u64 + 1).read_to_end(&mut bytes)?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes.as_slice();
    while let Some(i) = memchr::memmem::find(rest, &rw.from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(&rw.to);
        rest = &rest[i + rw.from.len()..];
    }
    out.extend_from_slice(rest);
    std::fs::File::from(to.try_clone()?).write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_a_name() {
        assert!(glob_match(b"requirements*.txt", b"requirements.txt"));
        assert!(glob_match(b"requirements*.txt", b"requirements-dev.txt"));
        assert!(!glob_match(b"requirements*.txt", b"requirements.txt.bak"));
        assert!(glob_match(b"*", b"anything"));
    }

    #[test]
    fn the_default_caches_dependency_installs_only() {
        let argv = |line: &str| shell_words::split(line).unwrap();
        for yes in [
            "npm ci --omit=dev",
            "npm install",
            "yarn",
            "yarn install --frozen-lockfile",
            "pnpm i",
            "pip install -r requirements.txt",
            "python3 -m pip install -r requirements.txt",
            "uv sync --frozen",
            "poetry install --no-root",
            "bundle install",
            "bundle config set deployment true",
            "/usr/bin/npm ci",
        ] {
            assert!(installs_dependencies(&argv(yes)), "{yes}");
        }
        for no in
            ["npm run build", "make", "sh install.sh", "yarn build", "python3 manage.py migrate", "npx prisma generate"]
        {
            assert!(!installs_dependencies(&argv(no)), "{no}");
        }
    }

    #[test]
    fn changed_names_the_inputs_that_differ() {
        let a = "install=1\npaths=2\nfile:package-lock.json=3\nfile:.npmrc=absent\nenv:NODE_ENV=4\nnode=5";
        let b = "install=1\npaths=2\nfile:package-lock.json=9\nfile:.npmrc=absent\nenv:NODE_ENV=8\nnode=5";
        assert_eq!(changed(a, b), ["NODE_ENV", "package-lock.json"]);
        assert!(changed(a, a).is_empty());
    }

    #[test]
    fn a_copy_is_a_file_of_its_own_links_stay_links_and_bin_scripts_name_the_new_release() {
        let t = tempfile::tempdir().unwrap();
        let dir = AppDir::new(t.path().join("app"));
        dir.create(None).unwrap();
        let (a, b) = (dir.release("1-aaa"), dir.release("2-bbb"));
        std::fs::create_dir_all(a.join("node_modules/x/bin")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("node_modules/x/index.js"), "module.exports = 1\n").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), a.join("node_modules/out")).unwrap();
        std::fs::create_dir_all(a.join(".venv/bin")).unwrap();
        std::fs::write(a.join(".venv/bin/tool"), format!("#!{}/.venv/bin/python\n", a.display())).unwrap();
        let paths = [PathBuf::from("node_modules"), PathBuf::from(".venv")];
        has_outputs(&dir, "1-aaa", &paths).unwrap();
        let c = copy_outputs(&dir, "1-aaa", "2-bbb", &paths, None).unwrap();
        assert_eq!(c.files, 2);
        assert_eq!(std::fs::read_to_string(b.join("node_modules/x/index.js")).unwrap(), "module.exports = 1\n");
        std::fs::write(b.join("node_modules/x/index.js"), "changed").unwrap();
        assert_eq!(std::fs::read_to_string(a.join("node_modules/x/index.js")).unwrap(), "module.exports = 1\n");
        assert_eq!(std::fs::read_link(b.join("node_modules/out")).unwrap(), t.path().join("secret"));
        assert_eq!(
            std::fs::read_to_string(b.join(".venv/bin/tool")).unwrap(),
            format!("#!{}/.venv/bin/python\n", b.display())
        );
        // Again: the outputs are there now, so it is the commit's (refused, nothing changed).
        assert!(matches!(copy_outputs(&dir, "1-aaa", "2-bbb", &paths, None), Err(CacheError::InCommit(_))));
        assert!(matches!(
            has_outputs(&dir, "2-bbb", &[PathBuf::from("vendor/bundle")]),
            Err(CacheError::Missing { .. })
        ));
    }

    #[test]
    fn a_link_in_place_of_an_output_or_its_parent_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let dir = AppDir::new(t.path().join("app"));
        dir.create(None).unwrap();
        let (a, b) = (dir.release("1-aaa"), dir.release("2-bbb"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(t.path().join("outside/bundle")).unwrap();
        std::fs::write(t.path().join("outside/bundle/f"), "f").unwrap();
        std::fs::create_dir_all(&a).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), a.join("vendor")).unwrap();
        let paths = [PathBuf::from("vendor/bundle")];
        assert!(matches!(has_outputs(&dir, "1-aaa", &paths), Err(CacheError::Beneath(BeneathError::Link(_)))));
        assert!(matches!(
            copy_outputs(&dir, "1-aaa", "2-bbb", &paths, None),
            Err(CacheError::Beneath(BeneathError::Link(_)))
        ));
        // In the new release: a committed `vendor` link is not written through.
        std::fs::remove_file(a.join("vendor")).unwrap();
        std::fs::create_dir_all(a.join("vendor/bundle")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), b.join("vendor")).unwrap();
        assert!(copy_outputs(&dir, "1-aaa", "2-bbb", &paths, None).is_err());
        assert_eq!(std::fs::read_dir(t.path().join("outside")).unwrap().count(), 1, "wrote through the link");
    }
}
