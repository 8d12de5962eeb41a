//! Rendering of deploys, their events and releases: the history and releases tables, the lines a
//! followed deploy prints, and its summary.
//!
//! Lines are styled with ANSI codes, which `anstream` strips when the stream is not a terminal;
//! tables take the colour decision as an argument, like [`super::workers_table`].

use anstyle::{AnsiColor, Style};
use comfy_table::{Attribute, Cell, Color, Table};
use deployer_wire::{Deploy, DeployAccepted, DeployEvent, DeployState, EventState, Release};

use super::{DIM, FAILURE, SUCCESS, human_age, human_duration, new_table, one_line, short_sha};

/// The width of the state column of event lines: the longest states (`rolled_back`,
/// `interrupted`) fit.
const STATE_WIDTH: usize = 11;

/// How much of a deploy's message the history table shows.
const MESSAGE_WIDTH: usize = 48;

const WORKING: Style = AnsiColor::Cyan.on_default();
const STOPPED: Style = AnsiColor::Yellow.on_default();

/// The style of a state in lines: live green, failed red, in progress cyan, stopped yellow (a
/// state this CLI does not know is yellow too: neither good nor under way).
pub fn state_style(state: DeployState) -> Style {
    match state {
        DeployState::Live => SUCCESS,
        DeployState::Failed | DeployState::RolledBack => FAILURE,
        s if s.in_progress() => WORKING,
        _ => STOPPED,
    }
}

/// `deploy` or `rollback`: what a deploy is called in sentences.
pub fn noun(deploy: &Deploy) -> &'static str {
    if deploy.trigger.is_rollback() { "rollback" } else { "deploy" }
}

/// What the deploy put live, or tried to: `main`, or `11-1a2b3c4` for a rollback.
fn target(git_ref: &str) -> &str {
    git_ref.strip_prefix("rollback:").unwrap_or(git_ref)
}

/// `queued deploy #12 of web (main)`, or the agent's word when the request changed nothing.
pub fn accepted_line(accepted: &DeployAccepted, kind: &str, git_ref: Option<&str>) -> String {
    if let Some(message) = &accepted.message {
        return message.clone();
    }
    let mut line = format!("{} {kind} #{} of {}", accepted.state, accepted.id, accepted.app);
    if let Some(git_ref) = git_ref {
        line.push_str(&format!(" ({})", target(git_ref)));
    }
    line
}

/// `  fetching    fetched main at 1a2b3c4`: the state padded to one width, then the message.
/// An event within a state (`log`) leaves the state column blank.
pub fn event_line(event: &DeployEvent) -> String {
    let (state, style) = match event.state {
        EventState::Log => ("", Style::new()),
        EventState::Entered(state) => (state.as_str(), state_style(state)),
    };
    format!("  {style}{state:<STATE_WIDTH$}{style:#} {}", event.message).trim_end().to_owned()
}

/// How long a deploy took, once it is over.
fn took(deploy: &Deploy) -> Option<String> {
    deploy.finished_at_ms.map(|end| human_duration(end.saturating_sub(deploy.queued_at_ms)))
}

/// The last words of a followed deploy: `✓ web is live on 1a2b3c4 (release 12-1a2b3c4) in 8.2s`,
/// or `✗ deploy #12 failed: <message>` then the tail of its install output, indented.
pub fn summary(deploy: &Deploy) -> Vec<String> {
    if deploy.state == DeployState::Live {
        let mut line = format!("{SUCCESS}✓{SUCCESS:#} {} is live", deploy.app);
        if let Some(sha) = &deploy.sha {
            line.push_str(&format!(" on {}", short_sha(sha)));
        }
        if let Some(release) = &deploy.release {
            line.push_str(&format!(" (release {release})"));
        }
        if let Some(took) = took(deploy) {
            line.push_str(&format!(" in {took}"));
        }
        return vec![line];
    }
    let what = match deploy.state {
        DeployState::Failed => "failed",
        DeployState::RolledBack => "was rolled back",
        DeployState::Superseded => "was superseded",
        DeployState::Interrupted => "was interrupted",
        DeployState::Cancelled => "was cancelled",
        other => other.as_str(),
    };
    let mut line = format!("{FAILURE}✗{FAILURE:#} {} #{} {what}", noun(deploy), deploy.id);
    if let Some(message) = deploy.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!(": {message}"));
    }
    let mut lines = vec![line];
    lines.extend(deploy.output_tail.iter().map(|l| format!("    {l}")));
    lines
}

