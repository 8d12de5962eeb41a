//! `deployer history <app> [-n N]`

use std::process::ExitCode;

use deployer_wire::Deploy;
use futures_util::future::join_all;
use serde::Serialize;

use super::Context;
use crate::fleet::Fleet;
use crate::fleet::rollout::reason;
use crate::output::{self, DIM, FAILURE, deploys};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config; or an environment of deployer.yaml
    #[arg(value_name = "APP|ENV")]
    pub app: String,

    /// How many of the last deploys to show
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(env) = ctx.nats_env(&args.app, None)? {
        return crate::fleet::nats::history(&env, args.limit, ctx.json).await;
    }
    if let Some(fleet) = ctx.fleet_if_env(&args.app, None)? {
        return run_fleet(ctx, &fleet, args.limit).await;
    }
    let history = ctx.client.deploys(&args.app, args.limit).await?;
    if ctx.json {
        output::print_json(&history)?;
    } else if history.is_empty() {
        anstream::println!("no deploys of {} yet", args.app);
    } else {
        let table = deploys::history_table(&history, output::now_ms(), output::stdout_colour());
        anstream::println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One host of `deployer history <env> --json`.
#[derive(Debug, Serialize)]
pub struct HostHistory {
    /// The agent's URL.
    pub host: String,
    pub app: String,
    /// Why the host's history is missing, when it is.
    pub error: Option<String>,
    /// Newest first.
    pub deploys: Vec<Deploy>,
}

async fn run_fleet(ctx: &Context, fleet: &Fleet, limit: u32) -> anyhow::Result<ExitCode> {
    let histories: Vec<HostHistory> = join_all(fleet.hosts.iter().map(|(_, client)| async move {
        let (deploys, error) = match client.deploys(&fleet.app, limit).await {
            Ok(d) => (d, None),
            Err(e) => (Vec::new(), Some(reason(&e))),
        };
        HostHistory { host: client.agent(), app: fleet.app.clone(), error, deploys }
    }))
    .await;
    if ctx.json {
        output::print_json(&histories)?;
    } else {
        let now = output::now_ms();
        for h in &histories {
            anstream::println!("{}{}{} {DIM}({}){DIM:#}", output::BOLD, h.host, output::BOLD.render_reset(), h.app);
            match &h.error {
                Some(e) => anstream::println!("  {FAILURE}unreachable{FAILURE:#}: {e}"),
                None if h.deploys.is_empty() => anstream::println!("  no deploys yet"),
                None => anstream::println!("{}", deploys::history_table(&h.deploys, now, output::stdout_colour())),
            }
        }
    }
    // Every host's history, or a failure: a host missing from it is not fine.
    Ok(if histories.iter().all(|h| h.error.is_none()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
