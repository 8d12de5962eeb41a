//! `deployer cancel <deploy-id>`

use std::process::ExitCode;

use super::{Context, one_deploy};
use crate::output;

pub use one_deploy::Args;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let id = args.id;
    one_deploy::answer(ctx, id, "cancel", ctx.client.cancel(id), |deploy| {
        if deploy.state == deployer_wire::DeployState::Cancelled {
            output::print_success(&format!("cancelled deploy #{id} of {}", deploy.app));
        } else {
            // A running deploy stops at its next step; the answer is the deploy as it was.
            output::print_success(&format!(
                "cancelling deploy #{id} of {} (it was {}); `deployer show {id}` shows when it stopped",
                deploy.app, deploy.state
            ));
        }
    })
    .await
}
