//! Commands in the config, one shape with one meaning wherever a command is written.
//!
//! A command is a line split like a shell would (quotes, escapes; no shell is run), `node app.js`,
//! or its argv as a list, `[node, app.js]`. A key that takes several commands (`install`, the
//! `hooks`) takes one command or a list of them, each a line or an argv: `[npm ci, [npm, run,
//! build]]`. A flat list there is a list of lines, so `install: [sh, -c, "sleep 1.5"]` would run
//! `sh`, then `-c`: such a list is refused at its line with the two ways to write what was meant.

use super::ValueError;
use super::checked;
use serde::{Deserialize, Deserializer};

/// `start: node app.js` or `start: [node, app.js]`: the command that runs one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct StartCommand(pub Vec<String>);

impl<'de> Deserialize<'de> for StartCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::any::<_, Written, _>(d, "a command like `node app.js` or `[node, app.js]`")
    }
}

impl TryFrom<Written> for StartCommand {
    type Error = ValueError;
    fn try_from(raw: Written) -> Result<Self, ValueError> {
        let argv = match raw {
            Written::Line(s) => split(&s)?,
            Written::List(items) => {
                items.into_iter().map(Item::into_word).collect::<Option<_>>().ok_or(ValueError::StartNested)?
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(ValueError::EmptyStart);
        }
        Ok(StartCommand(argv))
    }
}

/// Commands run in order, each an argv: `install: npm ci`, `install: [npm ci, npm run build]` or
/// `install: [[sh, -c, "npm ci && npm run build"]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commands(pub Vec<Vec<String>>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::any::<_, Written, _>(d, "a command like `npm ci`, or a list of them (lines or argv lists)")
    }
}

impl TryFrom<Written> for Commands {
    type Error = ValueError;
    fn try_from(raw: Written) -> Result<Self, ValueError> {
        let items = match raw {
            Written::Line(line) => vec![Item::Word(Word::Text(line))],
            Written::List(items) => {
                one_argv_as_commands(&items)?;
                items
            }
        };
        let mut out = Vec::new();
        for item in items {
            let argv = match item {
                Item::Word(w) => split(&w.into_string())?,
                Item::Argv(words) => words.into_iter().map(Word::into_string).collect(),
            };
            if argv.is_empty() || argv[0].is_empty() {
                return Err(ValueError::EmptyCommand);
            }
            if argv[0].starts_with('-') {
                return Err(ValueError::FlagAsCommand(argv[0].clone()));
            }
            out.push(argv);
        }
        Ok(Commands(out))
    }
}

/// A flat list of lines where one of them (after the first) starts with `-`: no command is
/// called `-c`, so the list is one command's argv written where a list of commands goes.
fn one_argv_as_commands(items: &[Item]) -> Result<(), ValueError> {
    let words: Option<Vec<String>> = items.iter().map(|i| i.word().map(Word::to_text)).collect();
    let Some(words) = words else { return Ok(()) };
    let flag = words.iter().skip(1).find(|w| w.trim_start().starts_with('-'));
    match flag {
        Some(flag) => Err(ValueError::ArgvAsCommands {
            flag: flag.clone(),
            written: flow_list(&words),
            nested: format!("[{}]", flow_list(&words)),
            line: shell_words::join(&words),
        }),
        None => Ok(()),
    }
}

/// `[a, "b c"]`: the words as a YAML flow list that reads back as the same strings.
pub(crate) fn flow_list(words: &[String]) -> String {
    let items: Vec<String> = words.iter().map(|w| yaml_scalar(w)).collect();
    format!("[{}]", items.join(", "))
}

/// `s` plain where it reads back as the same string in any context (a flow list too), else
/// double-quoted (a JSON string is a YAML double-quoted scalar).
pub(crate) fn yaml_scalar(s: &str) -> String {
    let mut chars = s.chars();
    let first_ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '/' => true,
        // `-c`, `--port`, `./app`: an indicator followed by a word is plain; `-1` is a number.
        Some('-' | '.') => chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '-' || c == '/'),
        // `10s`, `300M`: digits and a unit are a string to YAML; `1e3` and `0x1F` are numbers.
        Some(c) if c.is_ascii_digit() => {
            let unit = s.trim_start_matches(|c: char| c.is_ascii_digit());
            matches!(unit, "ms" | "s" | "m" | "h" | "d" | "K" | "M" | "G" | "KB" | "MB" | "GB")
        }
        _ => false,
    };
    let plain = first_ok
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=@+%".contains(c))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | ".nan" | ".inf"
        );
    if plain { s.to_string() } else { double_quoted(s) }
}

