//! New commits reach the agent without the CLI: signed push webhooks, and pull mode (`poll`,
//! `cron`). A webhook only says "the branch moved": the agent fetches the branch and deploys the
//! head it fetched, through the same coalescing queue as every other trigger.

use deployer_tests::{Agent, AppSpec, GithubPush, Mode, Receiver, TestEnv, TestRepo, http, wait_until};
use deployer_wire::{Deploy, HookAnswer};
use std::time::{Duration, Instant};

const SECRET: &str = "It's a Secret to Everybody";

/// `web` deployed from `repo`, with a GitHub webhook, reporting to `receiver` if given.
fn hooked(repo: &TestRepo, receiver: Option<&Receiver>) -> TestEnv {
    let mut env = TestEnv::new()
        .web(|a: AppSpec| a.repo(repo).instances(1).set("webhook", "{ provider: github, secret_env: TEST_GH_SECRET }"))
        .agent_env("TEST_GH_SECRET", SECRET);
    if let Some(r) = receiver {
        env = env
            .agent_set("report", &format!("[{{ url: \"{}\", secret_env: TEST_REPORT_SECRET }}]", r.url("/events")))
            .agent_env("TEST_REPORT_SECRET", "report-secret");
    }
    env
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

fn webhook_deploys(agent: &Agent) -> Vec<Deploy> {
    agent.history("web").into_iter().filter(|d| d.trigger == "webhook").collect()
}

#[test]
fn a_signed_github_push_deploys_the_pushed_commit_and_reports_each_step() {
    let repo = TestRepo::with_example_app();
    let receiver = Receiver::start(Mode::Status(200));
    let agent = hooked(&repo, Some(&receiver)).start();
    let sha = repo.commit_greeting("v2");

    let r = GithubPush::new(Some(SECRET), "main", &sha, "delivery-1", "ana").send(&agent, "web");
    assert_eq!(r.status, 202, "{}", r.body);
    let answer: HookAnswer = r.json();
    let id = answer.deploy.expect("a deploy id");
    let d = agent.wait_deploy(id);
    assert_eq!(d.state, "live", "{d:#?}");
    assert_eq!(d.sha.as_deref(), Some(sha.as_str()));
    assert_eq!((d.trigger.as_str(), d.who.as_deref()), ("webhook", Some("ana")));
    assert!(agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha))));

    // The receiver hears queued -> started -> live for that deploy, in order, signed.
    let events = || -> Vec<String> {
        receiver
            .received()
            .iter()
            .filter(|r| r.json()["deploy"] == id)
            .map(|r| r.json()["event"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(wait_until(Duration::from_secs(10), || events().len() >= 3), "events for #{id}: {:?}", events());
    assert_eq!(events(), ["deploy.queued", "deploy.started", "deploy.live"]);
    for r in receiver.received() {
        let expected = format!("sha256={}", deployer_tests::webhook::hmac_hex("report-secret", &r.body));
        assert_eq!(r.header("x-deployer-signature"), Some(expected.as_str()), "{r:?}");
        assert!(r.header("idempotency-key").is_some_and(|k| !k.is_empty()), "{r:?}");
    }
    let live = receiver
        .received()
        .into_iter()
        .find(|r| r.json()["event"] == "deploy.live" && r.json()["deploy"] == id)
        .unwrap()
        .json();
    assert_eq!(live["sha"], sha.as_str());
    assert_eq!(live["trigger"], "webhook");
    assert_eq!(live["app"], "web");
}

#[test]
fn a_wrong_or_missing_signature_gets_401_and_deploys_nothing() {
    let repo = TestRepo::with_example_app();
    let agent = hooked(&repo, None).start();
    let before = agent.history("web").len();
    let sha = repo.commit_greeting("v2");

    let forged =
        GithubPush::new(Some("not the secret"), "main", &sha, "d-forged", "body-marker-mallory").send(&agent, "web");
    assert_eq!(forged.status, 401, "{}", forged.body);
    let unsigned = GithubPush::new(None, "main", &sha, "d-unsigned", "body-marker-mallory").send(&agent, "web");
    assert_eq!(unsigned.status, 401, "{}", unsigned.body);
    assert!(unsigned.body.contains("X-Hub-Signature-256"), "{}", unsigned.body);

    assert_eq!(agent.history("web").len(), before, "a refused delivery queued a deploy");
    let log = agent.log();
    assert_eq!(log.matches("webhook delivery refused").count(), 2, "{log}");
    assert!(!log.contains("body-marker-mallory"), "the body was logged:\n{log}");
    assert!(!agent.current_release("web").unwrap_or_default().ends_with(short(&sha)));
    let metrics = agent.api_get("/metrics").body;
    assert!(metrics.contains("deployer_webhook_rejections_total{app=\"web\",reason=\"unauthorized\"} 2"), "{metrics}");
}

#[test]
fn deliveries_that_deploy_nothing_are_answered_with_a_reason() {
    let repo = TestRepo::with_example_app();
    let agent = hooked(&repo, None).start();
    let before = agent.history("web").len();
    let sha = repo.head();

    let ignored = |push: GithubPush| -> String {
        let r = push.send(&agent, "web");
        assert_eq!(r.status, 202, "{}", r.body);
        r.json::<HookAnswer>().ignored.expect("a reason")
    };
    assert!(
        ignored(GithubPush::raw("ping", Some(SECRET), "p1", r#"{"zen": "Keep it simple"}"#.into())).contains("ping")
    );
    assert!(ignored(GithubPush::new(Some(SECRET), "other", &sha, "o1", "ana")).contains("`other`"));
    let zero = "0".repeat(40);
    let tag = serde_json::json!({ "ref": "refs/tags/v1", "before": zero, "after": sha }).to_string();
    assert!(ignored(GithubPush::raw("push", Some(SECRET), "t1", tag)).contains("tag `v1`"));
    let deleted = serde_json::json!({ "ref": "refs/heads/main", "before": sha, "after": zero }).to_string();
    assert!(ignored(GithubPush::raw("push", Some(SECRET), "del1", deleted)).contains("deleted"));
    assert_eq!(agent.history("web").len(), before);

    // No such app, or an app without a webhook: 404. The token layer does not apply here.
    assert_eq!(GithubPush::new(Some(SECRET), "main", &sha, "x", "ana").send(&agent, "nope").status, 404);
    // Up to 1 MiB is read (and refused for its signature here); more is 413.
    let big = GithubPush::raw("push", None, "big", "x".repeat(600 * 1024)).send(&agent, "web");
    assert_eq!(big.status, 401, "{}", big.body);
    let too_big = GithubPush::raw("push", None, "big", "x".repeat(1024 * 1024 + 1)).send(&agent, "web");
    assert_eq!(too_big.status, 413, "{}", too_big.body);
}

#[test]
fn the_same_delivery_twice_deploys_once() {
    let repo = TestRepo::with_example_app();
    let agent = hooked(&repo, None).start();
    let sha = repo.commit_greeting("v2");
    let push = GithubPush::new(Some(SECRET), "main", &sha, "same-delivery", "ana");

    let first: HookAnswer = push.send(&agent, "web").json();
    let id = first.deploy.expect("a deploy");
    assert_eq!(agent.wait_deploy(id).state, "live");
    let again = push.send(&agent, "web");
    assert_eq!(again.status, 202, "{}", again.body);
    let again: HookAnswer = again.json();
    assert_eq!(again.deploy, None);
    assert!(again.ignored.as_deref().is_some_and(|r| r.contains("already received")), "{again:?}");
    assert_eq!(webhook_deploys(&agent).len(), 1, "{:#?}", agent.history("web"));
}

#[test]
fn a_burst_of_deliveries_for_many_commits_ends_in_at_most_two_deploys_with_the_newest_live() {
    let repo = TestRepo::with_example_app();
    // A build that lasts while the test holds it, so the burst arrives while the first deploy
    // runs however slow this machine is.
    let hold = tempfile::tempdir().expect("a temp dir");
    let hold = hold.path().join("hold");
    let install = format!("[[sh, -c, \"while [ -e {} ]; do sleep 0.05; done\"]]", hold.display());
    let agent = TestEnv::new()
        .web(|a: AppSpec| {
            a.repo(&repo)
                .instances(1)
                .set("webhook", "{ provider: github, secret_env: TEST_GH_SECRET }")
                .set("install", &install)
        })
        .agent_env("TEST_GH_SECRET", SECRET)
        .start();
    std::fs::write(&hold, "").expect("hold the builds");

    let started = Instant::now();
    let mut newest = String::new();
    for i in 0..200 {
        if i % 10 == 0 {
            newest = repo.commit_greeting(&format!("v{}", i / 10));
        }
        let r = GithubPush::new(Some(SECRET), "main", &newest, &format!("burst-{i}"), "ci").send(&agent, "web");
        assert_eq!(r.status, 202, "delivery {i}: {}", r.body);
        // 200 deliveries spread over 2 s.
        let due = Duration::from_millis(10 * (i + 1));
        std::thread::sleep(due.saturating_sub(started.elapsed()));
    }
    std::fs::remove_file(&hold).expect("let the builds end");

    let deploys = webhook_deploys(&agent);
    assert!(deploys.len() <= 2, "{} deploys for one burst: {deploys:#?}", deploys.len());
    for d in &deploys {
        agent.wait_deploy(d.id);
    }
    let last = agent.wait_deploy(deploys[0].id);
    assert_eq!(last.state, "live", "{last:#?}");
    assert_eq!(last.sha.as_deref(), Some(newest.as_str()));
    assert!(agent.current_release("web").is_some_and(|r| r.ends_with(short(&newest))));
}

#[test]
fn pull_mode_picks_up_a_commit_pushed_without_any_webhook() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(1).set("poll", "1s")).start();
    let sha = repo.commit_greeting("polled");
    assert!(
        wait_until(Duration::from_secs(30), || agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha)))),
        "the commit did not go live: {:#?}",
        agent.history("web")
    );
    let d = agent.history("web").into_iter().find(|d| d.sha.as_deref() == Some(sha.as_str())).expect("its deploy");
    // `current` is switched before the old worker has drained, which ends the deploy.
    let d = agent.wait_deploy(d.id);
    assert_eq!((d.trigger.as_str(), d.state.as_str()), ("poll", "live"));
}

