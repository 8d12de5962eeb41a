//! The agent's HTTP API: bearer tokens with scopes, and one error shape.

use deployer_tests::{TestEnv, http};
use deployer_wire::{ApiError, AppStatus};

#[test]
fn the_api_needs_a_valid_token_and_changes_need_the_deploy_scope() {
    let agent = TestEnv::new().instances(1).token("reader", &["read"]).start();
    let reader = agent.token("reader");
    let pids = agent.pids("web");

    let health = http::get(agent.api_port(), "/healthz").expect("GET /healthz");
    assert_eq!(health.status, 200, "/healthz needs no token");

    let missing = agent.api_request("GET", "/v1/apps", None, None);
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.json::<ApiError>().code, "unauthorized");

    let wrong = agent.api_request("GET", "/v1/apps", Some("not-the-token-at-all"), None);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.json::<ApiError>().code, "unauthorized");

    let wrong_post = agent.api_request("POST", "/v1/apps/web/restart", Some("not-the-token-at-all"), Some(""));
    assert_eq!(wrong_post.status, 401, "{}", wrong_post.body);

    let read_only_post = agent.api_request("POST", "/v1/apps/web/restart", Some(&reader), Some(""));
    assert_eq!(read_only_post.status, 403, "{}", read_only_post.body);
    assert_eq!(read_only_post.json::<ApiError>().code, "forbidden");
    assert_eq!(agent.pids("web"), pids, "a forbidden restart restarted");

    let read_only_get = agent.api_request("GET", "/v1/apps", Some(&reader), None);
    assert_eq!(read_only_get.status, 200, "{}", read_only_get.body);
    let apps: Vec<AppStatus> = read_only_get.json();
    assert_eq!(apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["web"]);

    let logs = agent.api_request("GET", "/v1/apps/web/logs?lines=5", Some(&reader), None);
    assert_eq!(logs.status, 200, "logs are `read`: {}", logs.body);
}

#[test]
fn the_cli_says_which_variable_to_fix_when_the_token_is_missing_or_wrong() {
    let agent = TestEnv::new().instances(1).token("reader", &["read"]).start();

    let missing = agent.cli_as(None, &["ls"]).failure(1);
    assert!(missing.stderr.contains("hint: set `DEPLOYER_TOKEN`"), "{missing}");

    let wrong = agent.cli_as(Some("not-the-token-at-all"), &["ls"]).failure(1);
    assert!(wrong.stderr.contains("the token in `DEPLOYER_TOKEN` is not one the agent accepts"), "{wrong}");

    let read_only = agent.cli_as(Some(&agent.token("reader")), &["restart", "web"]).failure(1);
    assert!(read_only.stderr.contains("`deploy` scope"), "{read_only}");
    agent.cli_as(Some(&agent.token("reader")), &["ls"]).success();
}

#[test]
fn mistakes_get_the_api_error_shape_with_a_code() {
    let agent = TestEnv::new().instances(1).start();

    let unknown_app = agent.api_get("/v1/apps/nope");
    assert_eq!(unknown_app.status, 404, "{}", unknown_app.body);
    let err: ApiError = unknown_app.json();
    assert_eq!(err.code, "not_found");
    assert!(err.message.contains("`nope`"), "{err:?}");
    assert!(err.hint.is_some(), "{err:?}");

    let unknown_route = agent.api_get("/v2/whatever");
    assert_eq!(unknown_route.status, 404, "{}", unknown_route.body);
    assert_eq!(unknown_route.json::<ApiError>().code, "not_found");

    let bad_json =
        agent.api_request("POST", "/v1/apps/web/scale", Some(&agent.token("admin")), Some("{\"instances\":"));
    assert_eq!(bad_json.status, 400, "{}", bad_json.body);
    assert_eq!(bad_json.json::<ApiError>().code, "bad_request");

    let zero = agent.api_post("/v1/apps/web/scale", serde_json::json!({ "instances": 0 }));
    assert_eq!(zero.status, 400, "{}", zero.body);
    assert_eq!(zero.json::<ApiError>().code, "bad_request");

    let unknown_field = agent.api_post("/v1/apps/web/reload", serde_json::json!({ "update_evn": true }));
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.body);
    assert_eq!(unknown_field.json::<ApiError>().code, "bad_request");
}

/// Every error answer is `{code, message, hint}`, also those the HTTP framework makes itself.
#[test]
fn every_error_answer_is_the_documented_json_with_a_hint_where_one_helps() {
    let agent = deployer_tests::TestEnv::new().start();
    let token = agent.token("admin");
    let check = |r: deployer_tests::http::Response, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let e: deployer_wire::ApiError =
            serde_json::from_str(&r.body).unwrap_or_else(|err| panic!("not the documented JSON ({err}): {}", r.body));
        assert_eq!(e.code, code, "{}", r.body);
        e
    };
    let big = "x".repeat(100 * 1024);
    let e = check(agent.api_request("POST", "/v1/apps/web/deploys", Some(&token), Some(&big)), 413, "too_large");
    assert!(e.hint.is_some(), "{e:?}");
    let e = check(agent.api_request("DELETE", "/v1/apps", Some(&token), None), 405, "method_not_allowed");
    assert!(e.hint.is_some(), "{e:?}");
    check(agent.api_request("GET", "/v1/deploys/not-a-number", Some(&token), None), 400, "bad_request");
    let e = check(agent.api_request("GET", "/v2/nothing", Some(&token), None), 404, "not_found");
    assert!(e.hint.is_some(), "{e:?}");
    let e = check(agent.api_request("GET", "/v1/apps", Some("wrong-token-value"), None), 401, "unauthorized");
    assert!(e.hint.is_some(), "an invalid token gets a hint: {e:?}");
    let e = check(agent.api_request("POST", "/v1/apps/web/check", Some(&token), None), 409, "no_repo");
    assert!(!e.message.contains("git"), "an app without a repo is not a git outage: {e:?}");
}
