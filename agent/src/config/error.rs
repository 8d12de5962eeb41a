//! Config errors that say where (`file:line:col`), what, and what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};

/// A config mistake, located.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn at(file: &Path, line: usize, col: usize, message: String, hint: Option<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line, col, message, hint }
    }

    pub fn io(file: &Path, e: std::io::Error) -> Self {
        let hint = (e.kind() == std::io::ErrorKind::NotFound)
            .then(|| "check the path; `examples/agent.yaml` is a complete example".to_string());
        ConfigError { file: file.to_path_buf(), line: 0, col: 0, message: format!("cannot read: {e}"), hint }
    }

    /// Turn serde's message into ours: the key path, the problem, and a suggestion for near misses.
    pub fn from_yaml(file: &Path, e: serde_yaml_ng::Error) -> Self {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let hint = suggest(&message);
        ConfigError { file: file.to_path_buf(), line, col, message, hint }
    }
}

/// For "unknown field `instanes`, expected one of `a`, `b`": the closest expected name.
fn suggest(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1).or_else(|| message.split("unknown variant `").nth(1))?;
    let (found, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected.iter().copied().min_by_key(|c| distance(found, c))?;
    if distance(found, best) <= 2.max(found.len() / 3) {
        Some(format!("did you mean `{best}`?"))
    } else {
        Some(format!("valid keys here: {}", expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")))
    }
}

/// Levenshtein distance, small strings only.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
