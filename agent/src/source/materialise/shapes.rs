//! Whatever the shape of a commit's tree (depth, fan-out, files, symlinks, submodules, names
//! good and bad, duplicates, chains of directories, and limits large or tiny), materialise writes
//! exactly that tree, or fails with an error the tree explains (a limit it goes over, an entry a
//! release may not hold, a tree libgit2 cannot read) and leaves nothing behind. It never panics.
//! The same holds after the tree went through a fetch from a repository on this host (the
//! iterative copy of `local.rs`).
//!
//! The trees are written object by object into a bare repository, so they include what git
//! itself would refuse to make.

use super::super::fixture::RawRepo;
use super::super::limits::Limit;
use super::super::{Limits, Source, SourceError};
use super::{NAME_MAX, PATH_MAX};
use git2::Oid;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Node {
    File {
        data: Vec<u8>,
        exec: bool,
    },
    Link(Vec<u8>),
    Dir(Vec<(Vec<u8>, Node)>),
    Submodule,
    /// A blob `odd` under a mode git does not write (`100`, `644`, `120755`): libgit2 reads it
    /// as a file, executable when any x bit is set, as its own checkout does.
    Odd(&'static str),
}

/// What a release holds at a path.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Dir,
    File(Vec<u8>, bool),
    Link(Vec<u8>),
}

/// Why a tree cannot become a release.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    Limit(Limit),
    /// A name, mode, duplicate or path a release may not hold: `SourceError::Materialise`.
    Entry,
    /// A tree libgit2 cannot parse (an empty name): `SourceError::Git`.
    Unreadable,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        24 => "[a-c]{1,2}".prop_map(String::into_bytes),
        4 => "[a-zA-Z0-9._-]{1,12}".prop_map(String::into_bytes),
        1 => Just(b".git".to_vec()),
        1 => Just(b".GiT".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(b"..".to_vec()),
        1 => Just(Vec::new()),
        1 => Just(b"a/b".to_vec()),
        1 => Just(vec![b'n'; NAME_MAX]),
        1 => Just(vec![b'n'; NAME_MAX + 1]),
        1 => Just(vec![0xff, 0xfe, b'\n', 0x01]),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        8 => (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>())
            .prop_map(|(data, exec)| Node::File { data, exec }),
        2 => "[a-z./]{1,16}".prop_map(|t| Node::Link(t.into_bytes())),
        1 => Just(Node::Submodule),
        1 => prop_oneof![Just("100"), Just("644"), Just("120755")].prop_map(Node::Odd),
    ]
}

/// `levels` directories `c/c/.../x` with `node` at the bottom, named `x`.
fn chain(levels: usize, node: Node) -> Node {
    let mut dir = Node::Dir(vec![(b"x".to_vec(), node)]);
    for _ in 1..levels {
        dir = Node::Dir(vec![(b"c".to_vec(), dir)]);
    }
    dir
}

fn tree() -> impl Strategy<Value = Vec<(Vec<u8>, Node)>> {
    let node = leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            4 => proptest::collection::vec((name(), inner.clone()), 0..6).prop_map(Node::Dir),
            1 => (1usize..40, inner).prop_map(|(levels, node)| chain(levels, node)),
        ]
    });
    proptest::collection::vec((name(), node), 0..8)
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        1 => Just(Limits::default()),
        3 => (1u64..120, 1u32..40, 1u64..2000, 1u64..3000).prop_map(|(files, depth, size, total)| Limits {
            max_files: files,
            max_depth: depth,
            max_file_size: size,
            max_release_size: total,
            ..Limits::default()
        }),
    ]
}

fn mode_of(node: &Node) -> &'static str {
    match node {
        Node::File { exec: true, .. } => "100755",
        Node::File { exec: false, .. } => "100644",
        Node::Link(_) => "120000",
        Node::Dir(_) => "40000",
        Node::Submodule => "160000",
        Node::Odd(mode) => mode,
    }
}

/// Write `entries` as a tree into `raw`; its id.
fn write_tree(raw: &RawRepo, entries: &[(Vec<u8>, Node)]) -> Oid {
    let mut written = Vec::new();
    for (name, node) in entries {
        let oid = match node {
            Node::File { data, .. } | Node::Link(data) => raw.blob(data),
            Node::Dir(children) => write_tree(raw, children),
            Node::Submodule => Oid::from_bytes(&[7; 20]).unwrap(),
            Node::Odd(_) => raw.blob(b"odd"),
        };
        written.push((mode_of(node), name.as_slice(), oid));
    }
    raw.tree(&written)
}

/// What materialise must do with a tree: the release it writes, and every reason it may fail
/// instead (the first one it meets wins, so any of them is a right answer).
struct Model<'a> {
    limits: &'a Limits,
    /// The longest absolute prefix a release path is written under.
    prefix: usize,
    entries: u64,
    bytes: u64,
    why: Vec<Why>,
    written: BTreeMap<PathBuf, Written>,
}

