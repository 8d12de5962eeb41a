//! `deployer deploy <app> [--ref REF] [--who NAME] [--wait [--timeout DURATION]]`

use std::process::ExitCode;

use deployer_wire::DeployRequest;

use super::{Context, follow};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// The branch, or the commit (a sha of 7 hex digits or more), to deploy [default: the app's
    /// `branch`]
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// Who asks, as the history shows it [default: the API token's name]
    #[arg(long, value_name = "NAME")]
    pub who: Option<String>,

    /// Run the new release with this set of the app's `env_sets` on top of `env`; it stays
    /// chosen for later reloads and deploys
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,

    #[command(flatten)]
    pub wait: follow::WaitArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let request = DeployRequest { git_ref: args.git_ref, who: args.who, env: args.env };
    let accepted = ctx.client.deploy(&args.app, &request).await?;
    follow::accepted(ctx, accepted, "deploy", &args.wait).await
}