#[test]
fn cron_mode_checks_on_its_schedule() {
    let repo = TestRepo::with_example_app();
    // Six fields: every second.
    let agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(1).set("cron", "\"* * * * * *\"")).start();
    let sha = repo.commit_greeting("cron");
    assert!(
        wait_until(Duration::from_secs(30), || agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha)))),
        "the commit did not go live: {:#?}",
        agent.history("web")
    );
    assert!(agent.history("web").iter().any(|d| d.trigger == "cron" && d.sha.as_deref() == Some(sha.as_str())));
}

#[test]
fn a_git_server_that_is_down_is_logged_once_per_outage() {
    let repo = TestRepo::with_example_app();
    // Every failed tick after the first is logged at debug level: the test counts them.
    let agent = TestEnv::new()
        .agent_env("RUST_LOG", "info,agent::deploy::poll=debug")
        .web(|a: AppSpec| a.repo(&repo).instances(1).set("poll", "200ms"))
        .start();
    let moved = repo.path().with_extension("away");
    std::fs::rename(repo.path(), &moved).expect("take the repo away");
    let down = "cannot look up the branch head";
    assert!(wait_until(Duration::from_secs(10), || agent.log().contains(down)), "{}", agent.log());
    // Several ticks go by while it stays down.
    let still_down = "the git remote still does not answer";
    assert!(wait_until(Duration::from_secs(10), || agent.log().matches(still_down).count() >= 3), "{}", agent.log());
    std::fs::rename(&moved, repo.path()).expect("put the repo back");
    assert!(
        wait_until(Duration::from_secs(10), || agent.log().contains("the git remote answers again")),
        "{}",
        agent.log()
    );
    assert_eq!(agent.log().matches(down).count(), 1, "{}", agent.log());
    assert_eq!(agent.app("web").workers.len(), 1, "the app kept running");
}

