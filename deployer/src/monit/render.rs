//! The screen, drawn from a [`Dashboard`] and nothing else: the same state always draws the same
//! cells, which the tests read back from ratatui's `TestBackend`.
//!
//! Top to bottom: a title line; every host with its apps and, under each app, its workers; the
//! selected app's log tail; the status line (the last action); the keys.

use deployer_wire::{AppState, LogStream, WorkerState, WorkerStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, HighlightSpacing, List, ListItem, ListState, Paragraph};

use super::state::{AppView, Dashboard, HostView, Reach, Status};
use crate::output::{human_bytes, human_uptime};

/// The columns: title and width. The first is the app's (or worker's) name.
const COLUMNS: [(&str, usize); 10] = [
    ("APP / WORKER", 20),
    ("STATE", 11),
    ("PID", 8),
    ("CPU", 7),
    ("MEMORY", 9),
    ("↺", 4),
    ("UPTIME", 7),
    ("REQ/S", 8),
    ("WORKERS", 12),
    ("SHA", 8),
];

/// Columns aligned to the right (figures).
const RIGHT: [bool; 10] = [false, false, true, true, true, true, true, true, true, false];

/// Colours that tell workers apart in the log tail (as `deployer logs` does).
const WORKER_COLOURS: [Color; 5] = [Color::Cyan, Color::Green, Color::Magenta, Color::Yellow, Color::Blue];

/// The mark of the selected app's row.
const SELECTED: &str = "▸ ";

