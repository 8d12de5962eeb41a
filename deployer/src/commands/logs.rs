//! `deployer logs <app|env> [-n N] [-f]`: an app's last lines, or every host's, merged in time
//! order with the host in front; `-f` then follows the new ones (over SSE) until Ctrl-C.

use std::process::ExitCode;

use anstyle::{AnsiColor, Style};
use deployer_wire::{LogLine, LogLines, LogStream};
use futures_util::future::join_all;
use serde::Serialize;

use super::Context;
use crate::client::Client;
use crate::fleet::Fleet;
use crate::fleet::rollout::reason;
use crate::output::{self, DIM, FAILURE};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config; or an environment of deployer.yaml
    #[arg(value_name = "APP|ENV")]
    pub app: String,

    /// How many of the last lines to show
    #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
    pub lines: u32,

    /// Keep printing new lines as the workers write them, until Ctrl-C (one JSON object per line
    /// with --json)
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Only what the workers wrote to stdout
    #[arg(long, conflicts_with = "err")]
    pub out: bool,

    /// Only what the workers wrote to stderr
    #[arg(long)]
    pub err: bool,
}

impl Args {
    /// `--out` or `--err`: one stream's lines only.
    fn only(&self) -> Option<LogStream> {
        match (self.out, self.err) {
            (true, _) => Some(LogStream::Out),
            (_, true) => Some(LogStream::Err),
            _ => None,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    /// The app, as named in the agent's config
    pub app: String,
}

/// `deployer flush <app>`: empty the app's log files on the agent and remove their rotated
/// copies, as `pm2 flush` does.
pub async fn flush(ctx: &Context, args: FlushArgs) -> anyhow::Result<ExitCode> {
    let flushed = ctx.client.flush_logs(&args.app).await?;
    if ctx.json {
        output::print_json(&flushed)?;
    } else if flushed.files.is_empty() {
        anstream::println!("{}: no log files to flush", flushed.app);
    } else {
        anstream::println!("{}: flushed {} log file(s)", flushed.app, flushed.files.len());
        for f in &flushed.files {
            anstream::println!("  {DIM}{f}{DIM:#}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of one host, as `--json` prints it for an environment.
#[derive(Debug, Serialize)]
pub struct HostLine {
    pub host: String,
    #[serde(flatten)]
    pub line: LogLine,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(fleet) = ctx.fleet_if_env(&args.app, None)? {
        return run_fleet(ctx, &fleet, &args).await;
    }
    if args.follow {
        let client = ctx.client.clone();
        follow(ctx.json, vec![(None, client)], &args.app, args.lines, args.only()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let logs = ctx.client.logs(&args.app, args.lines, args.only()).await?;
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

async fn run_fleet(ctx: &Context, fleet: &Fleet, args: &Args) -> anyhow::Result<ExitCode> {
    let hosts: Vec<(Option<String>, Client)> = fleet.hosts.iter().map(|(h, c)| (Some(h.label()), c.clone())).collect();
    if args.follow {
        follow(ctx.json, hosts, &fleet.app, args.lines, args.only()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let tails = join_all(hosts.iter().map(|(label, client)| async move {
        (label.clone().unwrap_or_default(), client.logs(&fleet.app, args.lines, args.only()).await)
    }))
    .await;
    let mut merged: Vec<(String, LogLine)> = Vec::new();
    let mut failed = 0;
    for (label, tail) in tails {
        match tail {
            Ok(t) => merged.extend(t.lines.into_iter().map(|l| (label.clone(), l))),
            Err(e) => {
                failed += 1;
                anstream::eprintln!("{FAILURE}{label}{FAILURE:#}: {}", reason(&e));
            }
        }
    }
    // Stable: lines of one host with the same millisecond keep their order.
    merged.sort_by_key(|(_, l)| l.ts_ms);
    if ctx.json {
        let lines: Vec<HostLine> = merged.into_iter().map(|(host, line)| HostLine { host, line }).collect();
        output::print_json(&lines)?;
    } else {
        let width = fleet.hosts.iter().map(|(h, _)| h.label().len()).max().unwrap_or(0);
        for (host, line) in &merged {
            anstream::println!("{}", host_line(host, width, &fleet.app, line));
        }
    }
    // The lines of the hosts that answered are shown; a host that did not fails the command.
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Follows the lines of every host (a `None` label: the single agent, no prefix) until Ctrl-C or
/// until every stream ended.
async fn follow(
    json: bool,
    hosts: Vec<(Option<String>, Client)>,
    app: &str,
    lines: u32,
    only: Option<LogStream>,
) -> anyhow::Result<()> {
    let width = hosts.iter().filter_map(|(l, _)| l.as_ref().map(String::len)).max().unwrap_or(0);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<String>, Result<LogLine, String>)>(1024);
    for (label, client) in hosts {
        let tx = tx.clone();
        let app = app.to_owned();
        tokio::spawn(async move {
            let mut stream = match client.follow_logs(&app, lines, only).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send((label, Err(reason(&e)))).await;
                    return;
                }
            };
            loop {
                match stream.next().await {
                    Ok(Some(line)) => {
                        if tx.send((label.clone(), Ok(line))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send((label, Err(reason(&e)))).await;
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                None => return Ok(()),
                Some((label, Ok(line))) => {
                    if json {
                        let host = label.unwrap_or_default();
                        println!("{}", serde_json::to_string(&HostLine { host, line })?);
                    } else {
                        match &label {
                            Some(host) => anstream::println!("{}", host_line(host, width, app, &line)),
                            None => {
                                let one = LogLines { app: app.to_owned(), lines: vec![line] };
                                for l in render(&one) {
                                    anstream::println!("{l}");
                                }
                            }
                        }
                    }
                }
                Some((label, Err(e))) => {
                    let label = label.unwrap_or_else(|| "agent".into());
                    anstream::eprintln!("{FAILURE}{label}{FAILURE:#}: {e}");
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `web1:7070 | web-0 err| line`: the host padded to one width, then the line as for one agent.
fn host_line(host: &str, width: usize, app: &str, line: &LogLine) -> String {
    let one = LogLines { app: app.to_owned(), lines: vec![line.clone()] };
    let rest = render(&one).pop().unwrap_or_default();
    format!("{DIM}{host:<width$}{DIM:#} {rest}")
}

/// Colours that tell workers apart in the prefix.
const WORKER_COLOURS: [AnsiColor; 5] =
    [AnsiColor::Cyan, AnsiColor::Green, AnsiColor::Magenta, AnsiColor::Yellow, AnsiColor::Blue];

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
            let (tag, tag_style) = match line.stream {
                LogStream::Err => ("err", FAILURE),
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
        LogLine { ts_ms: 0, worker, stream: stream.parse().unwrap(), line: text.into() }
    }

    #[test]
    fn lines_are_prefixed_by_worker_and_stream() {
        let logs = LogLines {
            app: "web".into(),
            lines: vec![line(0, "out", "listening on 9000"), line(1, "err", "boom"), line(10, "out", "hi")],
        };
        let plain: Vec<String> = render(&logs).iter().map(|l| anstream::adapter::strip_str(l).to_string()).collect();
        assert_eq!(plain, ["web-0     | listening on 9000", "web-1  err| boom", "web-10    | hi"]);
    }
}
