use super::env_file::read_env_file;
use super::*;

fn write(dir: &Path, yaml: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    let p = dir.join("agent.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deployer-config-test-{}-{name}", std::process::id()));
    // a leftover of an earlier run may not exist
    let _ = std::fs::remove_dir_all(&d);
    d
}

const GOOD: &str = "\
listen: 127.0.0.1:7070
state_dir: ./state
apps:
  web:
    cwd: app
    start: node app.js --title \"hello world\"
    instances: 2
    port: 3000
    env: { NODE_ENV: production }
    ready: { http: /healthz, timeout: 10s }
    reload: { signal: SIGUSR2, drain_timeout: 30s, kill_timeout: 500ms, max_surge: 1 }
    restart: { max_restarts: 10, min_uptime: 1s, backoff_max: 15s }
    max_memory: 512M
    logs: { max_size: 10M, keep: 5 }
";

#[test]
fn parses_the_documented_keys() {
    let d = tmp("good");
    let p = write(&d, GOOD);
    let l = load(&p).unwrap();
    let web = &l.config.apps["web"];
    assert_eq!(web.start.0, vec!["node", "app.js", "--title", "hello world"]);
    assert_eq!(web.instances, Instances::Count(2));
    assert_eq!(web.ready.check, ReadyCheck::Http("/healthz".into()));
    assert_eq!(web.reload.kill_timeout.0, Duration::from_millis(500));
    assert_eq!(web.max_memory, Some(Size(512 << 20)));
    assert!(matches!(&web.source, AppSource::Dir(cwd) if cwd.is_absolute()), "{:?}", web.source);
    assert_eq!(web.schedule, None);
}

