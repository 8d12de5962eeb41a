//! The agent's HTTP API: thin handlers over the supervisor, JSON under `/v1`, bearer tokens.
//!
//! `GET` routes need the `read` scope, everything else `deploy`. Errors are one shape
//! ([`deployer_wire::ApiError`]) produced in one place ([`ApiErr`]).

mod auth;
mod locks;
pub mod serve;
mod stream;
mod webhooks;

pub use webhooks::{WebhookCounts, WebhookStats};

use crate::config::{ResolvedToken, Scope};
use crate::deploy::poll::CheckError;
use crate::deploy::{DeployError, Deployer, Requester, Target};
use crate::secrets::Secrets;
use crate::source::BadRef;
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorError};
use axum::Extension;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use deployer_wire::{
    ApiError, AppStatus, CheckOutcome, Deploy, DeployAccepted, DeployRequest, Release, ReloadOutcome, ReloadRequest,
    RollbackRequest, ScaleRequest,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, RwLock};

/// What the handlers share.
pub struct ApiState {
    pub supervisor: Arc<Supervisor>,
    pub deployer: Arc<Deployer>,
    /// Replaced on SIGHUP.
    pub tokens: RwLock<Vec<ResolvedToken>>,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Named leases (the CLI's push lock).
    pub locks: crate::locks::Locks,
    /// Cancelled when the agent stops: streams end so the server can drain.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Webhook delivery ids already handled live here.
    pub store: Arc<Store>,
    pub webhooks: WebhookStats,
    /// Masked in every JSON answer.
    pub secrets: Secrets,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/apps", get(list_apps))
        .route("/apps/{app}", get(show_app))
        .route("/apps/{app}/reload", post(reload))
        .route("/apps/{app}/restart", post(restart))
        .route("/apps/{app}/stop", post(stop))
        .route("/apps/{app}/start", post(start))
        .route("/apps/{app}/scale", post(scale))
        .route("/apps/{app}/logs", get(stream::logs))
        .route("/apps/{app}/deploys", post(create_deploy).get(list_deploys))
        .route("/apps/{app}/rollback", post(rollback))
        .route("/apps/{app}/releases", get(releases))
        .route("/apps/{app}/check", post(check_now))
        .route("/deploys/{id}", get(show_deploy))
        .route("/deploys/{id}/cancel", post(cancel_deploy))
        .route("/deploys/{id}/events", get(stream::deploy_events))
        .route("/locks/{name}", post(locks::acquire).delete(locks::release))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Prometheus sends the token too (`authorization:` in its scrape config).
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Outside the token layer: the signature is the authentication. Up to 1 MiB, then 413.
    let webhooks =
        Router::new().route("/hooks/{app}", post(webhooks::receive).layer(DefaultBodyLimit::max(::hooks::MAX_BODY)));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(metrics)
        .nest(deployer_wire::API_PREFIX, v1)
        .merge(webhooks)
        .fallback(|| async {
            ApiErr::new(StatusCode::NOT_FOUND, "not_found", "no such route".into())
                .hint("the routes are listed in README's API section; they start with `/v1/`")
        })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), mask_answers))
        .with_state(state)
}

/// The largest JSON answer (a history of 1000 deploys, 2000 log lines) is far below this.
const MAX_ANSWER: usize = 64 << 20;

/// Every JSON answer has the agent's secret values masked, whatever produced its text (an error
/// from git or from the config, a log line): behind the masking where text is stored, this is
/// the last place a secret could leave through the API. Streams (SSE) are made of text masked
/// where it is stored.
async fn mask_answers(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let answer = next.run(req).await;
    let json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER).await else {
        return ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the answer could not be read".into())
            .into_response();
    };
    let masked = match std::str::from_utf8(&bytes).map(|text| st.secrets.mask(text)) {
        Ok(std::borrow::Cow::Owned(text)) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(text)
        }
        _ => bytes,
    };
    Response::from_parts(parts, axum::body::Body::from(masked))
}

