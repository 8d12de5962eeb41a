//! `deployer-agent import`: a PM2 user's `ecosystem.config.js` becomes an `agent.yaml` that
//! passes `check`, starts and serves; what does not map is said on stderr with the reason.

use deployer_tests::{AppSpec, TestEnv, http, wait_until};
use std::time::Duration;

#[test]
fn an_ecosystem_file_with_two_apps_is_imported_checked_started_and_served() {
    let setup = TestEnv::new().app(AppSpec::new("api")).dont_wait_for_workers().setup();
    let (web_port, api_port) = (setup.port("web"), setup.port("api"));
    // The TestEnv wrote a copy of the example app in `web/` and in `api/`.
    let ecosystem = format!(
        r#"module.exports = {{
  apps: [
    {{
      name: "web", script: "app.js", cwd: "web",
      instances: "max", exec_mode: "cluster",
      max_memory_restart: "300M", cron_restart: "0 3 * * *", kill_timeout: 3000,
      env: {{ GREETING: "dev", DELAY_MS: 0 }},
      env_production: {{ GREETING: "web in production", PORT: {web_port} }},
    }},
    {{
      name: "api", script: "./app.js", cwd: "api", exec_mode: "fork",
      max_restarts: 5, min_uptime: "2s", watch: true,
      env: {{ PORT: {api_port}, DELAY_MS: 0 }},
      env_production: {{ GREETING: "api in production" }},
    }},
  ],
}};
"#
    );
    std::fs::write(setup.dir().join("ecosystem.config.js"), ecosystem).expect("write ecosystem.config.js");

    let import = ["import", "ecosystem.config.js", "--env", "production", "-o", "imported.yaml"];
    let out = setup.run_agent(&import).success();
    assert!(out.stderr.contains("imported 2 app(s)"), "{out}");
    for unmapped in ["web.cron_restart: ", "api.watch: "] {
        assert!(out.stderr.contains(unmapped), "`{unmapped}` not reported\n{out}");
    }
    let imported = std::fs::read_to_string(setup.dir().join("imported.yaml")).expect("imported.yaml");
    for key in [
        "instances: max",
        "max_memory: 300M",
        "proxy: http",
        &format!("port: {web_port}"),
        "proxy: none",
        "cron_restart: ",
    ] {
        assert!(imported.contains(key), "no `{key}` in\n{imported}");
    }
    let check = setup.run_agent(&["check", "--config", "imported.yaml"]).success();
    assert!(check.stdout.contains("imported.yaml: ok"), "{check}");

    // An existing file is not overwritten unless told to.
    let again = setup.run_agent(&import).failure(1);
    assert!(again.stderr.contains("pass `--force`"), "{again}");
    let mut forced = import.to_vec();
    forced.push("--force");
    setup.run_agent(&forced).success();

    // Run it as it is, with this test's API port and token in place of the defaults.
    let ours = setup.config_text();
    let api_and_tokens = &ours[ours.find("listen:").expect("listen")..ours.find("apps:").expect("apps")];
    let start = imported.find("listen:").expect("the import writes `listen`");
    let end = imported.find("apps:").expect("the import writes `apps`");
    setup.edit_config(|_| format!("{}{api_and_tokens}{}", &imported[..start], &imported[end..]));
    let agent = setup.start();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    agent.wait_online("web", cpus);
    agent.wait_online("api", 1);
    let answers = |port: u16, greeting: &str| {
        wait_until(Duration::from_secs(10), || {
            http::get(port, "/").is_ok_and(|r| r.status == 200 && r.body.starts_with(greeting))
        })
    };
    assert!(answers(web_port, "web in production from worker"), "web did not serve\n{}", agent.log());
    assert!(answers(api_port, "api in production from worker"), "api did not serve\n{}", agent.log());
}

#[test]
fn a_pm2_jlist_dump_is_imported_without_the_shell_environment() {
    let setup = TestEnv::new().dont_wait_for_workers().setup();
    let web = setup.dir().join("web");
    let script = web.join("app.js");
    // What `pm2 jlist` prints for one app running twice in cluster mode (abridged).
    let entry = |id: u32| {
        serde_json::json!({
            "name": "web", "pm_id": id, "pid": 4000 + id,
            "pm2_env": {
                "name": "web", "pm_id": id, "pm_exec_path": script, "pm_cwd": web, "exec_interpreter": "node",
                "exec_mode": "cluster_mode", "instances": 2, "status": "online", "restart_time": 0,
                "env": { "PORT": "3999", "GREETING": "hi", "PATH": "/usr/bin", "HOME": "/root", "PM2_HOME": "/root/.pm2" },
            }
        })
    };
    let jlist = serde_json::Value::Array(vec![entry(0), entry(1)]);
    std::fs::write(setup.dir().join("apps.json"), jlist.to_string()).expect("write apps.json");

    let out = setup.run_agent(&["import", "apps.json"]).success();
    assert!(out.stderr.contains("imported 1 app(s)"), "{out}");
    assert!(out.stderr.contains("web.env: left out what PM2 recorded"), "{out}");
    assert!(out.stdout.contains("instances: 2") && out.stdout.contains("port: 3999"), "{out}");
    assert!(out.stdout.contains("GREETING: hi") && !out.stdout.contains("PM2_HOME: "), "{out}");
    assert!(!out.stderr.contains("warning"), "{out}");
}
