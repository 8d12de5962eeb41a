//! Gitea and Forgejo: `X-Gitea-Signature` (or `X-Forgejo-Signature`), plain hex.

use hooks::{IgnoreReason, Provider, Rejection};
use serde_json::json;

use crate::support::{Delivery, SECRET, fixture, set};

#[test]
fn push_is_a_push() {
    let push = Delivery::gitea("push", &fixture("gitea_push")).push();

    assert_eq!(push.provider, Provider::Gitea);
    assert_eq!(push.delivery, "7d4cf0a5-4c88-4b4d-9e3d-6f0e7fb3d2a9");
    assert_eq!(push.repo.as_deref(), Some("acme/shop"));
    assert_eq!(push.branch, "main");
    assert_eq!(push.before.unwrap().as_str(), "4c1b6e3f0a9d8e7c6b5a4f3e2d1c0b9a8f7e6d5c");
    assert_eq!(push.after.as_str(), "e3d2a9f1c8b7a6e5d4c3b2a1f0e9d8c7b6a5f4e3");
    assert_eq!(push.pusher.as_deref(), Some("alice"));
    assert_eq!(push.commits, 1);
}

#[test]
fn forgejo_headers_alone_are_enough() {
    let body = fixture("gitea_push");
    let delivery = Delivery::json(Provider::Gitea, &body)
        .header("X-Forgejo-Event", "push")
        .header("X-Forgejo-Delivery", "0b9c1d2e-forgejo");
    let (_, signature) = Provider::Gitea.sign(SECRET, &delivery.body);
    let push = delivery.header("X-Forgejo-Signature", signature).push();
    assert_eq!(push.delivery, "0b9c1d2e-forgejo");
}

#[test]
fn sha256_repositories_are_understood() {
    let mut body = fixture("gitea_push");
    let after = "5e1c309dae7f45e0f39b1bf3ac3cd9db12e7d689a3e7ef3a52b9a12b6a3b9d0c";
    set(&mut body, "before", json!("0".repeat(64)));
    set(&mut body, "after", json!(after.to_uppercase()));
    set(&mut body, "repository.object_format_name", json!("sha256"));
    let push = Delivery::gitea("push", &body).push();
    assert_eq!(push.after.as_str(), after, "kept in lowercase");
    assert!(push.before.unwrap().is_zero());
}

#[test]
fn older_gitea_without_total_commits_counts_the_list() {
    let mut body = fixture("gitea_push");
    body.as_object_mut().unwrap().remove("total_commits");
    assert_eq!(Delivery::gitea("push", &body).push().commits, 1);
}

#[test]
fn wrong_secret_is_unauthorized() {
    let delivery = Delivery::gitea("push", &fixture("gitea_push")).signed(b"wrong");
    assert_eq!(delivery.rejected(), Rejection::BadSignature { header: "X-Gitea-Signature".into() });
}

#[test]
fn github_style_prefix_is_malformed_for_gitea() {
    let delivery = Delivery::gitea("push", &fixture("gitea_push"));
    let (_, signature) = Provider::GitHub.sign(SECRET, &delivery.body);
    let delivery = delivery.without("X-Gitea-Signature").header("X-Gitea-Signature", signature);
    assert!(matches!(delivery.rejected(), Rejection::MalformedSignature { .. }));
}

#[test]
fn github_signature_header_from_gitea_is_not_read() {
    // Gitea also sends `X-Hub-Signature-256`; the `gitea` provider reads only its own.
    let delivery = Delivery::gitea("push", &fixture("gitea_push"));
    let (name, value) = Provider::GitHub.sign(SECRET, &delivery.body);
    let delivery = delivery.without("X-Gitea-Signature").header(name, value);
    assert_eq!(delivery.rejected(), Rejection::MissingSignature { header: "X-Gitea-Signature".into() });
}

#[test]
fn tag_push_is_ignored() {
    let mut body = fixture("gitea_push");
    set(&mut body, "ref", json!("refs/tags/v0.9.1"));
    let (reason, _) = Delivery::gitea("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::TagPush { tag: "v0.9.1".into() });
}

#[test]
fn create_and_delete_events_are_ignored() {
    for event in ["create", "delete"] {
        let body = json!({"ref": "main", "ref_type": "branch", "sha": "e3d2a9f1c8b7a6e5d4c3b2a1f0e9d8c7b6a5f4e3"});
        let (reason, _) = Delivery::gitea(event, &body).ignored();
        assert_eq!(reason, IgnoreReason::UnsupportedEvent { event: event.into() });
    }
}

#[test]
fn push_to_another_branch_is_ignored() {
    let mut body = fixture("gitea_push");
    set(&mut body, "ref", json!("refs/heads/renovate/serde-1.x"));
    let (reason, _) = Delivery::gitea("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::OtherBranch { branch: "renovate/serde-1.x".into(), watching: "main".into() });
}
