//! `deployer releases <app>`

use std::process::ExitCode;

use super::Context;
use crate::output::{self, deploys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let releases = ctx.client.releases(&args.app).await?;
    if ctx.json {
        output::print_json(&releases)?;
    } else if releases.is_empty() {
        anstream::println!("{} has no releases yet", args.app);
    } else {
        anstream::println!("{}", deploys::releases_table(&releases, output::stdout_colour()));
    }
    Ok(ExitCode::SUCCESS)
}
