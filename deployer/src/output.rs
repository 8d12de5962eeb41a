//! Rendering for people (tables, sizes, durations, colour) and for machines (`--json`).
//!
//! Colour goes through `anstream`, which drops it when the stream is not a terminal, or when
//! `NO_COLOR` is set; tables follow the same decision.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};
use comfy_table::{Attribute, Cell, Color, Table, modifiers, presets};
use deployer_wire::{AppStatus, WorkerState, WorkerStatus};
use serde::Serialize;

pub mod deploys;
pub mod fleet;
pub mod untrusted;

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

/// Prints `warning: <message>` on stderr: something the user should know that does not stop
/// the command. The message may quote an agent (with `--json`, its text is not cleaned before).
pub fn print_warning(message: &str) {
    anstream::eprintln!("{HINT}warning{HINT:#}: {}", untrusted::text(message));
}

/// Prints the workers table of some apps on stdout.
pub fn print_apps(apps: &[AppStatus]) {
    anstream::println!("{}", workers_table(apps, stdout_colour()));
    for note in scale_notes(apps) {
        anstream::println!("{DIM}{note}{DIM:#}");
    }
}

/// A line per app whose runtime `scale` runs another count than its config says (`pm2 save`
/// users expect to see what a restart keeps).
pub fn scale_notes(apps: &[AppStatus]) -> Vec<String> {
    apps.iter()
        .filter_map(|app| {
            let configured = app.configured?;
            Some(format!(
                "{name}: {running} instances by `deployer scale` (the config says {configured}); kept across \
                 restarts until `instances` changes in the config; `deployer scale {name} {configured}` goes back",
                name = untrusted::text(&app.name),
                running = app.instances,
            ))
        })
        .collect()
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
    let mut table = new_table(["id", "name", "mode", "↺", "pid", "cpu", "memory", "uptime", "status", "env"], colour);
    for app in apps {
        if app.workers.is_empty() {
            table.add_row(vec![
                Cell::new("-"),
                Cell::new(&app.name).add_attribute(Attribute::Bold),
                Cell::new(app.mode),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                status_cell(WorkerState::Stopped, None),
                Cell::new("-"),
            ]);
        }
        for worker in &app.workers {
            table.add_row(worker_row(app, worker));
        }
    }
    table
}

/// An empty table in the house style: rounded corners, bold cyan titles, colour when asked.
pub fn new_table<const N: usize>(titles: [&str; N], colour: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).apply_modifier(modifiers::UTF8_ROUND_CORNERS);
    if colour {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(titles.map(|title| Cell::new(title).add_attribute(Attribute::Bold).fg(Color::Cyan)));
    table
}

fn worker_row(app: &AppStatus, worker: &WorkerStatus) -> Vec<Cell> {
    let pid = worker.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
    vec![
        Cell::new(worker.id),
        Cell::new(&app.name).add_attribute(Attribute::Bold),
        Cell::new(app.mode),
        Cell::new(worker.restarts),
        Cell::new(pid),
        Cell::new(format!("{:.1}%", worker.cpu_percent)),
        Cell::new(human_bytes(worker.rss_bytes)),
        Cell::new(human_uptime(worker.uptime_ms)),
        status_cell(worker.state, worker.exit_code),
        Cell::new(&worker.env_hash),
    ]
}

