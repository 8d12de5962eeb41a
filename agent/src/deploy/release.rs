//! An app's directory on disk: `repo.git` (the cached clone), `releases/<seq>-<shortsha>/`,
//! `shared/` and the `current` symlink.

use crate::config::RunAs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct AppDir {
    root: PathBuf,
}

impl AppDir {
    pub fn new(root: PathBuf) -> AppDir {
        AppDir { root }
    }

    pub fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(self.releases())?;
        std::fs::create_dir_all(self.shared())?;
        std::fs::create_dir_all(self.logs())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    pub fn release(&self, name: &str) -> PathBuf {
        self.releases().join(name)
    }
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    /// Install and hook output, one file per deploy.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Point `current` at a release atomically: a new symlink renamed over the old one.
    pub fn switch_current(&self, name: &str) -> io::Result<()> {
        let tmp = self.root.join(format!(".current.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(name), &tmp)?;
        std::fs::rename(&tmp, self.root.join("current"))?;
        // Make the rename durable before the deploy is recorded as live.
        std::fs::File::open(&self.root)?.sync_all()
    }

    /// Link each `shared` path into the release: the first release seeds `shared/` with the
    /// repo's copy if it has one; a path that exists nowhere starts as an empty directory (or an
    /// empty file when its name has an extension or starts with a dot, like `.env`).
    pub fn link_shared(&self, release_dir: &Path, paths: &[PathBuf]) -> io::Result<()> {
        for p in paths {
            let in_shared = self.shared().join(p);
            let in_release = release_dir.join(p);
            if let Some(parent) = in_shared.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::symlink_metadata(&in_shared).is_err() {
                if std::fs::symlink_metadata(&in_release).is_ok() {
                    std::fs::rename(&in_release, &in_shared)?;
                } else if looks_like_file(p) {
                    std::fs::File::create(&in_shared)?;
                } else {
                    std::fs::create_dir_all(&in_shared)?;
                }
            }
            if let Ok(meta) = std::fs::symlink_metadata(&in_release) {
                if meta.is_dir() {
                    std::fs::remove_dir_all(&in_release)?;
                } else {
                    std::fs::remove_file(&in_release)?;
                }
            }
            if let Some(parent) = in_release.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::os::unix::fs::symlink(&in_shared, &in_release)?;
        }
        Ok(())
    }

    /// Release directories on disk (names), whatever the database says.
    pub fn on_disk(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.releases()) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Give `shared/` and each shared path (not what is inside a shared directory: that is the
    /// app's data, written by it) to the app's `user`.
    pub fn give_shared(&self, paths: &[PathBuf], to: &RunAs) -> io::Result<()> {
        let shared = self.shared();
        if !shared.exists() {
            return Ok(());
        }
        lchown(&shared, to)?;
        for p in paths {
            let p = shared.join(p);
            if std::fs::symlink_metadata(&p).is_ok() {
                lchown(&p, to)?;
            }
        }
        Ok(())
    }

    /// Half-written release trees (`.<name>.partial`) a crash mid-materialise left behind.
    pub fn partials(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.releases()) else { return Vec::new() };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".partial")))
            .map(|e| e.path())
            .collect()
    }

    pub fn remove_release(&self, name: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.release(name))
    }
}

/// Give a release tree to the app's `user`, so its install step can write into it (symlinks
/// themselves, never what they point at).
pub fn give_tree(root: &Path, to: &RunAs) -> io::Result<()> {
    lchown(root, to)?;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            lchown(&entry.path(), to)?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(())
}

fn lchown(p: &Path, to: &RunAs) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(to.uid), Some(to.gid))
}

fn looks_like_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || p.extension().is_some()
}

/// The sequence number of a release name `<seq>-<shortsha>`.
pub fn seq_of(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// Which releases to delete: keep `keep` good ones (the newest; the current and the previous are
/// never deleted and count among them), and
/// the newest two failed ones (kept for inspection). `releases` is (name, ok), any order.
pub fn prune_plan(
    releases: &[(String, bool)],
    keep: usize,
    current: Option<&str>,
    previous: Option<&str>,
) -> Vec<String> {
    let mut sorted: Vec<&(String, bool)> = releases.iter().collect();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(seq_of(n).unwrap_or(0)));
    let (mut good, mut bad) = (0, 0);
    let mut remove = Vec::new();
    for (name, ok) in sorted {
        // The current and previous releases are never removed, and count towards `keep`.
        if Some(name.as_str()) == current || Some(name.as_str()) == previous {
            good += usize::from(*ok);
            continue;
        }
        let kept = if *ok {
            good += 1;
            good <= keep
        } else {
            bad += 1;
            bad <= 2
        };
        if !kept {
            remove.push(name.clone());
        }
    }
    remove
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_current_previous_and_two_failed() {
        let rel: Vec<(String, bool)> = (1..=10).map(|i| (format!("{i}-abc"), i % 3 != 0)).collect();
        // good: 1 2 4 5 7 8 10 ; failed: 3 6 9
        let removed = prune_plan(&rel, 2, Some("10-abc"), Some("2-abc"));
        let mut removed: Vec<u64> = removed.iter().filter_map(|n| seq_of(n)).collect();
        removed.sort();
        // Kept: 10 (current), 8 (good, the second of two), 9 and 6 (the newest two failed), 2 (previous).
        assert_eq!(removed, vec![1, 3, 4, 5, 7]);
    }

    #[test]
    fn switch_and_shared() {
        let t = tempfile::tempdir().unwrap();
        let d = AppDir::new(t.path().to_path_buf());
        d.create().unwrap();
        for n in ["1-aaa", "2-bbb"] {
            std::fs::create_dir_all(d.release(n)).unwrap();
        }
        std::fs::create_dir_all(d.release("1-aaa").join("uploads")).unwrap();
        std::fs::write(d.release("1-aaa").join("uploads/a.png"), "x").unwrap();
        d.link_shared(&d.release("1-aaa"), &["uploads".into(), ".env".into()]).unwrap();
        assert!(d.shared().join("uploads/a.png").exists(), "seeded from the first release");
        assert!(d.shared().join(".env").is_file());
        d.link_shared(&d.release("2-bbb"), &["uploads".into(), ".env".into()]).unwrap();
        assert!(d.release("2-bbb").join("uploads/a.png").exists());
        d.switch_current("1-aaa").unwrap();
        d.switch_current("2-bbb").unwrap();
        assert_eq!(std::fs::read_link(t.path().join("current")).unwrap(), Path::new("releases/2-bbb"));
        let mut disk = d.on_disk();
        disk.sort();
        assert_eq!(disk, ["1-aaa", "2-bbb"]);
    }
}
