//! GitLab: a shared token in `X-Gitlab-Token`, events in `X-Gitlab-Event`.

use hooks::{IgnoreReason, Outcome, PayloadError, Provider, Rejection};
use serde_json::json;

use crate::support::{BRANCH, Delivery, SECRET, ZERO, fixture, set};

#[test]
fn push_hook_is_a_push() {
    let push = Delivery::gitlab("Push Hook", &fixture("gitlab_push")).push();

    assert_eq!(push.provider, Provider::GitLab);
    // `Idempotency-Key` survives retries, so it wins over the per-attempt UUID.
    assert_eq!(push.delivery, "908a6d9e-45fd-46c8-97e6-c4f350f219dd");
    assert_eq!(push.repo.as_deref(), Some("acme/web/shop"));
    assert_eq!(push.git_ref, "refs/heads/main");
    assert_eq!(push.branch, "main");
    assert_eq!(push.before.unwrap().as_str(), "95790bf891e76fee5e1747ab589903a6a1f80f22");
    assert_eq!(push.after.as_str(), "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(push.pusher.as_deref(), Some("jdoe"));
    assert_eq!(push.commits, 2);
}

#[test]
fn event_uuid_is_the_delivery_id_on_older_gitlab() {
    let push = Delivery::gitlab("Push Hook", &fixture("gitlab_push")).without("Idempotency-Key").push();
    assert_eq!(push.delivery, "13792a34-cac6-4fda-95a8-c58e00a3954e");
}

#[test]
fn total_commits_count_wins_over_the_truncated_list() {
    let mut body = fixture("gitlab_push");
    set(&mut body, "total_commits_count", json!(57));
    assert_eq!(Delivery::gitlab("Push Hook", &body).push().commits, 57);
}

#[test]
fn wrong_token_is_unauthorized() {
    for token in [&b"s3cret-shared-with-the-hosT"[..], b"s3cret", b"s3cret-shared-with-the-host-and-more", b"x"] {
        let delivery = Delivery::gitlab("Push Hook", &fixture("gitlab_push"))
            .without("X-Gitlab-Token")
            .header("X-Gitlab-Token", token);
        let rejection = delivery.rejected();
        assert_eq!(rejection, Rejection::BadSignature { header: "X-Gitlab-Token".into() });
        assert!(rejection.is_unauthorized());
    }
}

#[test]
fn missing_token_is_unauthorized() {
    let delivery = Delivery::gitlab("Push Hook", &fixture("gitlab_push")).without("X-Gitlab-Token");
    assert_eq!(delivery.rejected(), Rejection::MissingSignature { header: "X-Gitlab-Token".into() });
}

#[test]
fn hmac_of_the_body_is_not_a_gitlab_token() {
    let delivery = Delivery::gitlab("Push Hook", &fixture("gitlab_push"));
    let hmac = Provider::Gitea.sign(SECRET, &delivery.body).1;
    let delivery = delivery.without("X-Gitlab-Token").header("X-Gitlab-Token", hmac);
    assert!(matches!(delivery.rejected(), Rejection::BadSignature { .. }));
}

#[test]
fn tag_push_hook_is_ignored() {
    let mut body = fixture("gitlab_push");
    set(&mut body, "object_kind", json!("tag_push"));
    set(&mut body, "event_name", json!("tag_push"));
    set(&mut body, "ref", json!("refs/tags/v2.0.0"));
    let (reason, _) = Delivery::gitlab("Tag Push Hook", &body).ignored();
    assert_eq!(reason, IgnoreReason::TagPush { tag: "v2.0.0".into() });
}

#[test]
fn branch_deletion_is_ignored() {
    let mut body = fixture("gitlab_push");
    set(&mut body, "after", json!(ZERO));
    set(&mut body, "checkout_sha", json!(null));
    set(&mut body, "commits", json!([]));
    set(&mut body, "total_commits_count", json!(0));
    let (reason, _) = Delivery::gitlab("Push Hook", &body).ignored();
    assert_eq!(reason, IgnoreReason::BranchDeleted { branch: "main".into() });
}

#[test]
fn push_to_another_branch_is_ignored_and_named() {
    let mut body = fixture("gitlab_push");
    set(&mut body, "ref", json!("refs/heads/staging"));
    let (reason, text) = Delivery::gitlab("Push Hook", &body).ignored();
    assert_eq!(reason, IgnoreReason::OtherBranch { branch: "staging".into(), watching: BRANCH.into() });
    assert!(text.contains("`staging`"), "{text}");
}

#[test]
fn other_hooks_are_ignored() {
    let body = json!({"object_kind": "merge_request", "object_attributes": {"iid": 7}});
    let (reason, _) = Delivery::gitlab("Merge Request Hook", &body).ignored();
    assert_eq!(reason, IgnoreReason::UnsupportedEvent { event: "Merge Request Hook".into() });
}

#[test]
fn push_hook_with_another_object_kind_is_malformed() {
    let mut body = fixture("gitlab_push");
    set(&mut body, "object_kind", json!("merge_request"));
    let rejection = Delivery::gitlab("Push Hook", &body).rejected();
    assert!(
        matches!(rejection, Rejection::MalformedPayload(PayloadError::Invalid { field: "object_kind", .. })),
        "{rejection:?}"
    );
}

#[test]
fn test_delivery_from_the_settings_page_is_a_push() {
    // GitLab's "Test > Push events" sends an ordinary push payload for the latest commit.
    let outcome = Delivery::gitlab("Push Hook", &fixture("gitlab_push")).receive().unwrap();
    assert!(matches!(outcome, Outcome::Push(_)));
}

#[test]
fn spaces_around_the_configured_token_do_not_matter() {
    // HTTP strips them from the header, so a secret pasted with a trailing space must still
    // match what GitLab sends.
    let delivery = Delivery::gitlab("Push Hook", &fixture("gitlab_push"));
    assert!(matches!(delivery.receive_with(b"s3cret-shared-with-the-host ", BRANCH), Ok(Outcome::Push(_))));
    assert_eq!(delivery.receive_with(b" \t", BRANCH), Err(Rejection::NoSecret));
}
