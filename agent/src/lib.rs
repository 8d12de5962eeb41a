//! `deployer-agent`: the per-host daemon.
//!
//! Start reading at [`daemon::run`]: it loads the [`config`], starts the [`supervisor`] (which
//! owns each app's [`front`] and workers), serves the [`api`], and turns signals into reloads of
//! the config and a graceful shutdown.

pub(crate) mod api;
pub(crate) mod beneath;
pub(crate) mod cgroup;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod deploy;
pub(crate) mod fleet;
pub(crate) mod front;
pub(crate) mod handover;
pub(crate) mod import;
pub(crate) mod limits;
pub(crate) mod linger;
pub(crate) mod listeners;
pub(crate) mod locks;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod quickstart;
pub(crate) mod report;
pub(crate) mod sd_notify;
pub(crate) mod secrets;
pub(crate) mod source;
pub(crate) mod state_dir;
pub(crate) mod store;
pub(crate) mod supervisor;
pub(crate) mod tls;
pub(crate) mod upgrade;

// The public surface: what the binary, `examples/` and the fuzz target in `fuzz/` use. Everything
// else is `pub(crate)`, so the compiler sees (and reports) what nothing uses.
pub use cli::Cli;
pub use daemon::run;
/// The `http` front's framing on arbitrary bytes, for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub use front::http::fuzz_frame;
/// Fetch and materialise on their own, for `examples/bench_source.rs`.
pub use source::{Objects, Sharing, Source};
