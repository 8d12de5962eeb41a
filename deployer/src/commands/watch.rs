//! `deployer watch <env>`: reattach to the current push of a fleet-mode environment.

use std::process::ExitCode;

use super::Context;
use crate::report::Hinted;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A fleet-mode environment of deployer.yaml (one with `nats:`)
    #[arg(value_name = "ENV")]
    pub env: String,

    /// The app [default: deployer.yaml's `app`]
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let Some(env) = ctx.nats_env(&args.env, args.app.as_deref())? else {
        return Err(Hinted::new(
            format!("`{}` is not a fleet-mode environment of deployer.yaml", args.env),
            "`watch` follows pushes the agents carry out themselves: give the environment `nats: [nats://...]`",
        )
        .into());
    };
    crate::fleet::nats::watch(&env, ctx.json).await
}