impl Model<'_> {
    fn dir(&mut self, entries: &[(Vec<u8>, Node)], path: &Path, depth: u32) {
        let mut names = HashSet::new();
        for (name, node) in entries {
            // Every entry listed counts, skipped or not.
            self.entries += 1;
            if self.entries > self.limits.max_files {
                self.why.push(Why::Limit(Limit::Files));
            }
            if name.eq_ignore_ascii_case(b".git") {
                continue;
            }
            if name.is_empty() {
                self.why.push(Why::Unreadable);
                continue;
            }
            let p = path.join(std::ffi::OsStr::from_bytes(name));
            if name.len() > NAME_MAX {
                // Such an entry is longer than `MAX_ENTRY`, so the listing may look too long for
                // the entries allowed before the name is even read.
                self.why.extend([Why::Entry, Why::Limit(Limit::Files)]);
                continue;
            }
            if name == b"." || name == b".." || name.contains(&b'/') {
                self.why.push(Why::Entry);
                continue;
            }
            if self.prefix + 1 + p.as_os_str().len() > PATH_MAX {
                self.why.push(Why::Entry);
                continue;
            }
            if !names.insert(name.clone()) {
                self.why.push(Why::Entry);
            }
            match node {
                Node::Dir(children) => {
                    if depth + 1 > self.limits.max_depth {
                        self.why.push(Why::Limit(Limit::Depth));
                    }
                    self.written.insert(p.clone(), Written::Dir);
                    self.dir(children, &p, depth + 1);
                }
                Node::Submodule => {
                    if depth + 1 > self.limits.max_depth {
                        self.why.push(Why::Limit(Limit::Depth));
                    }
                    self.written.insert(p, Written::Dir);
                }
                Node::File { .. } | Node::Link(_) | Node::Odd(_) => {
                    let what = match node {
                        Node::File { data, exec } => Written::File(data.clone(), *exec),
                        Node::Link(target) => Written::Link(target.clone()),
                        _ => Written::File(
                            b"odd".to_vec(),
                            u32::from_str_radix(mode_of(node), 8).is_ok_and(|m| m & 0o111 != 0),
                        ),
                    };
                    let size = match &what {
                        Written::File(data, _) | Written::Link(data) => data.len() as u64,
                        Written::Dir => 0,
                    };
                    if size > self.limits.max_file_size {
                        self.why.push(Why::Limit(Limit::FileSize));
                    }
                    self.bytes += size;
                    if self.bytes > self.limits.max_release_size {
                        self.why.push(Why::Limit(Limit::ReleaseSize));
                    }
                    self.written.insert(p, what);
                }
            }
        }
    }
}

/// Whether any tree under `entries` (`.git` ones too: a fetch copies them) has an empty name,
/// which libgit2 cannot parse.
fn unreadable_anywhere(entries: &[(Vec<u8>, Node)]) -> bool {
    entries
        .iter()
        .any(|(name, node)| name.is_empty() || matches!(node, Node::Dir(children) if unreadable_anywhere(children)))
}

/// Everything under `root`, as [`Written`].
fn on_disk(root: &Path) -> BTreeMap<PathBuf, Written> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                Written::Link(std::fs::read_link(&path).unwrap().into_os_string().into_vec())
            } else if meta.is_dir() {
                todo.push(path);
                Written::Dir
            } else {
                Written::File(std::fs::read(&path).unwrap(), meta.permissions().mode() & 0o100 != 0)
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Materialise `sha` of `source` into a fresh `dest` and hold the outcome against the model.
fn check(source: &Source, sha: &str, dest: &Path, model: &Model<'_>) -> Result<(), TestCaseError> {
    match source.materialise(sha, ".", dest) {
        Ok(_) => {
            prop_assert!(model.why.is_empty(), "written although the model says {:?}", model.why);
            prop_assert_eq!(&on_disk(dest), &model.written);
        }
        Err(e) => {
            let why = match &e {
                SourceError::LimitExceeded { limit, .. } => Why::Limit(*limit),
                SourceError::Materialise { .. } => Why::Entry,
                SourceError::Git { .. } => Why::Unreadable,
                other => return Err(TestCaseError::fail(format!("unexpected error: {other}"))),
            };
            prop_assert!(model.why.contains(&why), "failed with {e} ({why:?}); the model says {:?}", model.why);
            prop_assert!(!dest.exists());
            let partial = dest.with_file_name(format!(".{}.partial", dest.file_name().unwrap().to_string_lossy()));
            prop_assert!(!partial.exists());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn materialise_writes_exactly_the_tree_or_fails_with_its_reason(entries in tree(), limits in limits()) {
        let raw = RawRepo::new();
        let root = write_tree(&raw, &entries);
        let sha = raw.commit(root);
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("releases/r");
        let partial = out.path().join("releases/.r.partial");
        let mut model = Model {
            limits: &limits,
            prefix: partial.as_os_str().len().max(dest.as_os_str().len()),
            entries: 0,
            bytes: 0,
            why: Vec::new(),
            written: BTreeMap::new(),
        };
        model.dir(&entries, Path::new(""), 0);

        // Straight from the repository the objects were written into.
        let direct = Source::open(&raw.url(), "main", None, raw.path()).unwrap().with_limits(limits);
        check(&direct, &sha, &dest, &model)?;

        // Through a fetch by copy into a cache of its own (a tree libgit2 cannot read stops it).
        let cache = tempfile::tempdir().unwrap();
        let fetched = Source::open(&raw.url(), "main", None, &cache.path().join("repo.git")).unwrap();
        match fetched.fetch() {
            Ok(_) => {
                let dest = out.path().join("releases/f");
                model.prefix = out.path().join("releases/.f.partial").as_os_str().len();
                check(&fetched.with_limits(limits), &sha, &dest, &model)?;
            }
            Err(e) => prop_assert!(unreadable_anywhere(&entries), "the fetch failed: {e}"),
        }
    }
}