/// Every error answer is the documented `{code, message, hint}`, also those axum makes itself
/// (a body over the limit, a wrong method, an unparsable path or query): they come as plain text,
/// and are rewritten here with a code from their status and a hint where one helps.
async fn json_errors(req: Request, next: Next) -> Response {
    let answer = next.run(req).await;
    let status = answer.status();
    let is_json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return answer;
    }
    let text = axum::body::to_bytes(answer.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (code, hint) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("too_large", Some("request bodies of the API are at most 64 KiB (webhooks 1 MiB)"))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", Some("README's API section lists each route's method"))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("bad_request", Some("send `Content-Type: application/json`")),
        StatusCode::NOT_FOUND => ("not_found", None),
        s if s.is_client_error() => ("bad_request", None),
        _ => ("internal", None),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut err = ApiErr::new(status, code, message);
    if let Some(h) = hint {
        err = err.hint(h);
    }
    err.into_response()
}

/// An error answer.
pub struct ApiErr(StatusCode, ApiError);

impl ApiErr {
    fn new(status: StatusCode, code: &str, message: String) -> ApiErr {
        ApiErr(status, ApiError { code: code.into(), message, hint: None })
    }
    fn hint(mut self, hint: &str) -> ApiErr {
        self.1.hint = Some(hint.into());
        self
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<SupervisorError> for ApiErr {
    fn from(e: SupervisorError) -> ApiErr {
        match e {
            SupervisorError::UnknownApp(_) => {
                ApiErr::new(StatusCode::NOT_FOUND, "not_found", e.to_string()).hint("`GET /v1/apps` lists the apps")
            }
            _ => ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

/// The name of the token a request came with: the actor a deploy records.
#[derive(Clone)]
struct Caller(String);

async fn require_token(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Result<Response, ApiErr> {
    let need = if req.method() == Method::GET || req.method() == Method::HEAD { Scope::Read } else { Scope::Deploy };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiErr::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer token".into())
            .hint("send `Authorization: Bearer <token>`; the CLI reads it from DEPLOYER_TOKEN"));
    };
    let scopes = auth::scopes_of(&st.tokens.read().unwrap_or_else(|e| e.into_inner()), presented);
    match scopes {
        None => Err(ApiErr::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token".into()).hint(
            "the token matches none of the agent's `tokens`; check DEPLOYER_TOKEN (or --token-env) against the agent's config",
        )),
        Some((_, s)) if !auth::allows(&s, need) => Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the `{}` scope", if need == Scope::Deploy { "deploy" } else { "read" }),
        )),
        Some((name, _)) => {
            req.extensions_mut().insert(Caller(name));
            Ok(next.run(req).await)
        }
    }
}

/// A JSON body that may be empty (`None`).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<Option<T>, ApiErr> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| ApiErr::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid JSON body: {e}")))
}

