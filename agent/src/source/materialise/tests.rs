use super::super::Limits;
use super::super::fixture::{RawRepo, Upstream};
use super::*;
use std::os::unix::fs::PermissionsExt;

/// Nothing of a failed release is left: neither `dest` nor its `.partial`.
fn nothing_written(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    let partial = dest.with_file_name(format!(".{}.partial", dest.file_name().unwrap().to_string_lossy()));
    assert!(!partial.exists(), "{} exists", partial.display());
}

/// Deterministic bytes that do not compress (so packs and loose objects are as large as they).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fetched(up: &Upstream) -> (Source, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::open(&up.path_url(), "main", None, &dir.path().join("repo.git")).unwrap();
    let sha = source.fetch().unwrap().sha;
    (source, sha, dir)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_a_clean_tree_with_exec_bits_and_symlinks() {
    let up = Upstream::new();
    let run = up.write("bin/run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    up.write("src/app.js", "console.log(1)\n");
    std::os::unix::fs::symlink("src/app.js", up.path().join("main.js")).unwrap();
    std::os::unix::fs::symlink("../README.md", up.path().join("src/readme")).unwrap();
    up.commit("files");
    let (source, sha, dir) = fetched(&up);

    let dest = dir.path().join("releases/1-abc");
    source.materialise(&sha, ".", &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("README.md")).unwrap(), "hello\n");
    assert_eq!(fs::read_to_string(dest.join("src/app.js")).unwrap(), "console.log(1)\n");
    assert_ne!(mode(&dest.join("bin/run.sh")) & 0o111, 0, "the exec bit is kept");
    assert_eq!(mode(&dest.join("src/app.js")) & 0o111, 0);
    assert_eq!(fs::read_link(dest.join("main.js")).unwrap(), Path::new("src/app.js"));
    assert_eq!(fs::read_link(dest.join("src/readme")).unwrap(), Path::new("../README.md"));
    assert_eq!(fs::read_to_string(dest.join("src/readme")).unwrap(), "hello\n");
    assert!(!dest.join(".git").exists());
    let mut names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["1-abc"], "no partial directory is left behind");
}

#[test]
fn writes_only_the_root_subdirectory() {
    let up = Upstream::new();
    up.write("services/web/package.json", "{}\n");
    up.write("services/web/lib/index.js", "x\n");
    up.write("services/api/main.go", "package main\n");
    up.commit("monorepo");
    let (source, sha, dir) = fetched(&up);

    let dest = dir.path().join("web");
    source.materialise(&sha[..10], "services/web", &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("package.json")).unwrap(), "{}\n");
    assert_eq!(fs::read_to_string(dest.join("lib/index.js")).unwrap(), "x\n");
    assert!(!dest.join("services").exists() && !dest.join("README.md").exists());

    source.materialise(&sha, "./services/web/", &dir.path().join("web2")).unwrap();
    assert!(dir.path().join("web2/package.json").is_file());

    for bad in ["services/nope", "README.md", "../x", "/etc"] {
        let err = source.materialise(&sha, bad, &dir.path().join("bad")).unwrap_err();
        assert!(matches!(err, SourceError::RootNotFound { .. }), "{bad}: {err}");
        assert!(!dir.path().join("bad").exists());
    }
}

