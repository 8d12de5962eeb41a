//! End-to-end tests: the real `deployer-agent` and `deployer` binaries drive real Node workers
//! over real sockets. One test binary (like casey/just's `tests/lib.rs`), one module per area;
//! the shared helpers are the `deployer_tests` crate (`tests/support/`).
//!
//! Every test starts its own agent in a temp dir on ports picked for it, so tests run in
//! parallel. Waits are polls with deadlines; loads are short and stop by themselves.

mod abuse;
mod answers;
mod api;
mod cache;
mod cli;
mod config;
mod deploy;
mod durable;
mod edge;
mod fleet;
mod fleet_nats;
mod fronts;
mod import;
mod large_files;
mod lifecycle;
mod logfiles;
mod monit;
mod pm2;
mod records;
mod reload;
mod reports;
mod shutdown;
mod streams;
mod supervise;
mod trees;
mod triggers;
mod upgrade;
