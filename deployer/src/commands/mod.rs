//! One module per command: its arguments (a clap `Args` struct) and an async `run` that talks to
//! the agent through a [`Client`] and prints for people, or JSON with `--json`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::examples_section;
use crate::client::{Client, ClientError};
use crate::fleet::{
    self, Fleet,
    file::{FleetFile, Host},
};
use crate::output;
use crate::report::Hinted;
use std::path::PathBuf;

pub mod cancel;
pub mod completions;
pub mod deploy;
pub mod follow;
pub mod history;
pub mod lifecycle;
pub mod logs;
pub mod ls;
pub mod one_deploy;
pub mod pull;
pub mod push;
pub mod releases;
pub mod reload;
pub mod rollback;
pub mod scale;
pub mod show;
pub mod signal;
pub mod status;
pub mod watch;

use lifecycle::Action;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a commit to every host of an environment of deployer.yaml
    ///
    /// The ref (HEAD by default) is resolved to a commit with the local `git`; every host is asked
    /// to deploy that exact commit: the `canary` hosts first, then the others `max_parallel` at a
    /// time. Each host's progress shows on its own line. Exits 1 unless every host went live.
    ///
    /// In direct mode (`hosts:`) this CLI drives each host. In fleet mode (`nats:`) it writes the
    /// desired state into the engine and follows; the agents carry the rollout out themselves,
    /// so it finishes even if this CLI is stopped (`--detach`, then `deployer watch ENV`).
    #[command(after_help = examples_section("
  deployer push prod                  Deploy HEAD of the current branch to `prod`
  deployer push staging --ref v1.4.2  Deploy a tag
  deployer push prod --no-wait        Fail at once if another push of `prod` runs"))]
    Push(push::Args),

    /// Follow the current push of a fleet-mode environment (`nats:`), from its first step
    ///
    /// Replays what each host did since the push began, then follows until every host present
    /// is done with it. Exits 1 unless every one of them is live on the pushed commit.
    #[command(after_help = examples_section("
  deployer push prod --detach && deployer watch prod    Push, then follow from anywhere"))]
    Watch(watch::Args),

    /// Show every host of an environment: live commit, release, workers, last deploy
    ///
    /// Exits 1 when a host does not answer, answers with an error, or has an `errored` worker.
    Status(status::Args),

    /// Print a shell completion script (`deployer completions bash > /etc/bash_completion.d/deployer`)
    Completions(completions::Args),

    /// List every app's workers: pid, cpu, memory, uptime, status
    ///
    /// One row per worker, like `pm2 ls`; an app without workers shows one `stopped` row. Exits 1
    /// when a worker is `errored` (it kept crashing and was left alone).
    Ls,

    /// Replace an app's workers with new ones, without dropping a request
    ///
    /// Given an environment of deployer.yaml, every host reloads, `max_parallel` at a time.
    /// Given `all`, every app of the agent reloads, one after the other.
    ///
    /// The agent starts new workers and drains the old ones once the new ones are ready. This
    /// command waits until the reload ended (it can take minutes), and exits with 1 if it failed.
    /// An app that binds its own port (`proxy: none` with `port:`) is reloaded stop-then-start
    /// unless `reload: { reuse_port: true }`; the output says how long it did not serve.
    #[command(after_help = examples_section("
  deployer reload web                 Replace web's workers one by one
  deployer reload web --update-env    Re-read env and env_file first
  deployer reload all                 Every app of the agent, one after the other
  deployer reload prod                Every host of the `prod` environment"))]
    Reload(reload::Args),

    /// Stop every worker of an app, then start new ones (drops requests; prefer `reload`)
    Restart(lifecycle::Args),

    /// Stop every worker of an app; it stays stopped until `start`
    Stop(lifecycle::Args),

    /// Start the workers of a stopped app
    Start(lifecycle::Args),

    /// Run a given number of workers for an app, or more or fewer than now
    ///
    /// The count holds across restarts of the agent until the config's `instances` changes.
    /// Shrinking retires the highest instance ids gracefully (out of rotation, drained).
    #[command(after_help = examples_section("
  deployer scale web 4     Run 4 workers
  deployer scale web +2    Run 2 more than now
  deployer scale web -1    Run 1 fewer (at least 1 stays; `stop` runs none)"))]
    Scale(scale::Args),

    /// Send a signal to every running worker of an app (like `pm2 sendSignal`)
    ///
    /// The signal goes to each worker's process group (the worker and what it started). It is
    /// not a stop: a worker that exits on it is restarted like any crash. Prints the workers it
    /// was sent to; none when the app is stopped.
    #[command(after_help = examples_section("
  deployer signal web SIGUSR1    Ask web's workers to reopen their logs, dump state...
  deployer signal web HUP        The `SIG` prefix is optional"))]
    Signal(signal::Args),

    /// Show the last lines an app's workers wrote to stdout and stderr (-f: and follow)
    ///
    /// Given an environment of deployer.yaml, the lines of every host, each prefixed with its host.
    Logs(logs::Args),

    /// Empty an app's log files on the agent and remove their rotated copies (like `pm2 flush`)
    Flush(logs::FlushArgs),

    /// Deploy a branch or a commit of an app's git repo, without downtime
    ///
    /// The agent fetches the commit, installs it into a new release directory, then reloads the
    /// app's workers onto it. This command returns once the deploy is queued; with --wait it
    /// follows the deploy step by step and exits with 1 unless it went live.
    #[command(after_help = examples_section("
  deployer deploy web                    Deploy the head of web's branch
  deployer deploy web --ref 1a2b3c4      Deploy one commit
  deployer deploy web --wait --who ana   Follow the deploy until it is live"))]
    Deploy(deploy::Args),

    /// Show an app's last deploys (or every host's, given an environment)
    History(history::Args),

    /// Put an earlier release of an app back live (the previous one by default)
    ///
    /// Given an environment of deployer.yaml, every host of it is rolled back (`--to` then best
    /// names a commit: release numbers differ between hosts).
    ///
    /// No fetch and no install: the release is on disk already. Like `deploy`, this returns once
    /// the rollback is queued, or follows it with --wait.
    #[command(after_help = examples_section("
  deployer rollback web --wait           Put the release before the current one back live
  deployer rollback web --to 11-1a2b3c4  Put a given release back live"))]
    Rollback(rollback::Args),

    /// Cancel a deploy that is queued, fetching or building
    ///
    /// Once the workers are being replaced (`rolling`), a deploy can no longer be cancelled.
    Cancel(cancel::Args),

    /// List the release directories of an app on disk; `*` marks the current one
    Releases(releases::Args),

    /// Look up an app's branch head now and deploy it if it moved
    ///
    /// The check pull mode (`poll:`, `cron:`) makes on its schedule, on demand: for a system
    /// crontab, or after a webhook got lost. With --wait it follows the deploy it queued.
    Pull(pull::Args),

    /// Show one deploy: its steps, and the last lines of its install output
    #[command(alias = "deploy-status")]
    Show(show::Args),

    /// Watch every app and worker live: state, pid, cpu, memory, restarts, requests/s, logs
    ///
    /// A dashboard in the terminal, like `pm2 monit`, of the agent of --agent, or of every host
    /// of an environment of deployer.yaml. Each agent is asked for its apps every --interval;
    /// an agent that does not answer is marked `unreachable` (its last answer stays, dimmed)
    /// until it answers again. The bottom pane follows the selected app's log lines.
    ///
    /// Per app: its state, the sha of the release it runs, the sum of its workers' cpu, memory
    /// (each worker's whole process tree) and restarts, the requests per second through its
    /// front (between two readings of the agent's counter; `-` without a front or from an older
    /// agent) and its workers, `2/3` when fewer are online than it is set to run, `4 (cfg 2)`
    /// when `deployer scale` set another count than the config's. Per worker: its state, pid,
    /// cpu, memory, restarts and uptime.
    ///
    /// Keys: ↑/↓ (or k/j) select an app; r reloads it (without dropping a request), R restarts
    /// it (stop, then start: drops requests), + and - scale it by one instance; q, Esc or Ctrl-C
    /// quit. The line above the keys says what the last key did, and how it went.
    ///
    /// Watching needs a token with the `read` scope; the keys act with the `deploy` scope. It
    /// needs a terminal: for scripts, `ls --json` and `status ENV --json` say the same once.
    #[command(after_help = examples_section("
  deployer monit                            Every app of the agent at --agent (or DEPLOYER_AGENT)
  deployer monit prod                       Every host of `prod` in deployer.yaml
  deployer monit prod --app web             Only `web`, on every host of `prod`
  deployer monit --interval 5s              Ask every 5 seconds instead of every second"))]
    Monit(crate::monit::Args),
}

