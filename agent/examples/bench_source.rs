//! How long a deploy spends getting its code: fetch + materialise of a 10,000-file repository,
//! and of a repository with large files (200 MB) of which none changed.
//!
//! `cargo run --release -p agent --example bench_source [-- --files-per-dir N --dirs N --runs N --large N --large-mb N]`
//!
//! Both go through the app's object store as a deploy of an app with `user:` does (large files
//! hard-linked, or reflinked where the file system can). `--large 0` skips the second part.
//!
//! Builds an upstream repository with the git CLI in a temp dir (100 dirs x 100 files of ~1 KiB,
//! one commit), then times the first fetch + materialise, and then, several times, one new commit
//! changing a few files followed by an incremental fetch + materialise of it (the goal is <= 150 ms).
//! For comparison it also times libgit2's own checkout into an empty directory.
//!
//! Creating files dominates, so the figures depend on the file system more than on this code. On
//! ext4, creating inodes is slow for a few minutes after many files were deleted (the allocator
//! skips recently deleted inodes one by one): wait a few minutes between runs, since each run
//! deletes its temp dir at the end.

use agent::{Objects, Sharing, Source};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let mut dirs = 100;
    let mut files_per_dir = 100;
    let mut runs = 5;
    let mut large = 20;
    let mut large_mb = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok()).expect("a number after each option");
        match arg.as_str() {
            "--dirs" => dirs = value,
            "--files-per-dir" => files_per_dir = value,
            "--runs" => runs = value,
            "--large" => large = value,
            "--large-mb" => large_mb = value,
            other => panic!("unknown option `{other}`"),
        }
    }

    small_files(dirs, files_per_dir, runs);
    if large > 0 {
        large_files(large, large_mb, runs);
    }
}

/// The app's object store, shared as with an app whose `user:` is not root.
fn objects(app: &Path) -> Objects {
    Objects::new(app.join("objects"), Sharing::for_uid(Some(65534)))
}

/// The app's source with the object store, its first fetch, and release 0 written; prints how
/// long each took.
fn first_release(upstream: &Path, app: &Path) -> Source {
    let source = Source::open(&upstream.display().to_string(), "main", None, &app.join("repo.git"))
        .unwrap()
        .with_objects(objects(app));
    let started = Instant::now();
    let fetched = source.fetch().unwrap();
    let fetch = started.elapsed();
    let started = Instant::now();
    let linked = source.materialise(&fetched.sha, ".", &app.join("releases/0")).unwrap();
    let materialise = started.elapsed();
    println!(
        "initial fetch + materialise: {} (fetch {}, {} objects; materialise {}; {linked})",
        ms(fetch + materialise),
        ms(fetch),
        fetched.received_objects,
        ms(materialise)
    );
    source
}

