//! GitHub: `X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`.

use hooks::{Headers, IgnoreReason, Outcome, PayloadError, Provider, Rejection, RejectionKind};
use serde_json::json;

use crate::support::{BRANCH, Delivery, SECRET, ZERO, assert_quotes_nothing, fixture, set};

const VECTOR_SECRET: &[u8] = b"It's a Secret to Everybody";
const VECTOR_BODY: &[u8] = b"Hello, World!";
const VECTOR_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn documented_test_vector_verifies() {
    let headers = Headers::new().with("X-Hub-Signature-256", VECTOR_SIGNATURE.as_bytes());
    hooks::verify(&Provider::GitHub, VECTOR_SECRET, &headers, VECTOR_BODY).expect("GitHub's test vector");

    let (name, value) = Provider::GitHub.sign(VECTOR_SECRET, VECTOR_BODY);
    assert_eq!((name, value.as_slice()), ("X-Hub-Signature-256", VECTOR_SIGNATURE.as_bytes()));
}

#[test]
fn test_vector_fails_for_another_secret_or_body() {
    let headers = Headers::new().with("X-Hub-Signature-256", VECTOR_SIGNATURE.as_bytes());
    let other_secret = hooks::verify(&Provider::GitHub, b"It's a secret to everybody", &headers, VECTOR_BODY);
    assert!(matches!(other_secret, Err(Rejection::BadSignature { .. })));
    let other_body = hooks::verify(&Provider::GitHub, VECTOR_SECRET, &headers, b"Hello, World?");
    assert!(matches!(other_body, Err(Rejection::BadSignature { .. })));
}

#[test]
fn push_to_the_watched_branch_is_a_push() {
    let push = Delivery::github("push", &fixture("github_push")).push();

    assert_eq!(push.provider, Provider::GitHub);
    assert_eq!(push.delivery, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(push.repo.as_deref(), Some("acme/shop"));
    assert_eq!(push.git_ref, "refs/heads/main");
    assert_eq!(push.branch, "main");
    assert_eq!(push.before.unwrap().as_str(), "9049f1265b7d61be4a8904a9a27120d2064dab3b");
    assert_eq!(push.after.as_str(), "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert_eq!(push.pusher.as_deref(), Some("octocat"));
    assert_eq!(push.commits, 2);
}

#[test]
fn watched_branch_may_be_given_as_a_full_ref() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let outcome = delivery.receive_with(SECRET, "refs/heads/main").unwrap();
    assert!(matches!(outcome, Outcome::Push(_)), "{outcome:?}");
}

#[test]
fn new_branch_is_a_push_from_zero() {
    let mut body = fixture("github_push");
    set(&mut body, "before", json!(ZERO));
    set(&mut body, "created", json!(true));
    let push = Delivery::github("push", &body).push();
    assert!(push.before.unwrap().is_zero());
    assert!(!push.after.is_zero());
}

#[test]
fn header_names_are_case_insensitive() {
    let mut delivery = Delivery::github("push", &fixture("github_push"));
    for (name, _) in &mut delivery.headers {
        *name = name.to_ascii_lowercase();
    }
    delivery.push();
}

#[test]
fn uppercase_hex_signature_is_accepted() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let (_, signature) = Provider::GitHub.sign(SECRET, &delivery.body);
    let upper = format!("sha256={}", String::from_utf8(signature[7..].to_vec()).unwrap().to_uppercase());
    delivery.without("X-Hub-Signature-256").header("X-Hub-Signature-256", upper).push();
}

#[test]
fn wrong_secret_is_unauthorized() {
    let delivery = Delivery::github("push", &fixture("github_push")).signed(b"some-other-secret");
    let rejection = delivery.rejected();
    assert_eq!(rejection, Rejection::BadSignature { header: "X-Hub-Signature-256".into() });
    assert!(rejection.is_unauthorized());
}

#[test]
fn any_flipped_body_byte_is_unauthorized() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    for index in [0, 1, delivery.body.len() / 2, delivery.body.len() - 1] {
        let mut tampered = delivery.clone();
        tampered.body[index] ^= 0x01;
        assert!(matches!(tampered.rejected(), Rejection::BadSignature { .. }), "byte {index}");
    }
}

#[test]
fn flipped_signature_digit_is_unauthorized() {
    let mut delivery = Delivery::github("push", &fixture("github_push"));
    let (_, signature) = delivery.headers.iter_mut().find(|(n, _)| n == "X-Hub-Signature-256").unwrap();
    let last = signature.last_mut().unwrap();
    *last = if *last == b'0' { b'1' } else { b'0' };
    assert!(matches!(delivery.rejected(), Rejection::BadSignature { .. }));
}