#[test]
fn a_commit_that_left_the_branch_is_not_deployed() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(1)).start();
    let first = agent.current_release("web").expect("a release");
    // The agent fetches a commit, then the branch is reset past it (a force-push).
    let dropped = repo.commit_greeting("dropped");
    let id = agent.deploy("web", "main");
    assert_eq!(agent.wait_deploy(id).state, "live");
    repo.git(&["reset", "--quiet", "--hard", "HEAD~1"]);
    let back = agent.deploy("web", "main");
    assert_eq!(agent.wait_deploy(back).state, "live");
    assert_eq!(agent.current_release("web").map(|r| r.ends_with(&first[first.len() - 7..])), Some(true));

    // The commit is still in the agent's cache, but no longer on `main`: refused.
    let id = agent.deploy("web", &dropped);
    let d = agent.wait_deploy(id);
    assert_eq!(d.state, "failed", "{d:#?}");
    assert!(d.message.as_deref().is_some_and(|m| m.contains("is not on branch `main`")), "{d:#?}");
    assert!(!agent.current_release("web").unwrap_or_default().ends_with(short(&dropped)));
}

#[test]
fn deployer_pull_checks_now_and_deploys_what_moved() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(1)).start();
    let sha = repo.commit_greeting("pulled");
    let out = agent.cli(&["pull", "web", "--wait"]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha))));
    let again = agent.cli(&["pull", "web"]);
    assert!(again.status.success(), "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
}

#[test]
fn pull_mode_turned_on_by_sighup_starts_polling() {
    let repo = TestRepo::with_example_app();
    let mut agent = TestEnv::new().web(|a: AppSpec| a.repo(&repo).instances(1)).start();
    agent.reconfigure(|env| env.web(|a| a.set("poll", "500ms")));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || agent.log().contains("pull mode on")), "{}", agent.log());
    let sha = repo.commit_greeting("after-sighup");
    assert!(
        wait_until(Duration::from_secs(30), || agent.current_release("web").is_some_and(|r| r.ends_with(short(&sha)))),
        "{:#?}",
        agent.history("web")
    );
}

