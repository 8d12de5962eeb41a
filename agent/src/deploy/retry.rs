//! What the automatic triggers (the startup deploy, `poll`, `cron`) remember across an agent
//! restart, so that a commit that failed, or that took the agent down, is not deployed again by
//! itself in a loop. A person (API, CLI) or a new push still deploys anything.
//!
//! A poller remembers the last head it saw and queues only a new one; a restarted agent used to
//! forget it, and retried the failed head once per start. If that deploy itself killed the agent,
//! every start died again on it (the deep tree of issue 9 did), and with it every app's workers.

use super::DeployState;
use super::Deployer;
use crate::source::is_sha_like;
use deployer_wire::Deploy;

impl Deployer {
    /// The commit the app's newest deploy from its branch was about, for a poller to start from
    /// as if it had seen it itself: it queues only a head different from this one. An
    /// `interrupted` deploy (the agent stopped during it) is retried once, unless the one before it
    /// was interrupted on the same commit too. Rollbacks are skipped: the commit rolled back from
    /// stays the one last tried.
    pub(super) fn last_tried(&self, app: &str) -> Option<String> {
        let recent = self.branch_deploys(app);
        let newest = recent.first()?;
        if interrupted(newest) && !crashed_twice(&recent) {
            return None;
        }
        commit_of(newest)
    }

    /// The ref of the app's two newest deploys when both were `interrupted` on it: the agent
    /// stopped twice in a row while deploying it, most likely because of it. The startup deploy
    /// then does not run it a third time.
    pub(super) fn crash_looped(&self, app: &str) -> Option<String> {
        let recent = self.branch_deploys(app);
        crashed_twice(&recent).then(|| recent[0].git_ref.clone())
    }

    /// The app's newest finished deploys of a branch or a commit (not rollbacks), newest first.
    fn branch_deploys(&self, app: &str) -> Vec<Deploy> {
        let recent = match self.store.history(app, 20) {
            Ok(recent) => recent,
            Err(e) => {
                // Without the history nothing is known tried: a head is deployed as new.
                tracing::error!(app, error = %e, "cannot read the app's recent deploys");
                Vec::new()
            }
        };
        recent.into_iter().filter(|d| d.is_final() && !d.git_ref.starts_with("rollback:")).collect()
    }
}

/// Whether the agent stopped during `d` (`Store::interrupt_unfinished` marked it).
fn interrupted(d: &Deploy) -> bool {
    d.state == DeployState::Interrupted.as_str()
}

/// Whether the two newest of `recent` were both interrupted on the same ref (and commit, if known).
fn crashed_twice(recent: &[Deploy]) -> bool {
    let [newest, before, ..] = recent else { return false };
    interrupted(newest)
        && interrupted(before)
        && newest.git_ref == before.git_ref
        && (newest.sha.is_none() || before.sha.is_none() || newest.sha == before.sha)
}

/// The commit a deploy was about: its resolved sha, or the sha it was asked for.
fn commit_of(d: &Deploy) -> Option<String> {
    d.sha.clone().or_else(|| is_sha_like(&d.git_ref).then(|| d.git_ref.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(git_ref: &str, sha: Option<&str>, state: &str) -> Deploy {
        Deploy {
            id: 1,
            app: "web".into(),
            git_ref: git_ref.into(),
            sha: sha.map(String::from),
            trigger: deployer_wire::Trigger::Poll,
            state: state.parse().expect("a deploy state"),
            who: None,
            token: None,
            release: None,
            queued_at_ms: 0,
            finished_at_ms: Some(1),
            message: None,
            events: Vec::new(),
            output_tail: Vec::new(),
        }
    }

    #[test]
    fn two_interrupts_in_a_row_on_one_commit_are_a_crash_loop() {
        let sha = "a".repeat(40);
        let other = "b".repeat(40);
        let int = |r, s| deploy(r, s, "interrupted");
        assert!(crashed_twice(&[int("main", Some(&sha)), int("main", Some(&sha))]));
        assert!(crashed_twice(&[int("main", None), int("main", Some(&sha))]), "killed before the sha was known");
        assert!(!crashed_twice(&[int("main", Some(&sha)), int("main", Some(&other))]), "the branch moved");
        assert!(!crashed_twice(&[int("main", Some(&sha)), deploy("main", Some(&sha), "failed")]));
        assert!(!crashed_twice(&[int("main", Some(&sha))]), "one stop is an ordinary restart");
    }

    #[test]
    fn the_commit_of_a_deploy_is_its_sha_or_the_sha_it_asked_for() {
        let sha = "c".repeat(40);
        assert_eq!(commit_of(&deploy("main", Some(&sha), "failed")), Some(sha.clone()));
        assert_eq!(commit_of(&deploy(&sha, None, "failed")), Some(sha.clone()), "a poll deploy names its sha");
        assert_eq!(commit_of(&deploy("main", None, "failed")), None);
    }
}