fn small_files(dirs: usize, files_per_dir: usize, runs: usize) {
    let work = tempfile::tempdir().expect("temp dir");
    let upstream = work.path().join("upstream");
    let started = Instant::now();
    std::fs::create_dir(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    let mut seed = 1u64;
    for d in 0..dirs {
        let dir = upstream.join(format!("dir{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..files_per_dir {
            std::fs::write(dir.join(format!("file{f:03}.txt")), text(&mut seed, 1024)).unwrap();
        }
    }
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-q", "-m", "initial"]);
    println!(
        "generated upstream: {} files in {} ({})",
        dirs * files_per_dir,
        ms(started.elapsed()),
        upstream.display()
    );

    let app = work.path().join("app");
    let source = first_release(&upstream, &app);

    // libgit2's checkout, timed on the same commits right after ours so that both see the same
    // machine; it is what `materialise` would be without its own tree walk.
    let repo = git2::Repository::open_bare(source.cache_dir()).unwrap();
    let mut totals = Vec::new();
    let mut fetches = Vec::new();
    let mut materialises = Vec::new();
    let mut checkouts = Vec::new();
    for run in 1..=runs {
        for f in 0..5 {
            let path = upstream.join(format!(
                "dir{:03}/file{:03}.txt",
                (run * 7 + f * 13) % dirs,
                (run * 3 + f) % files_per_dir
            ));
            std::fs::write(path, text(&mut seed, 1024)).unwrap();
        }
        git(&upstream, &["commit", "-q", "-a", "-m", &format!("change {run}")]);

        let started = Instant::now();
        let fetched = source.fetch().unwrap();
        let fetch = started.elapsed();
        let release = app.join(format!("releases/{run}-{}", &fetched.sha[..7]));
        let started = Instant::now();
        source.materialise(&fetched.sha, ".", &release).unwrap();
        let materialise = started.elapsed();
        assert!(fetched.received_objects < 20, "the fetch was not incremental: {fetched:?}");
        totals.push(fetch + materialise);
        fetches.push(fetch);
        materialises.push(materialise);

        let tree = repo.find_commit(git2::Oid::from_str(&fetched.sha).unwrap()).unwrap().tree().unwrap();
        let started = Instant::now();
        let mut opts = git2::build::CheckoutBuilder::new();
        opts.target_dir(&work.path().join(format!("checkout{run}"))).update_index(false).force();
        repo.checkout_tree(tree.as_object(), Some(&mut opts)).unwrap();
        checkouts.push(started.elapsed());
    }
    println!("incremental fetch (5 files changed), median of {runs}: {}", ms(median(&mut fetches)));
    println!("materialise of the new commit, median of {runs}: {}", ms(median(&mut materialises)));
    let total = median(&mut totals);
    println!(
        "incremental fetch + materialise, median of {runs}: {} (min {}, max {}; goal <= 150 ms: {})",
        ms(total),
        ms(totals[0]),
        ms(totals[totals.len() - 1]),
        if total <= Duration::from_millis(150) { "met" } else { "MISSED" }
    );
    println!(
        "for comparison, libgit2 checkout_tree of the same commits, median of {runs}: {}",
        ms(median(&mut checkouts))
    );
}

/// A repository of `count` files of `mb` MiB of random bytes and a small one; each run changes a
/// line of the small one. Goal: the new commit's fetch + materialise < 0.3 s (200 MB unchanged).
fn large_files(count: usize, mb: usize, runs: usize) {
    let work = tempfile::tempdir().expect("temp dir");
    let upstream = work.path().join("upstream");
    let started = Instant::now();
    std::fs::create_dir_all(upstream.join("assets")).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    git(&upstream, &["config", "core.compression", "0"]);
    let mut seed = 7u64;
    for i in 0..count {
        std::fs::write(upstream.join(format!("assets/blob{i:02}.bin")), noise(&mut seed, mb << 20)).unwrap();
    }
    std::fs::write(upstream.join("app.js"), "const version = 0;\n").unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-q", "-m", "initial"]);
    println!("generated upstream: {count} files of {mb} MiB in {}", ms(started.elapsed()));

    let app = work.path().join("app");
    let source = first_release(&upstream, &app);
    let plain = Source::open(&upstream.display().to_string(), "main", None, &app.join("repo.git")).unwrap();
    let (mut totals, mut without) = (Vec::new(), Vec::new());
    let mut last = String::new();
    for run in 1..=runs {
        std::fs::write(upstream.join("app.js"), format!("const version = {run};\n")).unwrap();
        git(&upstream, &["commit", "-q", "-a", "-m", &format!("change {run}")]);
        let started = Instant::now();
        let fetched = source.fetch().unwrap();
        let linked = source.materialise(&fetched.sha, ".", &app.join(format!("releases/{run}"))).unwrap();
        totals.push(started.elapsed());
        last = linked.to_string();
        // The same commit without the store: every large file written again.
        let started = Instant::now();
        plain.materialise(&fetched.sha, ".", &work.path().join(format!("plain{run}"))).unwrap();
        without.push(started.elapsed());
        std::fs::remove_dir_all(work.path().join(format!("plain{run}"))).unwrap();
    }
    let total = median(&mut totals);
    println!(
        "one-line change, fetch + materialise, median of {runs}: {} (min {}, max {}; {last}; goal < 300 ms: {})",
        ms(total),
        ms(totals[0]),
        ms(totals[totals.len() - 1]),
        if total < Duration::from_millis(300) { "met" } else { "MISSED" }
    );
    println!("for comparison, materialise without the object store, median of {runs}: {}", ms(median(&mut without)));
}

/// `len` random bytes (they do not compress, like media and binaries).
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

/// About `len` bytes of source-like text, different for every call.
fn text(seed: &mut u64, len: usize) -> String {
    const WORDS: [&str; 16] = [
        "let", "value", "return", "function", "const", "if", "else", "for", "request", "response", "=", "{", "}",
        "(x)", ";", "await",
    ];
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (*seed >> 33) as usize;
        out.push_str(WORDS[n % WORDS.len()]);
        out.push(if n.is_multiple_of(11) { '\n' } else { ' ' });
        if n.is_multiple_of(7) {
            out.push_str(&(n % 100_000).to_string());
        }
    }
    out
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
