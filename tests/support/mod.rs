//! Shared helpers of the end-to-end tests: the real `deployer-agent` and `deployer` binaries,
//! real Node workers, real sockets.
//!
//! A test states its setup with a [`TestEnv`] (in the spirit of casey/just's `Test`), which writes
//! an `agent.yaml` into a temp dir and starts the agent; the running [`Agent`] answers API calls,
//! runs the CLI against itself and prints its own log when a test fails. [`Load`] is closed-loop
//! clients that count every failed request. Every wait is a poll with a deadline ([`wait_until`]), never a fixed sleep.
//!
//! The agent and CLI binaries are built by the first test that needs them ([`bin`]);
//! `DEPLOYER_TESTS_NO_BUILD=1` tests the binaries already in the target dir instead.

pub mod abuse;
mod agent;
mod bins;
mod env;
mod fleet;
pub mod gitserver;
pub mod http;
mod load;
mod nats;
mod process;
pub mod receiver;
mod repo;
mod tmux;
mod wait;
pub mod webhook;

pub use abuse::{Bystander, Decoy};
pub use agent::Agent;
pub use bins::bin;
pub use env::{AppSpec, Proxy, Setup, TestEnv, fixture};
pub use fleet::TestFleet;
pub use gitserver::{GitHttpServer, GitSshServer};
pub use load::{Load, LoadReport};
pub use nats::{NatsCluster, NatsServer, fake_nats_server};
pub use process::{CliOutput, environ, pid_alive, port_is_free, run_to_end};
pub use receiver::{Mode, Receiver};
pub use repo::TestRepo;
pub use tmux::Tmux;
pub use wait::{poll, wait_until};
pub use webhook::GithubPush;
