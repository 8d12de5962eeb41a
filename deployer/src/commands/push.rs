//! `deployer push <env> [--ref REF] [--app APP] [--no-wait]`: one commit to every host of an
//! environment, canaries first, with a line of progress per host and a summary table.

use std::process::ExitCode;

use super::Context;
use crate::fleet::git;
use crate::fleet::lock::{self, LockOutcome};
use crate::fleet::progress::Board;
use crate::fleet::rollout::{Action, Plan};
use crate::output::{self, DIM, fleet as fleet_output, short_sha};
use crate::report::Hinted;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The environment, as named in deployer.yaml
    #[arg(value_name = "ENV")]
    pub env: String,

    /// The branch, tag or commit to push [default: HEAD of the current branch]
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// The app to deploy [default: deployer.yaml's `app`]
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,

    /// Fail at once, saying who pushes, when another push of the environment holds its lock
    #[arg(long)]
    pub no_wait: bool,

    /// Direct mode: push even when the push lock cannot be taken (its host is down or
    /// unreachable): two pushes may then run at once, and the later one wins on every host it
    /// reaches. A fleet-mode push never runs without its lock
    #[arg(long)]
    pub no_lock: bool,

    /// Who pushes, as the hosts' history shows it [default: $USER]
    #[arg(long, value_name = "NAME")]
    pub who: Option<String>,

    /// Fleet mode (`nats:`): return once the desired state is written; the hosts roll it out by
    /// themselves (`deployer watch ENV` follows it)
    #[arg(long)]
    pub detach: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(env) = ctx.nats_env(&args.env, args.app.as_deref())? {
        if args.no_lock {
            return Err(Hinted::new(
                format!("`--no-lock` is for direct mode; `{}` is a fleet-mode environment", args.env),
                "a fleet-mode push always takes its lock in the engine; if a killed push holds it, it lapses within 15 s",
            )
            .into());
        }
        let git_ref = args.git_ref.clone().unwrap_or_else(|| "HEAD".into());
        let sha = resolve(&std::env::current_dir()?, &git_ref)?;
        return crate::fleet::nats::push(&env, &sha, &git_ref, args.who, args.detach, ctx.json).await;
    }
    if args.detach {
        return Err(Hinted::new(
            format!("`--detach` needs a fleet-mode environment; `{}` lists its hosts", args.env),
            "the hosts of a direct-mode environment are driven by this CLI: it must stay to finish the push",
        )
        .into());
    }
    let fleet = ctx.fleet(&args.env, args.app.as_deref())?;
    let git_ref = args.git_ref.clone().unwrap_or_else(|| "HEAD".into());
    let sha = resolve(&fleet.repo_dir, &git_ref)?;

    // The lock lives on the first host; without it (host down) the push is refused, unless
    // `--no-lock` says to go on unguarded.
    let (_, lock_client) = &fleet.hosts[0];
    let holder = lock::holder(&format!("push {} {}", fleet.name, short_sha(&sha)));
    let json = ctx.json;
    let held = lock::acquire(lock_client, &fleet.name, holder, !args.no_wait, |busy| {
        if !json {
            let since = output::human_age(output::now_ms().saturating_sub(busy.since_ms));
            anstream::eprintln!(
                "{DIM}waiting for the push lock of `{}`: held by {} since {since}{DIM:#}",
                fleet.name,
                busy.holder
            );
        }
    })
    .await;
    let lock = match held {
        Ok(LockOutcome::Held(lock)) => Some(lock),
        Ok(LockOutcome::Busy(busy)) => {
            let since = output::human_age(output::now_ms().saturating_sub(busy.since_ms));
            return Err(Hinted::new(
                format!("another push of `{}` is running: held by {} since {since}", fleet.name, busy.holder),
                "wait for it (run without --no-wait), or let an abandoned lock lapse (30 s)",
            )
            .into());
        }
        Err(e) if args.no_lock => {
            output::print_warning(&format!(
                "cannot take the push lock on {}: {}; pushing without it (--no-lock)",
                fleet.hosts[0].0.label(),
                crate::fleet::rollout::reason(&e)
            ));
            None
        }
        Err(e) => {
            return Err(Hinted::new(
                format!(
                    "cannot take the push lock of `{}` on its first host {}: {}; nothing was pushed",
                    fleet.name,
                    fleet.hosts[0].0.label(),
                    crate::fleet::rollout::reason(&e)
                ),
                "bring that host back, or push anyway with --no-lock if no other push can be running",
            )
            .into());
        }
    };

    let rollout = fleet.env.rollout.clone();
    if !ctx.json {
        anstream::println!(
            "pushing {} {} ({git_ref}) to {}: {} host(s), canary {}, {} at a time",
            fleet.app,
            short_sha(&sha),
            fleet.name,
            fleet.hosts.len(),
            rollout.canary,
            rollout.max_parallel
        );
    }
    let labels: Vec<String> = fleet.hosts.iter().map(|(h, _)| h.label()).collect();
    let board = Board::new(ctx.json, &labels);
    let who = args.who.or_else(|| std::env::var("USER").ok());
    let plan = Plan { hosts: &fleet.hosts, app: &fleet.app, action: Action::Deploy { sha: sha.clone(), who }, rollout };
    let results = tokio::select! {
        results = plan.run(&board) => results,
        Ok(()) = tokio::signal::ctrl_c() => {
            drop(board);
            if let Some(lock) = lock {
                lock.release().await;
            }
            return Err(Hinted::new(
                format!("stopped following the push to `{}`; the hosts already asked go on deploying", fleet.name),
                format!("`deployer status {}` shows where each host is", fleet.name),
            )
            .into());
        }
    };
    drop(board);
    if let Some(lock) = lock {
        lock.release().await;
    }

    let all_live = results.iter().all(|r| r.is_live());
    if ctx.json {
        output::print_json(&results)?;
    } else {
        anstream::println!("{}", fleet_output::rollout_table(&results, output::stdout_colour()));
        let live = results.iter().filter(|r| r.is_live()).count();
        if all_live {
            output::print_success(&format!(
                "{} is live on {} on all {} hosts of {}",
                fleet.app,
                short_sha(&sha),
                results.len(),
                fleet.name
            ));
        } else {
            let style = output::FAILURE;
            anstream::println!(
                "{style}✗{style:#} {live} of {} hosts of {} are live on {}",
                results.len(),
                fleet.name,
                short_sha(&sha)
            );
        }
    }
    Ok(if all_live { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The commit `git_ref` names in the repository at `dir`, with a warning when no remote branch
/// holds it (the agents fetch from the remote).
fn resolve(dir: &std::path::Path, git_ref: &str) -> anyhow::Result<String> {
    let sha = git::resolve(dir, git_ref).map_err(|e| {
        anyhow::Error::new(e).context(Hinted::new(
            format!("cannot push `{git_ref}`"),
            "name a branch, a tag or a commit of this repository with --ref",
        ))
    })?;
    if git::remote_branches_containing(dir, &sha).is_empty() {
        output::print_warning(&format!(
            "commit {} is on no remote branch: the agents fetch from the remote, so they may not find it (`git push` first)",
            short_sha(&sha)
        ));
    }
    Ok(sha)
}
