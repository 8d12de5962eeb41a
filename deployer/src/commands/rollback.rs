//! `deployer rollback <app> [--to RELEASE] [--wait [--timeout DURATION]]`

use std::process::ExitCode;

use deployer_wire::RollbackRequest;
use reqwest::StatusCode;

use super::{Context, follow};
use crate::client::ClientError;
use crate::report::Hinted;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// The release to put back live: its name (`11-1a2b3c4`), its number or a sha prefix
    /// [default: the release before the current one]
    #[arg(long = "to", value_name = "RELEASE")]
    pub release: Option<String>,

    #[command(flatten)]
    pub wait: follow::WaitArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let request = RollbackRequest { release: args.release };
    let accepted = match ctx.client.rollback(&args.app, &request).await {
        Ok(accepted) => accepted,
        // No such app, or no such release: either way the list of releases tells.
        Err(err @ ClientError::Api { status: StatusCode::NOT_FOUND, .. }) => {
            return Err(anyhow::Error::new(err).context(Hinted::new(
                format!("cannot roll `{}` back", args.app),
                format!(
                    "`deployer releases {}` lists its releases; `deployer ls` lists the apps",
                    args.app
                ),
            )));
        }
        Err(err) => return Err(err.into()),
    };
    follow::accepted(ctx, accepted, "rollback", &args.wait).await
}
