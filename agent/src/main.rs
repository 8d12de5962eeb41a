use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = agent::Cli::parse();
    match agent::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
