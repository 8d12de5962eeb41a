//! Generic senders: an HMAC-SHA256 of the body in a header named in config.

use hooks::{IgnoreReason, PayloadError, Provider, Rejection};
use serde_json::json;

use crate::support::{Delivery, SECRET, ZERO, fixture, set};

fn provider() -> Provider {
    Provider::Generic { header: "X-Signature".into() }
}

fn minimal() -> serde_json::Value {
    json!({"ref": "refs/heads/main", "after": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"})
}

#[test]
fn signature_in_the_configured_header_works() {
    let push = Delivery::json(provider(), &minimal()).signed(SECRET).push();
    assert_eq!(push.provider, provider());
    assert_eq!(push.after.as_str(), "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3");
    assert_eq!((push.repo, push.pusher, push.before, push.commits), (None, None, None, 0));
}

#[test]
fn configured_header_is_case_insensitive_and_may_carry_the_prefix() {
    let delivery = Delivery::json(provider(), &minimal());
    let hex = String::from_utf8(Provider::Gitea.sign(SECRET, &delivery.body).1).unwrap();
    delivery.clone().header("x-signature", &hex).push();
    delivery.header("X-SIGNATURE", format!("sha256={hex}")).push();
}

#[test]
fn signature_in_another_header_is_missing() {
    let delivery = Delivery::json(provider(), &minimal());
    let (name, value) = Provider::GitHub.sign(SECRET, &delivery.body);
    let rejection = delivery.header(name, value).rejected();
    assert_eq!(rejection, Rejection::MissingSignature { header: "X-Signature".into() });
}

#[test]
fn wrong_secret_is_unauthorized() {
    let rejection = Delivery::json(provider(), &minimal()).signed(b"nope").rejected();
    assert_eq!(rejection, Rejection::BadSignature { header: "X-Signature".into() });
}

#[test]
fn github_shaped_body_is_read_in_full() {
    let push = Delivery::json(provider(), &fixture("github_push")).signed(SECRET).push();
    assert_eq!(push.repo.as_deref(), Some("acme/shop"));
    assert_eq!(push.pusher.as_deref(), Some("octocat"));
    assert_eq!(push.commits, 2);
}

#[test]
fn delivery_id_comes_from_x_delivery_id_or_the_body() {
    let delivery = Delivery::json(provider(), &minimal()).signed(SECRET);
    assert!(delivery.push().delivery.starts_with("sha256:"));
    assert_eq!(delivery.header("X-Delivery-Id", "ci-run-4711").push().delivery, "ci-run-4711");
}

#[test]
fn deletion_and_tags_are_ignored() {
    let mut deleted = minimal();
    set(&mut deleted, "after", json!(ZERO));
    let (reason, _) = Delivery::json(provider(), &deleted).signed(SECRET).ignored();
    assert_eq!(reason, IgnoreReason::BranchDeleted { branch: "main".into() });

    let mut tag = minimal();
    set(&mut tag, "ref", json!("refs/tags/nightly"));
    let (reason, _) = Delivery::json(provider(), &tag).signed(SECRET).ignored();
    assert_eq!(reason, IgnoreReason::TagPush { tag: "nightly".into() });
}

#[test]
fn missing_ref_is_named() {
    let body = json!({"after": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"});
    let rejection = Delivery::json(provider(), &body).signed(SECRET).rejected();
    assert_eq!(rejection, Rejection::MalformedPayload(PayloadError::Missing("ref")));
}
