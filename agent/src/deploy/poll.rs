//! Pull mode: look up the branch head on the remote every `poll` interval or at each `cron` tick
//! (an `ls-remote`, no fetch) and queue a deploy when it moved. A git server that is down is
//! retried at the next tick and logged once per outage; it never stops the agent.

use super::{Deployer, Target};
pub use crate::config::Schedule;
use crate::source::Source;
use deployer_wire::Trigger;
use std::sync::Arc;
use std::time::Duration;

/// How long until the next look of `schedule`.
pub(crate) fn wait(schedule: &Schedule) -> Duration {
    match schedule {
        Schedule::Every(every) => *every + every.mul_f64(0.1 * pseudo_random()),
        // A schedule with no next tick (`0 0 30 2 *`) looks once a day, to stay alive.
        Schedule::Cron(c) => c.until_next(chrono::Utc::now()).unwrap_or(Duration::from_secs(86_400)),
    }
}

/// Why a check found nothing: the app (unknown, not from git, no repo) or the remote.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    App(#[from] super::DeployError),
    #[error(transparent)]
    Git(#[from] crate::source::SourceError),
    #[error("the branch lookup stopped unexpectedly: {0}")]
    Crashed(#[from] tokio::task::JoinError),
}

/// What one check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The head moved: a deploy was queued.
    Queued { sha: String, id: u64 },
    /// The head is what is live or already queued.
    Unchanged { sha: String },
}

impl Deployer {
    /// Look up the branch head now and deploy it (asked `by` someone) if it is new. `last` is the
    /// head seen last time.
    pub async fn check(
        self: &Arc<Self>,
        app: &str,
        trigger: Trigger,
        by: &super::Requester,
        last: Option<&str>,
    ) -> Result<Checked, CheckError> {
        let a = self.supervisor.app(app).map_err(super::DeployError::from)?;
        let sha = self.remote_head(app).await?;
        // A failed read is an error of the check, not "nothing live": that would deploy again.
        let live = match a.release() {
            Some(r) => self
                .store
                .releases(app)
                .map_err(super::DeployError::from)?
                .into_iter()
                .find(|row| row.name == r.name)
                .map(|row| row.sha),
            None => None,
        };
        if live.as_deref() == Some(sha.as_str()) || last == Some(sha.as_str()) {
            return Ok(Checked::Unchanged { sha });
        }
        let accepted = self.request(app, Target::Ref(sha.clone()), trigger, by)?;
        Ok(Checked::Queued { sha, id: accepted.id })
    }

    /// The head of `app`'s branch on its remote, looked up now (`ls-remote`, no fetch).
    pub async fn remote_head(&self, app: &str) -> Result<String, CheckError> {
        let (_, git) = self.git_app(app)?;
        let (url, branch, auth) = (git.repo.clone(), git.branch.clone(), super::pipeline::git_auth(&git));
        let cache = super::release::AppDir::new(git.dir).repo();
        Ok(tokio::task::spawn_blocking(move || Source::open(&url, &branch, auth, &cache)?.remote_head()).await??)
    }

    /// The pull loop of one app, until `stop` (the agent stops, or the schedule changed).
    pub(super) async fn poll(
        self: Arc<Self>,
        app: String,
        schedule: Schedule,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // What the previous agent last tried, so a commit that failed (or crashed it) is not
        // queued again just because the agent restarted.
        let mut last: Option<String> = self.last_tried(&app);
        let mut down = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait(&schedule)) => {}
                _ = stop.cancelled() => return,
            }
            let by = super::Requester::named(Some(schedule.trigger().as_str()));
            match self.check(&app, schedule.trigger(), &by, last.as_deref()).await {
                Ok(found) => {
                    if down {
                        tracing::info!(app, "the git remote answers again");
                        down = false;
                    }
                    let sha = match found {
                        Checked::Queued { sha, id } => {
                            tracing::info!(app, id, sha = %&sha[..7.min(sha.len())], "the branch moved: deploy queued");
                            sha
                        }
                        Checked::Unchanged { sha } => sha,
                    };
                    last = Some(sha);
                }
                Err(e) if !down => {
                    tracing::warn!(
                        app,
                        error = %e,
                        "cannot look up the branch head; retrying every tick (logged once per outage)"
                    );
                    down = true;
                }
                // Each later failed tick only at debug level: a long outage is one warning.
                Err(e) => tracing::debug!(app, error = %e, "the git remote still does not answer"),
            }
        }
    }
}

/// A number in [0, 1) that differs between ticks and agents, for jitter only.
fn pseudo_random() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mixed = (nanos ^ std::process::id().rotate_left(16)).wrapping_mul(2654435761);
    f64::from(mixed % 1000) / 1000.0
}
