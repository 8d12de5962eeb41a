//! `deployer restart|stop|start <app>`: one call each, the same answer (the app's status).

use std::process::ExitCode;

use super::Context;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Restart,
    Stop,
    Start,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Restart => "restarted",
            Action::Stop => "stopped",
            Action::Start => "started",
        }
    }
}

pub async fn run(ctx: &Context, action: Action, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client;
    let status = match action {
        Action::Restart => client.restart(&args.app).await?,
        Action::Stop => client.stop(&args.app).await?,
        Action::Start => client.start(&args.app).await?,
    };
    if ctx.json {
        output::print_json(&status)?;
    } else {
        output::print_success(&format!("{} {}", action.done(), status.name));
        output::print_apps(std::slice::from_ref(&status));
    }
    Ok(ExitCode::SUCCESS)
}
