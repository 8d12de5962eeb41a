//! "Did you mean": the closest of the names serde expected, for a misspelt key or variant.

/// For "unknown field `instanes`, expected one of `a`, `b`" (or "unknown variant"): the closest
/// expected name, or the whole list when none is close.
pub(crate) fn did_you_mean(message: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("instanes", "instances"), 1);
        assert_eq!(distance("", "port"), 4);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ä", "a"), 1);
    }

    #[test]
    fn a_near_miss_gets_the_name_a_far_one_the_list() {
        let near = "unknown field `instanes`, expected one of `port`, `instances`";
        assert_eq!(did_you_mean(near).as_deref(), Some("did you mean `instances`?"));
        let variant = "unknown variant `htp`, expected one of `http`, `tcp`";
        assert_eq!(did_you_mean(variant).as_deref(), Some("did you mean `http`?"));
        let far = "unknown field `colour`, expected `port` or `instances`";
        assert_eq!(did_you_mean(far).as_deref(), Some("valid keys here: `port`, `instances`"));
        assert_eq!(did_you_mean("invalid type: string, expected a number"), None);
    }
}
