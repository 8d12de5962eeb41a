//! One module per command: its arguments (a clap `Args` struct) and an async `run` that talks to
//! the agent through a [`Client`] and prints for people, or JSON with `--json`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::client::{Client, ClientError};
use crate::output;

pub mod lifecycle;
pub mod logs;
pub mod ls;
pub mod reload;
pub mod scale;

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