#[test]
fn refuses_an_existing_dest() {
    let up = Upstream::new();
    let (source, sha, dir) = fetched(&up);
    let dest = dir.path().join("release");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep"), "mine").unwrap();
    let err = source.materialise(&sha, ".", &dest).unwrap_err();
    assert!(matches!(err, SourceError::Materialise { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read_to_string(dest.join("keep")).unwrap(), "mine", "left untouched");
}

#[test]
fn an_unknown_commit_writes_nothing() {
    let up = Upstream::new();
    let (source, _sha, dir) = fetched(&up);
    let dest = dir.path().join("release");
    let err = source.materialise(&"3".repeat(40), ".", &dest).unwrap_err();
    assert!(matches!(err, SourceError::UnknownCommit { .. }), "{err}");
    assert!(!dest.exists());
}

#[test]
fn a_partial_left_by_a_crash_is_replaced() {
    let up = Upstream::new();
    let (source, sha, dir) = fetched(&up);
    let partial = dir.path().join(".release.partial");
    fs::create_dir_all(partial.join("junk")).unwrap();
    source.materialise(&sha, ".", &dir.path().join("release")).unwrap();
    assert!(!partial.exists());
    assert!(!dir.path().join("release/junk").exists());
}

#[test]
fn many_files_are_written_by_several_threads() {
    let up = Upstream::new();
    for d in 0..10 {
        for f in 0..100 {
            up.write(&format!("d{d}/f{f}.txt"), &format!("{d}/{f}\n"));
        }
    }
    up.commit("a thousand files");
    let (source, sha, dir) = fetched(&up);
    let dest = dir.path().join("release");
    source.materialise(&sha, ".", &dest).unwrap();
    for d in 0..10 {
        for f in 0..100 {
            assert_eq!(fs::read_to_string(dest.join(format!("d{d}/f{f}.txt"))).unwrap(), format!("{d}/{f}\n"));
        }
    }
}

#[test]
fn a_submodule_becomes_an_empty_directory() {
    let up = Upstream::new();
    let sub = Upstream::new();
    up.git(&["-c", "protocol.file.allow=always", "submodule", "add", "-q", &sub.path_url(), "vendor/lib"]);
    up.commit("submodule");
    let (source, sha, dir) = fetched(&up);
    let dest = dir.path().join("release");
    source.materialise(&sha, ".", &dest).unwrap();
    assert!(dest.join("vendor/lib").is_dir());
    assert_eq!(fs::read_dir(dest.join("vendor/lib")).unwrap().count(), 0);
    assert!(dest.join(".gitmodules").is_file());
}

/// Issue 9: a 30,000-level tree (~1 MB of objects) once overflowed the stack of the thread that
/// fetched it and of the one that listed it, and aborted the agent. On a thread with a 256 KiB
/// stack (an eighth of tokio's blocking threads'), the fetch stops at git's own 4096 levels; the
/// listing, straight from the repository, fails on `max_depth`, and with that limit out of the
/// way on the path's length, before anything is written.
#[test]
fn a_30000_level_tree_fails_on_max_depth_even_on_a_small_stack() {
    let raw = RawRepo::new();
    let leaf = raw.tree(&[("100644", b"leaf.txt", raw.blob(b"leaf\n"))]);
    let deep = raw.chain(30_000, leaf);
    let sha = raw.commit(raw.tree(&[("100644", b"README.md", raw.blob(b"hi\n")), ("40000", b"deep", deep)]));
    let dir = tempfile::tempdir().unwrap();
    let (url, repo, cache, dest) =
        (raw.url(), raw.path().to_path_buf(), dir.path().join("c.git"), dir.path().join("r"));
    let outcome = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let fetch = Source::open(&url, "main", None, &cache).unwrap().fetch().unwrap_err();
            assert!(matches!(
                Source::open(&url, "main", None, &cache).unwrap().resolve("main"),
                Err(SourceError::NotFetched { .. })
            ));
            let limited = Source::open(&url, "main", None, &repo).unwrap().materialise(&sha, ".", &dest).unwrap_err();
            nothing_written(&dest);
            let unlimited = Limits { max_depth: u32::MAX, ..Limits::default() };
            let source = Source::open(&url, "main", None, &repo).unwrap().with_limits(unlimited);
            let too_long = source.materialise(&sha, ".", &dest).unwrap_err();
            nothing_written(&dest);
            (fetch, limited, too_long)
        })
        .unwrap()
        .join()
        .expect("no stack overflow, no panic");
    let (fetch, limited, too_long) = outcome;
    assert!(matches!(fetch, SourceError::TooDeep { depth: 4096, .. }), "{fetch}");
    let message = fetch.to_string();
    assert!(message.contains("nests directories more than 4096 deep, at `deep/d/d/d/"), "{message}");
    assert!(message.contains("git itself refuses such trees"), "{message}");
    assert!(message.len() < 600, "the path is shortened: {message}");
    assert!(matches!(limited, SourceError::LimitExceeded { limit: Limit::Depth, .. }), "{limited}");
    let message = limited.to_string();
    assert!(message.contains("nests directories more than 256 deep, at `deep/d/d/d/"), "{message}");
    assert!(message.contains("over the app's limit `limits.max_depth: 256`"), "{message}");
    assert!(message.contains("raise `limits.max_depth`"), "{message}");
    assert!(message.len() < 600, "the path is shortened: {message}");
    assert!(matches!(too_long, SourceError::Materialise { .. }), "{too_long}");
    assert!(too_long.to_string().contains("longer than the system allows"), "{too_long}");
}

