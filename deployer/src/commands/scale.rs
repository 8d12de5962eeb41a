//! `deployer scale <app> <N>`

use std::process::ExitCode;

use super::Context;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// How many workers to run
    #[arg(value_name = "N")]
    pub instances: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let status = ctx.client.scale(&args.app, args.instances).await?;
    if ctx.json {
        output::print_json(&status)?;
    } else {
        let instances = output::count(status.instances, "instance");
        output::print_success(&format!("scaled {} to {instances}", status.name));
        output::print_apps(std::slice::from_ref(&status));
    }
    Ok(ExitCode::SUCCESS)
}