/// What every command needs: the agent's client, how to print, where deployer.yaml is.
pub struct Context {
    pub client: Client,
    /// Print the API's JSON instead of text for people.
    pub json: bool,
    /// `--file`/`-f` as given.
    pub file: Option<PathBuf>,
    /// `--token-env`: the token's variable when an environment names none.
    pub token_env: String,
}

impl Context {
    /// The environment `name` when a deployer.yaml is found and has one by that name: then a
    /// command acts on the fleet; otherwise on the single agent of `--agent`.
    pub fn fleet_if_env(&self, name: &str, app: Option<&str>) -> anyhow::Result<Option<Fleet>> {
        let Some(path) = fleet::locate(self.file.as_deref()) else { return Ok(None) };
        let file = FleetFile::load(&path)?;
        if file.environment(name).is_none() {
            return Ok(None);
        }
        Fleet::open(&file, name, app, &self.client, &self.token_env).map(Some)
    }

    /// The environment `name`, for commands that only act on fleets.
    pub fn fleet(&self, name: &str, app: Option<&str>) -> anyhow::Result<Fleet> {
        Fleet::open(&self.fleet_file()?, name, app, &self.client, &self.token_env)
    }

    /// The environment `name` when deployer.yaml makes it a fleet-mode one (`nats:`).
    pub fn nats_env(&self, name: &str, app: Option<&str>) -> anyhow::Result<Option<fleet::nats::NatsEnv>> {
        let Some(path) = fleet::locate(self.file.as_deref()) else { return Ok(None) };
        fleet::nats::NatsEnv::of(&FleetFile::load(&path)?, name, app)
    }