/// A directory listing longer than the entries still allowed is refused from its header, before
/// it is read: one tree of a million entries is ~30 MB.
#[test]
fn a_listing_too_long_for_max_files_is_not_read() {
    let raw = RawRepo::new();
    let blob = raw.blob(b"x");
    let names: Vec<String> = (0..400).map(|i| format!("f{i:03}")).collect();
    let entries: Vec<(&str, &[u8], git2::Oid)> = names.iter().map(|n| ("100644", n.as_bytes(), blob)).collect();
    let sha = raw.commit(raw.tree(&[("40000", b"wide", raw.tree(&entries))]));
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_files: 20, ..Limits::default() };
    let source = Source::open(&raw.url(), "main", None, raw.path()).unwrap().with_limits(limits);
    let err = source.materialise(&sha, ".", &dir.path().join("r")).unwrap_err();
    assert!(matches!(err, SourceError::LimitExceeded { limit: Limit::Files, .. }), "{err}");
    assert!(err.to_string().contains("(the listing of directory `wide` alone is 12800 bytes)"), "{err}");
}

/// Each limit stops the listing before anything is written, with an error naming its key.
#[test]
fn each_limit_fails_before_anything_is_written_and_names_its_key() {
    let up = Upstream::new();
    up.write("a/b/c/deep.txt", "deep\n");
    up.write("big.bin", &"x".repeat(3000));
    for i in 0..4 {
        up.write(&format!("f{i}.txt"), "f\n");
    }
    up.commit("ten entries");
    let (source, sha, dir) = fetched(&up);
    let cache = source.cache_dir().to_path_buf();
    let cases = [
        (Limits { max_files: 9, ..Limits::default() }, Limit::Files, "limits.max_files: 9", "more than 9 files"),
        (Limits { max_depth: 2, ..Limits::default() }, Limit::Depth, "limits.max_depth: 2", "at `a/b/c`"),
        (
            Limits { max_file_size: 2048, ..Limits::default() },
            Limit::FileSize,
            "limits.max_file_size: 2K",
            "`big.bin` in commit",
        ),
        (
            Limits { max_release_size: 3000, ..Limits::default() },
            Limit::ReleaseSize,
            "limits.max_release_size: 3000`",
            "add up to more than 3000 bytes",
        ),
    ];
    for (limits, limit, key, found) in cases {
        let dest = dir.path().join("releases").join(limit.key());
        let source = Source::open(&up.path_url(), "main", None, &cache).unwrap().with_limits(limits);
        let err = source.materialise(&sha, ".", &dest).unwrap_err();
        match &err {
            SourceError::LimitExceeded { limit: l, .. } => assert_eq!(*l, limit, "{err}"),
            other => panic!("{limit:?}: expected a limit error, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains(key) && message.contains(found), "{limit:?}: {message}");
        assert!(message.contains(&sha[..7]), "{message}");
        nothing_written(&dest);
    }
    // Right at every limit is fine: 10 entries (3 dirs, 7 files), 3 levels, 3000 + 19 bytes.
    let exact =
        Limits { max_files: 10, max_depth: 3, max_file_size: 3000, max_release_size: 3019, ..Limits::default() };
    let dest = dir.path().join("releases/exact");
    Source::open(&up.path_url(), "main", None, &cache)
        .unwrap()
        .with_limits(exact)
        .materialise(&sha, ".", &dest)
        .unwrap();
    assert_eq!(fs::read_to_string(dest.join("a/b/c/deep.txt")).unwrap(), "deep\n");
}

/// A blob over [`LARGE`] is streamed to disk from a loose object, and read whole (by one thread
/// of the agent at a time) from a pack; either way the release holds its bytes.
#[test]
fn a_large_blob_is_written_whole_from_a_loose_object_and_from_a_pack() {
    let up = Upstream::new();
    let big = noise(LARGE as usize + 12345);
    fs::write(up.path().join("big.bin"), &big).unwrap();
    up.commit("a large file");
    let (source, sha, dir) = fetched(&up);
    let blob = up.git(&["rev-parse", "HEAD:big.bin"]);
    let loose = source.cache_dir().join("objects").join(&blob[..2]).join(&blob[2..]);
    assert!(loose.is_file(), "the fetch copies a large blob as a loose object");

    source.materialise(&sha, ".", &dir.path().join("streamed")).unwrap();
    assert!(fs::read(dir.path().join("streamed/big.bin")).unwrap() == big);

    let packed = std::process::Command::new("git")
        .args(["repack", "-a", "-d", "-q"])
        .current_dir(source.cache_dir())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(packed.success());
    std::process::Command::new("git").args(["prune-packed"]).current_dir(source.cache_dir()).status().unwrap();
    assert!(!loose.exists(), "now only in a pack");
    source.materialise(&sha, ".", &dir.path().join("read")).unwrap();
    assert!(fs::read(dir.path().join("read/big.bin")).unwrap() == big);
}
