//! Writing the imported config as YAML a person reads: keys in the order of `examples/agent.yaml`,
//! commands as flow lists, small groups as flow maps.

use crate::config::yaml_scalar as scalar;
use std::fmt::Write;

/// A value in the written config.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar, quoted when a plain one would read back as something else.
    Text(String),
    /// A number, written as it is.
    Number(u64),
    Bool(bool),
    /// `[a, b]`.
    List(Vec<String>),
    /// `[0, 2]`: numbers (exit codes).
    Numbers(Vec<i64>),
    /// `{ a: 1, b: 2 }` on the key's line.
    Flow(Vec<(String, Node)>),
    /// A map below the key, one line per entry.
    Block(Vec<(String, Node)>),
}

/// `entries` as block-map lines indented by `indent` spaces.
pub fn block(out: &mut String, indent: usize, entries: &[(String, Node)]) {
    for (key, value) in entries {
        let pad = " ".repeat(indent);
        match value {
            Node::Block(inner) if inner.is_empty() => {
                let _ = writeln!(out, "{pad}{}: {{}}", scalar(key));
            }
            Node::Block(inner) => {
                let _ = writeln!(out, "{pad}{}:", scalar(key));
                block(out, indent + 2, inner);
            }
            other => {
                let _ = writeln!(out, "{pad}{}: {}", scalar(key), inline(other));
            }
        }
    }
}

fn inline(node: &Node) -> String {
    match node {
        Node::Text(s) => scalar(s),
        Node::Number(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::List(items) => crate::config::flow_list(items),
        Node::Numbers(items) => format!("[{}]", items.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
        Node::Flow(entries) | Node::Block(entries) => {
            let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{}: {}", scalar(k), inline(v))).collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_as_the_same_values() {
        let entries = vec![
            ("start".to_string(), Node::List(vec!["node".into(), "app.js".into(), "--title".into(), "a b".into()])),
            ("instances".to_string(), Node::Text("max".into())),
            ("port".to_string(), Node::Number(3000)),
            ("reload".to_string(), Node::Flow(vec![("kill_timeout".into(), Node::Text("1600ms".into()))])),
            (
                "env".to_string(),
                Node::Block(vec![
                    ("A".into(), Node::Text("1".into())),
                    ("B".into(), Node::Text("yes".into())),
                    ("C".into(), Node::Text("x: {y}".into())),
                ]),
            ),
        ];
        let mut out = String::new();
        block(&mut out, 0, &entries);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(v["start"][3], "a b", "{out}");
        assert_eq!(v["port"], 3000, "{out}");
        assert_eq!(v["reload"]["kill_timeout"], "1600ms", "{out}");
        assert_eq!(v["env"]["A"], "1", "{out}");
        assert_eq!(v["env"]["B"], "yes", "{out}");
        assert_eq!(v["env"]["C"], "x: {y}", "{out}");
    }
}
