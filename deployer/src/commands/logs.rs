//! `deployer logs <app> [-n N]`

use std::process::ExitCode;

use anstyle::{AnsiColor, Style};
use deployer_wire::{LogLine, LogLines};

use super::Context;
use crate::output::{self, DIM, FAILURE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// How many of the last lines to show
    #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
    pub lines: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let logs = ctx.client.logs(&args.app, args.lines).await?;
    if ctx.json {
        output::print_json(&logs)?;
    } else if logs.lines.is_empty() {
        anstream::eprintln!("{DIM}no log lines from {} yet{DIM:#}", logs.app);
    } else {
        for line in render(&logs) {
            anstream::println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Colours that tell workers apart in the prefix.
const WORKER_COLOURS: [AnsiColor; 5] = [
    AnsiColor::Cyan,
    AnsiColor::Green,
    AnsiColor::Magenta,
    AnsiColor::Yellow,
    AnsiColor::Blue,
];

/// `web-0    | line` for stdout, `web-1 err| line` for stderr, prefixes padded to one width.
/// Styled with ANSI codes, which `anstream` strips when stdout is not a terminal.
fn render(logs: &LogLines) -> Vec<String> {
    let label = |line: &LogLine| format!("{}-{}", logs.app, line.worker);
    let width = logs.lines.iter().map(|l| label(l).len()).max().unwrap_or(0);
    logs.lines
        .iter()
        .map(|line| {
            let colour = WORKER_COLOURS[line.worker as usize % WORKER_COLOURS.len()];
            let style = Style::new().fg_color(Some(colour.into()));
            let (tag, tag_style) = match line.stream.as_str() {
                "err" => ("err", FAILURE),
                _ => ("", Style::new()),
            };
            format!(
                "{style}{:<width$}{style:#} {tag_style}{tag:<3}{tag_style:#}{style}|{style:#} {}",
                label(line),
                line.line,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(worker: u32, stream: &str, text: &str) -> LogLine {
        LogLine { ts_ms: 0, worker, stream: stream.into(), line: text.into() }
    }

    #[test]
    fn lines_are_prefixed_by_worker_and_stream() {
        let logs = LogLines {
            app: "web".into(),
            lines: vec![
                line(0, "out", "listening on 9000"),
                line(1, "err", "boom"),
                line(10, "out", "hi"),
            ],
        };
        let plain: Vec<String> = render(&logs)
            .iter()
            .map(|l| anstream::adapter::strip_str(l).to_string())
            .collect();
        assert_eq!(
            plain,
            ["web-0     | listening on 9000", "web-1  err| boom", "web-10    | hi"]
        );
    }
}
