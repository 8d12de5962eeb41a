//! `deployer show <deploy-id>`: one deploy, its events and the tail of its install output.

use std::process::ExitCode;

use super::{Context, one_deploy};
use crate::output::{self, deploys};

pub use one_deploy::Args;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let id = args.id;
    one_deploy::answer(ctx, id, "show", ctx.client.deploy_status(id), |deploy| {
        for line in deploys::details(deploy, output::now_ms()) {
            anstream::println!("{line}");
        }
    })
    .await
}