/// `s` as a YAML double-quoted scalar. A JSON string is one, except that JSON leaves raw what
/// YAML refuses (DEL, C1 controls, U+FFFE/U+FFFF) or reads as a line break and folds (NEL, LS, PS):
/// those are escaped too.
fn double_quoted(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// A command line split like a shell would, without running one.
fn split(line: &str) -> Result<Vec<String>, ValueError> {
    shell_words::split(line).map_err(|e| ValueError::CannotSplit { text: line.to_string(), reason: e.to_string() })
}

/// A command as written: a line, or a list (of words for `start`, of lines or argvs for the rest).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Written {
    Line(String),
    List(Vec<Item>),
}

/// One item of a written list: a word (an argument, or a line in a list of commands) or an argv.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Item {
    Word(Word),
    Argv(Vec<Word>),
}

impl Item {
    fn word(&self) -> Option<&Word> {
        match self {
            Item::Word(w) => Some(w),
            Item::Argv(_) => None,
        }
    }
    fn into_word(self) -> Option<String> {
        match self {
            Item::Word(w) => Some(w.into_string()),
            Item::Argv(_) => None,
        }
    }
}

/// A scalar in an argv: `[sleep, 1.5]` means the argument `1.5`, not a type error.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Word {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Word {
    fn to_text(&self) -> String {
        match self {
            Word::Text(s) => s.clone(),
            Word::Int(n) => n.to_string(),
            Word::Float(x) => x.to_string(),
            Word::Bool(b) => b.to_string(),
        }
    }
    fn into_string(self) -> String {
        match self {
            Word::Text(s) => s,
            other => other.to_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(yaml: &str) -> Result<Commands, String> {
        serde_yaml_ng::from_str::<Commands>(yaml).map_err(|e| e.to_string())
    }
    fn start(yaml: &str) -> Result<StartCommand, String> {
        serde_yaml_ng::from_str::<StartCommand>(yaml).map_err(|e| e.to_string())
    }
    fn argvs(list: &[&[&str]]) -> Commands {
        Commands(list.iter().map(|a| a.iter().map(|s| s.to_string()).collect()).collect())
    }

    #[test]
    fn a_command_is_a_line_split_like_a_shell_or_an_argv_list() {
        let argv = |s: &[&str]| StartCommand(s.iter().map(|s| s.to_string()).collect());
        assert_eq!(start("node app.js --title 'a b'"), Ok(argv(&["node", "app.js", "--title", "a b"])));
        assert_eq!(start("[node, app.js, --title, a b]"), Ok(argv(&["node", "app.js", "--title", "a b"])));
        assert_eq!(start("[sleep, 1.5]"), Ok(argv(&["sleep", "1.5"])));
        let e = start("[[node, app.js]]").unwrap_err();
        assert!(e.contains("`start` runs one command"), "{e}");
        assert!(start("\"\"").unwrap_err().contains("`start` is empty"));
    }

    #[test]
    fn several_commands_are_a_list_of_lines_or_argv_lists() {
        assert_eq!(commands("npm ci"), Ok(argvs(&[&["npm", "ci"]])));
        assert_eq!(commands("[npm ci, npm run build]"), Ok(argvs(&[&["npm", "ci"], &["npm", "run", "build"]])));
        assert_eq!(commands("[[sh, -c, sleep 1.5], npm ci]"), Ok(argvs(&[&["sh", "-c", "sleep 1.5"], &["npm", "ci"]])));
        assert_eq!(
            commands("- [sh, -c, 'exit 0']\n- make -j 2\n"),
            Ok(argvs(&[&["sh", "-c", "exit 0"], &["make", "-j", "2"]]))
        );
        assert_eq!(commands("[]"), Ok(Commands(vec![])));
        assert!(commands("[npm ci, \"\"]").unwrap_err().contains("empty command"));
        assert!(commands("[[]]").unwrap_err().contains("empty command"));
        assert!(commands("[\"--verbose x\"]").unwrap_err().contains("`--verbose` is not a command"));
    }

    #[test]
    fn one_argv_written_as_a_list_of_commands_is_refused_with_both_fixes() {
        let e = commands("[sh, -c, \"sleep 1.5\"]").unwrap_err();
        assert!(e.contains("`-c` is not a command"), "{e}");
        assert!(e.contains("`[[sh, -c, \"sleep 1.5\"]]`"), "{e}");
        assert!(e.contains("`sh -c 'sleep 1.5'`"), "{e}");
        // The same list under `start` is one argv, as it always was.
        assert!(start("[sh, -c, \"sleep 1.5\"]").is_ok());
        // Lines that carry their own flags are commands.
        assert!(commands("[npm ci --omit=dev, npm run build -- --prod]").is_ok());
    }
}