/// The state; a worker that exited by itself and was left stopped shows its exit code.
fn status_cell(state: WorkerState, exit_code: Option<i32>) -> Cell {
    let colour = match (state, exit_code) {
        (WorkerState::Online, _) | (WorkerState::Stopped, Some(0)) => Color::Green,
        (WorkerState::Stopped | WorkerState::Errored, _) => Color::Red,
        _ => Color::Yellow,
    };
    let text = match exit_code {
        Some(code) => format!("{state} (exit {code})"),
        None => state.to_string(),
    };
    Cell::new(text).fg(colour).add_attribute(Attribute::Bold)
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

/// How long an operation took, to a hundredth of a second under a minute: `0.42s`, `2m05s`.
pub fn human_elapsed(ms: u64) -> String {
    human_span(ms, 2)
}

/// How long a deploy took, to a tenth of a second under a minute: `8.2s`, `2m05s`, `1h02m`.
pub fn human_duration(ms: u64) -> String {
    human_span(ms, 1)
}

/// Seconds with `decimals` (1 or 2) digits under a minute, then `2m05s`, then `1h02m`. Rounded
/// before the unit is picked, so never `60.0s`.
fn human_span(ms: u64, decimals: u32) -> String {
    let digit_ms = 10u64.pow(3 - decimals.clamp(1, 2));
    let digits = ms.saturating_add(digit_ms / 2) / digit_ms;
    let per_sec = 1000 / digit_ms;
    if digits < 60 * per_sec {
        let width = decimals as usize;
        return format!("{}.{:0width$}s", digits / per_sec, digits % per_sec);
    }
    let secs = ms.saturating_add(500) / 1000;
    if secs < 3_600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = secs / 60;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

/// How long ago something happened: `just now`, `42s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn human_age(ms: u64) -> String {
    if ms < 1000 { "just now".to_owned() } else { format!("{} ago", human_uptime(ms)) }
}

/// Milliseconds since the Unix epoch, as the API counts them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A commit the way git shows it in one line: its first 7 hex digits.
pub fn short_sha(sha: &str) -> &str {
    sha.char_indices().nth(7).map_or(sha, |(cut, _)| &sha[..cut])
}

/// The first line of a text, cut to `max` characters (with `…` when something was cut).
pub fn one_line(text: &str, max: usize) -> String {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or("").trim_end();
    let more = lines.next().is_some();
    match first.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if first.chars().count() > max => format!("{}…", &first[..cut]),
        _ if more => format!("{first}…"),
        _ => first.to_owned(),
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
    fn spans_keep_hundredths_or_tenths_under_a_minute() {
        // (ms, human_elapsed, human_duration): rounded before the unit is picked, so never `60.0s`.
        let cases = [
            (0, "0.00s", "0.0s"),
            (7, "0.01s", "0.0s"),
            (420, "0.42s", "0.4s"),
            (1_840, "1.84s", "1.8s"),
            (8_250, "8.25s", "8.3s"),
            (59_940, "59.94s", "59.9s"),
            (59_960, "59.96s", "1m00s"),
            (59_996, "1m00s", "1m00s"),
            (125_000, "2m05s", "2m05s"),
            (3_599_600, "1h00m", "1h00m"),
            (3_720_000, "1h02m", "1h02m"),
        ];
        for (ms, elapsed, duration) in cases {
            assert_eq!(human_elapsed(ms), elapsed, "human_elapsed({ms})");
            assert_eq!(human_duration(ms), duration, "human_duration({ms})");
        }
    }

    #[test]
    fn ages_read_like_ago() {
        assert_eq!(human_age(0), "just now");
        assert_eq!(human_age(999), "just now");
        assert_eq!(human_age(42_000), "42s ago");
        assert_eq!(human_age(3 * 60_000 + 5_000), "3m ago");
        assert_eq!(human_age(2 * 3_600_000), "2h ago");
        assert_eq!(human_age(9 * 86_400_000), "9d ago");
    }

    #[test]
    fn shas_are_shortened_to_seven_digits() {
        assert_eq!(short_sha("1a2b3c4d5e6f7a8b9c0d"), "1a2b3c4");
        assert_eq!(short_sha("1a2b"), "1a2b");
        assert_eq!(short_sha(""), "");
    }

    #[test]
    fn one_line_cuts_long_and_multiline_text() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("exactly 10", 10), "exactly 10");
        assert_eq!(one_line("eleven char", 10), "eleven ch…");
        assert_eq!(one_line("first\nsecond", 10), "first…");
        assert_eq!(one_line("  padded  \n", 10), "padded");
        assert_eq!(one_line("", 10), "");
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
            state: state.parse().unwrap(),
            restarts: id,
            uptime_ms: 125_000,
            cpu_percent: 1.26,
            rss_bytes: 44_145_049,
            inflight: 0,
            env_hash: "3fa1c2".into(),
            release: "/srv/web".into(),
            exit_code: None,
        }
    }

    fn app(name: &str, workers: Vec<WorkerStatus>) -> AppStatus {
        AppStatus {
            name: name.into(),
            mode: deployer_wire::AppMode::Http,
            port: Some(3000),
            instances: workers.len() as u32,
            configured: None,
            state: deployer_wire::AppState::Running,
            workers,
            release: None,
            requests_total: None,
        }
    }

    #[test]
    fn a_runtime_scale_is_noted_with_the_configs_count_and_the_way_back() {
        let mut scaled = app("web", vec![worker(0, "online"), worker(1, "online"), worker(2, "online")]);
        scaled.configured = Some(2);
        let notes = scale_notes(&[scaled, app("api", vec![worker(0, "online")])]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("web: 3 instances by `deployer scale` (the config says 2)"), "{}", notes[0]);
        assert!(notes[0].ends_with("`deployer scale web 2` goes back"), "{}", notes[0]);
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
        assert_eq!(cells(lines[3]), ["0", "web", "http", "0", "4242", "1.3%", "42.1mb", "2m", "online", "3fa1c2"]);
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
