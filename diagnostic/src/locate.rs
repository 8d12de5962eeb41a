//! Find where a key sits in the YAML text, for errors found after parsing (serde keeps no spans).
//!
//! Follows block maps and flow maps (`reload: { max_surge: 1 }`, also nested or spread over
//! lines). It does not look inside sequences; for anything it cannot follow it answers `None`.

/// 1-based (line, column) of the last key of `path`, e.g. `["apps", "web", "port"]`, or `None`
/// when that exact key is not written in the text.
pub fn key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut scope = Scope::Block { parent_indent: None, from: 0 };
    let mut at = None;
    for seg in path {
        let found = match scope {
            Scope::Block { parent_indent, from } => block_key(text, from, parent_indent, seg)?,
            Scope::Flow { open } => flow_key(text, open, seg)?,
            Scope::Scalar => return None,
        };
        at = Some(found.key);
        scope = value_scope(text, found);
    }
    at.map(|offset| line_col(text, offset))
}

/// Whether `path` is written in the text at all (to tell a default from an explicit value).
pub fn has_key(text: &str, path: &[&str]) -> bool {
    key(text, path).is_some()
}

/// Where the keys of the map being searched are.
#[derive(Clone, Copy)]
enum Scope {
    /// The lines from byte `from` indented deeper than the parent key (all lines at the top).
    Block { parent_indent: Option<usize>, from: usize },
    /// The flow map whose `{` is at byte `open`.
    Flow { open: usize },
    /// A plain value: no keys below it.
    Scalar,
}

/// A key found in the text: its byte offset, the offset just after its `:`, and its line's indent.
#[derive(Clone, Copy)]
struct Found {
    key: usize,
    after_colon: usize,
    indent: usize,
}

/// A key `seg` directly in the block map that starts at byte `from`.
fn block_key(text: &str, from: usize, parent_indent: Option<usize>, seg: &str) -> Option<Found> {
    let mut map_indent = None;
    let mut start = from;
    for line in text[from..].split_inclusive('\n') {
        let line_start = start;
        start += line.len();
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if parent_indent.is_some_and(|p| indent <= p) {
            return None;
        }
        // The first key line sets the map's indent; deeper lines belong to its values.
        if *map_indent.get_or_insert(indent) != indent {
            continue;
        }
        if let Some(len) = key_len(trimmed, seg) {
            return Some(Found { key: line_start + indent, after_colon: line_start + indent + len, indent });
        }
    }
    None
}

/// A key `seg` directly inside the flow map whose `{` is at byte `open`.
fn flow_key(text: &str, open: usize, seg: &str) -> Option<Found> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut quote = None;
    let mut expect_key = false;
    // The last byte that was not blank: a quote opens a string only at the start of a scalar.
    let mut prev = b'{';
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            // `\"` inside double quotes; `''` inside single quotes closes and reopens, harmlessly.
            if escaped {
                escaped = false;
            } else if q == b'"' && b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
                prev = b;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && b == b'{';
                prev = b;
                continue;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
            }
            b',' if depth == 1 => {
                expect_key = true;
                prev = b;
                continue;
            }
            _ => {}
        }
        if expect_key {
            expect_key = false;
            if let Some(len) = key_len(&text[i..], seg) {
                return Some(Found { key: i, after_colon: i + len, indent: indent_of(text, i) });
            }
        }
        if (b == b'"' || b == b'\'') && matches!(prev, b'{' | b'[' | b',' | b':' | b'\'') {
            quote = Some(b);
        }
        prev = b;
    }
    None
}

/// Where the keys under a found key are: a flow map after the colon, the lines below it, or none.
fn value_scope(text: &str, found: Found) -> Scope {
    let rest = &text[found.after_colon..];
    let value = rest.trim_start_matches([' ', '\t']);
    let offset = found.after_colon + (rest.len() - value.len());
    if value.starts_with('{') {
        Scope::Flow { open: offset }
    } else if value.is_empty() || value.starts_with(['\n', '\r', '#']) {
        let next_line = text[offset..].find('\n').map_or(text.len(), |n| offset + n + 1);
        Scope::Block { parent_indent: Some(found.indent), from: next_line }
    } else {
        Scope::Scalar
    }
}

/// If `s` starts with the key `seg` (plain or quoted) and its `:`, the length up to the colon's end.
fn key_len(s: &str, seg: &str) -> Option<usize> {
    let quoted = [format!("\"{seg}\""), format!("'{seg}'")];
    let written = std::iter::once(seg).chain(quoted.iter().map(String::as_str)).find(|w| s.starts_with(w))?;
    let rest = &s[written.len()..];
    let colon = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let after = rest[colon..].strip_prefix(':')?;
    // In YAML a key's colon is followed by a space, the end of the line, or (in flow) a delimiter.
    (after.is_empty() || after.starts_with([' ', '\t', '\n', '\r', ',', '}'])).then_some(written.len() + colon + 1)
}

fn indent_of(text: &str, offset: usize) -> usize {
    let line_start = text[..offset].rfind('\n').map_or(0, |n| n + 1);
    let line = &text[line_start..];
    line.len() - line.trim_start_matches(' ').len()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
listen: 127.0.0.1:7070
apps:
  web:
    port: 3000
    reload: { signal: SIGUSR2, max_surge: 0 }
    ready: {tcp: true}
    env: { \"A\": \"x, y: z\", B: { nested: 1 } }
    restart:
      max_restarts: 3
  api:
    port: 3000
    logs: {
      keep: 2 }
";

    #[test]
    fn finds_block_keys() {
        assert_eq!(key(YAML, &["apps", "web", "port"]), Some((4, 5)));
        assert_eq!(key(YAML, &["apps", "api", "port"]), Some((11, 5)));
        assert_eq!(key(YAML, &["apps", "web", "restart", "max_restarts"]), Some((9, 7)));
    }

    #[test]
    fn finds_keys_in_flow_maps_on_the_parent_line() {
        assert_eq!(key(YAML, &["apps", "web", "reload", "max_surge"]), Some((5, 32)));
        assert_eq!(key(YAML, &["apps", "web", "ready", "tcp"]), Some((6, 13)));
        assert_eq!(key(YAML, &["apps", "web", "env", "B", "nested"]), Some((7, 33)));
        assert_eq!(key(YAML, &["apps", "api", "logs", "keep"]), Some((13, 7)));
    }

    #[test]
    fn answers_none_for_keys_not_written() {
        // `y` is inside a quoted value, `port` of `web` is not under `restart`.
        assert_eq!(key(YAML, &["apps", "web", "env", "y"]), None);
        assert_eq!(key(YAML, &["apps", "web", "restart", "port"]), None);
        assert_eq!(key(YAML, &["apps", "web", "ready", "timeout"]), None);
        assert_eq!(key(YAML, &["apps", "web", "port", "x"]), None);
        assert!(has_key(YAML, &["apps", "web", "ready", "tcp"]));
        assert!(!has_key(YAML, &["apps", "api", "ready", "tcp"]));
    }
}
