//! Building deliveries the way each host does: a fixture body, edited, signed with the
//! provider's own scheme, with the host's headers.

use hooks::{Headers, Outcome, Provider, PushEvent, Rejection};
use serde_json::Value;

/// The secret the hosts in these tests were configured with.
pub const SECRET: &[u8] = b"s3cret-shared-with-the-host";

/// The branch the app under test deploys.
pub const BRANCH: &str = "main";

pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// A fixture payload from `tests/hooks/fixtures/`, to edit before sending.
pub fn fixture(name: &str) -> Value {
    let text = match name {
        "github_push" => include_str!("fixtures/github_push.json"),
        "github_ping" => include_str!("fixtures/github_ping.json"),
        "gitlab_push" => include_str!("fixtures/gitlab_push.json"),
        "gitea_push" => include_str!("fixtures/gitea_push.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("fixtures are valid JSON")
}

/// One HTTP request to `/hooks/{app}`, owned, so tests can change any part of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub provider: Provider,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn new(provider: Provider, body: impl Into<Vec<u8>>) -> Self {
        Delivery { provider, headers: Vec::new(), body: body.into() }
    }

    /// The body as the hosts send it: pretty-printed JSON.
    pub fn json(provider: Provider, body: &Value) -> Self {
        Self::new(provider, serde_json::to_vec_pretty(body).unwrap())
    }

    /// A GitHub delivery of `event`, signed with [`SECRET`].
    pub fn github(event: &str, body: &Value) -> Self {
        Self::json(Provider::GitHub, body)
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("X-GitHub-Hook-ID", "481516234")
            .header("User-Agent", "GitHub-Hookshot/044aadd")
            .header("Content-Type", "application/json")
            .signed(SECRET)
    }

    /// A GitLab delivery of `event` (`Push Hook`, ...) with [`SECRET`] as its token.
    pub fn gitlab(event: &str, body: &Value) -> Self {
        Self::json(Provider::GitLab, body)
            .header("X-Gitlab-Event", event)
            .header("X-Gitlab-Instance", "https://gitlab.example.com")
            .header("X-Gitlab-Webhook-UUID", "a1c3b7a6-9b11-4c2e-9e25-0c1d7c3b0f11")
            .header("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
            .header("Idempotency-Key", "908a6d9e-45fd-46c8-97e6-c4f350f219dd")
            .header("User-Agent", "GitLab/17.5.0")
            .signed(SECRET)
    }

    /// A Gitea delivery of `event`, signed with [`SECRET`].
    pub fn gitea(event: &str, body: &Value) -> Self {
        Self::json(Provider::Gitea, body)
            .header("X-Gitea-Event", event)
            .header("X-Gitea-Event-Type", event)
            .header("X-Gitea-Delivery", "7d4cf0a5-4c88-4b4d-9e3d-6f0e7fb3d2a9")
            .header("X-GitHub-Event", event)
            .header("X-Gogs-Event", event)
            .signed(SECRET)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Drops every header called `name`, whatever its case.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Replaces the signature header(s) with one computed over the current body.
    pub fn signed(self, secret: &[u8]) -> Self {
        let provider = self.provider.clone();
        let (name, value) = provider.sign(secret, &self.body);
        self.without(name).header(name, value)
    }

    pub fn headers(&self) -> Headers<'_> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect()
    }

    pub fn receive(&self) -> Result<Outcome, Rejection> {
        self.receive_with(SECRET, BRANCH)
    }

    pub fn receive_with(&self, secret: &[u8], branch: &str) -> Result<Outcome, Rejection> {
        hooks::receive(&self.provider, secret, &self.headers(), &self.body, branch)
    }

    /// Receives it and insists on a push.
    pub fn push(&self) -> PushEvent {
        match self.receive() {
            Ok(Outcome::Push(push)) => push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// Receives it and insists on it being ignored, returning the reason as the agent
    /// would print it.
    pub fn ignored(&self) -> (hooks::IgnoreReason, String) {
        match self.receive() {
            Ok(Outcome::Ignored { reason, .. }) => {
                let text = reason.to_string();
                (reason, text)
            }
            other => panic!("expected an ignored delivery, got {other:?}"),
        }
    }

    /// Receives it and insists on a rejection, checking that its message quotes neither
    /// the secret nor the body.
    pub fn rejected(&self) -> Rejection {
        let rejection = self.receive().expect_err("expected a rejection");
        assert_quotes_nothing(&rejection, SECRET, &self.body);
        rejection
    }
}

/// Rejection messages go back to the caller and into logs: they must not carry the secret
/// or any of the body.
pub fn assert_quotes_nothing(rejection: &Rejection, secret: &[u8], body: &[u8]) {
    let message = rejection.to_string();
    let secret = String::from_utf8_lossy(secret);
    assert!(!message.contains(&*secret), "message {message:?} contains the secret");
    // Distinctive runs of the body (shas, ids, uuids) would show up here; plain words may
    // legitimately match the field names we report.
    let body = String::from_utf8_lossy(body);
    let distinctive = |w: &&str| w.len() >= 6 && w.bytes().any(|b| b.is_ascii_digit());
    for word in body.split(|c: char| !c.is_ascii_alphanumeric()).filter(distinctive) {
        assert!(!message.contains(word), "message {message:?} quotes {word:?} from the body");
    }
}

/// Sets `path` (dotted) in a JSON object.
pub fn set(value: &mut Value, path: &str, new: Value) {
    let mut target = value;
    for part in path.split('.') {
        target = &mut target[part];
    }
    *target = new;
}
