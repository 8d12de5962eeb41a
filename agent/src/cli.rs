//! Command-line arguments of `deployer-agent`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// deployer-agent: supervises your apps' workers behind one port each and reloads them without
/// failing a request.
#[derive(Debug, Parser)]
#[command(
    name = "deployer-agent",
    version,
    after_help = "Examples:\n  \
        deployer-agent quickstart                      # a git repo + an agent deploying it\n  \
        DEPLOYER_TOKEN=change-me-please deployer-agent --config examples/agent.yaml\n  \
        deployer-agent check --config agent.yaml\n  \
        deployer-agent import ecosystem.config.js --env production -o agent.yaml   # from PM2\n  \
        deployer-agent --config agent.yaml upgrade     # to the binary now on disk, no request fails\n\n\
        Signals: SIGTERM/SIGINT stop gracefully (drain, stop workers, exit 0); SIGHUP re-reads the config;\n\
        SIGUSR2 upgrades as `upgrade` does.\n\
        Logs: RUST_LOG=debug for more detail."
)]
pub struct Cli {
    /// The agent's config file.
    #[arg(long, short, global = true, env = "DEPLOYER_CONFIG", default_value = "agent.yaml")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Run,
    /// Check the config file and exit: 0 when it is valid, 1 with `file:line:col` errors when not.
    Check,
    /// Upgrade the running agent of this config to the binary now on disk without closing a
    /// socket: the new agent takes over the listening sockets, starts its workers, and the old
    /// one drains and exits. Fails (and the old agent keeps serving) if the new one does not
    /// serve within 120 s.
    Upgrade,
    /// Write an agent config from a PM2 config: `ecosystem.config.js` (also `.cjs`, `.mjs`,
    /// `.json`, `.yaml`) or the output of `pm2 jlist` / `pm2 save` (`~/.pm2/dump.pm2`). A
    /// JavaScript file is evaluated with `node`, as PM2 does. What cannot be mapped is printed on
    /// stderr with the reason, and written at the top of the result.
    #[command(after_help = "Examples:\n  \
        deployer-agent import ecosystem.config.js                       # the config on stdout\n  \
        deployer-agent import ecosystem.config.js --env production -o agent.yaml\n  \
        pm2 jlist > apps.json && deployer-agent import apps.json -o agent.yaml\n  \
        deployer-agent import ~/.pm2/dump.pm2 -o agent.yaml")]
    Import {
        /// The PM2 file.
        file: PathBuf,
        /// Merge each app's `env_NAME` over its `env`, as `pm2 start --env NAME` does.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        /// Write the config to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the `--output` file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Benchmark only: N simulated hosts (no workers, a deploy that waits) joining a fleet-mode
    /// environment, each with its own connection to the engine, until SIGINT or SIGTERM.
    #[command(hide = true)]
    SimulateFleet {
        /// The engine's URLs.
        #[arg(long, required = true)]
        nats: Vec<String>,
        #[arg(long)]
        env: String,
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value = "web")]
        app: String,
        /// The commit every host runs at start.
        #[arg(long)]
        sha: String,
        /// How long each simulated deploy takes.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        deploy_time: std::time::Duration,
    },
    /// Try the whole product: make a local git repo with the example app and run an agent that
    /// deploys it whenever you commit.
    Quickstart {
        /// Where to put the repo, the config and the agent's state.
        #[arg(long, default_value = "quickstart")]
        dir: PathBuf,
        /// The app's public port.
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// The agent API's port (on 127.0.0.1).
        #[arg(long, default_value_t = 7070)]
        api_port: u16,
    },
}
