//! The push lock of an environment: a lease on its first host (`POST /v1/locks/push-<env>`),
//! renewed while the push runs and given back at its end. A CLI that dies leaves a lease that
//! lapses after [`TTL`], so an abandoned lock frees itself.

use std::time::Duration;

use deployer_wire::{LockRequest, LockStatus};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// Renewed this often, well within the TTL.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a waiting push asks again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A held lock; dropping it stops the renewals (the lease then lapses), [`PushLock::release`]
/// gives it back at once.
pub struct PushLock {
    client: Client,
    name: String,
    lease: String,
    renewing: JoinHandle<()>,
}

/// Who `acquire` is waiting for, or why it gave up.
#[derive(Debug)]
pub enum LockOutcome {
    Held(PushLock),
    /// Someone else holds it and we were told not to wait.
    Busy(LockStatus),
}

/// The lock's name for environment `env`.
pub fn name(env: &str) -> String {
    let safe: String =
        env.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    format!("push-{safe}")
}

/// Who we are, as the other pusher sees it: `ana@laptop (pid 4242)`.
pub fn holder(what: &str) -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "somewhere".into());
    format!("{user}@{host} ({what}, pid {})", std::process::id())
}

/// A lease id nobody else will choose.
fn lease_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}

impl std::fmt::Debug for PushLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushLock").field("name", &self.name).finish()
    }
}

/// Takes the lock; when busy, calls `waiting` with its holder and tries again until it is free
/// (or answers [`LockOutcome::Busy`] at once when `wait` is false).
pub async fn acquire(
    client: &Client,
    env: &str,
    holder: String,
    wait: bool,
    mut waiting: impl FnMut(&LockStatus),
) -> Result<LockOutcome, ClientError> {
    let name = name(env);
    let request = LockRequest { holder, lease: lease_id(), ttl_ms: TTL.as_millis() as u64 };
    let mut told: Option<(String, u64)> = None;
    loop {
        let status = client.lock(&name, &request).await?;
        if status.acquired {
            let renewing = tokio::spawn(renew(client.clone(), name.clone(), request.clone()));
            return Ok(LockOutcome::Held(PushLock { client: client.clone(), name, lease: request.lease, renewing }));
        }
        if !wait {
            return Ok(LockOutcome::Busy(status));
        }
        let who = (status.holder.clone(), status.since_ms);
        if told.as_ref() != Some(&who) {
            waiting(&status);
            told = Some(who);
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn renew(client: Client, name: String, request: LockRequest) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match client.lock(&name, &request).await {
            Ok(s) if s.acquired => {}
            Ok(s) => crate::output::print_warning(&format!("lost the push lock `{name}` to {}", s.holder)),
            Err(e) => crate::output::print_warning(&format!("cannot renew the push lock `{name}`: {e}")),
        }
    }
}

impl PushLock {
    /// Gives the lock back (a failure only means it lapses by itself).
    pub async fn release(self) {
        self.renewing.abort();
        if let Err(e) = self.client.unlock(&self.name, &self.lease).await {
            crate::output::print_warning(&format!(
                "cannot release the push lock `{}` (it lapses within {}s): {e}",
                self.name,
                TTL.as_secs()
            ));
        }
    }
}

impl Drop for PushLock {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}
