//! The HTTP client of one agent's API: one method per route, typed answers, typed errors.
//!
//! Nothing here prints or knows about the command line; `report` turns a [`ClientError`] into
//! words and hints for people.
//!
//! The token is guarded here, where it is attached: it goes only to `https://` agents or to this
//! machine's loopback, never through a proxy in clear text, never along a redirect. Answers meant
//! for people have their text made safe for a terminal ([`crate::output::untrusted`]) as they are
//! decoded; `--json` keeps them as sent (JSON escapes control characters).

use std::fmt;
use std::time::Duration;

use deployer_wire::{
    API_PREFIX, ApiError, AppStatus, CheckOutcome, Deploy, DeployAccepted, DeployRequest, DeployStreamItem,
    LOG_LINE_EVENT, LockRequest, LockStatus, LogLine, LogLines, LogStream, LogsFlushed, Release, ReloadOutcome,
    ReloadRequest, RollbackRequest, ScaleRequest, SignalOutcome, SignalRequest,
};
use reqwest::{Method, RequestBuilder, StatusCode, Url};

use crate::output::untrusted;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long to wait for the TCP (and TLS) connection: an agent that is up answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request that waits on the workers (start, stop, scale) may take. A reload has no
/// limit: it returns when the new workers are ready, which can take minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request the agent answers at once (lists, deploy and rollback requests, locks,
/// stream heads) may take: a host that accepts the connection but hangs is failed after this,
/// not after a minute.
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stream may stay silent: the agent sends a keep-alive comment every 5 s, so a
/// stream quiet for this long is a dead connection (a host that vanished), not a slow deploy.
pub const STREAM_IDLE: Duration = Duration::from_secs(20);

/// How much of a body that is not the API's to quote in an error.
const BODY_EXCERPT: usize = 200;

/// The API token, and where it came from (so a 401 can say which variable to fix).
#[derive(Clone)]
pub struct Token {
    /// The environment variable the token is read from.
    pub var: String,
    value: Option<String>,
}

impl Token {
    /// Reads the token from the environment variable `var`; unset or empty means no token.
    pub fn from_env(var: &str) -> Self {
        let value = std::env::var(var).ok().filter(|v| !v.is_empty());
        Self { var: var.to_owned(), value }
    }

    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

// The token never appears in debug output.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("var", &self.var).field("set", &self.is_set()).finish()
    }
}

/// Why a request to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not sent: the token would have crossed the network in clear text.
    #[error(
        "refusing to send the token in `{var}` to `{agent}` over plain http: anyone on the way could read it and use it"
    )]
    InsecureToken { agent: String, var: String },
    /// No connection: nothing listens there, the host is unknown, or the connect timed out.
    #[error("cannot reach the agent at `{agent}`")]
    Unreachable {
        agent: String,
        #[source]
        cause: Cause,
    },
    /// Not sent: this machine ran out of file descriptors (the host was never tried).
    #[error(
        "cannot open a connection to `{agent}`: this machine is out of file descriptors (`ulimit -n` is too low for this many hosts)"
    )]
    OutOfFds {
        agent: String,
        #[source]
        cause: Cause,
    },
    /// Connected, but the agent did not answer in time.
    #[error("the agent at `{agent}` did not answer within {}s", .after.as_secs())]
    TimedOut { agent: String, after: Duration },
    /// Connected, but the connection failed before the answer was complete.
    #[error("the connection to the agent at `{agent}` broke before it answered")]
    Broken {
        agent: String,
        #[source]
        cause: Cause,
    },
    /// The agent answered with an error of its API.
    #[error("{}", api_message(.status, .body))]
    Api {
        agent: String,
        status: StatusCode,
        body: ApiError,
        /// Whether a token was sent, and from which variable.
        token: Token,
    },
    /// Something answered, but not with the API's JSON.
    #[error("the agent at `{agent}` answered `{status}` with a body that is not the API's")]
    BadResponse {
        agent: String,
        status: StatusCode,
        #[source]
        cause: Cause,
    },
}

fn api_message(status: &StatusCode, body: &ApiError) -> String {
    if body.message.is_empty() {
        format!("the agent answered `{status}` (`{}`)", body.code)
    } else {
        body.message.clone()
    }
}

/// The innermost reason of a failure, as a plain message: reqwest's own chain repeats the URL
/// and wraps the interesting part ("Connection refused") three levels deep.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(String);

