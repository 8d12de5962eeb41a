//! The agent's HTTP API: thin handlers over the supervisor, JSON under `/v1`, bearer tokens.
//!
//! `GET` routes need the `read` scope, everything else `deploy`. Errors are one shape
//! ([`deployer_wire::ApiError`]) produced in one place ([`ApiErr`], from each error's
//! [`error::Answer`]).

mod auth;
mod error;
mod locks;
pub mod serve;
mod stream;
mod webhooks;

pub use error::ApiErr;

use crate::config::{ResolvedToken, Scope};
use crate::deploy::{Deployer, Requester, Target};
use crate::secrets::Secrets;
use crate::supervisor::Supervisor;
use axum::Extension;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use deployer_wire::{
    AppStatus, CheckOutcome, Deploy, DeployAccepted, DeployRequest, ErrorCode, Release, ReloadOutcome, ReloadRequest,
    RollbackRequest, ScaleRequest, SignalOutcome, SignalRequest, SignalledWorker, Trigger,
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
        .route("/apps/{app}/signal", post(signal))
        .route("/apps/{app}/logs", get(stream::logs))
        .route("/apps/{app}/logs/flush", post(stream::flush_logs))
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
            ApiErr::new(ErrorCode::NotFound, "no such route")
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
        return ApiErr::internal("the answer could not be read").into_response();
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
            (ErrorCode::TooLarge, Some("request bodies of the API are at most 64 KiB (webhooks 1 MiB)"))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            (ErrorCode::MethodNotAllowed, Some("README's API section lists each route's method"))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorCode::BadRequest, Some("send `Content-Type: application/json`")),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, None),
        // A path segment or query that does not parse (`/v1/deploys/abc`, `?limit=x`).
        s if s.is_client_error() => {
            (ErrorCode::BadRequest, Some("deploy ids are numbers; README's API section lists each route's parameters"))
        }
        _ => (ErrorCode::Internal, None),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let err = ApiErr::with_status(status, code, message);
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
    .into_response()
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
        return Err(ApiErr::new(ErrorCode::Unauthorized, "missing bearer token")
            .hint("send `Authorization: Bearer <token>`; the CLI reads it from DEPLOYER_TOKEN"));
    };
    let scopes = auth::scopes_of(&st.tokens.read().unwrap_or_else(|e| e.into_inner()), presented);
    match scopes {
        None => Err(ApiErr::new(ErrorCode::Unauthorized, "invalid token").hint(
            "the token matches none of the agent's `tokens`; check DEPLOYER_TOKEN (or --token-env) against the agent's config",
        )),
        Some((_, s)) if !auth::allows(&s, need) => {
            let scope = if need == Scope::Deploy { "deploy" } else { "read" };
            Err(ApiErr::new(ErrorCode::Forbidden, format!("this token lacks the `{scope}` scope")).hint(format!(
                "use a token whose `scopes` in the agent's config include `{scope}` (`deploy` implies `read`)"
            )))
        }
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
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        ApiErr::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}"))
            .hint("README's API section shows each route's body; unknown fields are refused")
    })
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
    let out = app.reload(req.update_env, req.env).await;
    st.metrics.reload_done(&app.name, out.error.is_none(), out.duration_ms as f64 / 1000.0);
    match &out.error {
        None => Ok(Json(out)),
        Some(e) => Err(ApiErr::new(ErrorCode::ReloadFailed, e.clone()).hint(
            out.hint.clone().unwrap_or_else(|| "`deployer logs <app>` shows what the new workers printed".into()),
        )),
    }
}

async fn restart(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.restart().await?;
    Ok(Json(app.status()))
}

async fn stop(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.stop().await?;
    Ok(Json(app.status()))
}

async fn start(State(st): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<AppStatus>, ApiErr> {
    let app = st.supervisor.app(&app)?;
    app.start().await?;
    Ok(Json(app.status()))
}

async fn scale(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<AppStatus>, ApiErr> {
    let req = body::<ScaleRequest>(&bytes)?.unwrap_or_default();
    let app = st.supervisor.app(&app)?;
    let range = 1..=1024i64;
    match (req.instances, req.by) {
        (Some(n), None) => {
            if !range.contains(&i64::from(n)) {
                return Err(ApiErr::new(ErrorCode::BadRequest, format!("instances must be 1 to 1024, not {n}"))
                    .hint("use `stop` to run none"));
            }
            app.scale(n).await?;
        }
        (None, Some(by)) => {
            let mut refused = None;
            let scaled = app
                .scale_from(|now| {
                    let want = i64::from(now).saturating_add(by);
                    if range.contains(&want) {
                        return Some(want as u32);
                    }
                    refused =
                        Some(format!("scaling by {by:+} from {now} would make {want} workers; 1 to 1024 can run"));
                    None
                })
                .await?;
            if let (None, Some(why)) = (scaled, refused) {
                return Err(ApiErr::new(ErrorCode::BadRequest, why).hint("use `stop` to run none"));
            }
        }
        _ => {
            return Err(ApiErr::new(ErrorCode::BadRequest, "send either `instances` or `by`")
                .hint("{\"instances\": 4} runs 4 workers, {\"by\": -1} one fewer than now"));
        }
    }
    Ok(Json(app.status()))
}

async fn signal(
    State(st): State<Arc<ApiState>>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<SignalOutcome>, ApiErr> {
    let Some(req) = body::<SignalRequest>(&bytes)? else {
        return Err(ApiErr::new(ErrorCode::BadRequest, "missing body").hint("send {\"signal\": \"SIGUSR1\"}"));
    };
    let signal = crate::config::SignalName::try_from(req.signal).map_err(|e| {
        ApiErr::new(ErrorCode::BadRequest, e.to_string()).hint("`kill -l` lists the names this host knows")
    })?;
    let app = st.supervisor.app(&app)?;
    let workers = app.signal(signal.0).into_iter().map(|(id, pid)| SignalledWorker { id, pid }).collect();
    Ok(Json(SignalOutcome { app: app.name.clone(), signal: signal.0.as_str().into(), workers }))
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
    let accepted = st.deployer.request_with_env(&app, Target::Ref(git_ref), Trigger::Api, &by, req.env)?;
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
    let accepted = st.deployer.request(&app, Target::Rollback(req.release), Trigger::Rollback, &by)?;
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
    let by = Requester::token(&caller.0, Some(Trigger::Check.as_str().into()));
    Ok(Json(match st.deployer.check(&app, Trigger::Check, &by, None).await? {
        crate::deploy::poll::Checked::Queued { sha, id } => CheckOutcome { app, sha, queued: Some(id) },
        crate::deploy::poll::Checked::Unchanged { sha } => CheckOutcome { app, sha, queued: None },
    }))
}
