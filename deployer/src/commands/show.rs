//! `deployer show <deploy-id>`: one deploy, its events and the tail of its install output.

use std::process::ExitCode;

use super::{Context, follow};
use crate::output::{self, deploys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deploy, by the id `deployer history` shows
    #[arg(value_name = "DEPLOY_ID")]
    pub id: u64,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let id = args.id;
    let deploy = ctx
        .client
        .deploy_status(id)
        .await
        .map_err(|err| follow::about_deploy(err, format!("cannot show deploy #{id}")))?;
    if ctx.json {
        output::print_json(&deploy)?;
    } else {
        for line in deploys::details(&deploy, output::now_ms()) {
            anstream::println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
