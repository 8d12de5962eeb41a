//! What `deploy` and `rollback` share: the `--wait` options, and following a deploy to its end by
//! polling `GET /v1/deploys/{id}`, printing each new event once.

use deployer_wire::DeployState;
use std::process::ExitCode;
use std::time::Duration;

use deployer_wire::{Deploy, DeployAccepted, DeployEvent};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::Context;
use crate::client::ClientError;
use crate::output::{self, DIM, deploys};
use crate::report::Hinted;

/// How often to ask the agent how the deploy goes.
const POLL_EVERY: Duration = Duration::from_millis(300);

/// How long the agent may not answer (restarting, say) before following gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Follow the deploy until it is over, printing its steps; exit 1 unless it went live. With a
    /// `bake` window it is over when the window decided: live, or rolled back
    #[arg(long)]
    pub wait: bool,

    /// How long --wait follows the deploy before giving up (the deploy goes on)
    #[arg(
        long,
        default_value = "30m",
        value_name = "DURATION",
        value_parser = humantime::parse_duration,
        requires = "wait"
    )]
    pub timeout: Duration,
}

/// After the agent accepted a deploy or a rollback (`kind`): say so, or follow it to its end.
pub async fn accepted(
    ctx: &Context,
    accepted: DeployAccepted,
    kind: &str,
    wait: &WaitArgs,
) -> anyhow::Result<ExitCode> {
    if wait.wait {
        let deploy = follow(ctx, &accepted, kind, wait.timeout).await?;
        if ctx.json {
            output::print_json(&deploy)?;
        } else {
            for line in deploys::summary(&deploy) {
                anstream::println!("{line}");
            }
        }
        return Ok(if deploy.state == DeployState::Live { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if ctx.json {
        output::print_json(&accepted)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The answer does not say what is deployed (the app's branch when no ref was given); the
    // deploy does. Only words depend on it, so a failure just leaves them out.
    let git_ref = ctx.client.deploy_status(accepted.id).await.ok().map(|d| d.git_ref);
    let line = deploys::accepted_line(&accepted, kind, git_ref.as_deref());
    if accepted.state == DeployState::Live {
        output::print_success(&line);
    } else {
        anstream::println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls the deploy until it is final, printing its events as they appear. Ctrl-C stops the
/// following, not the deploy. The spinner is gone when this returns.
async fn follow(ctx: &Context, accepted: &DeployAccepted, kind: &str, timeout: Duration) -> anyhow::Result<Deploy> {
    let id = accepted.id;
    let watch = Watch::new(ctx.json, format!("{kind} #{id} of {}", accepted.app));
    tokio::select! {
        result = poll(ctx, id, kind, timeout, &watch) => result,
        Ok(()) = tokio::signal::ctrl_c() => {
            Err(Hinted::new(
                format!("stopped following {kind} #{id}; it goes on on the agent"),
                format!("`deployer show {id}` shows how it went, `deployer cancel {id}` stops it"),
            )
            .into())
        }
    }
}

async fn poll(ctx: &Context, id: u64, kind: &str, timeout: Duration, watch: &Watch) -> anyhow::Result<Deploy> {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    let mut state = String::from("queued");
    let mut unanswered_since: Option<Instant> = None;
    loop {
        match ctx.client.deploy_status(id).await {
            Ok(deploy) => {
                unanswered_since = None;
                for event in &deploy.events {
                    if event.seq > seen {
                        watch.event(event);
                        seen = event.seq;
                    }
                }
                if deploy.is_final() {
                    return Ok(deploy);
                }
                watch.state(deploy.state.as_str());
                state = deploy.state.to_string();
            }
            Err(err) if is_transient(&err) => {
                let since = *unanswered_since.get_or_insert_with(|| {
                    watch.note("the agent does not answer; trying again");
                    Instant::now()
                });
                if since.elapsed() >= UNREACHABLE_GRACE {
                    return Err(anyhow::Error::new(err).context(format!("cannot follow {kind} #{id}")));
                }
            }
            Err(err) => return Err(about_deploy(err, format!("cannot follow {kind} #{id}"))),
        }
        if Instant::now() >= deadline {
            return Err(Hinted::new(
                format!("{kind} #{id} is still {state} after {}", humantime::format_duration(timeout)),
                format!(
                    "it goes on on the agent: `deployer show {id}` shows how it went, \
                     `deployer cancel {id}` stops it; --timeout waits longer"
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Failures that may pass: the agent restarting, a connection reset.
fn is_transient(err: &ClientError) -> bool {
    matches!(err, ClientError::Unreachable { .. } | ClientError::Broken { .. } | ClientError::TimedOut { .. })
}

/// An error of a request about one deploy, with what the command was doing as context, and a
/// hint that fits when the agent knows no such deploy.
pub fn about_deploy(err: ClientError, doing: String) -> anyhow::Error {
    match &err {
        ClientError::Api { status, .. } if *status == StatusCode::NOT_FOUND => anyhow::Error::new(err)
            .context(Hinted::new(doing, "`deployer history <app>` lists an app's deploys and their ids")),
        ClientError::Api { .. } => anyhow::Error::new(err).context(doing),
        _ => err.into(),
    }
}

/// Where a followed deploy's lines go: stdout, with a spinner on stderr when it is a terminal;
/// nowhere with `--json` (stdout is the final deploy's).
struct Watch {
    quiet: bool,
    label: String,
    spinner: Option<ProgressBar>,
}

impl Watch {
    fn new(json: bool, label: String) -> Self {
        let spinner = (!json && output::stderr_is_terminal()).then(|| {
            let style = ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let spinner = ProgressBar::new_spinner().with_style(style).with_message(label.clone());
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Self { quiet: json, label, spinner }
    }

    /// Prints a new event above the spinner.
    fn event(&self, event: &DeployEvent) {
        if self.quiet {
            return;
        }
        let line = deploys::event_line(event);
        match &self.spinner {
            Some(spinner) => spinner.suspend(|| anstream::println!("{line}")),
            None => anstream::println!("{line}"),
        }
    }

    /// Shows the state the deploy is in, next to the spinner.
    fn state(&self, state: &str) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(format!("{}: {state}", self.label));
        }
    }

    /// Something about the following itself, not the deploy: on stderr.
    fn note(&self, note: &str) {
        match &self.spinner {
            Some(spinner) => spinner.set_message(format!("{}: {note}", self.label)),
            None if !self.quiet => anstream::eprintln!("{DIM}{note}{DIM:#}"),
            None => {}
        }
    }
}

// The spinner is erased before the summary or an error is printed.
impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }
}