#[test]
fn a_generic_sender_signs_in_its_own_header() {
    let repo = TestRepo::with_example_app();
    let agent = TestEnv::new()
        .web(|a: AppSpec| {
            a.repo(&repo)
                .instances(1)
                .set("webhook", "{ provider: generic, secret_env: TEST_HOOK_SECRET, header: X-Sig }")
        })
        .agent_env("TEST_HOOK_SECRET", SECRET)
        .start();
    let sha = repo.commit_greeting("generic");
    let body = serde_json::json!({ "ref": "refs/heads/main", "after": sha, "pusher": { "name": "bot" } }).to_string();
    let (_, sig) = hooks::Provider::Generic { header: "X-Sig".into() }.sign(SECRET.as_bytes(), body.as_bytes());
    let sig = format!("sha256={}", String::from_utf8(sig).unwrap());
    let send = |headers: &[(&str, &str)]| {
        deployer_tests::http::request(
            agent.api_port(),
            "POST",
            "/hooks/web",
            headers,
            Some(&body),
            Duration::from_secs(30),
        )
        .expect("POST /hooks/web")
    };
    // GitHub's header is not the one this app trusts.
    assert_eq!(send(&[("X-Hub-Signature-256", &sig), ("X-Delivery-Id", "g1")]).status, 401);
    let r = send(&[("X-Sig", &sig), ("X-Delivery-Id", "g1")]);
    assert_eq!(r.status, 202, "{}", r.body);
    let d = agent.wait_deploy(r.json::<HookAnswer>().deploy.expect("a deploy"));
    assert_eq!((d.state.as_str(), d.sha.as_deref(), d.who.as_deref()), ("live", Some(sha.as_str()), Some("bot")));
}

/// A push to `main` of `sha`, the way GitLab and Gitea deliver it, signed with [`SECRET`].
fn push_from(provider: &str, sha: &str) -> (Vec<(String, String)>, String) {
    let zeros = "0000000000000000000000000000000000000000";
    match provider {
        "gitlab" => {
            let body = serde_json::json!({
                "object_kind": "push", "ref": "refs/heads/main", "before": zeros, "after": sha,
                "user_username": "bo", "project": { "path_with_namespace": "acme/web" },
                "total_commits_count": 1, "commits": [{ "id": sha }],
            })
            .to_string();
            let headers =
                [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", SECRET), ("X-Gitlab-Event-UUID", "gl-1")];
            (headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body)
        }
        _ => {
            let body = serde_json::json!({
                "ref": "refs/heads/main", "before": zeros, "after": sha,
                "repository": { "full_name": "acme/web" }, "pusher": { "login": "bo" },
                "total_commits": 1, "commits": [{ "id": sha }],
            })
            .to_string();
            let (name, value) = hooks::Provider::Gitea.sign(SECRET.as_bytes(), body.as_bytes());
            let value = String::from_utf8(value).expect("hex");
            let headers = [("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "gt-1"), (name, value.as_str())];
            (headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body)
        }
    }
}

#[test]
fn gitlab_and_gitea_pushes_deploy_and_a_wrong_token_is_refused() {
    for provider in ["gitlab", "gitea"] {
        let repo = TestRepo::with_example_app();
        let agent = TestEnv::new()
            .web(|a: AppSpec| {
                a.repo(&repo)
                    .instances(1)
                    .set("webhook", &format!("{{ provider: {provider}, secret_env: TEST_GH_SECRET }}"))
            })
            .agent_env("TEST_GH_SECRET", SECRET)
            .start();
        let sha = repo.commit_greeting("v2");
        let (headers, body) = push_from(provider, &sha);
        let send = |headers: &[(String, String)]| {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            http::request(agent.api_port(), "POST", "/hooks/web", &h, Some(&body), Duration::from_secs(30))
                .expect("POST /hooks/web")
        };

        let mut forged = headers.clone();
        for (k, v) in &mut forged {
            if k == "X-Gitlab-Token" || k == "X-Gitea-Signature" {
                *v = v.replace(|c: char| c.is_ascii_alphanumeric(), "0");
            }
        }
        let r = send(&forged);
        assert_eq!(r.status, 401, "{provider}: {}", r.body);
        assert_eq!(agent.history("web").len(), 1, "{provider}: a forged delivery deployed");

        let r = send(&headers);
        assert_eq!(r.status, 202, "{provider}: {}", r.body);
        let id = r.json::<HookAnswer>().deploy.expect("a deploy id");
        let d = agent.wait_deploy(id);
        assert_eq!(d.state, "live", "{provider}: {d:#?}");
        assert_eq!(d.sha.as_deref(), Some(sha.as_str()), "{provider}");
        assert_eq!(d.who.as_deref(), Some("bo"), "{provider}");
    }
}
