//! `deployer reload <app> [--update-env]`

use std::process::ExitCode;

use anyhow::anyhow;
use deployer_wire::ReloadRequest;

use super::Context;
use crate::client::ClientError;
use crate::output::{self, DIM};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// Re-read the agent's config file, `env` and `env_file` before starting the new workers
    #[arg(long)]
    pub update_env: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let failed = || format!("reload of `{}` failed", args.app);
    let request = ReloadRequest { update_env: args.update_env };

    // A reload can take minutes: say what we wait for, then erase the line.
    let progress = !ctx.json && output::stderr_is_terminal();
    if progress {
        anstream::eprint!("{DIM}reloading {}…{DIM:#}", args.app);
    }
    let result = ctx.client.reload(&args.app, &request).await;
    if progress {
        anstream::eprint!("\r\x1b[2K");
    }

    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err @ ClientError::Api { .. }) if is_reload_failure(&err) => {
            return Err(anyhow::Error::new(err).context(failed()));
        }
        Err(err) => return Err(err.into()),
    };
    if ctx.json {
        output::print_json(&outcome)?;
    }
    if !outcome.ok {
        let reason = outcome.error.as_deref().unwrap_or("the agent gave no reason");
        return Err(anyhow!("{reason}").context(failed()));
    }
    if !ctx.json {
        output::print_success(&format!(
            "reloaded {}: {} replaced in {} (env {})",
            outcome.app,
            output::count(outcome.replaced, "worker"),
            output::human_elapsed(outcome.duration_ms),
            outcome.env_hash,
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn is_reload_failure(err: &ClientError) -> bool {
    matches!(err, ClientError::Api { body, .. } if body.code == "reload_failed")
}
