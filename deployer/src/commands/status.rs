//! `deployer status <env|app>`: every host of an environment at once: the commit and release it
//! serves, its workers, its last deploy. A host that does not answer is a row that says so.
//! Given an app instead (no deployer.yaml, or no environment by that name), the one row of the
//! `--agent`.

use std::process::ExitCode;

use deployer_wire::WorkerState;
use futures_util::future::join_all;

use super::Context;
use crate::client::Client;
use crate::fleet::rollout::reason;
use crate::output::{
    self,
    fleet::{HostStatus, LastDeploy, status_table},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An environment of deployer.yaml; or an app of the `--agent` when there is no such environment
    #[arg(value_name = "ENV|APP")]
    pub env: String,

    /// The app [default: deployer.yaml's `app`]
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(env) = ctx.nats_env(&args.env, args.app.as_deref())? {
        return crate::fleet::nats::status(&env, ctx.json).await;
    }
    let fleet = match ctx.fleet_if_env(&args.env, args.app.as_deref())? {
        Some(fleet) => Some(fleet),
        // `--app` goes with an environment: say why there is none.
        None if args.app.is_some() => Some(ctx.fleet(&args.env, args.app.as_deref())?),
        None => None,
    };
    let (app, clients): (String, Vec<Client>) = match fleet {
        Some(fleet) => (fleet.app.clone(), fleet.hosts.iter().map(|(_, c)| c.clone()).collect()),
        None => (args.env.clone(), vec![ctx.client.clone()]),
    };
    let now = output::now_ms();
    let hosts = join_all(clients.iter().map(|client| host_status(client, &app, now))).await;
    if ctx.json {
        output::print_json(&hosts)?;
    } else {
        anstream::println!("{}", status_table(&hosts, now, output::stdout_colour()));
    }
    // The exit code says whether what it shows is fine: any host that did not answer, answered
    // with an error, or has a worker that kept crashing fails it (scripts and CI gate on it).
    let fine = hosts.iter().all(|h| h.reachable == Some(true) && h.error.is_none() && h.workers_errored == 0);
    Ok(if fine { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn host_status(client: &Client, app: &str, now: u64) -> HostStatus {
    let mut status = HostStatus {
        host: client.agent(),
        app: app.to_owned(),
        reachable: Some(false),
        error: None,
        app_state: None,
        sha: None,
        release: None,
        workers_up: 0,
        workers_total: 0,
        workers_errored: 0,
        last_deploy: None,
    };
    let (shown, releases, history) = tokio::join!(client.app(app), client.releases(app), client.deploys(app, 1));
    match shown {
        Ok(a) => {
            status.reachable = Some(true);
            status.app_state = Some(a.state);
            status.workers_total = a.instances;
            status.workers_up = a.workers.iter().filter(|w| w.state == WorkerState::Online).count() as u32;
            status.workers_errored = a.workers.iter().filter(|w| w.state == WorkerState::Errored).count() as u32;
        }
        Err(e @ crate::client::ClientError::Api { .. }) => {
            status.reachable = Some(true);
            status.error = Some(reason(&e));
        }
        Err(e) => {
            if matches!(e, crate::client::ClientError::OutOfFds { .. }) {
                status.reachable = None;
            }
            status.error = Some(reason(&e));
            return status;
        }
    }
    if let Some(current) = releases.ok().and_then(|rs| rs.into_iter().find(|r| r.current)) {
        status.sha = Some(current.sha);
        status.release = Some(current.name);
    }
    if let Some(d) = history.ok().and_then(|h| h.into_iter().next()) {
        status.last_deploy = Some(LastDeploy {
            id: d.id,
            state: d.state,
            git_ref: d.git_ref,
            sha: d.sha,
            queued_at_ms: d.queued_at_ms,
            finished_at_ms: d.finished_at_ms,
            age_ms: now.saturating_sub(d.queued_at_ms),
        });
    }
    status
}
