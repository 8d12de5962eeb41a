//! Large files are not rewritten: a file of 1 MiB or more is written once into the app's object
//! store (`<app dir>/objects/`, root's, read-only) and hard-linked (or reflinked) into each release
//! that holds it. A release is still exactly its commit, the app's user cannot change a file that
//! another release shares, a rollback serves the older release's own bytes, and pruning releases
//! removes the objects no release links any more.

use deployer_tests::{Agent, TestEnv, TestRepo, http};
use deployer_wire::Deploy;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An app that answers the first line of its large file `assets/big.txt`.
const APP: &str = "\
const http = require('http');
const fs = require('fs');
http.createServer((req, res) => {
  const first = fs.readFileSync('assets/big.txt', 'latin1').split('\\n')[0];
  res.end(`${first} ${process.env.GREETING || 'hello'}\\n`);
}).listen(Number(process.env.PORT));
";

/// Deterministic bytes that do not compress.
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Commit `files` (path, bytes, executable) into `repo`; answers the sha.
fn commit_bytes(repo: &TestRepo, files: &[(&str, Vec<u8>, bool)], message: &str) -> String {
    for (path, bytes, exec) in files {
        let p = repo.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(if *exec { 0o755 } else { 0o644 })).unwrap();
    }
    repo.git(&["add", "--all"]);
    repo.git(&["commit", "--quiet", "--message", message]);
    repo.head()
}

/// `assets/big.txt` (2 MiB, its first line `version`) as committed.
fn big_text(version: &str) -> Vec<u8> {
    let mut bytes = format!("{version}\n").into_bytes();
    bytes.extend(noise(2 << 20, 42).iter().map(|b| b'a' + b % 26));
    bytes
}

/// The example app serving [`APP`], with a large text file and a large executable.
fn repo() -> TestRepo {
    let repo = TestRepo::with_example_app();
    repo.commit_file("app.js", APP, "an app that reads a large file");
    commit_bytes(
        &repo,
        &[("assets/big.txt", big_text("v1"), false), ("bin/tool", noise(3 << 19, 7), true)],
        "large files",
    );
    repo
}

/// An agent deploying `repo` as `user: nobody` (None when this is not root).
fn start_as_nobody(repo: &TestRepo, keep: u32) -> Option<Agent> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can run an app as another user");
        return None;
    }
    let setup =
        TestEnv::new().web(|a| a.repo(repo).set("user", "nobody").set("keep_releases", &keep.to_string())).setup();
    // The test's temp dir is private to root; `nobody` must reach the releases inside it.
    std::fs::set_permissions(setup.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
    Some(setup.start())
}

fn deploy(agent: &Agent) -> Deploy {
    let d = agent.wait_deploy(agent.deploy("web", "main"));
    assert_eq!(d.state, "live", "{d:#?}");
    d
}

fn release_dir(agent: &Agent, d: &Deploy) -> PathBuf {
    agent.app_dir("web").join("releases").join(d.release.as_deref().expect("the deploy names its release"))
}

fn answer(agent: &Agent) -> String {
    http::get(agent.port("web"), "/").map(|r| r.body).unwrap_or_else(|e| format!("(no answer: {e})"))
}

/// The store's file for `path` at commit `sha`: its blob id, `.x` when executable.
fn object(agent: &Agent, repo: &TestRepo, sha: &str, path: &str, exec: bool) -> PathBuf {
    let blob = repo.git(&["rev-parse", &format!("{sha}:{path}")]).stdout.trim().to_string();
    agent.app_dir("web").join("objects").join(if exec { format!("{blob}.x") } else { blob })
}

/// Every entry under `root`: relative path -> (kind, bytes or link target, executable).
fn tree(root: &Path) -> BTreeMap<PathBuf, (char, Vec<u8>, bool)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(rel, ('d', Vec::new(), false));
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, ('l', std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes(), false));
            } else {
                out.insert(rel, ('f', std::fs::read(&path).unwrap(), meta.mode() & 0o100 != 0));
            }
        }
    }
    out
}

