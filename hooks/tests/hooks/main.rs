//! One test binary for the `hooks` crate: deliveries as each host sends them, signed here,
//! and what the agent gets back.

mod config;
mod generic;
mod gitea;
mod github;
mod gitlab;
mod properties;
mod support;
