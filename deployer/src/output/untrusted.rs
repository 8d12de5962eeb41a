//! Text that came from an agent (its messages and errors, install output, log lines a worker
//! wrote) or from a host that only claims to be one, made safe to print on a terminal.
//!
//! A worker that writes `ESC ] 0 ; ... BEL` retitles the terminal, `ESC [ 2 J` clears it, a `\r`
//! or a backspace rewrites what was printed, bidi overrides reorder it; some terminals have run
//! commands from escape sequences. So every control character goes, except `\n` and `\t`, which
//! lines are made of. What remains of an escape sequence (`[31m`) stays visible, which is honest.
//! The CLI's own styling is added after this, so it is kept.

use std::borrow::Cow;

/// Whether `c` may reach a terminal from a remote: not a control character (C0, DEL, C1) other
/// than a newline or a tab, and not a bidi control that reorders what is shown.
fn allowed(c: char) -> bool {
    let bidi = matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    (!c.is_control() || c == '\n' || c == '\t') && !bidi
}

/// `text` without the characters that could steer a terminal; borrowed when there were none.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.chars().all(allowed) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| allowed(c)).collect())
    }
}

/// Every string in a JSON value (keys too) made safe with [`text`]: an agent's answer, before
/// any of it is rendered for people.
pub fn json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(clean) = text(s) {
                *s = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(json),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| matches!(text(k), Cow::Owned(_))) {
                let entries = std::mem::take(map);
                map.extend(entries.into_iter().map(|(k, v)| (text(&k).into_owned(), v)));
            }
            map.values_mut().for_each(json);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_lose_their_control_characters() {
        assert_eq!(
            text("\u{1b}]0;pwned\u{7}\u{1b}[2Jhello\r\n\tworld\u{8}\u{7f}\u{9b}31m"),
            "]0;pwned[2Jhello\n\tworld31m"
        );
        assert_eq!(text("abc\u{202e}fed\u{2066}"), "abcfed");
        assert!(matches!(text("plain line, ünïcode and\ttabs\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_string_of_an_answer_is_cleaned() {
        let mut v = serde_json::json!({
            "message": "no app \u{1b}[31mweb",
            "lines": [{ "line": "\u{1b}]0;x\u{7}ok", "ts_ms": 1 }],
            "k\u{1b}ey": true,
        });
        json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({ "message": "no app [31mweb", "lines": [{ "line": "]0;xok", "ts_ms": 1 }], "key": true })
        );
    }
}
