//! The located mistake and how it is shown.

use std::fmt;
use std::path::{Path, PathBuf};

/// A mistake in a file, located: shown as `file:line:col: message` and `\n  hint: ...`.
#[derive(Debug, thiserror::Error)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; 0 when the mistake has no place in the text (the file cannot be read), and the
    /// error is shown as `file: message`.
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// What to write instead, when there is something to say.
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
    /// A mistake at 1-based `line` and `col` (0 and 0: nowhere in particular).
    pub fn at(file: &Path, line: usize, col: usize, message: String, hint: Option<String>) -> Self {
        FileError { file: file.to_path_buf(), line, col, message, hint }
    }

    /// The file cannot be read; `if_missing` is the hint when it does not exist (each program
    /// knows where its files come from).
    pub fn io(file: &Path, e: std::io::Error, if_missing: &str) -> Self {
        let hint = (e.kind() == std::io::ErrorKind::NotFound).then(|| if_missing.to_owned());
        FileError { file: file.to_path_buf(), line: 0, col: 0, message: format!("cannot read: {e}"), hint }
    }

    /// serde's message without its own ` at line N column M` suffix (the place is ours to show),
    /// with a suggestion for a misspelt key or variant.
    pub fn from_yaml(file: &Path, e: serde_yaml_ng::Error) -> Self {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let hint = crate::suggest::did_you_mean(&message);
        FileError { file: file.to_path_buf(), line, col, message, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only its errors are read
    struct Rollout {
        canary: usize,
        max_parallel: usize,
    }

    fn yaml_error(text: &str) -> FileError {
        let e = serde_yaml_ng::from_str::<Rollout>(text).expect_err("the text is wrong");
        FileError::from_yaml(Path::new("deployer.yaml"), e)
    }

    #[test]
    fn shows_the_place_the_message_and_the_hint() {
        let e = FileError::at(Path::new("agent.yaml"), 3, 5, "no hosts".into(), Some("add one".into()));
        assert_eq!(e.to_string(), "agent.yaml:3:5: no hosts\n  hint: add one");
        let e = FileError::at(Path::new("agent.yaml"), 0, 0, "no hosts".into(), None);
        assert_eq!(e.to_string(), "agent.yaml: no hosts");
    }

    #[test]
    fn serde_messages_lose_their_own_place_and_gain_a_suggestion() {
        let e = yaml_error("canary: 1\nmax_paralel: 2\n");
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(!e.message.contains(" at line "), "{e}");
        assert!(e.message.starts_with("unknown field `max_paralel`, expected"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `max_parallel`?"));
        let e = yaml_error("canary: 1\n");
        assert_eq!(e.message, "missing field `max_parallel`", "{e}");
        assert_eq!(e.hint, None);
    }

    #[test]
    fn an_unreadable_file_has_no_place() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = FileError::io(Path::new("deployer.yaml"), missing, "check the path");
        assert!(e.to_string().starts_with("deployer.yaml: cannot read: "), "{e}");
        assert_eq!(e.hint.as_deref(), Some("check the path"));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(FileError::io(Path::new("deployer.yaml"), denied, "check the path").hint, None);
    }
}