/// `deployer show`: a deploy's fields, its events (with their time since it was queued) and the
/// tail of its install output.
pub fn details(deploy: &Deploy, now_ms: u64) -> Vec<String> {
    let style = state_style(deploy.state);
    let mut lines =
        vec![format!("{} #{} of {}: {style}{}{style:#}", noun(deploy), deploy.id, deploy.app, deploy.state)];
    let mut field = |name: &str, value: &str| lines.push(format!("  {DIM}{name:<9}{DIM:#}{value}"));
    field("ref", &deploy.git_ref);
    if let Some(sha) = &deploy.sha {
        field("sha", sha);
    }
    if let Some(release) = &deploy.release {
        field("release", release);
    }
    match asked_by(deploy) {
        Some(by) => field("trigger", &format!("{} by {by}", deploy.trigger)),
        None => field("trigger", deploy.trigger.as_str()),
    }
    field("queued", &human_age(now_ms.saturating_sub(deploy.queued_at_ms)));
    match took(deploy) {
        Some(took) => field("took", &took),
        None => field("running", &human_duration(now_ms.saturating_sub(deploy.queued_at_ms))),
    }
    if let Some(message) = deploy.message.as_deref().filter(|m| !m.is_empty()) {
        field("message", message);
    }
    if !deploy.events.is_empty() {
        lines.push(String::new());
        for event in &deploy.events {
            let offset = human_duration(event.at_ms.saturating_sub(deploy.queued_at_ms));
            let offset = format!("+{offset}");
            lines.push(format!("  {DIM}{offset:>7}{DIM:#}{}", event_line(event)));
        }
    }
    if !deploy.output_tail.is_empty() {
        lines.push(String::new());
        lines.push(format!("{DIM}output (last {} lines):{DIM:#}", deploy.output_tail.len()));
        lines.extend(deploy.output_tail.iter().map(|l| format!("    {l}")));
    }
    lines
}

/// Who asked for a deploy: the token it came with is the actor, what the request said about
/// itself (`who`) is shown beside it: `ana (token ci)`, `token ci`, or `ana` (a webhook's pusher).
fn asked_by(deploy: &Deploy) -> Option<String> {
    match (&deploy.who, &deploy.token) {
        (Some(who), Some(token)) if who != token => Some(format!("{who} (token {token})")),
        (_, Some(token)) => Some(format!("token {token}")),
        (who, None) => who.clone(),
    }
}

/// One row per deploy, newest first as the agent answers them.
pub fn history_table(deploys: &[Deploy], now_ms: u64, colour: bool) -> Table {
    let mut table =
        new_table(["id", "state", "ref", "sha", "release", "trigger", "who", "age", "duration", "message"], colour);
    for deploy in deploys {
        let dash = || "-".to_owned();
        let duration = took(deploy).unwrap_or_else(|| {
            if deploy.state.in_progress() {
                format!("{}…", human_duration(now_ms.saturating_sub(deploy.queued_at_ms)))
            } else {
                dash()
            }
        });
        table.add_row(vec![
            Cell::new(deploy.id),
            history_state_cell(deploy.state),
            Cell::new(&deploy.git_ref),
            Cell::new(deploy.sha.as_deref().map_or_else(dash, |s| short_sha(s).to_owned())),
            Cell::new(deploy.release.clone().unwrap_or_else(dash)),
            Cell::new(deploy.trigger),
            Cell::new(asked_by(deploy).unwrap_or_else(dash)),
            Cell::new(human_age(now_ms.saturating_sub(deploy.queued_at_ms))),
            Cell::new(duration),
            Cell::new(one_line(deploy.message.as_deref().unwrap_or(""), MESSAGE_WIDTH)),
        ]);
    }
    table
}

/// Live green, failed and rolled back red, in progress yellow, the other final states dim.
fn history_state_cell(state: DeployState) -> Cell {
    let cell = Cell::new(state);
    match state {
        DeployState::Live => cell.fg(Color::Green).add_attribute(Attribute::Bold),
        DeployState::Failed | DeployState::RolledBack => cell.fg(Color::Red).add_attribute(Attribute::Bold),
        _ if state.in_progress() => cell.fg(Color::Yellow).add_attribute(Attribute::Bold),
        _ => cell.add_attribute(Attribute::Dim),
    }
}

