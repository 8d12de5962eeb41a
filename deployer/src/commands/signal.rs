//! `deployer signal <app> <SIGNAL>`: like `pm2 sendSignal`, to every running worker.

use std::process::ExitCode;

use super::Context;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// The signal, by name: `SIGUSR1`, `USR1`, `SIGHUP`...
    #[arg(value_name = "SIGNAL")]
    pub signal: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let outcome = ctx.client.signal(&args.app, &args.signal).await?;
    if ctx.json {
        output::print_json(&outcome)?;
    } else if outcome.workers.is_empty() {
        output::print_warning(&format!(
            "no worker of `{}` is running: {} was sent to none",
            outcome.app, outcome.signal
        ));
    } else {
        let pids: Vec<String> = outcome.workers.iter().map(|w| format!("{} (pid {})", w.id, w.pid)).collect();
        output::print_success(&format!(
            "sent {} to {} of {}: {}",
            outcome.signal,
            output::count(outcome.workers.len() as u32, "worker"),
            outcome.app,
            pids.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}
