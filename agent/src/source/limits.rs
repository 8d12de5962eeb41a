//! How large a repository may make the agent's work: every number a commit controls (tree depth,
//! file count, file size, release size, fetched bytes and objects) has a ceiling, so one crafted
//! push fails its own deploy instead of exhausting the agent's stack, memory or disk.
//!
//! The defaults here are the single owner of the numbers; the config (`limits:` per app) starts
//! from them. Going over a limit is a [`SourceError::LimitExceeded`](super::SourceError) that
//! names the limit, its value and the key that raises it.

use std::fmt;
use std::sync::Mutex;

/// The ceilings one app's repository is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries a release may hold: files, symlinks and directories together.
    pub max_files: u64,
    /// How deeply directories may nest in a release (`a/b/c` is 3 deep).
    pub max_depth: u32,
    /// The largest single file (blob) a release may hold, and the largest object a fetch from a
    /// repository on this host copies.
    pub max_file_size: u64,
    /// The sum of the sizes of every file of a release.
    pub max_release_size: u64,
    /// Bytes one fetch may download (the pack's size).
    pub max_fetch_size: u64,
    /// Objects one fetch may download (the pack's object count).
    pub max_fetch_objects: u64,
}

impl Default for Limits {
    /// Generous for real applications, small enough that a hostile commit costs little. The
    /// reasons are on the config's fields (`config::limits`), which users read.
    fn default() -> Limits {
        Limits {
            max_files: 200_000,
            max_depth: 256,
            max_file_size: 100 << 20,
            max_release_size: 2 << 30,
            max_fetch_size: 1 << 30,
            max_fetch_objects: 1_000_000,
        }
    }
}

/// One of the [`Limits`], to name it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Files,
    Depth,
    FileSize,
    ReleaseSize,
    FetchSize,
    FetchObjects,
}

impl Limit {
    /// The key under the app's `limits:` in the agent's config.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Files => "max_files",
            Limit::Depth => "max_depth",
            Limit::FileSize => "max_file_size",
            Limit::ReleaseSize => "max_release_size",
            Limit::FetchSize => "max_fetch_size",
            Limit::FetchObjects => "max_fetch_objects",
        }
    }

    /// The limit's value in `limits`, as the config writes it (`100M`, `256`).
    pub fn value_in(self, limits: &Limits) -> String {
        match self {
            Limit::Files => limits.max_files.to_string(),
            Limit::Depth => limits.max_depth.to_string(),
            Limit::FileSize => config_size(limits.max_file_size),
            Limit::ReleaseSize => config_size(limits.max_release_size),
            Limit::FetchSize => config_size(limits.max_fetch_size),
            Limit::FetchObjects => limits.max_fetch_objects.to_string(),
        }
    }
}

/// A size as `config::units::Size` reads it: `100M` when it is a round unit, else bytes.
fn config_size(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A size for a person: `100M`, `2G`, `1536K`, `1.5M` or `3000 bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        if n >= 1 << 20 {
            // Not round: one decimal is enough to compare with the limit.
            return write!(f, "{:.1}M", n as f64 / f64::from(1 << 20));
        }
        write!(f, "{n} bytes")
    }
}

/// Objects at least this large are never read whole by several threads at once: a writer streams
/// them from a loose object when libgit2 can (`Odb::reader` works for loose objects only, not
/// for packed ones), and otherwise holds [`LARGE_OBJECT`] while the object is in memory.
pub(super) const LARGE: u64 = 4 << 20;

/// Held while a [`LARGE`] object is in memory whole, by every app's deploy: the agent's memory
/// then grows by at most one `max_file_size` at a time, however many writer threads and deploys
/// run, instead of one per thread per app.
pub(super) static LARGE_OBJECT: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_config() {
        assert_eq!(Bytes(100 << 20).to_string(), "100M");
        assert_eq!(Bytes(2 << 30).to_string(), "2G");
        assert_eq!(Bytes(1536 << 10).to_string(), "1536K");
        assert_eq!(Bytes((1 << 30) + 1).to_string(), "1024.0M");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Limit::FileSize.value_in(&Limits::default()), "100M");
        assert_eq!(Limit::Depth.value_in(&Limits::default()), "256");
        let odd = Limits { max_release_size: 3000, ..Limits::default() };
        assert_eq!(Limit::ReleaseSize.value_in(&odd), "3000");
    }
}
