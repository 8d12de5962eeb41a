//! `deployer-agent`: the per-host daemon.
//!
//! Start reading at [`daemon::run`]: it loads the [`config`], starts the [`supervisor`] (which
//! owns each app's [`front`] and workers), serves the [`api`], and turns signals into reloads of
//! the config and a graceful shutdown.

pub mod api;
pub(crate) mod beneath;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod front;
pub mod handover;
pub mod limits;
pub mod listeners;
pub mod locks;
pub mod metrics;
pub mod quickstart;
pub mod report;
pub mod sd_notify;
pub mod secrets;
pub mod source;
pub mod state_dir;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod upgrade;
