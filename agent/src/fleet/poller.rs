//! One source per environment: of the agents of an environment, the one holding the app's
//! poller lease (`<app>.poller` in the rollout bucket, created with a TTL and renewed) looks up
//! the branch head on the app's `poll`/`cron` schedule and, when it moved, writes it as the
//! desired state (by compare-and-set, with the last push's rollout settings); every host then
//! deploys it through the rollout. The others never ask the git server: one poller per
//! environment instead of one per host. A leader that dies loses the lease after its TTL.

use super::Member;
use crate::config::Schedule;
use deployer_fleet::Written;
use deployer_fleet::proto::{self, Desired, PRESENCE_TTL, Rollout, Slot, now_ms};
use std::sync::Arc;

pub(super) async fn run(member: Arc<Member>, app: String, schedule: Schedule) {
    let engine = &member.engine;
    let key = proto::poller_key(&app);
    let lease = || Slot { host: member.host.clone(), at_ms: now_ms() };
    // Follower: try for the lease every third of its TTL.
    let mut rev = loop {
        if let Ok(Written::Ok(rev)) = engine.create(&engine.rollout, &key, &lease(), Some(PRESENCE_TTL)).await {
            break rev;
        }
        tokio::select! {
            () = tokio::time::sleep(PRESENCE_TTL / 3) => {}
            () = member.stop.cancelled() => return,
        }
    };
    tracing::info!(app, schedule = %schedule.describe(), "fleet: this host pulls git for the environment");
    let mut next_look = tokio::time::Instant::now() + crate::deploy::poll::wait(&schedule);
    let mut renew = tokio::time::Instant::now() + PRESENCE_TTL / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_look.min(renew)) => {}
            () = member.stop.cancelled() => {
                // Let another host take over at once.
                if let Err(e) = engine.release(&engine.rollout, &key, rev).await {
                    tracing::debug!(app, error = %e, "fleet: the poller lease expires by itself");
                }
                return;
            }
        }
        if !member.node.has_app(&app) {
            if let Err(e) = engine.release(&engine.rollout, &key, rev).await {
                tracing::debug!(app, error = %e, "fleet: the poller lease expires by itself");
            }
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= renew {
            match engine.write(&engine.rollout, &key, &lease(), Some(rev), Some(PRESENCE_TTL)).await {
                Ok(Written::Ok(r)) => rev = r,
                Ok(Written::Conflict) => {
                    tracing::warn!(app, "fleet: lost the poller lease; another host pulls now");
                    return Box::pin(run(member.clone(), app, schedule)).await;
                }
                Err(e) => tracing::warn!(app, error = %e, "fleet: cannot renew the poller lease"),
            }
            renew = now + PRESENCE_TTL / 3;
        }
        if now >= next_look {
            if let Err(e) = look(&member, &app).await {
                tracing::warn!(app, error = %e, "fleet: cannot publish the branch head");
            }
            next_look = now + crate::deploy::poll::wait(&schedule);
        }
    }
}

/// Look up the head; publish it when it is not the desired commit yet.
async fn look(member: &Member, app: &str) -> Result<(), String> {
    let engine = &member.engine;
    let head = member.node.remote_head(app).await?;
    let current = engine.read::<Desired>(&engine.desired, app).await.map_err(|e| e.to_string())?;
    if current.as_ref().is_some_and(|(d, _)| d.sha == head) {
        return Ok(());
    }
    let branch = member.node.branch(app).unwrap_or_default();
    let desired = Desired {
        sha: head.clone(),
        git_ref: branch,
        push_id: proto::new_push_id(),
        who: format!("poll:{}", member.host),
        rollout: current.as_ref().map_or_else(Rollout::default, |(d, _)| d.rollout.clone()),
        at_ms: now_ms(),
    };
    let expect = current.map_or(0, |(_, rev)| rev);
    match engine.write(&engine.desired, app, &desired, Some(expect), None).await.map_err(|e| e.to_string())? {
        Written::Ok(_) => {
            tracing::info!(app, sha = %&head[..7.min(head.len())], "fleet: the branch moved: desired state written")
        }
        // A push wrote first: it wins; the next look compares again.
        Written::Conflict => {}
    }
    Ok(())
}