impl Cause {
    fn root_of(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut inner = err;
        while let Some(source) = inner.source() {
            inner = source;
        }
        Self(untrusted::text(&inner.to_string()).into_owned())
    }
}

/// A client of one agent.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Token,
    /// Keep the agent's text as sent (`--json`), instead of making it safe for a terminal.
    raw_text: bool,
}

impl Client {
    pub fn new(base: Url, token: Token) -> Result<Self, reqwest::Error> {
        let http = builder()?.build()?;
        Ok(Self { http, base, token, raw_text: false })
    }

    /// A client of an agent whose certificate is signed by `ca_pem` (a private CA), or is one of
    /// its certificates (the agent's self-signed one, marked as a CA or not), besides the usual
    /// roots: see [`crate::pinned`].
    pub fn with_ca(base: Url, token: Token, ca_pem: &[u8]) -> Result<Self, crate::pinned::PinError> {
        let tls = crate::pinned::client_config(ca_pem)?;
        let http = builder()?.use_preconfigured_tls(tls).build()?;
        Ok(Self { http, base, token, raw_text: false })
    }

    /// Keep the text of answers as the agent sent it (for `--json`, which escapes it), or not.
    pub fn keep_raw_text(mut self, raw: bool) -> Self {
        self.raw_text = raw;
        self
    }

    pub fn raw_text(&self) -> bool {
        self.raw_text
    }

    /// A client of another agent, sharing this one's connection pools and timeouts.
    pub fn for_agent(&self, base: Url, token: Token) -> Self {
        Self { http: self.http.clone(), base, token, raw_text: self.raw_text }
    }

    /// The agent's URL as people write it (no trailing slash).
    pub fn agent(&self) -> String {
        agent_label(&self.base)
    }

