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
