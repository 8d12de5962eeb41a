//! The command line: global options and help text. Each command's own arguments live next to
//! the command, in `commands/`.

use clap::{Args, Parser};
use reqwest::Url;

use crate::commands::Command;

const LONG_ABOUT: &str = "\
Drive deployer agents from the command line.

Every host runs `deployer-agent`, which supervises the apps' workers and serves an HTTP API. \
This CLI asks one agent (--agent, default http://127.0.0.1:7070) to list its apps, reload them \
without dropping a request, restart, stop, start or scale them, show their logs, and watch \
them live (`monit`).

An app with a git `repo` is deployed by the agent: `deploy` queues a branch or a commit, which \
the agent fetches, installs into a new release and rolls out worker by worker; `history`, `show` \
and `releases` tell what happened, `cancel` and `rollback` undo.

With a deployer.yaml (in the current directory or the git root, or --file PATH), `push ENV` \
deploys the current commit to every host of an environment: canaries first, then the others a \
few at a time, each host's progress on one line. `status`, `history`, `rollback`, `reload` and \
`logs` act on the whole environment when their argument names one.

The API token is read from the DEPLOYER_TOKEN environment variable (--token-env NAME reads \
another one); it is never a flag, so it stays out of shell history and `ps`.";

/// Drive deployer agents: deploy apps from git, reload them without downtime, read their logs
#[derive(Debug, Parser)]
#[command(name = "deployer", version, long_about = LONG_ABOUT, after_help = examples())]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The deployer.yaml naming the environments (before the command: `deployer -f ci.yaml push prod`)
    #[arg(short = 'f', value_name = "PATH", conflicts_with = "file")]
    pub file_short: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
///
/// `-f` is not among them: it is `logs --follow`; `--file` names deployer.yaml anywhere.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The agent to talk to
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_AGENT",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL",
        value_parser = parse_agent_url
    )]
    pub agent: Url,

    /// Print the API's JSON answer (pretty) instead of tables and sentences
    #[arg(long, global = true)]
    pub json: bool,

    /// The environment variable that holds the API token (an environment's `token_env` wins)
    #[arg(long, global = true, default_value = "DEPLOYER_TOKEN", value_name = "NAME")]
    pub token_env: String,

    /// The deployer.yaml naming the environments [default: ./deployer.yaml, else the one at the
    /// git work tree's root]
    #[arg(long = "file", global = true, env = "DEPLOYER_FILE", value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
}

fn examples() -> String {
    examples_section(
        "
  deployer push prod                  Deploy HEAD to every host of `prod` (deployer.yaml)
  deployer status prod --json         Live sha, release and workers of every host
  deployer ls                         List every app's workers
  deployer monit                      Watch every app and worker live (q quits)
  deployer deploy web --wait          Deploy web's branch and follow it until it is live
  deployer deploy web --ref 1a2b3c4   Queue a deploy of one commit of web
  deployer history web -n 5           Show web's last 5 deploys
  deployer show 12                    Show deploy #12, its steps and its install output
  deployer rollback web --wait        Put web's previous release back live
  deployer reload web --update-env    Replace web's workers with ones that read the new env
  deployer logs web -n 200            Show the last 200 lines web's workers wrote
  deployer --agent http://10.0.0.5:7070 scale web 4 --json",
    )
}

/// An `Examples:` section of help, its heading styled like clap's own; `lines` starts with a
/// newline.
pub fn examples_section(lines: &str) -> String {
    let heading = anstyle::Style::new().bold().underline();
    format!("{heading}Examples:{heading:#}{lines}")
}

/// An agent URL: `http` or `https`, with a clear word for `10.0.0.5:7070` (no scheme).
fn parse_agent_url(value: &str) -> Result<Url, String> {
    if !value.contains("://") {
        return Err(format!("`{value}` has no scheme; did you mean `http://{value}`?"));
    }
    let url = Url::parse(value).map_err(|e| format!("`{value}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("the agent speaks `http` or `https`, not `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn agent_urls_need_an_http_scheme() {
        assert!(parse_agent_url("http://127.0.0.1:7070").is_ok());
        assert!(parse_agent_url("https://agent.example/prefix/").is_ok());
        assert!(parse_agent_url("10.0.0.5:7070").unwrap_err().contains("`http://10.0.0.5:7070`"));
        assert!(parse_agent_url("ftp://host").unwrap_err().contains("`ftp`"));
    }
}