#[test]
fn missing_signature_is_unauthorized() {
    let delivery = Delivery::github("push", &fixture("github_push")).without("X-Hub-Signature-256");
    let rejection = delivery.rejected();
    assert_eq!(rejection, Rejection::MissingSignature { header: "X-Hub-Signature-256".into() });
    assert_eq!(rejection.kind(), RejectionKind::Unauthorized);
    assert!(rejection.to_string().contains("missing `X-Hub-Signature-256` header"), "{rejection}");
}

#[test]
fn empty_signature_counts_as_missing() {
    let delivery = Delivery::github("push", &fixture("github_push"))
        .without("X-Hub-Signature-256")
        .header("X-Hub-Signature-256", "  ");
    assert!(matches!(delivery.rejected(), Rejection::MissingSignature { .. }));
}

#[test]
fn legacy_sha1_signature_alone_is_not_enough() {
    let delivery = Delivery::github("push", &fixture("github_push"))
        .without("X-Hub-Signature-256")
        .header("X-Hub-Signature", "sha1=0123456789abcdef0123456789abcdef01234567");
    assert!(matches!(delivery.rejected(), Rejection::MissingSignature { .. }));
}

#[test]
fn signature_without_the_sha256_prefix_is_malformed() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let (_, signature) = Provider::GitHub.sign(SECRET, &delivery.body);
    for wrong in [
        signature[7..].to_vec(),
        [b"sha1=".as_slice(), &signature[7..]].concat(),
        [b"SHA256=".as_slice(), &signature[7..]].concat(),
    ] {
        let rejection = delivery.clone().without("X-Hub-Signature-256").header("X-Hub-Signature-256", wrong).rejected();
        assert!(
            matches!(rejection, Rejection::MalformedSignature { reason, .. } if reason.contains("sha256=")),
            "{rejection:?}"
        );
        assert!(rejection.is_unauthorized());
    }
}

#[test]
fn signature_of_the_wrong_length_or_not_hex_is_malformed() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let good = String::from_utf8(Provider::GitHub.sign(SECRET, &delivery.body).1).unwrap();
    let short = good[..good.len() - 2].to_owned();
    let long = format!("{good}00");
    let not_hex = format!("{}zz", &good[..good.len() - 2]);
    for wrong in [short, long, not_hex, "sha256=".to_owned()] {
        let rejection =
            delivery.clone().without("X-Hub-Signature-256").header("X-Hub-Signature-256", &wrong).rejected();
        let malformed = matches!(rejection, Rejection::MalformedSignature { .. })
            || matches!(rejection, Rejection::MissingSignature { .. });
        assert!(malformed && rejection.is_unauthorized(), "{wrong}: {rejection:?}");
    }
}

#[test]
fn two_signature_headers_are_refused_even_if_one_is_right() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let good = Provider::GitHub.sign(SECRET, &delivery.body).1;
    let delivery = delivery.header("X-Hub-Signature-256", good);
    let rejection = delivery.rejected();
    assert!(
        matches!(rejection, Rejection::MalformedSignature { reason, .. } if reason.contains("more than once")),
        "{rejection:?}"
    );
}

#[test]
fn ping_is_recognised() {
    let outcome = Delivery::github("ping", &fixture("github_ping")).receive().unwrap();
    assert_eq!(outcome, Outcome::Ping { delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into() });
    assert_eq!(outcome.delivery(), "72d3162e-cc78-11e3-81ab-4c9367dc0958");
}

#[test]
fn ping_must_be_signed_too() {
    let delivery = Delivery::github("ping", &fixture("github_ping")).signed(b"not the secret");
    assert!(delivery.rejected().is_unauthorized());
}

