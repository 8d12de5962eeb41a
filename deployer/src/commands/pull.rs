//! `deployer pull <app> [--wait]`: look up the branch head now, deploy it if it moved (for a
//! system crontab, or when a webhook got lost).

use std::process::ExitCode;

use deployer_wire::DeployAccepted;

use super::{Context, follow};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    #[command(flatten)]
    pub wait: follow::WaitArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let checked = ctx.client.check(&args.app).await?;
    match checked.queued {
        Some(id) => {
            let accepted =
                DeployAccepted { id, app: checked.app, state: deployer_wire::DeployState::Queued, message: None };
            follow::accepted(ctx, accepted, "deploy", &args.wait).await
        }
        None if ctx.json => {
            output::print_json(&checked)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            output::print_success(&format!(
                "{}: the branch is at {}, which is live or already queued; nothing to do",
                checked.app,
                output::short_sha(&checked.sha)
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}
