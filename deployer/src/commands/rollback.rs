//! `deployer rollback <app> [--to RELEASE] [--wait [--timeout DURATION]]`

use std::process::ExitCode;

use deployer_wire::RollbackRequest;
use reqwest::StatusCode;

use super::{Context, follow};
use crate::client::ClientError;
use crate::fleet::Fleet;
use crate::fleet::progress::Board;
use crate::fleet::rollout::{Action, Plan};
use crate::output;
use crate::report::Hinted;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config; or an environment of deployer.yaml
    #[arg(value_name = "APP|ENV")]
    pub app: String,

    /// The release to put back live: its name (`11-1a2b3c4`), its number or a sha prefix
    /// [default: the release before the current one]
    #[arg(long = "to", value_name = "RELEASE")]
    pub release: Option<String>,

    #[command(flatten)]
    pub wait: follow::WaitArgs,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(fleet) = ctx.fleet_if_env(&args.app, None)? {
        return run_fleet(ctx, &fleet, args.release).await;
    }
    let request = RollbackRequest { release: args.release };
    let accepted = match ctx.client.rollback(&args.app, &request).await {
        Ok(accepted) => accepted,
        // No such app, or no such release: either way the list of releases tells.
        Err(err @ ClientError::Api { status: StatusCode::NOT_FOUND, .. }) => {
            return Err(anyhow::Error::new(err).context(Hinted::new(
                format!("cannot roll `{}` back", args.app),
                format!("`deployer releases {}` lists its releases; `deployer ls` lists the apps", args.app),
            )));
        }
        Err(err) => return Err(err.into()),
    };
    follow::accepted(ctx, accepted, "rollback", &args.wait).await
}

/// Every host of the environment back on `to` (the previous release when `None`), with the push's
/// rollout (canaries first, `max_parallel` at a time, halting on failure).
async fn run_fleet(ctx: &Context, fleet: &Fleet, to: Option<String>) -> anyhow::Result<ExitCode> {
    let labels: Vec<String> = fleet.hosts.iter().map(|(h, _)| h.label()).collect();
    let board = Board::new(ctx.json, &labels);
    let mut rollout = fleet.env.rollout.clone();
    rollout.rollback_on_failure = false;
    let plan = Plan { hosts: &fleet.hosts, app: &fleet.app, action: Action::Rollback { to }, rollout };
    let results = plan.run(&board).await;
    drop(board);
    let all_live = results.iter().all(|r| r.is_live());
    if ctx.json {
        output::print_json(&results)?;
    } else {
        anstream::println!("{}", output::fleet::rollout_table(&results, output::stdout_colour()));
    }
    Ok(if all_live { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
