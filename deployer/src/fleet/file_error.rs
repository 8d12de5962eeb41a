//! Mistakes in `deployer.yaml`, located: `file:line:col: message`, then a `hint:` saying what to
//! write instead. The same shape as the agent's config errors (a small copy: the CLI does not
//! depend on the agent).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; 0 when the mistake has no place in the text (the file cannot be read).
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for FileError {
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

impl FileError {
    pub fn at(file: &Path, place: Option<(usize, usize)>, message: String, hint: Option<String>) -> Self {
        let (line, col) = place.unwrap_or((0, 0));
        FileError { file: file.to_path_buf(), line, col, message, hint }
    }

    pub fn io(file: &Path, e: std::io::Error) -> Self {
        let hint = (e.kind() == std::io::ErrorKind::NotFound).then(|| "check the path given to `-f`".to_owned());
        FileError { file: file.to_path_buf(), line: 0, col: 0, message: format!("cannot read: {e}"), hint }
    }

    /// serde's message without its own `at line` suffix, with a suggestion for near misses.
    pub fn from_yaml(file: &Path, e: serde_yaml_ng::Error) -> Self {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let hint = suggest(&message).or_else(|| {
            message.contains("missing field `environments`").then(|| "add `environments:` with at least one, e.g. `staging: { hosts: [http://127.0.0.1:7070] }`".to_owned())
        });
        FileError { file: file.to_path_buf(), line, col, message, hint }
    }
}

/// For "unknown field `x`, expected one of `a`, `b`": the closest expected name, or the list.
fn suggest(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
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

/// 1-based (line, column) of the last key of `path` in block-style YAML, or inside a flow map on
/// the line of its parent (`rollout: { canary: 1 }`); `None` when it cannot be followed.
pub fn locate_key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut min_indent = 0;
    let mut start = 0;
    let mut found: Option<(usize, usize)> = None;
    'segments: for seg in path {
        // Inside a flow map on the parent's own line: `rollout: { canary: 1 }`.
        if let Some((line, col)) = found {
            let text = lines[line - 1];
            if let Some(at) = text[col - 1..].find(&format!(" {seg}:")).filter(|_| text.contains('{')) {
                found = Some((line, col - 1 + at + 2));
                continue 'segments;
            }
        }
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if found.is_some() && indent < min_indent {
                return None;
            }
            if indent >= min_indent && trimmed.starts_with(&format!("{seg}:")) {
                found = Some((i + 1, indent + 1));
                min_indent = indent + 1;
                start = i + 1;
                continue 'segments;
            }
        }
        return None;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_blocks_and_flow_maps() {
        let text = "environments:\n  prod:\n    hosts: []\n    rollout: { canary: 1 }\n  staging:\n    rollout:\n      canary: 2\n";
        assert_eq!(locate_key(text, &["environments", "prod", "hosts"]), Some((3, 5)));
        assert_eq!(locate_key(text, &["environments", "prod", "rollout", "canary"]), Some((4, 16)));
        assert_eq!(locate_key(text, &["environments", "staging", "rollout", "canary"]), Some((7, 7)));
        assert_eq!(locate_key(text, &["environments", "nope"]), None);
    }
}