    /// `GET /v1/apps`
    pub async fn apps(&self) -> Result<Vec<AppStatus>, ClientError> {
        self.call(Method::GET, &["apps"], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `GET /v1/apps/{app}`
    pub async fn app(&self, app: &str) -> Result<AppStatus, ClientError> {
        self.call(Method::GET, &["apps", app], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `POST /v1/apps/{app}/reload`: returns when the reload ended.
    pub async fn reload(&self, app: &str, request: &ReloadRequest) -> Result<ReloadOutcome, ClientError> {
        self.call(Method::POST, &["apps", app, "reload"], None, Some(request)).await
    }

    /// `POST /v1/apps/{app}/restart`
    pub async fn restart(&self, app: &str) -> Result<AppStatus, ClientError> {
        self.post_empty(app, "restart").await
    }

    /// `POST /v1/apps/{app}/stop`
    pub async fn stop(&self, app: &str) -> Result<AppStatus, ClientError> {
        self.post_empty(app, "stop").await
    }

    /// `POST /v1/apps/{app}/start`
    pub async fn start(&self, app: &str) -> Result<AppStatus, ClientError> {
        self.post_empty(app, "start").await
    }

    /// `POST /v1/apps/{app}/scale`: to `instances`, or `by` more (fewer when negative).
    pub async fn scale(&self, app: &str, request: &ScaleRequest) -> Result<AppStatus, ClientError> {
        self.call(Method::POST, &["apps", app, "scale"], Some(REQUEST_TIMEOUT), Some(request)).await
    }

    /// `POST /v1/apps/{app}/signal`
    pub async fn signal(&self, app: &str, signal: &str) -> Result<SignalOutcome, ClientError> {
        let request = SignalRequest { signal: signal.into() };
        self.call(Method::POST, &["apps", app, "signal"], Some(QUICK_TIMEOUT), Some(&request)).await
    }

    /// `GET /v1/apps/{app}/logs?lines=N`
    pub async fn logs(&self, app: &str, lines: u32, only: Option<LogStream>) -> Result<LogLines, ClientError> {
        let mut url = self.url(&["apps", app, "logs"]);
        url.query_pairs_mut().append_pair("lines", &lines.to_string());
        if let Some(s) = only {
            url.query_pairs_mut().append_pair("stream", s.as_str());
        }
        let request = self.http.get(url);
        self.send(request, Some(QUICK_TIMEOUT)).await
    }

    /// `POST /v1/apps/{app}/logs/flush`: empty the app's log files.
    pub async fn flush_logs(&self, app: &str) -> Result<LogsFlushed, ClientError> {
        self.call(Method::POST, &["apps", app, "logs", "flush"], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `POST /v1/apps/{app}/deploys`: queues a deploy and answers at once (202).
    pub async fn deploy(&self, app: &str, request: &DeployRequest) -> Result<DeployAccepted, ClientError> {
        self.call(Method::POST, &["apps", app, "deploys"], Some(QUICK_TIMEOUT), Some(request)).await
    }

    /// `POST /v1/apps/{app}/rollback`: queues a deploy of a release on disk (202).
    pub async fn rollback(&self, app: &str, request: &RollbackRequest) -> Result<DeployAccepted, ClientError> {
        self.call(Method::POST, &["apps", app, "rollback"], Some(QUICK_TIMEOUT), Some(request)).await
    }

    /// `GET /v1/deploys/{id}`: one deploy, with its events and the tail of its install output.
    pub async fn deploy_status(&self, id: u64) -> Result<Deploy, ClientError> {
        let id = id.to_string();
        self.call(Method::GET, &["deploys", &id], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `GET /v1/apps/{app}/deploys?limit=N`: the newest deploys first, without their events.
    pub async fn deploys(&self, app: &str, limit: u32) -> Result<Vec<Deploy>, ClientError> {
        let mut url = self.url(&["apps", app, "deploys"]);
        url.query_pairs_mut().append_pair("limit", &limit.to_string());
        let request = self.http.get(url);
        self.send(request, Some(QUICK_TIMEOUT)).await
    }

    /// `POST /v1/deploys/{id}/cancel`: answers the deploy as it was when the cancel arrived.
    pub async fn cancel(&self, id: u64) -> Result<Deploy, ClientError> {
        let id = id.to_string();
        self.call(Method::POST, &["deploys", &id, "cancel"], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `POST /v1/apps/{app}/check`: the branch head on the remote, and the deploy queued if it moved.
    pub async fn check(&self, app: &str) -> Result<CheckOutcome, ClientError> {
        self.call(Method::POST, &["apps", app, "check"], Some(REQUEST_TIMEOUT), None::<&()>).await
    }

    /// `GET /v1/apps/{app}/releases`: the release directories on disk, newest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<Release>, ClientError> {
        self.call(Method::GET, &["apps", app, "releases"], Some(QUICK_TIMEOUT), None::<&()>).await
    }

    /// `GET /v1/deploys/{id}/events`: the deploy's events so far, then as they happen, until it
    /// ends.
    pub async fn deploy_events(&self, id: u64) -> Result<EventStream<DeployStreamItem>, ClientError> {
        let id = id.to_string();
        self.stream(self.url(&["deploys", &id, "events"]), None).await
    }

    /// `GET /v1/apps/{app}/logs?lines=N&follow=true`: the last lines, then every new one.
    pub async fn follow_logs(
        &self,
        app: &str,
        lines: u32,
        only: Option<LogStream>,
    ) -> Result<EventStream<LogLine>, ClientError> {
        let mut url = self.url(&["apps", app, "logs"]);
        url.query_pairs_mut().append_pair("lines", &lines.to_string()).append_pair("follow", "true");
        if let Some(s) = only {
            url.query_pairs_mut().append_pair("stream", s.as_str());
        }
        self.stream(url, Some(LOG_LINE_EVENT)).await
    }

    /// `POST /v1/locks/{name}`: take or renew a lease; the answer says who holds it.
    pub async fn lock(&self, name: &str, request: &LockRequest) -> Result<LockStatus, ClientError> {
        self.call(Method::POST, &["locks", name], Some(QUICK_TIMEOUT), Some(request)).await
    }

    /// `DELETE /v1/locks/{name}?lease=`: give a lease back.
    pub async fn unlock(&self, name: &str, lease: &str) -> Result<(), ClientError> {
        let mut url = self.url(&["locks", name]);
        url.query_pairs_mut().append_pair("lease", lease);
        let request =
            self.authorize(self.http.delete(url).timeout(QUICK_TIMEOUT)).ok_or_else(|| self.insecure_token())?;
        let response = request.send().await.map_err(|e| self.transport_error(e, Some(QUICK_TIMEOUT)))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e, Some(QUICK_TIMEOUT)))?;
        Err(self.error_of(status, &bytes))
    }

    async fn stream<T: DeserializeOwned>(
        &self,
        url: Url,
        only: Option<&'static str>,
    ) -> Result<EventStream<T>, ClientError> {
        let request = self
            .authorize(self.http.get(url).header(reqwest::header::ACCEPT, "text/event-stream"))
            .ok_or_else(|| self.insecure_token())?;
        // The answer's head comes at once; only the body is long.
        let response = tokio::time::timeout(QUICK_TIMEOUT, request.send())
            .await
            .map_err(|_| ClientError::TimedOut { agent: self.agent(), after: QUICK_TIMEOUT })?
            .map_err(|e| self.transport_error(e, Some(QUICK_TIMEOUT)))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(|e| self.transport_error(e, Some(QUICK_TIMEOUT)))?;
            return Err(self.error_of(status, &bytes));
        }
        Ok(EventStream {
            client: self.clone(),
            response,
            parser: Default::default(),
            ready: Default::default(),
            only,
            _item: std::marker::PhantomData,
        })
    }

    async fn post_empty(&self, app: &str, action: &str) -> Result<AppStatus, ClientError> {
        self.call(Method::POST, &["apps", app, action], Some(REQUEST_TIMEOUT), None::<&()>).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        timeout: Option<Duration>,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, timeout).await
    }

    /// The URL of an API route: segments are percent-encoded, so an app name cannot escape its
    /// place in the path, and an agent behind a path prefix (`https://host/agent/`) works.
    fn url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("agent URLs are http(s) URLs, which have a path");
            segments.pop_if_empty();
            segments.push(API_PREFIX.trim_start_matches('/'));
            segments.extend(path);
        }
        url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut request: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let request = self.authorize(request).ok_or_else(|| self.insecure_token())?;
        let response = request.send().await.map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e, timeout))?;

        if status.is_success() {
            return self.decode(&bytes).map_err(|e| ClientError::BadResponse {
                agent: self.agent(),
                status,
                cause: Cause(format!("cannot decode the answer: {e}")),
            });
        }
        Err(self.error_of(status, &bytes))
    }

    /// The token on `request`, if there is one; `None` when it may not go to this agent.
    fn authorize(&self, request: RequestBuilder) -> Option<RequestBuilder> {
        match &self.token.value {
            None => Some(request),
            Some(token) if carries_tokens(&self.base) => Some(request.bearer_auth(token)),
            Some(_) => None,
        }
    }

    /// What [`Client::authorize`] refusing means.
    fn insecure_token(&self) -> ClientError {
        ClientError::InsecureToken { agent: self.agent(), var: self.token.var.clone() }
    }

    /// An answer's JSON as `T`, its text made safe for a terminal unless kept raw.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, serde_json::Error> {
        if self.raw_text {
            return serde_json::from_slice(bytes);
        }
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        untrusted::json(&mut value);
        serde_json::from_value(value)
    }

