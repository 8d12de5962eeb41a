//! The local repository, through the `git` CLI (the CLI never links libgit2): which commit a ref
//! names, and whether a remote has it (the agents fetch from the remote, not from this laptop).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run `git`: {0}")]
    NotRunnable(std::io::Error),
    #[error("`{git_ref}` names no commit in `{}`: {stderr}", dir.display())]
    UnknownRef { git_ref: String, dir: PathBuf, stderr: String },
}

fn git(dir: &Path, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
    Command::new("git").current_dir(dir).args(args).env_remove("GIT_DIR").env_remove("GIT_WORK_TREE").output()
}

/// The top of the work tree `dir` is in, if it is in one.
pub fn work_tree_root(dir: &Path) -> Option<PathBuf> {
    let out = git(dir, &["rev-parse", "--show-toplevel"]).ok().filter(|o| o.status.success())?;
    let root = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(root.trim()))
}

/// The full sha of the commit `git_ref` names (`HEAD`, a branch, a tag, a sha prefix).
pub fn resolve(dir: &Path, git_ref: &str) -> Result<String, GitError> {
    // `--end-of-options`: a ref that starts with `-` is a ref, not an option.
    let spec = format!("{git_ref}^{{commit}}");
    let out =
        git(dir, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]).map_err(GitError::NotRunnable)?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || sha.len() < 40 {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.is_empty() { "not a commit".to_owned() } else { stderr };
        return Err(GitError::UnknownRef { git_ref: git_ref.to_owned(), dir: dir.to_path_buf(), stderr });
    }
    Ok(sha)
}

/// The remote branches that contain `sha` (`origin/main`); empty when no remote has it yet, or
/// when git cannot tell.
pub fn remote_branches_containing(dir: &Path, sha: &str) -> Vec<String> {
    let Ok(out) = git(dir, &["branch", "--remotes", "--contains", sha]) else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
}
