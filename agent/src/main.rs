use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    match agent::daemon::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
