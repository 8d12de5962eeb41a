//! `deployer cancel <deploy-id>`

use std::process::ExitCode;

use super::{Context, follow};
use crate::output;

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
        .cancel(id)
        .await
        .map_err(|err| follow::about_deploy(err, format!("cannot cancel deploy #{id}")))?;
    if ctx.json {
        output::print_json(&deploy)?;
    } else if deploy.state == "cancelled" {
        output::print_success(&format!("cancelled deploy #{id} of {}", deploy.app));
    } else {
        // A running deploy stops at its next step; the answer is the deploy as it was.
        output::print_success(&format!(
            "cancelling deploy #{id} of {} (it was {}); `deployer show {id}` shows when it stopped",
            deploy.app, deploy.state
        ));
    }
    Ok(ExitCode::SUCCESS)
}