async fn metrics(State(st): State<Arc<ApiState>>) -> impl IntoResponse {
    let text = st.metrics.render(&st.supervisor, st.deployer.store());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

async fn list_apps(State(st): State<Arc<ApiState>>) -> Json<Vec<AppStatus>> {
    Json(st.supervisor.list().iter().map(|a| a.status()).collect())
}

async fn show_app(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    Ok(Json(st.supervisor.app(&app)?.status()))
}

async fn reload(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<ReloadOutcome>, ApiErr> {
    let req: ReloadRequest = body(&bytes)?.unwrap_or_default();
    let app = st.supervisor.app(&app)?;
    let out = app.reload(req.update_env).await;
    st.metrics.reload_done(&app.name, out.error.is_none(), out.duration_ms as f64 / 1000.0);
    match &out.error {
        None => Ok(Json(out)),
        Some(e) => Err(ApiErr::new(StatusCode::CONFLICT, "reload_failed", e.clone())
            .hint("`deployer logs <app>` shows what the new workers printed")),
    }
}

async fn restart(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.restart().await.map_err(failed_to_start)?;
    Ok(Json(app.status()))
}

async fn stop(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.stop().await.map_err(|e| ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    Ok(Json(app.status()))
}

async fn start(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.start().await.map_err(failed_to_start)?;
    Ok(Json(app.status()))
}

async fn scale(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<AppStatus>, ApiErr> {
    let Some(req) = body::<ScaleRequest>(&bytes)? else {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing body: send {\"instances\": N}".into(),
        ));
    };
    if !(1..=1024).contains(&req.instances) {
        return Err(ApiErr::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("instances must be 1 to 1024, not {}", req.instances),
        )
        .hint("use `stop` to run none"));
    }
    let app = st.supervisor.app(&app)?;
    app.scale(req.instances).await.map_err(failed_to_start)?;
    Ok(Json(app.status()))
}

fn failed_to_start(e: String) -> ApiErr {
    ApiErr::new(StatusCode::CONFLICT, "start_failed", e).hint("`deployer logs <app>` shows what the workers printed")
}

impl From<DeployError> for ApiErr {
    fn from(e: DeployError) -> ApiErr {
        let msg = e.to_string();
        match e {
            DeployError::App(e) => e.into(),
            DeployError::NotFromGit(_) => ApiErr::new(StatusCode::CONFLICT, "conflict", msg)
                .hint("add `repo:` and `branch:` to the app in the agent's config"),
            DeployError::BadRef(bad) => {
                ApiErr::new(StatusCode::BAD_REQUEST, "bad_request", bad.problem()).hint(BadRef::HINT)
            }
            DeployError::NoSuchRelease(_) | DeployError::NotFound(_) => {
                ApiErr::new(StatusCode::NOT_FOUND, "not_found", msg)
            }
            DeployError::CannotCancel { .. } => ApiErr::new(StatusCode::CONFLICT, "conflict", msg),
            DeployError::State(_) => ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg),
        }
    }
}

async fn create_deploy(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiErr> {
    let req: DeployRequest = body(&bytes)?.unwrap_or_default();
    let git_ref = match req.git_ref {
        Some(r) => r,
        // An app without `repo` has no branch: `request` refuses it.
        None => st.supervisor.app(&app)?.config().source.git().map(|g| g.branch.clone()).unwrap_or_default(),
    };
    // The token is who asked; what the request says about itself is kept beside it.
    let by = Requester::token(&caller.0, req.who);
    let accepted = st.deployer.request(&app, Target::Ref(git_ref), "api", &by)?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn rollback(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiErr> {
    let req: RollbackRequest = body(&bytes)?.unwrap_or_default();
    let by = Requester::token(&caller.0, None);
    let accepted = st.deployer.request(&app, Target::Rollback(req.release), "rollback", &by)?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn list_deploys(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<Deploy>>, ApiErr> {
    Ok(Json(st.deployer.history(&app, q.limit.unwrap_or(20).min(1000))?))
}

async fn releases(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<Vec<Release>>, ApiErr> {
    Ok(Json(st.deployer.releases(&app)?))
}

async fn show_deploy(State(st): State<Arc<ApiState>>, Path(id): Path<u64>) -> Result<Json<Deploy>, ApiErr> {
    Ok(Json(st.deployer.get(id)?))
}

async fn cancel_deploy(State(st): State<Arc<ApiState>>, Path(id): Path<u64>) -> Result<Json<Deploy>, ApiErr> {
    Ok(Json(st.deployer.cancel(id)?))
}

async fn check_now(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> Result<Json<CheckOutcome>, ApiErr> {
    st.supervisor.app(&app)?;
    let by = Requester::token(&caller.0, Some("check".into()));
    match st.deployer.check(&app, "check", &by, None).await {
        Ok(crate::deploy::poll::Checked::Queued { sha, id }) => Ok(Json(CheckOutcome { app, sha, queued: Some(id) })),
        Ok(crate::deploy::poll::Checked::Unchanged { sha }) => Ok(Json(CheckOutcome { app, sha, queued: None })),
        Err(CheckError::App(e)) => Err(e.into()),
        Err(e @ CheckError::Git(_)) => Err(ApiErr::new(StatusCode::BAD_GATEWAY, "git_unreachable", e.to_string())
            .hint("the agent could not read the branch head from the app's `repo`; `deployer logs` and the agent's log say more")),
        Err(e @ CheckError::Crashed(_)) => {
            Err(ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
        }
    }
}
