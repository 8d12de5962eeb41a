//! Errors for people, the way uv prints them: `error: ...`, the causes, then a `hint:` line that
//! says what to do. Values are in backticks; no trailing period.

use std::io::Write;

use reqwest::StatusCode;

use crate::client::ClientError;
use crate::output::untrusted;
use crate::output::{BOLD, FAILURE, HINT};

/// Prints an error, its causes and a hint on stderr. Their words may quote an agent (its
/// message and hint, with `--json` not cleaned before), so they are made safe here again.
pub fn print_error(err: &anyhow::Error) {
    let mut stderr = anstream::stderr().lock();
    // Nothing sensible to do when stderr itself is gone.
    let _ = writeln!(stderr, "{FAILURE}error{FAILURE:#}: {}", untrusted::text(&err.to_string()));
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  {BOLD}Caused by:{BOLD:#} {}", untrusted::text(&cause.to_string()));
    }
    if let Some(hint) = hint(err) {
        let _ = writeln!(stderr, "{HINT}hint{HINT:#}: {}", untrusted::text(&hint));
    }
}

/// An error that knows what to do about it: for failures of a command whose fix the generic
/// hints below do not know (a deploy still running at the deadline, an unknown deploy id).
/// As the context of a [`ClientError`], its hint wins over the client's.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl Hinted {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { message: message.into(), hint: hint.into() }
    }
}

/// What to do about an error, when we know.
fn hint(err: &anyhow::Error) -> Option<String> {
    // anyhow finds a context by type only from the outside, not in `chain()`.
    let hinted = err.downcast_ref::<Hinted>().or_else(|| err.chain().find_map(|cause| cause.downcast_ref::<Hinted>()));
    if let Some(hinted) = hinted {
        return Some(hinted.hint.clone());
    }
    err.chain().find_map(|cause| cause.downcast_ref::<ClientError>()).and_then(client_hint)
}

fn client_hint(err: &ClientError) -> Option<String> {
    match err {
        ClientError::InsecureToken { .. } => Some(
            "serve the agent's API over TLS (`tls:` in its agent.yaml) and use an `https://` URL, or reach it \
             through a tunnel to this machine's loopback: `ssh -N -L 7070:127.0.0.1:7070 <host>`, then \
             --agent http://127.0.0.1:7070"
                .to_owned(),
        ),
        ClientError::Unreachable { .. } => Some(
            "is deployer-agent running? start it with `deployer-agent --config agent.yaml`, \
             or pass --agent URL"
                .to_owned(),
        ),
        ClientError::OutOfFds { .. } => {
            Some("raise the limit for this shell (`ulimit -n 65536`) or push to fewer hosts at once".to_owned())
        }
        ClientError::TimedOut { .. } => {
            Some("the agent accepted the connection but did not answer; check its log".to_owned())
        }
        ClientError::Broken { .. } => {
            Some("the agent may have restarted or crashed; check its log, then run `deployer ls`".to_owned())
        }
        ClientError::BadResponse { agent, .. } => {
            Some(format!("is `{agent}` a deployer agent? check --agent or `DEPLOYER_AGENT`"))
        }
        ClientError::Api { status, body, token, .. } => {
            // The CLI knows better than the agent which variable holds the token.
            if *status == StatusCode::UNAUTHORIZED {
                return Some(if token.is_set() {
                    format!(
                        "the token in `{}` is not one the agent accepts; check it against the \
                         agent's config",
                        token.var
                    )
                } else {
                    format!(
                        "set `{}` to one of the agent's API tokens (or name another variable \
                         with --token-env NAME)",
                        token.var
                    )
                });
            }
            if let Some(hint) = &body.hint {
                return Some(hint.clone());
            }
            match *status {
                StatusCode::FORBIDDEN => {
                    Some(format!("the token in `{}` lacks the `deploy` scope; use one that has it", token.var))
                }
                StatusCode::NOT_FOUND => Some("run `deployer ls` to see the apps the agent runs".to_owned()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use deployer_wire::ApiError;

    use super::*;
    use crate::client::Token;

    fn not_found() -> ClientError {
        ClientError::Api {
            agent: "http://127.0.0.1:7070".into(),
            status: StatusCode::NOT_FOUND,
            body: ApiError { code: deployer_wire::ErrorCode::NotFound, message: "no deploy #9".into(), hint: None },
            token: Token::from_env("DEPLOYER_TEST_NO_SUCH_VARIABLE"),
        }
    }

    #[test]
    fn a_hinted_context_wins_over_the_client_hint() {
        let plain = anyhow::Error::new(not_found());
        assert!(hint(&plain).unwrap().contains("deployer ls"));

        let hinted =
            anyhow::Error::new(not_found()).context(Hinted::new("cannot show deploy #9", "try `deployer history web`"));
        assert_eq!(hinted.to_string(), "cannot show deploy #9");
        assert_eq!(hint(&hinted).as_deref(), Some("try `deployer history web`"));

        let alone = anyhow::Error::new(Hinted::new("still building", "wait longer"));
        assert_eq!(hint(&alone).as_deref(), Some("wait longer"));
    }
}
