//! What the commands about one deploy share (`show`, `cancel`): the `DEPLOY_ID` argument, the
//! error that says what was being done (with a hint when the id is unknown), and `--json`.

use std::process::ExitCode;

use deployer_wire::Deploy;

use super::{Context, follow};
use crate::client::ClientError;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deploy, by the id `deployer history` shows
    #[arg(value_name = "DEPLOY_ID")]
    pub id: u64,
}

/// Await the agent's answer about deploy `id` (`verb` says what for, in errors), then print it:
/// as JSON with `--json`, else through `describe`.
pub async fn answer(
    ctx: &Context,
    id: u64,
    verb: &str,
    request: impl Future<Output = Result<Deploy, ClientError>>,
    describe: impl FnOnce(&Deploy),
) -> anyhow::Result<ExitCode> {
    let deploy = request.await.map_err(|err| follow::about_deploy(err, format!("cannot {verb} deploy #{id}")))?;
    if ctx.json {
        output::print_json(&deploy)?;
    } else {
        describe(&deploy);
    }
    Ok(ExitCode::SUCCESS)
}