    /// The error an answer that is not a success stands for.
    fn error_of(&self, status: StatusCode, bytes: &[u8]) -> ClientError {
        match self.decode::<ApiError>(bytes) {
            Ok(body) => ClientError::Api { agent: self.agent(), status, body, token: self.token.clone() },
            Err(_) => ClientError::BadResponse {
                agent: self.agent(),
                status,
                cause: Cause(format!("the body starts with `{}`", excerpt(bytes))),
            },
        }
    }

    fn transport_error(&self, err: reqwest::Error, timeout: Option<Duration>) -> ClientError {
        let agent = self.agent();
        if out_of_fds(&err) {
            ClientError::OutOfFds { agent, cause: Cause::root_of(&err) }
        } else if err.is_connect() {
            ClientError::Unreachable { agent, cause: Cause::root_of(&err) }
        } else if err.is_timeout() {
            ClientError::TimedOut { agent, after: timeout.unwrap_or(CONNECT_TIMEOUT) }
        } else {
            ClientError::Broken { agent, cause: Cause::root_of(&err) }
        }
    }
}

/// A Server-Sent Events answer, read message by message as typed values.
pub struct EventStream<T> {
    client: Client,
    response: reqwest::Response,
    parser: crate::sse::Parser,
    ready: std::collections::VecDeque<crate::sse::Message>,
    /// Only messages of this event name (others are skipped).
    only: Option<&'static str>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> EventStream<T> {
    /// The next message; `None` when the agent ended the stream. Silence longer than
    /// [`STREAM_IDLE`] is an error: the agent's keep-alives stopped.
    pub async fn next(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            while let Some(message) = self.ready.pop_front() {
                if self.only.is_some_and(|only| only != message.event) {
                    continue;
                }
                return self.client.decode(message.data.as_bytes()).map(Some).map_err(|e| ClientError::BadResponse {
                    agent: self.client.agent(),
                    status: StatusCode::OK,
                    cause: Cause(format!("cannot decode a `{}` event: {e}", message.event)),
                });
            }
            let chunk = tokio::time::timeout(STREAM_IDLE, self.response.chunk())
                .await
                .map_err(|_| ClientError::TimedOut { agent: self.client.agent(), after: STREAM_IDLE })?
                .map_err(|e| self.client.transport_error(e, Some(STREAM_IDLE)))?;
            match chunk {
                Some(bytes) => self.ready.extend(self.parser.push(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// The HTTP client every agent client shares: timeouts, no redirects (the API never redirects,
/// and a redirect could carry the token elsewhere), and proxies for `https://` only: a proxy
/// would see a plain http request, token and all. An https proxy comes from `HTTPS_PROXY` or
/// `ALL_PROXY` (and `NO_PROXY`), as curl reads them.
fn builder() -> Result<reqwest::ClientBuilder, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("deployer/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let https_proxy = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()));
    if let Some(proxy) = https_proxy {
        builder = builder.proxy(reqwest::Proxy::https(proxy)?.no_proxy(reqwest::NoProxy::from_env()));
    }
    Ok(builder)
}

/// Whether a token may go to the agent at `url`: over TLS, or to this machine's loopback, where
/// plain http does not leave the host.
pub fn carries_tokens(url: &Url) -> bool {
    url.scheme() == "https" || url.host_str().is_some_and(is_loopback)
}

/// `localhost`, `127.0.0.0/8`, `::1` (as the URL parser normalised them: `127.1` is `127.0.0.1`).
fn is_loopback(host: &str) -> bool {
    use std::net::IpAddr;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// An agent URL as people write it: `http://127.0.0.1:7070`, not `http://127.0.0.1:7070/`.
pub fn agent_label(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// The start of a body, on one line.
/// Whether `err` comes from this process's own fd table being full (`EMFILE`, `ENFILE`).
fn out_of_fds(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = untrusted::text(&text).split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        let token = Token { var: "DEPLOYER_TOKEN".into(), value: None };
        Client::new(base.parse().unwrap(), token).unwrap()
    }

    #[test]
    fn urls_encode_app_names_and_keep_path_prefixes() {
        let c = client("http://127.0.0.1:7070");
        assert_eq!(c.url(&["apps"]).as_str(), "http://127.0.0.1:7070/v1/apps");
        assert_eq!(c.url(&["apps", "a/b c", "reload"]).as_str(), "http://127.0.0.1:7070/v1/apps/a%2Fb%20c/reload");
        let c = client("https://host/agent/");
        assert_eq!(c.url(&["apps"]).as_str(), "https://host/agent/v1/apps");
        assert_eq!(c.agent(), "https://host/agent");
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let token = Token { var: "T".into(), value: Some("s3cret".into()) };
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt(b"<html>\n  <body>Bad Gateway</body>"), "<html> <body>Bad Gateway</body>");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), BODY_EXCERPT + 1);
    }

    #[test]
    fn tokens_go_over_tls_or_to_loopback_only() {
        for ok in [
            "https://agent.example:7070",
            "http://127.0.0.1:7070",
            "http://127.1:7070",
            "http://localhost:7070",
            "http://[::1]:7070",
            "http://[::ffff:127.0.0.1]:1",
        ] {
            assert!(carries_tokens(&ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:7070",
            "http://agent.example",
            "http://localhost.evil.example",
            "http://[::2]:1",
            "http://0.0.0.0:7070",
        ] {
            assert!(!carries_tokens(&bad.parse().unwrap()), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_token_is_refused_before_anything_is_sent_over_plain_http() {
        let token = Token { var: "DEPLOYER_TOKEN".into(), value: Some("s3cret".into()) };
        // Nothing listens there: an attempt to send would be `Unreachable`, not refused.
        let c = Client::new("http://192.0.2.1:9".parse().unwrap(), token).unwrap();
        let err = c.apps().await.unwrap_err();
        assert!(matches!(err, ClientError::InsecureToken { .. }), "{err:?}");
        assert!(err.to_string().contains("`DEPLOYER_TOKEN` to `http://192.0.2.1:9` over plain http"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }
}
