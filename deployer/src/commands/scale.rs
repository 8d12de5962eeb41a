//! `deployer scale <app> <N|+N|-N>`

use std::process::ExitCode;

use super::Context;
use crate::output;
use crate::report::Hinted;
use deployer_wire::ScaleRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app, as named in the agent's config
    pub app: String,

    /// How many workers to run (`4`), or how many more (`+2`) or fewer (`-1`) than now
    #[arg(value_name = "N|+N|-N", allow_hyphen_values = true)]
    pub instances: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let request = parse(&args.instances)?;
    let status = ctx.client.scale(&args.app, &request).await?;
    if ctx.json {
        output::print_json(&status)?;
    } else {
        let instances = output::count(status.instances, "instance");
        output::print_success(&format!("scaled {} to {instances}", status.name));
        output::print_apps(std::slice::from_ref(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// `4` is a count, `+2` and `-1` are changes to the count the agent runs now.
fn parse(text: &str) -> Result<ScaleRequest, Hinted> {
    let bad = || {
        Hinted::new(
            format!("invalid worker count `{text}`"),
            "write a number like `4`, or `+2` / `-1` for more or fewer than now",
        )
    };
    if text.starts_with('+') || text.starts_with('-') {
        let by: i64 = text.parse().map_err(|_| bad())?;
        return Ok(ScaleRequest { instances: None, by: Some(by) });
    }
    let n: u32 = text.parse().map_err(|_| bad())?;
    Ok(ScaleRequest { instances: Some(n), by: None })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn counts_and_changes() {
        assert_eq!(parse("4").unwrap().instances, Some(4));
        assert_eq!(parse("+2").unwrap().by, Some(2));
        assert_eq!(parse("-1").unwrap().by, Some(-1));
        for bad in ["", "two", "+", "1.5", "--1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
