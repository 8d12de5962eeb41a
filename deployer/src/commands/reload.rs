//! `deployer reload <app> [--update-env]`

use std::process::ExitCode;

use anyhow::anyhow;
use deployer_wire::{ErrorCode, ReloadOutcome, ReloadRequest};

use super::Context;
use crate::client::ClientError;
use crate::fleet::Fleet;
use crate::fleet::rollout::reason;
use crate::output::{self, DIM};
use futures_util::StreamExt;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config; `all` for every app of the agent; or an
    /// environment of deployer.yaml
    #[arg(value_name = "APP|all|ENV")]
    pub app: String,

    /// Re-read the agent's config file, `env` and `env_file` before starting the new workers
    #[arg(long)]
    pub update_env: bool,

    /// Put this set of the app's `env_sets` on top of `env` (implies --update-env); it stays
    /// chosen for later reloads and deploys, until another is chosen or the agent restarts
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(fleet) = ctx.fleet_if_env(&args.app, None)? {
        return run_fleet(ctx, &fleet, args.update_env, args.env).await;
    }
    if args.app == ALL {
        return run_all(ctx, args.update_env, args.env).await;
    }
    let failed = || format!("reload of `{}` failed", args.app);
    let request = ReloadRequest { update_env: args.update_env, env: args.env.clone() };

    // A reload can take minutes: say what we wait for, then erase the line.
    let progress = !ctx.json && output::stderr_is_terminal();
    if progress {
        anstream::eprint!("{DIM}reloading {}…{DIM:#}", args.app);
    }
    let result = ctx.client.reload(&args.app, &request).await;
    if progress {
        anstream::eprint!("\r\x1b[2K");
    }

    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err @ ClientError::Api { .. }) if is_reload_failure(&err) => {
            return Err(anyhow::Error::new(err).context(failed()));
        }
        Err(err) => return Err(err.into()),
    };
    if ctx.json {
        output::print_json(&outcome)?;
    }
    if !outcome.ok {
        let reason = outcome.error.as_deref().unwrap_or("the agent gave no reason");
        return Err(anyhow!("{reason}").context(failed()));
    }
    if !ctx.json {
        print_reloaded(&outcome);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `reload all` names: every app of the agent.
const ALL: &str = "all";

/// `reload all`: every app of the agent, one after the other (one reload at a time leaves the
/// host's capacity to the others). Every app is tried; exits 1 if one failed.
async fn run_all(ctx: &Context, update_env: bool, env: Option<String>) -> anyhow::Result<ExitCode> {
    let request = ReloadRequest { update_env, env: env.clone() };
    let apps = ctx.client.apps().await?;
    let mut outcomes = Vec::new();
    for app in &apps {
        let outcome = match ctx.client.reload(&app.name, &request).await {
            Ok(o) => o,
            Err(e @ ClientError::Api { .. }) if is_reload_failure(&e) => ReloadOutcome {
                app: app.name.clone(),
                ok: false,
                replaced: 0,
                duration_ms: 0,
                env_hash: String::new(),
                error: Some(reason(&e)),
                hint: None,
                gap_ms: None,
            },
            Err(e) => return Err(e.into()),
        };
        if !ctx.json {
            if outcome.ok {
                print_reloaded(&outcome);
            } else {
                let style = output::FAILURE;
                let why = outcome.error.as_deref().unwrap_or("failed");
                anstream::println!("{style}✗{style:#} reload of `{}` failed: {}", outcome.app, why);
            }
        }
        outcomes.push(outcome);
    }
    if ctx.json {
        output::print_json(&outcomes)?;
    } else if apps.is_empty() {
        output::print_warning("the agent has no apps: nothing was reloaded");
    }
    Ok(if outcomes.iter().all(|o| o.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `✓ reloaded web: ...`, and the gap of a stop-then-start reload.
fn print_reloaded(outcome: &ReloadOutcome) {
    output::print_success(&format!(
        "reloaded {}: {} replaced in {} (env {})",
        outcome.app,
        output::count(outcome.replaced, "worker"),
        output::human_elapsed(outcome.duration_ms),
        outcome.env_hash,
    ));
    if let Some(gap) = outcome.gap_ms {
        output::print_warning(&format!(
            "stop-then-start: `{}` did not serve for {} in all (it binds its own `port` under `proxy: none`, \
                 so each old worker stopped before its replacement started); with `reload: {{ reuse_port: true }}` \
                 and an app that listens with SO_REUSEPORT, reloads have no gap",
            outcome.app,
            output::human_elapsed(gap),
        ));
    }
}

fn is_reload_failure(err: &ClientError) -> bool {
    matches!(err, ClientError::Api { body, .. } if body.code == ErrorCode::ReloadFailed)
}

/// One host of `deployer reload <env> --json`.
#[derive(Debug, Serialize)]
pub struct HostReload {
    /// The agent's URL.
    pub host: String,
    pub app: String,
    pub ok: bool,
    pub replaced: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Every host reloads, `max_parallel` at a time (so capacity never drops on more hosts at once).
async fn run_fleet(ctx: &Context, fleet: &Fleet, update_env: bool, env: Option<String>) -> anyhow::Result<ExitCode> {
    let request = ReloadRequest { update_env, env: env.clone() };
    let parallel = fleet.env.rollout.max_parallel.get();
    let results: Vec<HostReload> = futures_util::stream::iter(fleet.hosts.iter().map(|(_, client)| {
        let request = request.clone();
        async move {
            let started = std::time::Instant::now();
            let host = client.agent();
            match client.reload(&fleet.app, &request).await {
                Ok(o) => HostReload {
                    host,
                    app: fleet.app.clone(),
                    ok: o.ok,
                    replaced: o.replaced,
                    duration_ms: o.duration_ms,
                    error: o.error,
                },
                Err(e) => HostReload {
                    host,
                    app: fleet.app.clone(),
                    ok: false,
                    replaced: 0,
                    duration_ms: started.elapsed().as_millis() as u64,
                    error: Some(reason(&e)),
                },
            }
        }
    }))
    .buffered(parallel)
    .collect()
    .await;
    if ctx.json {
        output::print_json(&results)?;
    } else {
        for r in &results {
            if r.ok {
                output::print_success(&format!(
                    "{}: reloaded {}, {} replaced in {}",
                    r.host,
                    r.app,
                    output::count(r.replaced, "worker"),
                    output::human_elapsed(r.duration_ms)
                ));
            } else {
                let style = output::FAILURE;
                anstream::println!("{style}✗{style:#} {}: {}", r.host, r.error.as_deref().unwrap_or("failed"));
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
