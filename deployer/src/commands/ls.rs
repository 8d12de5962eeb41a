//! `deployer ls`

use std::process::ExitCode;

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
    Ok(ExitCode::SUCCESS)
}
