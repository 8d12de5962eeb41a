//! Presence: this host's key in `deployer_<env>_hosts`, written with a TTL and renewed, holding
//! its labels, its apps with their live commit, and its last fleet deploy. A host that stops
//! renewing (killed, cut off) disappears from `deployer status` when the TTL runs out.

use super::Member;
use deployer_fleet::EngineError;
use deployer_fleet::proto::{PRESENCE_TTL, Presence, now_ms};
use std::sync::Arc;

/// Renew every third of the TTL: two renewals may be lost before the host counts as gone.
pub(super) async fn run(member: Arc<Member>) {
    let mut down = false;
    loop {
        match (renew(&member).await, down) {
            (Ok(_), true) => {
                tracing::info!(host = member.host, "fleet: the engine answers again");
                down = false;
            }
            (Err(e), false) => {
                tracing::warn!(error = %e, "fleet: cannot renew presence (engine down?); the apps keep serving");
                down = true;
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(PRESENCE_TTL / 3) => {}
            () = member.stop.cancelled() => return,
        }
    }
}

/// Write this host's presence now, with a fresh TTL.
pub(super) async fn renew(member: &Member) -> Result<(), EngineError> {
    let presence = current(member);
    member.engine.write(&member.engine.hosts, &member.host, &presence, None, Some(PRESENCE_TTL)).await.map(|_| ())
}

/// Another agent's presence under this host's name, if one is there (a run of this agent that
/// was killed shows as another too, until its TTL lapses).
pub(super) async fn other_holder(member: &Member) -> Result<Option<Presence>, EngineError> {
    let engine = &member.engine;
    Ok(engine
        .read::<Presence>(&engine.hosts, &member.host)
        .await?
        .map(|(p, _)| p)
        .filter(|p| p.instance != member.instance))
}

/// A stopping agent leaves at once instead of after the TTL.
pub(super) async fn leave(member: &Member) {
    if let Err(e) = member.engine.hosts.delete(&member.host).await {
        tracing::warn!(error = %e, "fleet: cannot remove presence; it expires by itself");
    }
}

fn current(member: &Member) -> Presence {
    Presence {
        host: member.host.clone(),
        labels: member.labels.clone(),
        apps: member.node.presence(),
        last_deploy: member.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        agent: env!("CARGO_PKG_VERSION").to_string(),
        instance: member.instance.clone(),
        at_ms: now_ms(),
    }
}
