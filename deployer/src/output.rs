//! Rendering for people (tables, sizes, durations, colour) and for machines (`--json`).
//!
//! Colour goes through `anstream`, which drops it when the stream is not a terminal, or when
//! `NO_COLOR` is set; tables follow the same decision.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};
use comfy_table::{Attribute, Cell, Color, Table, presets, modifiers};
use deployer_wire::{AppStatus, WorkerStatus};
use serde::Serialize;

pub const SUCCESS: Style = AnsiColor::Green.on_default().bold();
pub const FAILURE: Style = AnsiColor::Red.on_default().bold();
pub const HINT: Style = AnsiColor::Cyan.on_default().bold();
pub const DIM: Style = Style::new().dimmed();
pub const BOLD: Style = Style::new().bold();

/// Prints a value as pretty JSON on stdout: the `--json` output of every command.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    Ok(())
}

/// Prints `✓ <message>` on stdout.
pub fn print_success(message: &str) {
    anstream::println!("{SUCCESS}✓{SUCCESS:#} {message}");
}

/// Prints the workers table of some apps on stdout.
pub fn print_apps(apps: &[AppStatus]) {
    anstream::println!("{}", workers_table(apps, stdout_colour()));
}

/// Whether stdout shows colour (a terminal, and `NO_COLOR` unset).
pub fn stdout_colour() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// Whether stderr is a terminal a person watches (for progress lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// One row per worker of each app, like `pm2 ls`; an app without workers gets one `stopped` row.
pub fn workers_table(apps: &[AppStatus], colour: bool) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .apply_modifier(modifiers::UTF8_ROUND_CORNERS);
    if colour {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(
        ["id", "name", "mode", "↺", "pid", "cpu", "memory", "uptime", "status", "env"]
            .map(|title| Cell::new(title).add_attribute(Attribute::Bold).fg(Color::Cyan)),
    );
    for app in apps {
        if app.workers.is_empty() {
            table.add_row(vec![
                Cell::new("-"),
                Cell::new(&app.name).add_attribute(Attribute::Bold),
                Cell::new(&app.mode),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                status_cell("stopped"),
                Cell::new("-"),
            ]);
        }
        for worker in &app.workers {
            table.add_row(worker_row(app, worker));
        }
    }
    table
}

fn worker_row(app: &AppStatus, worker: &WorkerStatus) -> Vec<Cell> {
    let pid = worker.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
    vec![
        Cell::new(worker.id),
        Cell::new(&app.name).add_attribute(Attribute::Bold),
        Cell::new(&app.mode),
        Cell::new(worker.restarts),
        Cell::new(pid),
        Cell::new(format!("{:.1}%", worker.cpu_percent)),
        Cell::new(human_bytes(worker.rss_bytes)),
        Cell::new(human_uptime(worker.uptime_ms)),
        status_cell(&worker.state),
        Cell::new(&worker.env_hash),
    ]
}

fn status_cell(state: &str) -> Cell {
    let colour = match state {
        "online" => Color::Green,
        "stopped" | "errored" => Color::Red,
        _ => Color::Yellow,
    };
    Cell::new(state).fg(colour).add_attribute(Attribute::Bold)
}

/// A size the way `pm2` shows one: `512b`, `12.0kb`, `42.1mb`, `1.5gb` (powers of 1024).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kb", "mb", "gb", "tb"];
    if bytes < 1024 {
        return format!("{bytes}b");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up when the value would round to 1024.0 in this unit.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// An uptime the way `pm2` shows one, in its largest whole unit: `5s`, `3m`, `2h`, `4d`.
pub fn human_uptime(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// How long an operation took: `0.42s`, `1.84s`, `2m05s`.
pub fn human_elapsed(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// `1 worker`, `2 workers`.
pub fn count(n: u32, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_pm2() {
        assert_eq!(human_bytes(0), "0b");
        assert_eq!(human_bytes(1023), "1023b");
        assert_eq!(human_bytes(1024), "1.0kb");
        assert_eq!(human_bytes(12 * 1024 + 300), "12.3kb");
        assert_eq!(human_bytes(44_145_049), "42.1mb");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0mb");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5gb");
    }

    #[test]
    fn uptimes_use_the_largest_whole_unit() {
        assert_eq!(human_uptime(0), "0s");
        assert_eq!(human_uptime(5_999), "5s");
        assert_eq!(human_uptime(59_999), "59s");
        assert_eq!(human_uptime(60_000), "1m");
        assert_eq!(human_uptime(3 * 60_000 + 59_000), "3m");
        assert_eq!(human_uptime(2 * 3_600_000 + 1), "2h");
        assert_eq!(human_uptime(4 * 86_400_000), "4d");
    }

    #[test]
    fn elapsed_times_keep_hundredths_under_a_minute() {
        assert_eq!(human_elapsed(1_840), "1.84s");
        assert_eq!(human_elapsed(420), "0.42s");
        assert_eq!(human_elapsed(125_000), "2m05s");
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "worker"), "1 worker");
        assert_eq!(count(0, "worker"), "0 workers");
        assert_eq!(count(2, "worker"), "2 workers");
    }

    fn worker(id: u32, state: &str) -> WorkerStatus {
        WorkerStatus {
            id,
            pid: Some(4242 + id),
            port: Some(9000 + id as u16),
            state: state.into(),
            restarts: id,
            uptime_ms: 125_000,
            cpu_percent: 1.26,
            rss_bytes: 44_145_049,
            inflight: 0,
            env_hash: "3fa1c2".into(),
            release: "/srv/web".into(),
        }
    }

    fn app(name: &str, workers: Vec<WorkerStatus>) -> AppStatus {
        AppStatus {
            name: name.into(),
            mode: "http".into(),
            port: Some(3000),
            instances: workers.len() as u32,
            state: "running".into(),
            workers,
        }
    }

    #[test]
    fn the_table_has_a_row_per_worker() {
        let apps = [app("web", vec![worker(0, "online"), worker(1, "starting")])];
        let rendered = workers_table(&apps, false).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        // Top border, header, separator, two rows, bottom border.
        assert_eq!(lines.len(), 6, "{rendered}");
        for title in ["id", "name", "mode", "↺", "pid", "cpu", "memory", "uptime", "status", "env"] {
            assert!(lines[1].contains(title), "header lacks {title}: {}", lines[1]);
        }
        let cells = |line: &str| -> Vec<String> {
            line.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
        };
        assert_eq!(
            cells(lines[3]),
            ["0", "web", "http", "0", "4242", "1.3%", "42.1mb", "2m", "online", "3fa1c2"]
        );
        assert_eq!(cells(lines[4])[8], "starting");
        assert!(!rendered.contains('\u{1b}'), "no colour when asked for none: {rendered:?}");
    }

    #[test]
    fn an_app_without_workers_shows_one_stopped_row() {
        let rendered = workers_table(&[app("api", vec![])], false).to_string();
        let row = rendered.lines().nth(3).unwrap();
        assert!(row.contains("api") && row.contains("stopped"), "{rendered}");
        assert_eq!(rendered.lines().count(), 5, "{rendered}");
    }

    #[test]
    fn colour_is_applied_when_asked() {
        let rendered = workers_table(&[app("web", vec![worker(0, "online")])], true).to_string();
        assert!(rendered.contains('\u{1b}'), "{rendered}");
    }
}
