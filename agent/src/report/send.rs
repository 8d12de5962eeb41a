//! Delivering the outbox: per destination in row order, each row until the receiver answers 2xx,
//! with exponential backoff between attempts (`report_retry`). Rows survive a restart: the next
//! agent picks them up where this one stopped.

use super::{Destination, Reporter};
use crate::config::RetryConfig;
use crate::store::{OutboxRow, Store, now_ms};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows looked at per round and destination.
const BATCH: usize = 200;
/// One attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a report being sent is this agent's alone: longer than an attempt can take.
const CLAIM: Duration = Duration::from_secs(30);
/// Look at the outbox at least this often, even when nothing woke the sender.
const IDLE: Duration = Duration::from_secs(5);

/// Why an attempt failed, in words fit for the log (no secret, no body).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the destination stored in the outbox is unreadable: {0}")]
    Destination(String),
    #[error("`{0}` is not set, so the report cannot be signed")]
    NoSecret(String),
    #[error("{0}")]
    Http(String),
    #[error("the receiver answered {0}")]
    Status(u16),
}

/// The sender task. Once `flush` is cancelled (the agent stops) it sends what is due now and
/// ends; `stop` ends it at once, an attempt in flight included.
pub async fn run(store: Arc<Store>, reporter: Arc<Reporter>, flush: CancellationToken, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("deployer-agent/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: reports will not be sent");
            return;
        }
    };
    let wake = store.outbox_wake();
    loop {
        let wait = match round(&store, &client, &reporter.retry(), &stop).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the report outbox");
                IDLE
            }
        };
        if stop.is_cancelled() {
            return;
        }
        if flush.is_cancelled() {
            // Flushing: another round only while rows are due at once (a round stops at the
            // first failure per destination, whose retry is then due later).
            if wait.is_zero() {
                continue;
            }
            return;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = flush.cancelled() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Send what is due; answers how long until the next row is due.
async fn round(
    store: &Arc<Store>,
    client: &reqwest::Client,
    retry: &RetryConfig,
    shutdown: &CancellationToken,
) -> Result<Duration, crate::store::StoreError> {
    let rows = store.unsent_reports(BATCH)?;
    let full = rows.len() == BATCH;
    let mut by_destination: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
    for row in rows {
        by_destination.entry(row.destination.clone()).or_default().push(row);
    }
    let sends = by_destination.into_values().map(|rows| deliver_in_order(store, client, retry, rows, shutdown));
    let next = futures_util::future::join_all(sends).await;
    if full && next.iter().all(Option::is_none) {
        // All of a full batch went out: more rows may wait behind it, look again at once.
        return Ok(Duration::ZERO);
    }
    let now = now_ms();
    Ok(next
        .into_iter()
        .flatten()
        .map(|at| Duration::from_millis(at.saturating_sub(now)))
        .min()
        .unwrap_or(IDLE)
        .min(IDLE))
}

/// Send one destination's rows in order, stopping at the first that fails (so a receiver gets
/// `queued` before `started`). Answers when that row is due again, if one failed or is not due.
async fn deliver_in_order(
    store: &Store,
    client: &reqwest::Client,
    retry: &RetryConfig,
    rows: Vec<OutboxRow>,
    shutdown: &CancellationToken,
) -> Option<u64> {
    for row in rows {
        if shutdown.is_cancelled() {
            return None;
        }
        if row.next_at_ms > now_ms() {
            return Some(row.next_at_ms);
        }
        // During an upgrade the other agent may be sending this destination's reports: it keeps
        // them, in order, and this one looks again soon.
        let claim_until = now_ms() + CLAIM.as_millis() as u64;
        match store.claim_report(row.id, std::process::id(), claim_until) {
            Ok(true) => {}
            Ok(false) => return Some(now_ms() + 1_000),
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a report to send; trying again later");
                return Some(now_ms() + 1_000);
            }
        }
        let sent = tokio::select! {
            r = attempt(client, &row) => r,
            // Not marked sent: the next agent sends it again (delivery is at least once).
            _ = shutdown.cancelled() => return None,
        };
        match sent {
            Ok(()) => {
                if let Err(e) = store.report_sent(row.id) {
                    tracing::error!(error = %e, "cannot mark a report sent; it will be sent again");
                }
            }
            Err(e) => {
                let delay = backoff(retry, row.attempts);
                let next = now_ms() + delay.as_millis() as u64;
                if row.attempts == 0 || row.attempts % 10 == 0 {
                    tracing::warn!(
                        key = %row.idempotency_key,
                        attempts = row.attempts + 1,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %e,
                        "report not delivered; retrying"
                    );
                }
                if let Err(e) = store.report_failed(row.id, next, &e.to_string()) {
                    tracing::error!(error = %e, "cannot record a failed report attempt");
                }
                return Some(next);
            }
        }
    }
    None
}

/// The wait after `failures` failed attempts: `first`, doubling, at most `max`.
pub fn backoff(retry: &RetryConfig, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(20));
    retry.first.0.saturating_mul(factor).min(retry.max.0)
}

/// One POST of one row.
async fn attempt(client: &reqwest::Client, row: &OutboxRow) -> Result<(), SendError> {
    let destination: Destination =
        serde_json::from_str(&row.destination).map_err(|e| SendError::Destination(e.to_string()))?;
    let request = match &destination {
        Destination::Webhook { url, secret_env } => {
            let event = serde_json::from_str::<serde_json::Value>(&row.body)
                .ok()
                .and_then(|v| v["event"].as_str().map(String::from))
                .unwrap_or_default();
            let mut req = client.post(url).header("content-type", "application/json").header("x-deployer-event", event);
            if let Some(var) = secret_env {
                let secret = std::env::var(var)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| SendError::NoSecret(var.clone()))?;
                req = req
                    .header("x-deployer-signature", format!("sha256={}", sign(secret.as_bytes(), row.body.as_bytes())));
            }
            req
        }
        Destination::GithubStatus { url, token_env } => {
            let token = std::env::var(token_env)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| SendError::NoSecret(token_env.clone()))?;
            client
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .bearer_auth(token)
        }
    };
    let response = request
        .header("idempotency-key", &row.idempotency_key)
        .body(row.body.clone())
        .send()
        .await
        .map_err(|e| SendError::Http(crate::source::redact_url(&e.without_url().to_string())))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(SendError::Status(status.as_u16())) }
}

/// Hex HMAC-SHA256 of `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Dur;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryConfig { first: Dur(Duration::from_millis(100)), max: Dur(Duration::from_secs(30)) };
        assert_eq!(backoff(&r, 0), Duration::from_millis(100));
        assert_eq!(backoff(&r, 3), Duration::from_millis(800));
        assert_eq!(backoff(&r, 40), Duration::from_secs(30));
    }

    #[test]
    fn signatures_match_github_s_scheme() {
        // The same HMAC GitHub documents for its webhooks.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
