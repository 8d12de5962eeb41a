//! One module per command: its arguments (a clap `Args` struct) and an async `run` that talks to
//! the agent through a [`Client`] and prints for people, or JSON with `--json`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::examples_section;
use crate::client::{Client, ClientError};
use crate::output;

pub mod cancel;
pub mod deploy;
pub mod follow;
pub mod history;
pub mod lifecycle;
pub mod logs;
pub mod ls;
pub mod pull;
pub mod releases;
pub mod reload;
pub mod rollback;
pub mod scale;
pub mod show;

use lifecycle::Action;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every app's workers: pid, cpu, memory, uptime, status
    ///
    /// One row per worker, like `pm2 ls`; an app without workers shows one `stopped` row.
    Ls,

    /// Replace an app's workers with new ones, without dropping a request
    ///
    /// The agent starts new workers and drains the old ones once the new ones are ready. This
    /// command waits until the reload ended (it can take minutes), and exits with 1 if it failed.
    Reload(reload::Args),

    /// Stop every worker of an app, then start new ones (drops requests; prefer `reload`)
    Restart(lifecycle::Args),

    /// Stop every worker of an app; it stays stopped until `start`
    Stop(lifecycle::Args),

    /// Start the workers of a stopped app
    Start(lifecycle::Args),

    /// Run a given number of workers for an app
    Scale(scale::Args),

    /// Show the last lines an app's workers wrote to stdout and stderr
    Logs(logs::Args),

    /// Deploy a branch or a commit of an app's git repo, without downtime
    ///
    /// The agent fetches the commit, installs it into a new release directory, then reloads the
    /// app's workers onto it. This command returns once the deploy is queued; with --wait it
    /// follows the deploy step by step and exits with 1 unless it went live.
    #[command(after_help = examples_section("
  deployer deploy web                    Deploy the head of web's branch
  deployer deploy web --ref 1a2b3c4      Deploy one commit
  deployer deploy web --wait --who ana   Follow the deploy until it is live"))]
    Deploy(deploy::Args),

    /// Show an app's last deploys: state, ref, commit, release, who, when, how long
    History(history::Args),

    /// Put an earlier release of an app back live (the previous one by default)
    ///
    /// No fetch and no install: the release is on disk already. Like `deploy`, this returns once
    /// the rollback is queued, or follows it with --wait.
    #[command(after_help = examples_section("
  deployer rollback web --wait           Put the release before the current one back live
  deployer rollback web --to 11-1a2b3c4  Put a given release back live"))]
    Rollback(rollback::Args),

    /// Cancel a deploy that is queued, fetching or building
    ///
    /// Once the workers are being replaced (`rolling`), a deploy can no longer be cancelled.
    Cancel(cancel::Args),

    /// List the release directories of an app on disk; `*` marks the current one
    Releases(releases::Args),

    /// Look up an app's branch head now and deploy it if it moved
    ///
    /// The check pull mode (`poll:`, `cron:`) makes on its schedule, on demand: for a system
    /// crontab, or after a webhook got lost. With --wait it follows the deploy it queued.
    Pull(pull::Args),

    /// Show one deploy: its steps, and the last lines of its install output
    #[command(alias = "deploy-status")]
    Show(show::Args),
}

/// What every command needs: the agent's client and how to print.
pub struct Context {
    pub client: Client,
    /// Print the API's JSON instead of text for people.
    pub json: bool,
}

impl Command {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let result = match self {
            Command::Ls => ls::run(ctx).await,
            Command::Reload(args) => reload::run(ctx, args).await,
            Command::Restart(args) => lifecycle::run(ctx, Action::Restart, args).await,
            Command::Stop(args) => lifecycle::run(ctx, Action::Stop, args).await,
            Command::Start(args) => lifecycle::run(ctx, Action::Start, args).await,
            Command::Scale(args) => scale::run(ctx, args).await,
            Command::Logs(args) => logs::run(ctx, args).await,
            Command::Deploy(args) => deploy::run(ctx, args).await,
            Command::History(args) => history::run(ctx, args).await,
            Command::Rollback(args) => rollback::run(ctx, args).await,
            Command::Cancel(args) => cancel::run(ctx, args).await,
            Command::Releases(args) => releases::run(ctx, args).await,
            Command::Show(args) => show::run(ctx, args).await,
            Command::Pull(args) => pull::run(ctx, args).await,
        };
        // A script asking for JSON gets the API's error body too (the words go to stderr).
        let failure = match &result {
            Err(err) if ctx.json => err.downcast_ref::<ClientError>(),
            _ => None,
        };
        if let Some(ClientError::Api { body, .. }) = failure {
            output::print_json(body)?;
        }
        result
    }
}
