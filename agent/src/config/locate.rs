//! Find where a key sits in the YAML text, for errors found after parsing (serde keeps no spans).
//!
//! Handles the block style the examples use; for anything it cannot follow it answers `None` and
//! the error points at the top of the file instead.

/// 1-based (line, column) of the last key of `path`, e.g. `["apps", "web", "port"]`.
pub fn key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut min_indent = 0usize;
    let mut found = None;
    let mut start = 0usize;
    let lines: Vec<&str> = text.lines().collect();
    'segments: for seg in path {
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if found.is_some() && indent < min_indent {
                return None;
            }
            // Block key `seg:` or a key inside a flow map `{ seg: ... }` on this line.
            if indent >= min_indent && (trimmed.starts_with(&format!("{seg}:")) || trimmed.starts_with(&format!("\"{seg}\":"))) {
                found = Some((i + 1, indent + 1));
                min_indent = indent + 1;
                start = i + 1;
                continue 'segments;
            }
            if let Some(col) = line.find(&format!(" {seg}:")).filter(|_| trimmed.contains('{')) {
                found = Some((i + 1, col + 2));
                start = i;
                continue 'segments;
            }
        }
        return found;
    }
    found
}

/// Whether `path` is written in the text at all (to tell a default from an explicit value).
pub fn has_key(text: &str, path: &[&str]) -> bool {
    let Some((line, _)) = key(text, path) else { return false };
    let parent_line = key(text, &path[..path.len() - 1]).map(|p| p.0);
    // `key` answers the deepest segment it found; make sure that is the last one.
    let last = path[path.len() - 1];
    text.lines().nth(line - 1).is_some_and(|l| l.contains(&format!("{last}:"))) && Some(line) >= parent_line
}