/// One row per release on disk; `*` marks the one the workers run.
pub fn releases_table(releases: &[Release], colour: bool) -> Table {
    let mut table = new_table(["name", "sha", "current", "ok"], colour);
    for release in releases {
        let current = if release.current {
            Cell::new("*").fg(Color::Green).add_attribute(Attribute::Bold)
        } else {
            Cell::new("")
        };
        let ok = if release.ok {
            Cell::new("✓").fg(Color::Green)
        } else {
            Cell::new("✗").fg(Color::Red).add_attribute(Attribute::Bold)
        };
        let name = Cell::new(&release.name);
        let name = if release.current { name.add_attribute(Attribute::Bold) } else { name };
        table.add_row(vec![name, Cell::new(short_sha(&release.sha)), current, ok]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(line: &str) -> String {
        anstream::adapter::strip_str(line).to_string()
    }

    fn event(seq: u64, state: &str, message: &str) -> DeployEvent {
        DeployEvent { seq, at_ms: 1_000_000 + seq * 1_500, state: state.parse().unwrap(), message: message.into() }
    }

    fn deploy(id: u64, state: &str) -> Deploy {
        Deploy {
            id,
            app: "web".into(),
            git_ref: "main".into(),
            sha: Some("1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d".into()),
            trigger: deployer_wire::Trigger::Api,
            state: state.parse().expect("a deploy state"),
            who: Some("alice".into()),
            token: None,
            release: Some(format!("{id}-1a2b3c4")),
            queued_at_ms: 1_000_000,
            finished_at_ms: Some(1_008_240),
            message: None,
            events: vec![],
            output_tail: vec![],
        }
    }

    /// The cells of a table row, borders and padding removed.
    fn cells(line: &str) -> Vec<String> {
        line.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
    }

    #[test]
    fn event_lines_pad_the_state_column() {
        let line = event_line(&event(2, "fetching", "fetched main at 1a2b3c4"));
        assert_eq!(plain(&line), "  fetching    fetched main at 1a2b3c4");
        let line = event_line(&event(7, "rolled_back", "worker 0 crashed"));
        assert_eq!(plain(&line), "  rolled_back worker 0 crashed");
        let line = event_line(&event(3, "log", "npm ci: 312 packages"));
        assert_eq!(plain(&line), "              npm ci: 312 packages", "a log line leaves the state blank");
    }

    #[test]
    fn accepted_lines_name_the_deploy_and_its_ref() {
        let accepted =
            DeployAccepted { id: 12, app: "web".into(), state: deployer_wire::DeployState::Queued, message: None };
        assert_eq!(accepted_line(&accepted, "deploy", Some("main")), "queued deploy #12 of web (main)");
        assert_eq!(accepted_line(&accepted, "deploy", None), "queued deploy #12 of web");
        assert_eq!(
            accepted_line(&accepted, "rollback", Some("rollback:11-1a2b3c4")),
            "queued rollback #12 of web (11-1a2b3c4)"
        );
        let noop = DeployAccepted {
            state: deployer_wire::DeployState::Live,
            message: Some("web is already live on 1a2b3c4".into()),
            ..accepted
        };
        assert_eq!(accepted_line(&noop, "deploy", Some("main")), "web is already live on 1a2b3c4");
    }

    #[test]
    fn a_live_deploy_sums_up_in_one_line() {
        let lines: Vec<String> = summary(&deploy(12, "live")).iter().map(|l| plain(l)).collect();
        assert_eq!(lines, ["✓ web is live on 1a2b3c4 (release 12-1a2b3c4) in 8.2s"]);
    }

    #[test]
    fn a_failed_deploy_shows_its_message_and_output() {
        let mut d = deploy(12, "failed");
        d.message = Some("`npm ci` exited with 1".into());
        d.output_tail = vec!["npm ERR! code E404".into(), "npm ERR! 404 Not Found".into()];
        let lines: Vec<String> = summary(&d).iter().map(|l| plain(l)).collect();
        assert_eq!(
            lines,
            ["✗ deploy #12 failed: `npm ci` exited with 1", "    npm ERR! code E404", "    npm ERR! 404 Not Found"]
        );

        let mut d = deploy(13, "cancelled");
        d.git_ref = "rollback:11-1a2b3c4".into();
        d.trigger = deployer_wire::Trigger::Rollback;
        assert_eq!(plain(&summary(&d)[0]), "✗ rollback #13 was cancelled");
    }

    #[test]
    fn details_show_fields_events_and_output() {
        let mut d = deploy(12, "failed");
        d.message = Some("install failed".into());
        d.events = vec![event(1, "queued", "api: deploy main"), event(2, "fetching", "fetched main at 1a2b3c4")];
        d.output_tail = vec!["boom".into()];
        let lines: Vec<String> = details(&d, 1_000_000 + 180_000).iter().map(|l| plain(l)).collect();
        assert_eq!(
            lines,
            [
                "deploy #12 of web: failed",
                "  ref      main",
                "  sha      1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
                "  release  12-1a2b3c4",
                "  trigger  api by alice",
                "  queued   3m ago",
                "  took     8.2s",
                "  message  install failed",
                "",
                "    +1.5s  queued      api: deploy main",
                "    +3.0s  fetching    fetched main at 1a2b3c4",
                "",
                "output (last 1 lines):",
                "    boom",
            ]
        );
    }

    #[test]
    fn the_history_table_has_a_row_per_deploy() {
        let mut failed = deploy(11, "failed");
        failed.message = Some("`npm ci` exited with 1 after printing a very long explanation of why".into());
        failed.who = None;
        let mut running = deploy(13, "building");
        running.sha = None;
        running.release = None;
        running.finished_at_ms = None;
        let now = 1_000_000 + 3 * 60_000;
        let rendered = history_table(&[running, deploy(12, "live"), failed], now, false).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        // Top border, header, separator, three rows, bottom border.
        assert_eq!(lines.len(), 7, "{rendered}");
        assert_eq!(
            cells(lines[1]),
            ["id", "state", "ref", "sha", "release", "trigger", "who", "age", "duration", "message"]
        );
        assert_eq!(cells(lines[3]), ["13", "building", "main", "-", "-", "api", "alice", "3m ago", "3m00s…"]);
        assert_eq!(cells(lines[4]), ["12", "live", "main", "1a2b3c4", "12-1a2b3c4", "api", "alice", "3m ago", "8.2s"]);
        let row = cells(lines[5]);
        assert_eq!(row[..9], ["11", "failed", "main", "1a2b3c4", "11-1a2b3c4", "api", "-", "3m ago", "8.2s"]);
        assert_eq!(row[9].chars().count(), MESSAGE_WIDTH, "{}", row[9]);
        assert!(row[9].ends_with('…'), "{}", row[9]);
        assert!(!rendered.contains('\u{1b}'), "no colour when asked for none: {rendered:?}");
    }

    #[test]
    fn the_token_is_the_actor_and_who_is_shown_beside_it() {
        let by = |who: Option<&str>, token: Option<&str>| {
            let mut d = deploy(1, "live");
            d.who = who.map(String::from);
            d.token = token.map(String::from);
            asked_by(&d)
        };
        assert_eq!(by(Some("admin"), Some("ci")).as_deref(), Some("admin (token ci)"));
        assert_eq!(by(None, Some("ci")).as_deref(), Some("token ci"));
        assert_eq!(by(Some("ci"), Some("ci")).as_deref(), Some("token ci"));
        assert_eq!(by(Some("ana"), None).as_deref(), Some("ana"));
        assert_eq!(by(None, None), None);
    }

    #[test]
    fn history_states_are_coloured_on_a_terminal() {
        let rendered = history_table(&[deploy(12, "live")], 1_010_000, true).to_string();
        assert!(rendered.contains('\u{1b}'), "{rendered}");
    }

    #[test]
    fn the_releases_table_marks_the_current_one() {
        let release = |seq: u64, current: bool, ok: bool| Release {
            name: format!("{seq}-1a2b3c4"),
            seq,
            sha: "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d".into(),
            current,
            ok,
        };
        let rendered = releases_table(&[release(12, false, false), release(11, true, true)], false).to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 6, "{rendered}");
        assert_eq!(cells(lines[1]), ["name", "sha", "current", "ok"]);
        assert_eq!(cells(lines[3]), ["12-1a2b3c4", "1a2b3c4", "✗"]);
        assert_eq!(cells(lines[4]), ["11-1a2b3c4", "1a2b3c4", "*", "✓"]);
    }
}
