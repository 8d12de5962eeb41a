//! Properties over arbitrary input: nothing panics, nothing unsigned gets through, and a
//! push always names the watched branch and a real commit.

use hooks::{Headers, Outcome, Provider, Rejection, RejectionKind};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{SECRET, assert_quotes_nothing};

/// Every header name the crate reads, so random headers hit the interesting paths.
const NAMES: &[&str] = &[
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Gitlab-Token",
    "X-Gitlab-Event",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",
    "X-Gitea-Signature",
    "X-Gitea-Event",
    "X-Gitea-Delivery",
    "X-Forgejo-Signature",
    "X-Forgejo-Event",
    "X-Forgejo-Delivery",
    "X-Signature",
    "X-Delivery-Id",
];

fn provider() -> impl Strategy<Value = Provider> {
    prop_oneof![
        Just(Provider::GitHub),
        Just(Provider::GitLab),
        Just(Provider::Gitea),
        Just(Provider::Generic { header: "X-Signature".into() }),
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_flat_map(|name| {
            // The same name in random letter case.
            prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
                name.chars()
                    .zip(upper)
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect()
            })
        }),
        1 => "[A-Za-z0-9-]{0,24}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        "(sha256=|sha1=|SHA256=)?[0-9a-fA-F]{0,70}".prop_map(String::into_bytes),
        prop::sample::select(&["push", "ping", "Push Hook", "Tag Push Hook", "issues", "", " push "][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        "[ -~]{0,140}".prop_map(String::into_bytes),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((header_name(), header_value()), 0..10)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        push_payload().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(
                    &["ref", "after", "before", "deleted", "commits", "repository", "pusher", "full_name", "name", "x"]
                        [..]
                )
                .prop_map(str::to_owned),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sha() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[0-9a-f]{40}".prop_map(Value::from),
        1 => "[0-9A-F]{64}".prop_map(Value::from),
        1 => Just(Value::from("0".repeat(40))),
        1 => "[0-9a-z]{0,70}".prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Payloads shaped like pushes from any host, with every field sometimes wrong.
fn push_payload() -> impl Strategy<Value = Value> {
    let git_ref = prop_oneof![
        Just(json!("refs/heads/main")),
        Just(json!("refs/heads/develop")),
        Just(json!("refs/tags/v1.0.0")),
        Just(json!("main")),
        "refs/[a-z]{0,6}/?.{0,12}".prop_map(Value::from),
        json_value(),
    ];
    let optional = |s: BoxedStrategy<Value>| prop::option::of(s);
    (
        git_ref,
        sha(),
        optional(sha().boxed()),
        optional(any::<bool>().prop_map(Value::from).boxed()),
        optional(json_value().boxed()),
        optional(prop::collection::vec(json_value(), 0..4).prop_map(Value::from).boxed()),
        optional(any::<i64>().prop_map(Value::from).boxed()),
        optional(".{0,12}".prop_map(|s| json!({"full_name": s, "login": s, "name": s})).boxed()),
        prop::option::of(prop::sample::select(&["push", "tag_push", "merge_request"][..])),
    )
        .prop_map(|(git_ref, after, before, deleted, pusher, commits, total, repo, kind)| {
            let mut map = serde_json::Map::new();
            map.insert("ref".into(), git_ref);
            map.insert("after".into(), after);
            let mut put = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    map.insert(key.into(), value);
                }
            };
            put("before", before);
            put("deleted", deleted);
            put("pusher", pusher);
            put("commits", commits);
            put("total_commits_count", total.clone());
            put("total_commits", total);
            put("repository", repo.clone());
            put("project", repo.map(|r| json!({"path_with_namespace": r["full_name"]})));
            put("object_kind", kind.map(Value::from));
            Value::Object(map)
        })
}

/// A secret the provider can carry: any bytes for an HMAC key, but GitLab sends the secret
/// itself as a header value, so there it is text without spaces at the ends.
fn secret_for(provider: &Provider) -> BoxedStrategy<Vec<u8>> {
    match provider {
        Provider::GitLab => "[!-~]([ -~]{0,60}[!-~])?".prop_map(String::into_bytes).boxed(),
        _ => prop::collection::vec(any::<u8>(), 1..100).boxed(),
    }
}

fn receive(provider: &Provider, fields: &[(String, Vec<u8>)], body: &[u8]) -> Result<Outcome, Rejection> {
    let headers: Headers<'_> = fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    hooks::receive(provider, SECRET, &headers, body, "main")
}

/// `fields` without any header that could carry `provider`'s signature, then the right one.
fn sign(provider: &Provider, mut fields: Vec<(String, Vec<u8>)>, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let (name, value) = provider.sign(SECRET, body);
    fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    fields.push((name.to_owned(), value));
    fields
}

