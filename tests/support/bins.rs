//! The binaries under test, built from this workspace before the first test uses them.
//!
//! `env!("CARGO_BIN_EXE_<name>")` names only the binaries of the test's own package, and the
//! agent and the CLI are binaries of `agent` and `deployer` (artifact dependencies, which would
//! lift that, are unstable). So `cargo nextest run -p deployer-tests` builds the test binary
//! only, and [`bin`] builds the two binaries with one `cargo build`, guarded by a `OnceLock`:
//! once per test process, whatever the number of threads asking, with the test binary's profile
//! and target dir. Under nextest (one process per test) a marker keyed on `NEXTEST_RUN_ID` makes
//! that once per run: the later processes find the marker and run no cargo at all. Processes that
//! start together each run the build; cargo's lock on the target dir makes them wait for the
//! first, and the others are no-op builds.
//! `DEPLOYER_TESTS_NO_BUILD=1` skips the build and tests the binaries already there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of a workspace binary (`deployer-agent`, `deployer`), built if needed.
pub fn bin(name: &str) -> PathBuf {
    let dir = profile_dir();
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(|| build(&dir)) {
        panic!("{e}");
    }
    dir.join(name)
}

/// `target/<profile>`, from where the running executable lives.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's directory");
    // Tests run from `target/<profile>/deps/`, examples (the benchmarks) from `.../examples/`.
    let dir =
        if dir.ends_with("deps") || dir.ends_with("examples") { dir.parent().expect("target/<profile>") } else { dir };
    dir.to_path_buf()
}

fn build(profile_dir: &Path) -> Result<(), String> {
    if std::env::var_os("DEPLOYER_TESTS_NO_BUILD").is_some() {
        return Ok(());
    }
    let marker = profile_dir.join(".deployer-tests-built");
    let run_id = std::env::var("NEXTEST_RUN_ID").ok();
    let built_in_this_run = run_id.as_ref().is_some_and(|id| std::fs::read_to_string(&marker).is_ok_and(|m| m == *id));
    if built_in_this_run {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--bins", "-p", "agent", "-p", "deployer", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest);
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run `{}`: {e}\n  hint: set CARGO, or build the binaries first and set DEPLOYER_TESTS_NO_BUILD=1",
            cargo.to_string_lossy()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "building the agent and CLI binaries failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Without the marker the next test process only runs a no-op build: not worth failing for.
    if let Some(id) = run_id
        && let Err(e) = std::fs::write(&marker, id)
    {
        eprintln!("cannot write `{}`: {e}", marker.display());
    }
    Ok(())
}
