//! Webhook deliveries the way a git host makes them, signed with `hooks`' own signer.

use crate::Agent;
use crate::http::{self, Response};
use std::time::Duration;

/// A GitHub push delivery: event `push`, `X-GitHub-Delivery: delivery`, the body a push of
/// `after` to `branch` by `pusher`, signed with `secret` (`None`: unsigned).
pub struct GithubPush {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl GithubPush {
    pub fn new(secret: Option<&str>, branch: &str, after: &str, delivery: &str, pusher: &str) -> GithubPush {
        let body = serde_json::json!({
            "ref": format!("refs/heads/{branch}"),
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "repository": { "full_name": "acme/web" },
            "pusher": { "name": pusher },
            "commits": [{ "id": after }],
        })
        .to_string();
        GithubPush::raw("push", secret, delivery, body)
    }

    /// Any event and body.
    pub fn raw(event: &str, secret: Option<&str>, delivery: &str, body: String) -> GithubPush {
        let mut headers = vec![
            ("X-GitHub-Event".to_string(), event.to_string()),
            ("X-GitHub-Delivery".to_string(), delivery.to_string()),
        ];
        if let Some(secret) = secret {
            let (name, value) = hooks::Provider::GitHub.sign(secret.as_bytes(), body.as_bytes());
            headers.push((name.to_string(), String::from_utf8(value).expect("hex")));
        }
        GithubPush { headers, body }
    }

    /// POST it to the agent's `/hooks/<app>`.
    pub fn send(&self, agent: &Agent, app: &str) -> Response {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http::request(
            agent.api_port(),
            "POST",
            &format!("/hooks/{app}"),
            &headers,
            Some(&self.body),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("POST /hooks/{app}: {e}"))
    }
}

/// The hex HMAC-SHA256 of `body` with `secret`, as `X-Deployer-Signature` carries it after `sha256=`.
pub fn hmac_hex(secret: &str, body: &str) -> String {
    let provider = hooks::Provider::Generic { header: "X".into() };
    String::from_utf8(provider.sign(secret.as_bytes(), body.as_bytes()).1).expect("hex")
}
