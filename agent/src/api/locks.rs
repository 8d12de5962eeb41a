//! `POST /v1/locks/{name}` (take or renew a lease) and `DELETE /v1/locks/{name}?lease=` (give it
//! back): the push lock of the CLI, kept by the first host of an environment.

use super::{ApiErr, ApiState, body};
use crate::store::now_ms;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use deployer_wire::{ErrorCode, LockRequest, LockStatus};
use serde::Deserialize;
use std::sync::Arc;

pub async fn acquire(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<LockStatus>, ApiErr> {
    let Some(req) = body::<LockRequest>(&bytes)? else {
        return Err(ApiErr::new(ErrorCode::BadRequest, "missing body").hint("send {\"holder\", \"lease\", \"ttl_ms\"}"));
    };
    let status = st.locks.acquire(&name, &req.holder, &req.lease, req.ttl_ms, now_ms())?;
    tracing::info!(lock = %name, holder = %status.holder, acquired = status.acquired, "lock requested");
    Ok(Json(status))
}

#[derive(Deserialize)]
pub struct ReleaseQuery {
    lease: String,
}

pub async fn release(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<ReleaseQuery>,
) -> Result<StatusCode, ApiErr> {
    st.locks.release(&name, &q.lease, now_ms())?;
    Ok(StatusCode::NO_CONTENT)
}