    /// Every host of the environment `name`, whatever app they run (`monit` shows them all).
    pub fn fleet_hosts(&self, name: &str) -> anyhow::Result<Vec<(Host, Client)>> {
        fleet::hosts(&self.fleet_file()?, name, &self.client, &self.token_env)
    }

    /// deployer.yaml, for commands that need one.
    fn fleet_file(&self) -> anyhow::Result<FleetFile> {
        let Some(path) = fleet::locate(self.file.as_deref()) else {
            return Err(Hinted::new(
                format!("no `{}` here or at the git root", fleet::file::FILE_NAME),
                "write one (see `examples/deployer.yaml`), or name it with --file PATH",
            )
            .into());
        };
        Ok(FleetFile::load(&path)?)
    }
}

impl Command {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let result = match self {
            Command::Push(args) => push::run(ctx, args).await,
            Command::Status(args) => status::run(ctx, args).await,
            Command::Watch(args) => watch::run(ctx, args).await,
            Command::Completions(args) => completions::run(args),
            Command::Ls => ls::run(ctx).await,
            Command::Reload(args) => reload::run(ctx, args).await,
            Command::Restart(args) => lifecycle::run(ctx, Action::Restart, args).await,
            Command::Stop(args) => lifecycle::run(ctx, Action::Stop, args).await,
            Command::Start(args) => lifecycle::run(ctx, Action::Start, args).await,
            Command::Scale(args) => scale::run(ctx, args).await,
            Command::Signal(args) => signal::run(ctx, args).await,
            Command::Logs(args) => logs::run(ctx, args).await,
            Command::Flush(args) => logs::flush(ctx, args).await,
            Command::Deploy(args) => deploy::run(ctx, args).await,
            Command::History(args) => history::run(ctx, args).await,
            Command::Rollback(args) => rollback::run(ctx, args).await,
            Command::Cancel(args) => cancel::run(ctx, args).await,
            Command::Releases(args) => releases::run(ctx, args).await,
            Command::Show(args) => show::run(ctx, args).await,
            Command::Pull(args) => pull::run(ctx, args).await,
            Command::Monit(args) => crate::monit::run(ctx, args).await,
        };
        // A script asking for JSON gets the API's error body too (the words go to stderr).
        let failure = match &result {
            Err(err) if ctx.json => err.downcast_ref::<ClientError>(),
            _ => None,
        };
        if let Some(ClientError::Api { body, .. }) = failure {
            output::print_json(body)?;
        }
        result
    }
}
