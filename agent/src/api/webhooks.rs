//! `POST /hooks/{app}`: signed push webhooks from the git host. The signature is the
//! authentication (no bearer token); [`hooks`] verifies and parses, [`Deployer::receive_push`]
//! decides what a push deploys (duplicates, replays, joins: `deploy/push.rs`), and this handler
//! answers. The payload's sha is logged, never deployed. The answer comes before any git work:
//! the deploy runs after it, through the same queue as every other trigger.
//!
//! [`Deployer::receive_push`]: crate::deploy::Deployer::receive_push

use super::{ApiErr, ApiState};
use crate::deploy::{PushDelivery, Pushed, Requester};
use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use deployer_wire::{ErrorCode, HookAnswer};
use hooks::{Headers, IgnoreReason, Outcome};
use std::net::SocketAddr;
use std::sync::Arc;

type Answer = Result<(StatusCode, Json<HookAnswer>), ApiErr>;

pub async fn receive(
    State(st): State<Arc<ApiState>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    // The peer address is known on plain TCP; the TLS listener does not provide it.
    let peer = peer.map_or_else(|| "-".to_string(), |Extension(ConnectInfo(a))| a.to_string());
    let span = tracing::info_span!("webhook", app = %app, %peer);
    let _enter = span.enter();
    let not_found = || {
        ApiErr::new(ErrorCode::NotFound, format!("no webhook for app `{app}`"))
            .hint("add `webhook: { provider: github, secret_env: NAME }` to the app in the agent's config")
    };
    let Ok(a) = st.supervisor.app(&app) else { return Err(not_found()) };
    let cfg = a.config();
    // `webhook` is only accepted on an app deployed from git.
    let (Some(hook), Some(git)) = (cfg.webhook.clone(), cfg.source.git()) else { return Err(not_found()) };
    let provider = hook.resolved_provider().map_err(ApiErr::internal)?;
    let secret = hook.secret().unwrap_or_default();
    let fields: Headers<'_> =
        headers.iter().fold(Headers::new(), |h, (name, value)| h.with(name.as_str(), value.as_bytes()));

    let outcome = match hooks::receive(&provider, secret.as_bytes(), &fields, &body, &git.branch) {
        Ok(outcome) => outcome,
        Err(rejection) => {
            // The rejection's words quote no header value and no body: safe to log and to answer.
            tracing::warn!(provider = %provider, bytes = body.len(), reason = %rejection, "webhook delivery refused");
            let err = ApiErr::from(rejection);
            st.metrics.webhook_rejected(&app, err.code().as_str());
            return Err(err);
        }
    };
    let delivery = outcome.delivery().to_string();
    let ignored = |reason: String| {
        tracing::info!(delivery = %delivery, %reason, "webhook delivery ignored");
        Ok((
            StatusCode::ACCEPTED,
            Json(HookAnswer {
                app: app.clone(),
                delivery: Some(delivery.clone()),
                deploy: None,
                message: None,
                ignored: Some(reason),
            }),
        ))
    };
    let push = match outcome {
        Outcome::Push(push) => push,
        Outcome::Ping { .. } => return ignored("ping: the hook works; pushes to the branch will deploy".into()),
        Outcome::Ignored { reason, .. } => return ignored(reason.to_string()),
    };
    let who = push.pusher.clone().unwrap_or_else(|| "webhook".into());
    let after = push.after.as_str();
    let by = Requester::named(Some(&who));
    let pushed = st.deployer.receive_push(&app, PushDelivery { id: &delivery, body: &body, after, by })?;
    let short = &after[..7.min(after.len())];
    let (accepted, message) = match pushed {
        Pushed::Queued(accepted) => (accepted, None),
        Pushed::Joined(accepted) => {
            let message = accepted.message.clone();
            (accepted, message)
        }
        Pushed::AlreadyLive { release } => {
            return ignored(format!("{short} is already live (release {release}): nothing to deploy"));
        }
        Pushed::Duplicate => {
            return ignored(IgnoreReason::DuplicateDelivery { delivery: delivery.clone() }.to_string());
        }
        Pushed::Replayed => {
            return ignored(format!(
                "this signed push (of {short}) was already received under another delivery id: a replay, not deployed"
            ));
        }
    };
    tracing::info!(
        delivery = %delivery,
        deploy = accepted.id,
        pusher = %who,
        payload_after = %after,
        commits = push.commits,
        joined = message.is_some(),
        "push webhook: deploying the branch head as fetched (the payload's sha is a hint only)"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAnswer { app, delivery: Some(delivery), deploy: Some(accepted.id), message, ignored: None }),
    ))
}