#[test]
fn tag_push_is_ignored() {
    let mut body = fixture("github_push");
    set(&mut body, "ref", json!("refs/tags/v1.4.0"));
    set(&mut body, "base_ref", json!("refs/heads/main"));
    let (reason, text) = Delivery::github("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::TagPush { tag: "v1.4.0".into() });
    assert!(text.contains("`v1.4.0`"), "{text}");
}

#[test]
fn deletion_of_the_watched_branch_is_ignored() {
    let mut body = fixture("github_push");
    set(&mut body, "after", json!(ZERO));
    set(&mut body, "deleted", json!(true));
    set(&mut body, "commits", json!([]));
    set(&mut body, "head_commit", json!(null));
    let (reason, text) = Delivery::github("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::BranchDeleted { branch: "main".into() });
    assert!(text.contains("deleted"), "{text}");
}

#[test]
fn deleted_flag_alone_is_a_deletion() {
    let mut body = fixture("github_push");
    set(&mut body, "deleted", json!(true));
    let (reason, _) = Delivery::github("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::BranchDeleted { branch: "main".into() });
}

#[test]
fn push_to_another_branch_is_ignored_and_named() {
    let mut body = fixture("github_push");
    set(&mut body, "ref", json!("refs/heads/feature/tax"));
    let (reason, text) = Delivery::github("push", &body).ignored();
    assert_eq!(reason, IgnoreReason::OtherBranch { branch: "feature/tax".into(), watching: BRANCH.into() });
    assert_eq!(text, "push to branch `feature/tax`; this app deploys `main`");
}

#[test]
fn branch_names_match_exactly() {
    for other in ["refs/heads/Main", "refs/heads/main2", "refs/heads/mai", "refs/heads/main/x"] {
        let mut body = fixture("github_push");
        set(&mut body, "ref", json!(other));
        let (reason, _) = Delivery::github("push", &body).ignored();
        assert!(matches!(reason, IgnoreReason::OtherBranch { .. }), "{other}: {reason:?}");
    }
}

#[test]
fn refs_that_are_not_branches_are_ignored() {
    for other in ["refs/notes/commits", "refs/pull/7/head", "main", "refs/heads/"] {
        let mut body = fixture("github_push");
        set(&mut body, "ref", json!(other));
        let (reason, _) = Delivery::github("push", &body).ignored();
        assert_eq!(reason, IgnoreReason::NotABranch { git_ref: other.into() });
    }
}

#[test]
fn other_events_are_ignored_without_reading_the_body() {
    let delivery = Delivery::new(Provider::GitHub, "not even JSON")
        .header("X-GitHub-Event", "issues")
        .header("X-GitHub-Delivery", "d-1")
        .signed(SECRET);
    let (reason, text) = delivery.ignored();
    assert_eq!(reason, IgnoreReason::UnsupportedEvent { event: "issues".into() });
    assert_eq!(text, "event `issues` is not a push; the hook needs only push events");
}

#[test]
fn missing_event_is_a_bad_request_not_unauthorized() {
    let delivery = Delivery::github("push", &fixture("github_push")).without("X-GitHub-Event");
    let rejection = delivery.rejected();
    assert_eq!(rejection, Rejection::MissingEvent { header: "X-GitHub-Event" });
    assert_eq!(rejection.kind(), RejectionKind::Malformed);
}

#[test]
fn unprintable_event_or_delivery_is_a_bad_request() {
    let event = Delivery::github("push", &fixture("github_push"))
        .without("X-GitHub-Event")
        .header("X-GitHub-Event", "push\u{7}");
    assert!(matches!(event.rejected(), Rejection::MalformedHeader { header: "X-GitHub-Event", .. }));
    let delivery = Delivery::github("push", &fixture("github_push"))
        .without("X-GitHub-Delivery")
        .header("X-GitHub-Delivery", "a b");
    assert!(matches!(delivery.rejected(), Rejection::MalformedHeader { header: "X-GitHub-Delivery", .. }));
    let long = Delivery::github("push", &fixture("github_push"))
        .without("X-GitHub-Delivery")
        .header("X-GitHub-Delivery", "x".repeat(200));
    assert_eq!(long.rejected().kind(), RejectionKind::Malformed);
}

#[test]
fn missing_delivery_id_falls_back_to_the_body_hash() {
    let first = Delivery::github("push", &fixture("github_push")).without("X-GitHub-Delivery");
    let push = first.push();
    assert!(push.delivery.starts_with("sha256:") && push.delivery.len() == 7 + 64, "{}", push.delivery);
    // A retry resends the same body, so it gets the same id.
    assert_eq!(first.clone().push().delivery, push.delivery);
}

#[test]
fn signed_body_that_is_not_json_is_a_bad_request() {
    let delivery = Delivery::new(Provider::GitHub, "{\"ref\": \"refs/heads/main\", \"after\": 0d1a26e67d8f5eaf")
        .header("X-GitHub-Event", "push")
        .signed(SECRET);
    let rejection = delivery.rejected();
    assert!(matches!(rejection, Rejection::MalformedPayload(PayloadError::Json { line: 1, .. })), "{rejection:?}");
    assert_eq!(rejection.kind(), RejectionKind::Malformed);
}

#[test]
fn missing_or_mistyped_fields_are_named() {
    let mut no_after = fixture("github_push");
    no_after.as_object_mut().unwrap().remove("after");
    let rejection = Delivery::github("push", &no_after).rejected();
    assert_eq!(rejection, Rejection::MalformedPayload(PayloadError::Missing("after")));
    assert_eq!(rejection.to_string(), "payload is not a push event we can read: missing field `after`");

    let mut short_sha = fixture("github_push");
    set(&mut short_sha, "after", json!("0d1a26e"));
    let rejection = Delivery::github("push", &short_sha).rejected();
    assert!(
        matches!(rejection, Rejection::MalformedPayload(PayloadError::Invalid { field: "after", .. })),
        "{rejection:?}"
    );

    let mut numeric_ref = fixture("github_push");
    set(&mut numeric_ref, "ref", json!(42));
    let rejection = Delivery::github("push", &numeric_ref).rejected();
    assert!(
        matches!(rejection, Rejection::MalformedPayload(PayloadError::Invalid { field: "ref", .. })),
        "{rejection:?}"
    );

    let array = Delivery::new(Provider::GitHub, "[1, 2]").header("X-GitHub-Event", "push").signed(SECRET);
    assert_eq!(array.rejected(), Rejection::MalformedPayload(PayloadError::NotAnObject));
}

#[test]
fn informational_fields_may_be_absent() {
    let body = json!({"ref": "refs/heads/main", "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"});
    let push = Delivery::github("push", &body).push();
    assert_eq!((push.repo, push.pusher, push.before, push.commits), (None, None, None, 0));
}

#[test]
fn body_over_the_limit_is_refused_before_the_signature_is_checked() {
    let delivery = Delivery::new(Provider::GitHub, vec![b' '; hooks::MAX_BODY + 1]).header("X-GitHub-Event", "push");
    let rejection = delivery.rejected();
    assert_eq!(rejection, Rejection::TooLarge { len: hooks::MAX_BODY + 1, limit: hooks::MAX_BODY });
    assert_eq!(rejection.kind(), RejectionKind::TooLarge);

    let at_limit =
        Delivery::new(Provider::GitHub, vec![b' '; hooks::MAX_BODY]).header("X-GitHub-Event", "push").signed(SECRET);
    assert!(matches!(at_limit.rejected(), Rejection::MalformedPayload(_)));
}

#[test]
fn empty_secret_refuses_everything() {
    let delivery = Delivery::github("push", &fixture("github_push")).signed(b"");
    let rejection = delivery.receive_with(b"", BRANCH).unwrap_err();
    assert_eq!(rejection, Rejection::NoSecret);
    assert!(rejection.is_unauthorized());
}

#[test]
fn verified_delivery_keeps_its_body_and_provider() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let headers = delivery.headers();
    let verified = hooks::verify(&Provider::GitHub, SECRET, &headers, &delivery.body).unwrap();
    assert_eq!(verified.body(), delivery.body.as_slice());
    assert_eq!(verified.provider(), &Provider::GitHub);
    assert!(matches!(verified.parse("main"), Ok(Outcome::Push(_))));
    assert!(matches!(verified.parse("develop"), Ok(Outcome::Ignored { .. })));
}

#[test]
fn rejection_for_a_bad_token_does_not_echo_it() {
    let delivery = Delivery::github("push", &fixture("github_push"));
    let forged = "sha256=".to_owned() + &"ab".repeat(32);
    let delivery = delivery.without("X-Hub-Signature-256").header("X-Hub-Signature-256", &forged);
    let rejection = delivery.rejected();
    assert!(!rejection.to_string().contains("abab"), "{rejection}");
    assert_quotes_nothing(&rejection, SECRET, forged.as_bytes());
}

#[test]
fn headers_debug_shows_names_only() {
    let headers = Headers::new().with("X-Gitlab-Token", b"hunter2-token").with("X-Gitlab-Event", b"Push Hook");
    let debug = format!("{headers:?}");
    assert!(debug.contains("X-Gitlab-Token") && !debug.contains("hunter2"), "{debug}");
}

#[test]
fn outcome_serialises_for_the_agent() {
    let outcome = Delivery::github("push", &fixture("github_push")).receive().unwrap();
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(json["outcome"], "push");
    assert_eq!(json["provider"], "github");
    assert_eq!(json["after"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");

    let mut body = fixture("github_push");
    set(&mut body, "ref", json!("refs/heads/dev"));
    let json = serde_json::to_value(Delivery::github("push", &body).receive().unwrap()).unwrap();
    assert_eq!(json["outcome"], "ignored");
    assert_eq!(json["reason"], json!({"kind": "other_branch", "branch": "dev", "watching": "main"}));
}