/// The release is `git archive` of its commit: the same paths, bytes, links and executable bits.
fn assert_is_its_commit(repo: &TestRepo, sha: &str, release: &Path) {
    let archive = tempfile::tempdir().unwrap();
    let tar = archive.path().join("a.tar");
    repo.git(&["archive", "--format=tar", "-o", tar.to_str().unwrap(), sha]);
    let out = archive.path().join("tree");
    std::fs::create_dir(&out).unwrap();
    let status = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out).status().unwrap();
    assert!(status.success());
    let (want, got) = (tree(&out), tree(release));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "{}", release.display());
    for (path, entry) in &want {
        assert!(got[path] == *entry, "`{}` in {} differs from its commit", path.display(), release.display());
    }
}

/// Run `sh -c script` as `nobody` in `dir`; whether it succeeded.
fn as_nobody(dir: &Path, script: &str) -> bool {
    let out =
        Command::new("runuser").args(["-u", "nobody", "--", "sh", "-c", script]).current_dir(dir).output().unwrap();
    eprintln!("nobody: {script}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.status.success()
}

#[test]
fn an_unchanged_large_file_is_linked_from_the_store_and_the_release_is_its_commit() {
    let repo = repo();
    let Some(agent) = start_as_nobody(&repo, 5) else { return };
    let first = agent.deploy_status(agent.history("web").pop().expect("the startup deploy").id);
    let sha1 = first.sha.clone().unwrap();
    let v2 = repo.commit_greeting("v2");
    let d = deploy(&agent);
    let (r1, r2) = (release_dir(&agent, &first), release_dir(&agent, &d));
    assert_is_its_commit(&repo, &sha1, &r1);
    assert_is_its_commit(&repo, &v2, &r2);

    // With hard links (ext4) one inode: the store's read-only, root-owned copy, in both
    // releases. With reflinks (XFS, btrfs) each release has a file of its own, the app's.
    let hard = std::fs::metadata(object(&agent, &repo, &v2, "assets/big.txt", false)).unwrap().nlink() > 1;
    for (path, exec, mode) in [("assets/big.txt", false, 0o444), ("bin/tool", true, 0o555)] {
        let obj = std::fs::metadata(object(&agent, &repo, &v2, path, exec)).expect("the object is in the store");
        assert_eq!((obj.mode() & 0o7777, obj.uid()), (mode, 0), "{path}");
        let (a, b) = (std::fs::metadata(r1.join(path)).unwrap(), std::fs::metadata(r2.join(path)).unwrap());
        if hard {
            assert_eq!((a.ino(), b.ino(), obj.nlink()), (obj.ino(), obj.ino(), 3), "{path} was written again");
        } else {
            assert_eq!((a.nlink(), a.uid(), b.nlink(), b.uid()), (1, 65534, 1, 65534), "{path}");
        }
    }
    // Small files are the release's own, given to its user.
    let app = std::fs::metadata(r2.join("app.js")).unwrap();
    assert_eq!((app.nlink(), app.uid()), (1, 65534));
    let how = if hard { "hard-linked" } else { "reflinked" };
    let event = d.events.iter().map(|e| e.message.as_str()).find(|m| m.contains("materialised in")).unwrap();
    let said = format!("(2 large files (3.5M): 2 {how}; 0 new in the object store (0 bytes))");
    assert!(event.ends_with(&said), "{event}");
    assert!(answer(&agent).starts_with("v1 v2"), "{}", answer(&agent));

    // The app's user cannot change the shared file, through either release (a reflink is its
    // own file: changing it changes no other release).
    let big = "assets/big.txt";
    let own = !hard;
    assert_eq!(as_nobody(&r1, &format!("echo x >> {big}")), own, "appended through the link");
    assert_eq!(as_nobody(&r1, &format!("truncate -s 0 {big}")), own, "truncated through the link");
    assert_eq!(as_nobody(&r1, &format!("chmod 666 {big}")), own, "chmod of the store's file");
    assert_eq!(as_nobody(&r1, &format!("touch -d 2001-01-01 {big}")), own, "changed its times");
    assert!(!as_nobody(&r1, "ls ../../objects"), "the store is listable by the app's user");
    assert_eq!(std::fs::read(r2.join(big)).unwrap(), big_text("v1"));
    // It may replace its own release's entry (its directory is its own): that changes no other.
    assert!(as_nobody(&r1, &format!("rm -f {big} && echo mine > {big}")));
    assert_eq!(std::fs::read(r1.join(big)).unwrap(), b"mine\n");
    assert_eq!(std::fs::read(r2.join(big)).unwrap(), big_text("v1"));
    assert_eq!(std::fs::read(object(&agent, &repo, &v2, big, false)).unwrap(), big_text("v1"));
}

#[test]
fn a_rollback_serves_its_own_large_file_and_pruning_removes_unlinked_objects() {
    let repo = repo();
    let Some(agent) = start_as_nobody(&repo, 2) else { return };
    let first = agent.deploy_status(agent.history("web").pop().expect("the startup deploy").id);
    let sha1 = first.sha.clone().unwrap();
    let v2 = commit_bytes(&repo, &[("assets/big.txt", big_text("v2"), false)], "a new large file");
    let second = deploy(&agent);
    assert!(answer(&agent).starts_with("v2 hello"), "{}", answer(&agent));
    let event = second.events.iter().map(|e| e.message.as_str()).find(|m| m.contains("materialised in")).unwrap();
    assert!(
        event.contains("(2 large files (3.5M): 2 ") && event.ends_with("; 1 new in the object store (2.0M))"),
        "{event}"
    );

    let out = agent.cli(&["rollback", "web", "--to", first.release.as_deref().unwrap(), "--wait"]);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(answer(&agent).starts_with("v1 hello"), "{}", answer(&agent));
    assert_is_its_commit(&repo, &sha1, &release_dir(&agent, &first));

    // New releases of v2's file push release 1 out: v1's object goes with it, v2's stays.
    let (old, kept) =
        (object(&agent, &repo, &sha1, "assets/big.txt", false), object(&agent, &repo, &v2, "assets/big.txt", false));
    let (mut last, mut said) = (second, "");
    for greeting in ["v3", "v4", "v5"] {
        repo.commit_greeting(greeting);
        said = greeting;
        last = deploy(&agent);
        if !release_dir(&agent, &first).exists() {
            break;
        }
    }
    assert!(!release_dir(&agent, &first).exists(), "release 1 was not pruned: {last:#?}");
    assert!(!old.exists(), "the object of a file no release holds is still in the store");
    assert!(kept.exists(), "an object the live release links was removed");
    assert!(last.events.iter().any(|e| e.message.starts_with("removed 1 large file(s)")), "{last:#?}");
    assert_eq!(answer(&agent), format!("v2 {said}\n"));
}

/// An app that runs as the agent's user could write through a hard link: it gets none (here, on
/// a file system without reflinks, its large files are written as before).
#[test]
fn an_app_without_a_user_gets_no_hard_links() {
    let repo = repo();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    let first = agent.deploy_status(agent.history("web").pop().expect("the startup deploy").id);
    repo.commit_greeting("v2");
    let d = deploy(&agent);
    for r in [release_dir(&agent, &first), release_dir(&agent, &d)] {
        let big = std::fs::metadata(r.join("assets/big.txt")).unwrap();
        assert_eq!(big.nlink(), 1, "{}", r.display());
    }
    assert!(wait_for_answer(&agent, "v1 v2"));
}

fn wait_for_answer(agent: &Agent, prefix: &str) -> bool {
    deployer_tests::wait_until(Duration::from_secs(10), || answer(agent).starts_with(prefix))
}

/// A repository of small files (the example app) never touches the store: nothing in `objects/`,
/// no word of large files in the deploy's events.
#[test]
fn a_repo_of_small_files_never_touches_the_store() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a| a.repo(&repo)).start();
    repo.commit_greeting("v2");
    let d = deploy(&agent);
    let objects = agent.app_dir("web").join("objects");
    assert_eq!(std::fs::read_dir(&objects).expect("objects/").count(), 0);
    assert_eq!(std::fs::metadata(&objects).unwrap().mode() & 0o777, 0o700);
    assert!(!d.events.iter().any(|e| e.message.contains("large file")), "{d:#?}");
}
