//! `deployer history <app> [-n N]`

use std::process::ExitCode;

use super::Context;
use crate::output::{self, deploys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// How many of the last deploys to show
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let history = ctx.client.deploys(&args.app, args.limit).await?;
    if ctx.json {
        output::print_json(&history)?;
    } else if history.is_empty() {
        anstream::println!("no deploys of {} yet", args.app);
    } else {
        let table = deploys::history_table(&history, output::now_ms(), output::stdout_colour());
        anstream::println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}