/// A push outcome must only ever mean "the watched branch moved to a real commit".
fn check_outcome(outcome: &Outcome) {
    if let Outcome::Push(push) = outcome {
        assert_eq!(push.branch, "main");
        assert_eq!(push.git_ref, "refs/heads/main");
        assert!(!push.after.is_zero());
        assert!(matches!(push.after.as_str().len(), 40 | 64));
        assert!(push.after.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    assert!(outcome.delivery().bytes().all(|b| b.is_ascii_graphic()), "{outcome:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Without the secret, nothing verifies, whatever the headers and body, and nothing
    /// panics on the way.
    #[test]
    fn random_deliveries_never_verify(provider in provider(), fields in headers(), body in body()) {
        let result = receive(&provider, &fields, &body);
        let rejection = result.expect_err("a random delivery was accepted");
        prop_assert!(rejection.is_unauthorized(), "{rejection:?}");
        assert_quotes_nothing(&rejection, SECRET, &body);
    }

    /// Signed but otherwise arbitrary deliveries reach the parsers: no panic, never a 401,
    /// and a push is always the watched branch.
    #[test]
    fn signed_arbitrary_deliveries_never_panic(
        provider in provider(),
        fields in headers(),
        body in body(),
        with_event in any::<bool>(),
    ) {
        let mut fields = sign(&provider, fields, &body);
        if let (true, Some((name, value))) = (with_event, provider.push_event_header()) {
            fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            fields.push((name.to_owned(), value.as_bytes().to_vec()));
        }
        match receive(&provider, &fields, &body) {
            Ok(outcome) => check_outcome(&outcome),
            Err(rejection) => {
                prop_assert_eq!(rejection.kind(), RejectionKind::Malformed, "{:?}", rejection);
                assert_quotes_nothing(&rejection, SECRET, &body);
            }
        }
    }

    /// Signed push-shaped payloads with the host's own event header: a push only when the
    /// ref is the watched branch and `after` a real commit.
    #[test]
    fn signed_pushes_only_ever_move_the_watched_branch(provider in provider(), payload in push_payload()) {
        let body = serde_json::to_vec(&payload).unwrap();
        let mut fields = sign(&provider, Vec::new(), &body);
        if let Some((name, value)) = provider.push_event_header() {
            fields.push((name.to_owned(), value.as_bytes().to_vec()));
        }
        let result = receive(&provider, &fields, &body);
        if let Ok(Outcome::Push(_)) = &result {
            prop_assert_eq!(&payload["ref"], &json!("refs/heads/main"));
            prop_assert_ne!(&payload["deleted"], &json!(true));
        }
        match result {
            Ok(outcome) => check_outcome(&outcome),
            Err(rejection) => prop_assert_eq!(rejection.kind(), RejectionKind::Malformed, "{:?}", rejection),
        }
    }

    /// Changing any one byte of a signed body breaks the signature.
    #[test]
    fn any_changed_byte_breaks_the_signature(
        provider in provider().prop_filter("GitLab does not sign the body", |p| *p != Provider::GitLab),
        body in prop::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let fields = sign(&provider, Vec::new(), &body);
        let mut tampered = body.clone();
        tampered[index.index(body.len())] ^= flip;
        let rejection = receive(&provider, &fields, &tampered).unwrap_err();
        prop_assert!(matches!(rejection, Rejection::BadSignature { .. }), "{:?}", rejection);
    }

    /// What `Provider::sign` makes verifies under that secret and no other.
    #[test]
    fn signing_round_trips(
        (provider, secret, other) in provider().prop_flat_map(|p| {
            let secret = secret_for(&p);
            (Just(p), secret.clone(), secret)
        }),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (name, value) = provider.sign(&secret, &body);
        let headers = Headers::new().with(name, &value);
        prop_assert!(hooks::verify(&provider, &secret, &headers, &body).is_ok());
        if other != secret {
            let rejection = hooks::verify(&provider, &other, &headers, &body).unwrap_err();
            prop_assert!(rejection.is_unauthorized());
        }
    }

    /// Anything can be typed as a provider name; it parses or explains why not.
    #[test]
    fn provider_names_never_panic(name in ".{0,40}") {
        if let Ok(provider) = name.parse::<Provider>() {
            prop_assert_eq!(provider.to_string().parse::<Provider>(), Ok(provider));
        }
    }
}

#[test]
fn deeply_nested_json_is_malformed_not_a_stack_overflow() {
    let body = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
    let fields = sign(&Provider::GitHub, vec![("X-GitHub-Event".into(), b"push".to_vec())], &body);
    let rejection = receive(&Provider::GitHub, &fields, &body).unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::Malformed);
}

/// The generators are only useful if they reach every outcome: pushes, ignored refs and
/// malformed payloads.
#[test]
fn push_payloads_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let (mut pushes, mut ignored, mut malformed) = (0, 0, 0);
    let mut runner = TestRunner::deterministic();
    for _ in 0..500 {
        let payload = push_payload().new_tree(&mut runner).unwrap().current();
        let body = serde_json::to_vec(&payload).unwrap();
        let mut fields = sign(&Provider::GitHub, Vec::new(), &body);
        fields.push(("X-GitHub-Event".into(), b"push".to_vec()));
        match receive(&Provider::GitHub, &fields, &body) {
            Ok(Outcome::Push(_)) => pushes += 1,
            Ok(_) => ignored += 1,
            Err(_) => malformed += 1,
        }
    }
    assert!(pushes > 10 && ignored > 10 && malformed > 10, "{pushes} pushes, {ignored} ignored, {malformed} malformed");
}