#[test]
fn misspelt_key_names_line_column_and_suggestion() {
    let d = tmp("typo");
    let p = write(&d, &GOOD.replace("    instances: 2", "    instanes: 2"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (7, 5), "{e}");
    assert!(e.message.contains("unknown field `instanes`"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean `instances`?"));
    assert!(e.to_string().starts_with(&format!("{}:7:5: ", p.display())), "{e}");
}

#[test]
fn bad_values_are_located() {
    let d = tmp("values");
    let p = write(&d, &GOOD.replace("drain_timeout: 30s", "drain_timeout: 30 parsecs"));
    let e = load(&p).unwrap_err();
    assert_eq!(e.line, 11, "{e}");
    assert!(e.message.contains("invalid duration `30 parsecs`"), "{e}");

    let p = write(&d, &GOOD.replace("instances: 2", "instances: lots"));
    let e = load(&p).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("`max`"), "{e}");

    let p = write(&d, &GOOD.replace("SIGUSR2", "SIGFOO"));
    let e = load(&p).unwrap_err();
    assert!(e.message.contains("unknown signal `SIGFOO`"), "{e}");
}

#[test]
fn checks_after_parsing_point_at_the_key() {
    let d = tmp("post");
    let p = write(&d, &GOOD.replace("cwd: app", "cwd: nowhere"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (5, 5), "{e}");

    let two = format!("{GOOD}  api:\n    cwd: app\n    start: node api.js\n    port: 3000\n");
    let p = write(&d, &two);
    let e = load(&p).unwrap_err();
    assert!(e.message.contains("port 3000 is used by both"), "{e}");
    assert_eq!(e.line, 18, "{e}");
}

#[test]
fn missing_token_env_is_an_error() {
    let d = tmp("token");
    let yaml = format!(
        "tokens:\n  - {{ name: admin, token_env: DEPLOYER_TEST_UNSET_VAR, scopes: [read] }}\n{}",
        &GOOD[GOOD.find("apps:").unwrap()..]
    );
    let p = write(&d, &yaml);
    let e = load(&p).unwrap_err();
    assert!(e.message.contains("DEPLOYER_TEST_UNSET_VAR"), "{e}");
    assert_eq!(e.line, 1);
}

#[test]
fn env_file_lines() {
    let d = tmp("envfile");
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join(".env");
    std::fs::write(&f, "# comment\nexport A=1\nB = \"two words\"\n\nC='x=y'\n").unwrap();
    let v = read_env_file(&f).unwrap();
    assert_eq!(v["A"], "1");
    assert_eq!(v["B"], "two words");
    assert_eq!(v["C"], "x=y");
    std::fs::write(&f, "A=1\nnot a pair\n").unwrap();
    let e = read_env_file(&f).unwrap_err();
    assert_eq!((e.line, e.col), (2, 1), "{e}");
    assert!(e.hint.is_some_and(|h| h.contains("`KEY=VALUE` per line")));
    let e = read_env_file(&d.join("missing.env")).unwrap_err();
    assert!(e.to_string().contains("missing.env: cannot read"), "{e}");
    assert!(e.hint.is_some_and(|h| h.contains("remove the app's `env_file`")));
}

#[test]
fn value_checks_point_at_the_value_not_the_app() {
    let d = tmp("checked");
    // (written, instead, line, column, message): the position is the value's, the path its key's.
    let cases = [
        ("start: node app.js --title \"hello world\"", "start: \"\"", 6, 12, "apps.web.start: `start` is empty"),
        ("max_memory: 512M", "install: [npm ci, \"\"]", 13, 14, "apps.web.install: empty command"),
        ("ready: { http", "ready: { notify: true, http", 10, 12, "apps.web.ready: `ready` takes one check"),
        ("SIGUSR2", "SIGFOO", 11, 23, "apps.web.reload.signal: unknown signal `SIGFOO`"),
        // A number where a duration goes is a duration without a unit, not a type error.
        ("backoff_max: 15s", "backoff_max: 15", 12, 63, "apps.web.restart.backoff_max: invalid duration `15`"),
    ];
    for (written, instead, line, col, message) in cases {
        let p = write(&d, &GOOD.replace(written, instead));
        let e = load(&p).unwrap_err();
        assert_eq!((e.line, e.col), (line, col), "{e}");
        assert!(e.message.starts_with(message), "{e}");
    }
}

#[test]
fn an_explicit_probe_is_refused_where_there_is_nothing_to_probe() {
    let d = tmp("probe");
    let fd = GOOD.replace("    port: 3000\n", "    port: 3000\n    proxy: fd\n");
    let p = write(&d, &fd.replace("ready: { http: /healthz, timeout: 10s }", "ready: {tcp: true}"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (11, 13), "{e}");
    assert!(e.message.contains("cannot be probed one by one"), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("notify: true")), "{e}");

    // Not written: `fd` and `none` fronts default to "still alive after 1s".
    let p = write(&d, &fd.replace("    ready: { http: /healthz, timeout: 10s }\n", ""));
    assert_eq!(load(&p).unwrap().config.apps["web"].ready.check, ReadyCheck::Alive(Duration::from_secs(1)));

    let none = GOOD.replace("    port: 3000\n", "    proxy: none\n");
    let p = write(&d, &none.replace("ready: { http: /healthz, timeout: 10s }", "ready: { timeout: 10s, tcp: true }"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (10, 28), "{e}");
    assert!(e.message.contains("has nothing to probe"), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("port: 3000")), "{e}");
}

#[test]
fn of_two_apps_on_one_port_the_one_written_second_is_named() {
    let d = tmp("ports");
    let api = "  api:\n    cwd: app\n    start: node api.js\n    port: 3000\n";
    let p = write(&d, &format!("{GOOD}{api}"));
    let e = load(&p).unwrap_err();
    assert_eq!(e.message, "port 3000 is used by both `web` and `api`", "{e}");
    assert_eq!((e.line, e.col), (18, 5), "{e}");
    assert_eq!(e.hint.as_deref(), Some("give each app its own `port`"));

    // Written first, alphabetically first: the other one is still the one named.
    let apps = GOOD.find("  web:").unwrap();
    let p = write(&d, &format!("{}{api}{}", &GOOD[..apps], &GOOD[apps..]));
    let e = load(&p).unwrap_err();
    assert_eq!(e.message, "port 3000 is used by both `api` and `web`", "{e}");
    assert_eq!(e.line, 12, "{e}");
}

#[test]
fn an_error_about_a_default_points_at_the_closest_written_key() {
    let d = tmp("default");
    // `proxy` is not written (it defaults to `http`): the error points at the app.
    let p = write(&d, &GOOD.replace("    port: 3000\n", ""));
    let e = load(&p).unwrap_err();
    assert!(e.message.contains("has `proxy: http` but no `port`"), "{e}");
    assert_eq!((e.line, e.col), (4, 3), "{e}");
}

#[test]
fn an_unknown_user_is_reported_at_its_key() {
    let d = tmp("user");
    let p = write(&d, &GOOD.replace("    cwd: app\n", "    cwd: app\n    user: no-such-user-here\n"));
    let e = load(&p).unwrap_err();
    assert_eq!(e.line, 6, "{e}");
    assert!(e.message.contains("no user `no-such-user-here`"), "{e}");
    assert!(e.hint.as_deref().unwrap_or_default().contains("user: www-data"), "{e}");

    let p = write(&d, &GOOD.replace("    cwd: app\n", "    cwd: app\n    user: root\n"));
    let loaded = load(&p).expect("root exists");
    let run_as = loaded.config.apps["web"].run_as.clone().expect("looked up");
    assert_eq!(run_as.uid, 0);
}

const REPO_APP: &str = "\
apps:
  web:
    repo: https://example.invalid/web.git
    start: node app.js
    port: 3000
";

#[test]
fn limits_default_to_the_sources_and_take_units() {
    let d = tmp("limits");
    let l = load(&write(&d, REPO_APP)).unwrap();
    assert_eq!(l.config.apps["web"].limits.to_source(), crate::source::Limits::default());

    let yaml = format!("{REPO_APP}    limits: {{ max_file_size: 10M, max_depth: 32, max_release_size: 1536K }}\n");
    let limits = load(&write(&d, &yaml)).unwrap().config.apps["web"].limits.to_source();
    assert_eq!(limits.max_file_size, 10 << 20);
    assert_eq!(limits.max_depth, 32);
    assert_eq!(limits.max_release_size, 1536 << 10);
    assert_eq!(limits.max_files, 200_000, "the others keep their defaults");
}

#[test]
fn bad_limits_are_located_with_a_hint() {
    let d = tmp("badlimits");
    let cases = [
        ("limits:\n      max_depth: 0\n", 7, "`limits.max_depth: 0` of app `web` would refuse every deploy"),
        ("limits:\n      max_depth: 5000\n", 7, "`limits.max_depth: 5000` of app `web` is over 1024"),
        ("limits:\n      max_file_size: 0\n", 7, "`limits.max_file_size: 0`"),
        ("limits:\n      max_file_size: 10 parsecs\n", 7, "invalid size `10 parsecs`"),
        ("limits:\n      max_files: many\n", 7, "invalid type: string \"many\""),
    ];
    for (limits, line, message) in cases {
        let e = load(&write(&d, &format!("{REPO_APP}    {limits}"))).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    let e = load(&write(&d, &format!("{REPO_APP}    limits: {{ max_blob: 1M }}\n"))).unwrap_err();
    assert!(e.message.contains("unknown field `max_blob`"), "{e}");
    assert!(e.hint.is_some_and(|h| h.contains("max_file")), "a suggestion names a real key");
}

#[test]
fn health_checks_parse_and_are_refused_where_workers_cannot_be_probed() {
    let d = tmp("health");
    let with =
        GOOD.replace("    max_memory: 512M\n", "    max_memory: 512M\n    health: { http: /healthz, interval: 1s }\n");
    let p = write(&d, &with);
    let h = load(&p).unwrap().config.apps["web"].health.clone().unwrap();
    assert_eq!((h.check, h.interval, h.failures), (HealthCheck::Http("/healthz".into()), Duration::from_secs(1), 3));

    let p = write(&d, &with.replace("interval: 1s", "interval: 1s, failures: 0"));
    let e = load(&p).unwrap_err();
    assert_eq!(e.line, 14, "{e}");
    assert!(e.message.starts_with("apps.web.health: `failures: 0`"), "{e}");

    let p = write(
        &d,
        &with
            .replace("    port: 3000\n", "    port: 3000\n    proxy: fd\n")
            .replace("{ http: /healthz, timeout: 10s }", "{ notify: true }"),
    );
    let e = load(&p).unwrap_err();
    assert_eq!(e.line, 15, "{e}");
    assert!(e.message.contains("`proxy: fd` workers have no private port"), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("remove `health`")), "{e}");
}

#[test]
fn pm2_readiness_ipc_and_fork_mode_reloads() {
    let d = tmp("pm2");
    let p =
        write(&d, &GOOD.replace("ready: { http: /healthz, timeout: 10s }", "ready: { message: true, timeout: 10s }"));
    let web = load(&p).unwrap().config.apps["web"].clone();
    assert_eq!(web.ready.check, ReadyCheck::Message);
    assert!(web.uses_ipc(), "readiness by message needs the channel");
    assert!(!web.reloads_stop_first(), "behind a front, new workers start first");

    let p = write(&d, &GOOD.replace("    port: 3000", "    port: 3000\n    proxy: none\n    ipc: true"));
    let web = load(&p).unwrap().config.apps["web"].clone();
    assert!(web.uses_ipc() && web.reloads_stop_first());

    let p = write(&d, &GOOD.replace("max_surge: 1 }", "max_surge: 1, reuse_port: true }"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (11, 87), "at the key: {e}");
    assert!(e.message.contains("`reuse_port` is for apps that bind their own `port`"), "{e}");
    let p = write(
        &d,
        &GOOD
            .replace("    port: 3000", "    port: 3000\n    proxy: none")
            .replace("max_surge: 1 }", "max_surge: 1, reuse_port: true }"),
    );
    assert!(!load(&p).unwrap().config.apps["web"].reloads_stop_first());
}

#[test]
fn cron_restart_is_a_schedule_checked_at_its_key() {
    let d = tmp("cron-restart");
    let p = write(&d, &GOOD.replace("    max_memory: 512M", "    max_memory: 512M\n    cron_restart: \"0 3 * * *\""));
    let web = load(&p).unwrap().config.apps["web"].clone();
    assert_eq!(web.reload_schedule.map(|c| c.text), Some("0 3 * * *".to_string()));
    let p = write(&d, &GOOD.replace("    max_memory: 512M", "    max_memory: 512M\n    cron_restart: at night"));
    let e = load(&p).unwrap_err();
    assert_eq!((e.line, e.col), (14, 5), "{e}");
    assert!(e.message.starts_with("invalid `cron_restart: at night`"), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("\"0 3 * * *\"")), "{e}");
}

#[test]
fn fleet_reads_its_keys_and_defaults() {
    let d = tmp("fleet-ok");
    let text = format!(
        "{GOOD}fleet:\n  nats: [nats://10.0.0.5:4222, tls://10.0.0.6:4222]\n  env: prod\n  labels: {{ region: eu }}\n  credentials: {{ file: user.creds }}\n"
    );
    let p = write(&d, &text);
    std::fs::write(d.join("user.creds"), "-----BEGIN NATS USER JWT-----\n").unwrap();
    let l = load(&p).unwrap();
    let fleet = l.config.fleet.as_ref().unwrap();
    assert_eq!(fleet.nats.len(), 2);
    assert_eq!(fleet.env, "prod");
    assert_eq!(fleet.labels["region"], "eu");
    assert_eq!(fleet.credentials, Some(fleet::FleetCredentials::File(d.join("user.creds"))));
    // The host name: `fleet.host`, else the agent's `host` (made a valid key), else the hostname.
    assert_eq!(fleet.host_name(Some("web1.example.com")), "web1-example-com");
    assert!(!fleet.host_name(None).is_empty());
    assert!(load(&write(&d, GOOD)).unwrap().config.fleet.is_none(), "no `fleet:`, no fleet");
}

#[test]
fn fleet_mistakes_are_located_with_a_hint() {
    let d = tmp("fleet-bad");
    let cases = [
        (
            "fleet:\n  nats: [nats://127.0.0.1:4222]\n  env: prod.eu\n",
            3,
            "`fleet.env: prod.eu` cannot name an environment",
        ),
        ("fleet:\n  nats: []\n  env: prod\n", 2, "`fleet.nats` names no server"),
        (
            "fleet:\n  nats: [nats://127.0.0.1:4222]\n  env: prod\n  credentials: { env: DEPLOYER_TEST_UNSET_CREDS }\n",
            4,
            "which is not set",
        ),
        ("fleet:\n  nats: [nats://127.0.0.1:4222]\n  env: prod\n  credentials: { file: none.creds }\n", 4, "no file"),
        ("fleet:\n  nats: [nats://127.0.0.1:4222]\n  env: prod\n  token: abc\n", 4, "unknown field `token`"),
    ];
    let base = GOOD.lines().count();
    for (fleet, line, message) in cases {
        let err = load(&write(&d, &format!("{GOOD}{fleet}"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(message), "{text}");
        assert!(text.contains(&format!("agent.yaml:{}:", base + line)), "{text}");
    }
}
