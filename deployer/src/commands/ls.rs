//! `deployer ls`

use std::process::ExitCode;

use deployer_wire::WorkerState;

use super::Context;
use crate::output;

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let apps = ctx.client.apps().await?;
    if ctx.json {
        output::print_json(&apps)?;
    } else if apps.is_empty() {
        anstream::println!("the agent at `{}` runs no apps", ctx.client.agent());
    } else {
        output::print_apps(&apps);
    }
    // A worker that kept crashing (`errored`) is listed, and is not fine: scripts gate on this.
    let errored = apps.iter().flat_map(|a| &a.workers).any(|w| w.state == WorkerState::Errored);
    Ok(if errored { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
