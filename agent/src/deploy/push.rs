//! Signed pushes from a git host: which deliveries queue a deploy. The webhook handler
//! (`api/webhooks.rs`) verifies the signature and reads the payload; everything it then decides
//! about deploying is here, through [`Deployer::receive_push`].
//!
//! A push only says "this branch moved": the deploy queued is "the branch head", which the
//! pipeline fetches itself. Delivery ids are not signed, so a captured delivery can be replayed
//! under a new id: a push whose commit is already live or being deployed queues nothing, and a
//! body seen before under another id queues nothing either. A delivery that could not be acted
//! on is forgotten again, so the host's retry of it goes through.

use super::{DeployError, Deployer, Requester, Target};
use crate::store::Store;
use deployer_wire::DeployAccepted;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a signed push led to ([`Deployer::receive_push`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// A deploy of the branch head was queued.
    Queued(DeployAccepted),
    /// A deploy queued or running for the same commit takes the push; `message` says which.
    Joined(DeployAccepted),
    /// The pushed commit is what the app runs: nothing to do.
    AlreadyLive { release: String },
    /// The same signed body came before under another delivery id, and its commit is neither
    /// live nor being deployed: a replay, not a push.
    Replayed,
    /// This delivery id was handled before (the host redelivered it).
    Duplicate,
}

/// One verified push delivery.
#[derive(Debug, Clone)]
pub struct PushDelivery<'a> {
    /// The host's delivery id (not signed).
    pub id: &'a str,
    /// The signed body.
    pub body: &'a [u8],
    /// The commit the payload says the branch is at: a hint only, never deployed as such.
    pub after: &'a str,
    /// Who pushed, as the payload says.
    pub by: Requester,
}

impl Deployer {
    /// Act on a verified push to `app`'s branch: remember the delivery, tell a replay from a
    /// push, and queue (or join) a deploy of the branch head.
    pub fn receive_push(self: &Arc<Self>, app: &str, delivery: PushDelivery<'_>) -> Result<Pushed, DeployError> {
        admit(&self.store, app, delivery.id, delivery.body, |replayed| {
            self.push(app, delivery.after, replayed, &delivery.by)
        })
    }

    /// The branch is now at `after`. A push whose commit is already live, or is what a queued or
    /// running deploy of the app deploys, makes no new deploy (a delivery replayed under a new
    /// id costs a lookup and no deploy row or report). `replayed`: this exact signed body was
    /// handled before, under another delivery id; then it queues nothing either (an older push
    /// replayed after a newer one, or after a rollback, must not redeploy the branch).
    fn push(self: &Arc<Self>, app: &str, after: &str, replayed: bool, by: &Requester) -> Result<Pushed, DeployError> {
        let (a, git) = self.git_app(app)?;
        if let Some(release) = self.live_release_for(&a, &Target::Ref(after.to_string()))? {
            return Ok(Pushed::AlreadyLive { release });
        }
        let branch = Target::Ref(git.branch);
        if let Some(joined) = self.join_queued(app, &branch, &None) {
            return Ok(Pushed::Joined(joined));
        }
        if let Some(joined) = self.join_running(app, after)? {
            return Ok(Pushed::Joined(joined));
        }
        if replayed {
            return Ok(Pushed::Replayed);
        }
        self.request(app, branch, deployer_wire::Trigger::Webhook, by).map(Pushed::Queued)
    }
}

/// The delivery bookkeeping around `push` (called with whether the body is a replay): a
/// delivery id seen before is a [`Pushed::Duplicate`]; the body's digest is remembered too, so
/// the same body under a new id is a replay; what `push` could not act on is forgotten again.
fn admit(
    store: &Store,
    app: &str,
    delivery: &str,
    body: &[u8],
    push: impl FnOnce(bool) -> Result<Pushed, DeployError>,
) -> Result<Pushed, DeployError> {
    if !store.remember_delivery(app, delivery)? {
        return Ok(Pushed::Duplicate);
    }
    // The body is what is signed: the same body under a new delivery id is a replay.
    let body_id = format!("body:sha256:{}", hex::encode(Sha256::digest(body)));
    let replayed = match store.remember_delivery(app, &body_id) {
        Ok(new) => !new,
        Err(e) => {
            forget(store, app, delivery);
            return Err(e.into());
        }
    };
    push(replayed).inspect_err(|_| {
        // Not acted on: let the host's retry through.
        forget(store, app, delivery);
        if !replayed {
            forget(store, app, &body_id);
        }
    })
}

fn forget(store: &Store, app: &str, delivery: &str) {
    if let Err(e) = store.forget_delivery(app, delivery) {
        tracing::warn!(
            app,
            delivery,
            error = %e,
            "cannot forget a delivery that was not acted on: the host's retry of it will be ignored"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deployer_wire::DeployState;
    use std::cell::Cell;

    fn queued(id: u64) -> Pushed {
        Pushed::Queued(DeployAccepted { id, app: "web".into(), state: DeployState::Queued, message: None })
    }

    /// `admit` with a push that records whether it was called and with which `replayed`.
    fn deliver(
        store: &Store,
        id: &str,
        body: &str,
        answer: Result<Pushed, ()>,
    ) -> (Result<Pushed, String>, Option<bool>) {
        let seen = Cell::new(None);
        let out = admit(store, "web", id, body.as_bytes(), |replayed| {
            seen.set(Some(replayed));
            answer.map_err(|()| DeployError::NotFromGit("web".into()))
        });
        (out.map_err(|e| e.to_string()), seen.get())
    }

    #[test]
    fn a_delivery_is_acted_on_once_and_the_same_body_again_is_a_replay() {
        let s = Store::in_memory();
        assert_eq!(deliver(&s, "d1", "push a", Ok(queued(1))), (Ok(queued(1)), Some(false)));
        assert_eq!(deliver(&s, "d1", "push a", Ok(queued(2))), (Ok(Pushed::Duplicate), None), "a redelivery");
        let (_, replayed) = deliver(&s, "d2", "push a", Ok(Pushed::Replayed));
        assert_eq!(replayed, Some(true), "the same signed body under a new id");
        assert_eq!(deliver(&s, "d3", "push b", Ok(queued(3))), (Ok(queued(3)), Some(false)));
        assert_eq!(deliver(&s, "d1", "push a", Ok(queued(4))).1, None, "per app, ids stay remembered");
        assert_eq!(
            admit(&s, "api", "d1", b"push a", |r| Ok(if r { Pushed::Replayed } else { queued(5) })).ok(),
            Some(queued(5))
        );
    }

    #[test]
    fn a_delivery_that_could_not_be_acted_on_is_forgotten_so_a_retry_goes_through() {
        let s = Store::in_memory();
        let (out, replayed) = deliver(&s, "d1", "push a", Err(()));
        assert!(out.is_err() && replayed == Some(false));
        assert_eq!(
            deliver(&s, "d1", "push a", Ok(queued(1))),
            (Ok(queued(1)), Some(false)),
            "neither id nor body kept"
        );
        // A replayed body that fails keeps the body remembered (it was acted on before).
        let (_, replayed) = deliver(&s, "d2", "push a", Err(()));
        assert_eq!(replayed, Some(true));
        assert_eq!(deliver(&s, "d2", "push a", Ok(Pushed::Replayed)).1, Some(true));
    }
}