const DIM: Style = Style::new().fg(Color::DarkGray);
const KEYS: &str = "↑/↓ select   r reload   R restart   + / - scale by one   q quit";

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, d: &Dashboard) {
    let area = frame.area();
    let (items, selected) = rows(d);
    // The apps take what they need (their rows, the header, the borders), up to two thirds of
    // the screen; the log tail the rest, at least a few lines.
    let wanted = items.len() as u16 + 3;
    let apps_height = wanted.min(area.height.saturating_sub(3) * 2 / 3).max(4);
    let [title, apps, logs, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(apps_height),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    let every = humantime::format_duration(d.interval);
    frame.render_widget(
        Line::from(vec![
            Span::styled(" deployer monit", Style::new().bold()),
            Span::raw(format!("  {}", d.title)),
            Span::styled(format!("  refreshed every {every}"), DIM),
        ]),
        title,
    );

    let block = Block::bordered().title(" apps ");
    let inner = block.inner(apps);
    frame.render_widget(block, apps);
    let [header, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let titles: Vec<String> = COLUMNS.iter().map(|(t, _)| t.to_string()).collect();
    let mut titles = columns(&titles, Style::new().bold().fg(Color::Cyan));
    // Above the rows, which leave room for the selection's mark.
    titles.spans.insert(0, Span::raw(" ".repeat(SELECTED.chars().count())));
    frame.render_widget(titles, header);
    let mut state = ListState::default().with_selected(selected);
    // Reversed, and marked for terminals without colour or attributes.
    let list_widget = List::new(items)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(SELECTED)
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(list_widget, list, &mut state);

    draw_logs(frame, d, logs);

    let status_line = match &d.status {
        Status::Idle => Line::styled(" ready", DIM),
        Status::Pending(text) => Line::styled(format!(" … {text}"), Style::new().fg(Color::Yellow)),
        Status::Done(text) => Line::styled(format!(" ✓ {text}"), Style::new().fg(Color::Green)),
        Status::Failed(text) => Line::styled(format!(" ✗ {text}"), Style::new().fg(Color::Red).bold()),
    };
    frame.render_widget(status_line, status);
    frame.render_widget(Line::styled(format!(" {KEYS}"), DIM), keys);
}

/// The rows of the apps pane, and which one is the selected app.
fn rows(d: &Dashboard) -> (Vec<ListItem<'static>>, Option<usize>) {
    let mut items = Vec::new();
    let mut selected = None;
    for (index, host) in d.hosts.iter().enumerate() {
        items.push(ListItem::new(host_line(host)));
        let stale = !matches!(host.reach, Reach::Up);
        for app in &host.apps {
            if d.selected.as_ref().is_some_and(|s| s.host == index && s.app == app.status.name) {
                selected = Some(items.len());
            }
            let style = if stale { DIM } else { Style::new() };
            items.push(ListItem::new(app_line(app, stale)).style(style));
            let last = app.status.workers.len().saturating_sub(1);
            for (i, worker) in app.status.workers.iter().enumerate() {
                let branch = if i == last { "└" } else { "├" };
                items.push(ListItem::new(worker_line(&app.status.name, branch, worker, stale)).style(style));
            }
        }
    }
    (items, selected)
}

fn host_line(host: &HostView) -> Line<'static> {
    let (mark, colour, words) = match &host.reach {
        Reach::Waiting => ("…", Color::Yellow, "connecting".to_owned()),
        Reach::Up => {
            let n = host.apps.len();
            ("●", Color::Green, if n == 1 { "1 app".to_owned() } else { format!("{n} apps") })
        }
        Reach::Unreachable(why) => ("✗", Color::Red, format!("unreachable: {why}{}", shown_since(host))),
        Reach::Refused(why) => ("✗", Color::Red, format!("answered: {why}{}", shown_since(host))),
    };
    Line::from(vec![
        Span::styled(format!("{mark} "), Style::new().fg(colour).bold()),
        Span::styled(host.label.clone(), Style::new().bold()),
        Span::styled(format!("  {words}"), Style::new().fg(colour)),
    ])
}

/// `  (shown: its answer of 12s ago)`: how old the dimmed rows of a host that stopped answering are.
fn shown_since(host: &HostView) -> String {
    match host.silent_for() {
        Some(age) if !host.apps.is_empty() => {
            format!("  (shown: its answer of {} ago)", human_uptime(age.as_millis() as u64))
        }
        _ => String::new(),
    }
}

fn app_line(app: &AppView, stale: bool) -> Line<'static> {
    let status = &app.status;
    let running = app.running();
    let mut workers =
        if running == status.instances { running.to_string() } else { format!("{running}/{}", status.instances) };
    // A runtime `deployer scale` away from the config's count (the agent says the config's).
    if let Some(configured) = status.configured {
        workers.push_str(&format!(" (cfg {configured})"));
    }
    let rps = app.rps.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    let cells = [
        status.name.clone(),
        status.state.to_string(),
        String::new(),
        format!("{:.1}%", app.cpu_percent()),
        human_bytes(app.rss_bytes()),
        app.restarts().to_string(),
        String::new(),
        rps,
        workers,
        app.sha().map_or_else(|| "-".to_owned(), |s| crate::output::short_sha(s).to_owned()),
    ];
    let mut line = columns(&cells, Style::new().bold());
    if !stale {
        let colour = match status.state {
            AppState::Running if running == status.instances => Color::Green,
            AppState::Stopped => Color::Red,
            _ => Color::Yellow,
        };
        line.spans[1] = line.spans[1].clone().fg(colour);
        if running != status.instances || status.configured.is_some() {
            line.spans[8] = line.spans[8].clone().fg(Color::Yellow);
        }
    }
    line
}

fn worker_line(app: &str, branch: &str, w: &WorkerStatus, stale: bool) -> Line<'static> {
    let dash = || "-".to_owned();
    let cells = [
        format!("  {branch} {app}-{}", w.id),
        w.state.to_string(),
        w.pid.map_or_else(dash, |p| p.to_string()),
        format!("{:.1}%", w.cpu_percent),
        human_bytes(w.rss_bytes),
        w.restarts.to_string(),
        if w.pid.is_some() { human_uptime(w.uptime_ms) } else { dash() },
        String::new(),
        String::new(),
        String::new(),
    ];
    let mut line = columns(&cells, Style::new());
    if !stale {
        let colour = match w.state {
            WorkerState::Online => Color::Green,
            WorkerState::Stopped | WorkerState::Errored => Color::Red,
            _ => Color::Yellow,
        };
        line.spans[1] = line.spans[1].clone().fg(colour);
    }
    line
}

