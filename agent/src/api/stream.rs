//! The streaming routes, as Server-Sent Events: one deploy's events until it ends, and an app's
//! log lines as they are written. Both end when the agent stops.

use super::{ApiErr, ApiState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use deployer_wire::{DeployStreamItem, LOG_LINE_EVENT, LogLine, LogLines, LogStream, LogsFlushed};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// A comment line this often keeps proxies and the CLI's read timeout from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// `GET /v1/deploys/{id}/events`
pub async fn deploy_events(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<u64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiErr> {
    let items = st.deployer.follow(id, st.shutdown.clone())?;
    let events = items.map(|item: DeployStreamItem| {
        let mut event = Event::default().event(item.kind());
        if let DeployStreamItem::Event(e) = &item {
            event = event.id(e.seq.to_string());
        }
        Ok(event.json_data(&item).unwrap_or_else(|_| Event::default().comment("unserialisable")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
    /// `out` or `err`: that stream's lines only (`deployer logs --out`, `--err`).
    stream: Option<LogStream>,
}

/// `GET /v1/apps/{app}/logs?lines=N[&follow=true][&stream=out|err]`: JSON, or with `follow` an
/// SSE stream of `line` events.
pub async fn logs(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiErr> {
    let app = st.supervisor.app(&app)?;
    let lines = q.lines.unwrap_or(100).min(10_000);
    if !q.follow {
        return Ok(Json(LogLines { app: app.name.clone(), lines: app.logs(lines, q.stream) }).into_response());
    }
    let (tail, live) = app.follow_logs(lines, q.stream);
    let only = q.stream;
    let later =
        follow_lines(live, st.shutdown.clone()).filter(move |l| std::future::ready(only.is_none_or(|s| l.stream == s)));
    let lines = futures_util::stream::iter(tail).chain(later);
    // Lines are masked when they are written; a secret named by a later SIGHUP is masked here too.
    let secrets = st.secrets.clone();
    let events = lines.map(move |mut line: LogLine| {
        line.line = secrets.masked(&line.line);
        Ok::<_, Infallible>(
            Event::default()
                .event(LOG_LINE_EVENT)
                .json_data(&line)
                .unwrap_or_else(|_| Event::default().comment("unserialisable")),
        )
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// New lines until the app goes away or the agent stops; lines a slow follower missed are skipped.
fn follow_lines(
    live: broadcast::Receiver<LogLine>,
    stop: CancellationToken,
) -> impl Stream<Item = LogLine> + Send + 'static {
    futures_util::stream::unfold((live, stop), |(mut live, stop)| async move {
        loop {
            tokio::select! {
                line = live.recv() => match line {
                    Ok(line) => return Some((line, (live, stop))),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "a log follower lagged");
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = stop.cancelled() => return None,
            }
        }
    })
}

/// `POST /v1/apps/{app}/logs/flush`: empty the app's log files and remove their rotated copies
/// (`deployer flush`), as `pm2 flush` does.
pub async fn flush_logs(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<LogsFlushed>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    let files = app.flush_logs().iter().map(|p| p.display().to_string()).collect();
    tracing::info!(app = %app.name, "log files flushed");
    Ok(Json(LogsFlushed { app: app.name.clone(), files }))
}
