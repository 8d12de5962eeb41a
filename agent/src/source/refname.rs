//! Which strings may name a ref: `git check-ref-format` rules, checked before a ref from a request or
//! a config file reaches git.
//!
//! A ref goes to libgit2 only, never to a shell or a command line, but it still becomes part of a
//! ref path (`refs/remotes/origin/<branch>`) and of messages, so anything git itself would refuse is
//! refused here first, with a message that says which rule was broken.

use std::fmt;

/// The longest ref accepted. Git has no limit, but a ref is a file name and ends up in logs.
const MAX_LEN: usize = 255;

/// Check that `s` is a valid branch or tag name, or a commit sha (7-40 hex digits, which the same
/// rules accept).
///
/// The rules are those of `git check-ref-format --branch`: non-empty, at most 255 bytes, no leading
/// `-` or `/`, no `..`, `//` or `@{`, not `@` alone, no ASCII control character, space or any of
/// `~ ^ : ? * [ \`, no component that starts with `.` or ends with `.lock`, no trailing `/` or `.`.
pub fn validate_ref(s: &str) -> Result<(), BadRef> {
    let bad = |reason: &'static str| Err(BadRef { input: s.to_string(), reason });
    if s.is_empty() {
        return bad("a ref may not be empty");
    }
    if s.len() > MAX_LEN {
        return bad("a ref may be at most 255 bytes long");
    }
    if s.starts_with('-') {
        return bad("a ref may not start with `-`");
    }
    if s == "@" {
        return bad("a ref may not be `@` alone");
    }
    if s.chars().any(|c| c.is_ascii_control()) {
        return bad("a ref may not contain control characters");
    }
    if let Some(c) = s.chars().find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')) {
        return Err(BadRef { input: s.to_string(), reason: forbidden_char(c) });
    }
    if s.contains("..") {
        return bad("a ref may not contain `..`");
    }
    if s.contains("@{") {
        return bad("a ref may not contain `@{`");
    }
    if s.starts_with('/') {
        return bad("a ref may not start with `/`");
    }
    if s.ends_with('/') {
        return bad("a ref may not end with `/`");
    }
    if s.ends_with('.') {
        return bad("a ref may not end with `.`");
    }
    if s.contains("//") {
        return bad("a ref may not contain `//`");
    }
    for component in s.split('/') {
        if component.starts_with('.') {
            return bad("no part of a ref (between `/`) may start with `.`");
        }
        if component.ends_with(".lock") {
            return bad("no part of a ref (between `/`) may end with `.lock`");
        }
    }
    Ok(())
}

/// Is `s` 7 to 40 hex digits, the shape of a full or abbreviated commit sha?
pub fn is_sha_like(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn forbidden_char(c: char) -> &'static str {
    match c {
        ' ' => "a ref may not contain a space",
        '~' => "a ref may not contain `~`",
        '^' => "a ref may not contain `^`",
        ':' => "a ref may not contain `:`",
        '?' => "a ref may not contain `?`",
        '*' => "a ref may not contain `*`",
        '[' => "a ref may not contain `[`",
        _ => "a ref may not contain `\\`",
    }
}

/// A string refused by [`validate_ref`]: the input (escaped if it holds control characters), the
/// rule it broke, and what a ref may look like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BadRef {
    /// The refused string, as given.
    pub input: String,
    /// The rule it broke, like "a ref may not start with `-`".
    pub reason: &'static str,
}

impl BadRef {
    /// What to write instead (the `hint:` line of the message, or a field of its own in answers).
    pub const HINT: &'static str =
        "write a branch or tag name like `main`, `feature/x` or `v1.2.3`, or a commit sha of 7 to 40 hex digits";

    /// The message without its hint.
    pub fn problem(&self) -> String {
        format!("invalid ref `{}`: {}", self.input.escape_debug(), self.reason)
    }
}

impl fmt::Display for BadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  hint: {}", self.problem(), BadRef::HINT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_branches_tags_and_shas() {
        for ok in [
            "main",
            "feature/x",
            "v1.2.3",
            "release-2024_01",
            "0123456789abcdef0123456789abcdef01234567",
            "abc1234",
            "héllo",
            "a/b/c",
            "a.b",
            "@x",
        ] {
            assert_eq!(validate_ref(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_git_rejects() {
        let cases = [
            ("-rf", "start with `-`"),
            ("a..b", "`..`"),
            ("a b", "space"),
            ("a~1", "`~`"),
            ("a^", "`^`"),
            ("a:b", "`:`"),
            ("a?", "`?`"),
            ("a*", "`*`"),
            ("a[b", "`[`"),
            ("a\\b", "`\\`"),
            ("x.lock", "`.lock`"),
            ("dir/x.lock/y", "`.lock`"),
            (".hidden", "start with `.`"),
            ("a/.hidden", "start with `.`"),
            ("@{u}", "`@{`"),
            ("main@{1}", "`@{`"),
            ("@", "`@` alone"),
            ("a//b", "`//`"),
            ("trailing/", "end with `/`"),
            ("/leading", "start with `/`"),
            ("dot.", "end with `.`"),
            ("", "empty"),
            ("a\nb", "control"),
            ("a\u{7f}", "control"),
        ];
        for (input, why) in cases {
            let err = validate_ref(input).expect_err(input);
            assert!(err.reason.contains(why), "{input:?}: {}", err.reason);
        }
        assert!(validate_ref(&"a".repeat(256)).is_err());
        assert!(validate_ref(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn message_names_the_value_and_the_rule() {
        let msg = validate_ref("-rf").unwrap_err().to_string();
        assert!(msg.starts_with("invalid ref `-rf`: a ref may not start with `-`"), "{msg}");
        assert!(msg.contains("hint:"), "{msg}");
        let msg = validate_ref("a\nb").unwrap_err().to_string();
        assert!(msg.contains("`a\\nb`"), "control characters are escaped: {msg}");
    }

    #[test]
    fn sha_shape() {
        assert!(is_sha_like("abc1234"));
        assert!(is_sha_like(&"f".repeat(40)));
        assert!(!is_sha_like("abc123"));
        assert!(!is_sha_like(&"f".repeat(41)));
        assert!(!is_sha_like("main123"));
    }
}
