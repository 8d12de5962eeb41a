//! `deployer`: the CLI that drives deployer agents.
//!
//! `main` parses the arguments and prints the error `run` returns; `commands/` holds one module
//! per command, `client` the agent's HTTP API, `output` the rendering, `report` the errors.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

mod cli;
mod client;
mod commands;
mod fleet;
mod monit;
mod output;
mod pinned;
mod report;
mod sse;

use cli::Cli;
use client::{Client, Token};
use commands::Context;

fn main() -> ExitCode {
    restore_sigpipe();
    raise_nofile();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            report::print_error(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let token = Token::from_env(&cli.global.token_env);
    let client =
        Client::new(cli.global.agent, token).context("cannot set up the HTTP client")?.keep_raw_text(cli.global.json);
    let file = cli.file_short.or(cli.global.file);
    let ctx = Context { client, json: cli.global.json, file, token_env: cli.global.token_env };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(cli.command.run(&ctx))
}

/// `deployer history web | head -3` ends quietly, like any Unix tool, instead of panicking on a
/// closed stdout: Rust ignores SIGPIPE by default, this puts the default back. Sockets are not
/// affected (std and tokio send with `MSG_NOSIGNAL`).
fn restore_sigpipe() {
    // SAFETY: called first thing in `main`, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit: a fleet command holds a connection per host,
/// and a default soft limit of 1024 would fail hosts for this machine's own limit.
fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct. A failure leaves the limit as it was, and the
    // commands say so when they hit it (`ClientError::OutOfFds`).
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