/// One span per column, padded (or cut) to its width; `first` styles the first column.
fn columns(cells: &[String], first: Style) -> Line<'static> {
    let spans = cells.iter().zip(COLUMNS.iter().zip(RIGHT)).enumerate().map(|(i, (text, ((_, width), right)))| {
        let text = fit(text, width - 1);
        let padded = if right { format!("{text:>w$} ", w = width - 1) } else { format!("{text:<w$} ", w = width - 1) };
        if i == 0 { Span::styled(padded, first) } else { Span::raw(padded) }
    });
    Line::from(spans.collect::<Vec<_>>())
}

/// `text` cut to `width` characters, with `…` when something was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn draw_logs(frame: &mut Frame, d: &Dashboard, area: Rect) {
    let title = match d.selected_app() {
        Some((key, app)) if d.hosts.len() > 1 => format!(" logs · {} on {} ", app.status.name, d.hosts[key.host].label),
        Some((_, app)) => format!(" logs · {} ", app.status.name),
        None => " logs ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    if let Some(why) = &d.logs.error {
        lines.push(Line::styled(format!("log stream: {why} (opening it again)"), Style::new().fg(Color::Red)));
    }
    match &d.logs.of {
        None => lines.push(Line::styled("no app selected", DIM)),
        Some(of) if d.logs.lines.is_empty() && d.logs.error.is_none() => {
            lines.push(Line::styled(format!("no lines from {} yet", of.app), DIM));
        }
        Some(of) => {
            let room = (inner.height as usize).saturating_sub(lines.len());
            let skip = d.logs.lines.len().saturating_sub(room);
            let width = d.logs.lines.iter().map(|l| l.worker.to_string().len()).max().unwrap_or(1) + of.app.len() + 1;
            for l in d.logs.lines.iter().skip(skip) {
                let colour = WORKER_COLOURS[l.worker as usize % WORKER_COLOURS.len()];
                let (tag, tag_style) = match l.stream {
                    LogStream::Err => ("err", Style::new().fg(Color::Red).bold()),
                    _ => ("", Style::new()),
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<width$} ", format!("{}-{}", of.app, l.worker)), Style::new().fg(colour)),
                    Span::styled(format!("{tag:<3}"), tag_style),
                    Span::styled("│ ", Style::new().fg(colour)),
                    // A tab has no width of its own on a grid of cells.
                    Span::raw(l.line.replace('\t', "    ")),
                ]));
            }
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use deployer_wire::{LogLine, WorkerState};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::monit::state::tests::{app, line, worker};
    use crate::monit::state::{AppKey, Failure};

    /// The screen as text, one line per row.
    fn screen(d: &Dashboard, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, d)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn row<'a>(screen: &'a str, starts: &str) -> &'a str {
        screen
            .lines()
            .find(|l| l.trim_start_matches(['│', '▸', ' ']).starts_with(starts))
            .unwrap_or_else(|| panic!("no row starts with `{starts}`:\n{screen}"))
    }

    fn two_apps() -> Dashboard {
        let mut d = Dashboard::new(
            "http://127.0.0.1:7070".into(),
            Duration::from_secs(1),
            vec!["http://127.0.0.1:7070".into()],
            None,
        );
        let t0 = Instant::now();
        let apps = |requests| {
            vec![
                app(
                    "web",
                    2,
                    vec![worker(0, WorkerState::Online, 4242), worker(1, WorkerState::Online, 4243)],
                    Some(requests),
                ),
                app("queue", 1, vec![worker(0, WorkerState::Online, 5151)], None),
            ]
        };
        d.apply(0, Ok(apps(100)), t0);
        d.apply(0, Ok(apps(125)), t0 + Duration::from_secs(1));
        d.logs_opened(&AppKey { host: 0, app: "web".into() });
        let web = AppKey { host: 0, app: "web".into() };
        d.log_line(&web, line(0, "listening on 9000"));
        d.log_line(&web, LogLine { stream: deployer_wire::LogStream::Err, ..line(1, "boom") });
        d
    }

    #[test]
    fn both_apps_show_with_their_workers_rates_and_log_tail() {
        let d = two_apps();
        let s = screen(&d, 120, 24);
        assert!(s.contains("deployer monit  http://127.0.0.1:7070  refreshed every 1s"), "{s}");
        assert!(row(&s, "● http://127.0.0.1:7070").contains("2 apps"), "{s}");
        let web = row(&s, "web ");
        assert!(web.starts_with("│▸ web"), "the selected app is marked: {web}");
        assert!(row(&s, "queue").starts_with("│  queue"), "{s}");
        assert!(s.contains("│  APP / WORKER"), "the titles are above their columns: {s}");
        for cell in ["running", "3.0%", "80.0mb", "25.0", " 2 ", "1a2b3c4"] {
            assert!(web.contains(cell), "web's row lacks `{cell}`: {web}\n{s}");
        }
        let w0 = row(&s, "├ web-0");
        for cell in ["online", "4242", "1.5%", "40.0mb", "2m"] {
            assert!(w0.contains(cell), "web-0's row lacks `{cell}`: {w0}\n{s}");
        }
        assert!(row(&s, "└ web-1").contains("4243"), "{s}");
        let queue = row(&s, "queue");
        assert!(queue.contains(" - "), "an app without a front has no rate: {queue}");
        assert!(row(&s, "└ queue-0").contains("5151"), "{s}");
        assert!(s.contains("logs · web"), "{s}");
        assert!(row(&s, "web-0").contains("│ listening on 9000"), "{s}");
        assert!(row(&s, "web-1").contains("err│ boom"), "{s}");
        assert!(s.contains("r reload") && s.contains("q quit"), "{s}");
    }

    #[test]
    fn a_worker_down_a_short_cluster_and_a_runtime_scale_are_plain() {
        let mut d = two_apps();
        let mut jobs = app("jobs", 4, (0..4).map(|i| worker(i, WorkerState::Online, 100 + i)).collect(), None);
        jobs.configured = Some(1);
        let web = vec![worker(0, WorkerState::Online, 4242), worker(1, WorkerState::Errored, 0)];
        d.apply(0, Ok(vec![app("web", 3, web, Some(200)), jobs]), Instant::now() + Duration::from_secs(5));
        let s = screen(&d, 120, 24);
        assert!(row(&s, "web ").contains(" 1/3 "), "1 of 3 online: {s}");
        let down = row(&s, "└ web-1");
        assert!(down.contains("errored"), "{down}");
        assert!(down.contains(" - "), "no pid, no uptime: {down}");
        assert!(row(&s, "jobs ").contains(" 4 (cfg 1) "), "scaled to 4 at runtime, 1 in the config: {s}");
        assert!(!s.contains("queue"), "an app gone from the answer is gone: {s}");
    }

    #[test]
    fn an_unreachable_agent_says_so_and_keeps_what_it_last_said() {
        let mut d = two_apps();
        let last = d.hosts[0].answered_at.unwrap();
        d.apply(0, Err(Failure::unreachable("connection refused")), last + Duration::from_secs(12));
        d.status = Status::Failed("reload of web failed: the agent is stopping".into());
        let s = screen(&d, 120, 24);
        assert!(
            row(&s, "✗ http://127.0.0.1:7070")
                .contains("unreachable: connection refused  (shown: its answer of 12s ago)"),
            "{s}"
        );
        assert!(row(&s, "web ").contains(" - "), "no rate without an answer: {s}");
        assert!(s.contains("✗ reload of web failed: the agent is stopping"), "{s}");
    }

    #[test]
    fn a_fleet_lists_each_host_and_a_small_terminal_does_not_break() {
        let mut d = Dashboard::new(
            "prod (2 hosts)".into(),
            Duration::from_millis(500),
            vec!["web1:7070".into(), "web2:7070".into()],
            None,
        );
        d.apply(1, Ok(vec![app("web", 1, vec![worker(0, WorkerState::Online, 7)], Some(0))]), Instant::now());
        let s = screen(&d, 120, 24);
        assert!(row(&s, "… web1:7070").contains("connecting"), "{s}");
        assert!(row(&s, "● web2:7070").contains("1 app"), "{s}");
        assert!(s.contains("logs · web on web2:7070"), "{s}");
        for (w, h) in [(20, 5), (1, 1), (80, 8)] {
            screen(&d, w, h);
        }
    }
}
