//! A running `deployer-agent`: its API, its CLI, its signals, its log.

use crate::env::{Setup, TestEnv};
use crate::http::{self, Response};
use crate::process::{CliOutput, run_to_end};
use crate::{poll, wait_until};
use deployer_wire::{AppStatus, Deploy, DeployAccepted, WorkerStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

/// What the agent logs once its API listens.
const READY: &str = "agent ready";
/// How long the agent may take to answer its API and bring every worker online.
const STARTUP: Duration = Duration::from_secs(30);
/// How long a stopping agent may take before it is killed.
const SHUTDOWN: Duration = Duration::from_secs(20);
/// How long one API call may take (a reload waits for the new workers).
const API_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a deploy may take from request to a final state (fetch, install, roll).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);

/// The agent process of a test. Dropping it stops the agent (SIGTERM, then SIGKILL after a
/// deadline); when the test failed, its log is printed first.
pub struct Agent {
    setup: Setup,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    /// How many times the log said `agent ready` before the current process was spawned.
    ready_before: usize,
}

impl std::ops::Deref for Agent {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl Agent {
    pub(crate) fn spawn(setup: Setup) -> Agent {
        let mut agent = Agent { setup, child: None, exit: None, ready_before: 0 };
        agent.spawn_process();
        agent
    }

    /// Spawn and wait until started. Ports are picked before the agent binds them, so another
    /// test may take one in between: then the agent exits at once, and it is tried again on new
    /// ports.
    pub(crate) fn start(setup: Setup) -> Agent {
        let mut agent = Agent::spawn(setup);
        for _ in 0..3 {
            if !agent.wait_api() && agent.log().contains("Address already in use") {
                agent.setup.repick_ports();
                agent.spawn_process();
                continue;
            }
            break;
        }
        agent.wait_started();
        agent
    }

    fn spawn_process(&mut self) {
        let append = |name: &str| {
            OpenOptions::new().create(true).append(true).open(self.setup.dir().join(name)).expect("agent log file")
        };
        // Counted before the spawn: an agent that is ready before this process reads its log
        // (a few ms) must not be counted as an earlier one, or its readiness is never seen.
        self.ready_before = self.log().matches(READY).count();
        let mut cmd = self.setup.agent_command();
        cmd.arg("--config")
            .arg(self.setup.config_path())
            .stdin(Stdio::null())
            .stdout(append("agent.out"))
            .stderr(append("agent.err"));
        self.child = Some(cmd.spawn().expect("start deployer-agent"));
        self.exit = None;
    }

    /// Start a new agent process on the same config (the previous one must have exited).
    pub fn start_again(&mut self) {
        assert!(self.exited().is_some(), "the previous agent is still running");
        self.spawn_process();
        self.wait_started();
    }

    /// Stop the agent gracefully (SIGTERM) and wait until it has exited.
    #[track_caller]
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        assert!(self.wait_exit(SHUTDOWN).is_some(), "the agent did not stop within {SHUTDOWN:?}");
    }

    /// Stop the agent gracefully and start a new process on the same config; waits for its API
    /// only (what its workers do is the test's to check: a runtime scale or stop may hold).
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_process();
        assert!(self.wait_api(), "the agent did not answer /healthz within {STARTUP:?} (exit: {:?})", self.exit);
    }

    /// Wait until this agent's API answers (`false` when the agent exited first, or the time is up).
    fn wait_api(&mut self) -> bool {
        let api = self.api_port();
        let mut up = false;
        wait_until(STARTUP, || {
            // Only an agent answers `ok`: a worker of another test could hold the port.
            // Another agent (of a fleet started in parallel) may hold the port we picked and
            // answer `ok`: this agent's own log must also say it is ready.
            up = self.exited().is_none()
                && self.log().matches(READY).count() > self.ready_before
                && http::get(api, "/healthz").is_ok_and(|r| r.status == 200 && r.body == "ok\n");
            up || self.exited().is_some()
        });
        up
    }

    /// Wait until the API answers and (unless the env says not to) every worker is online.
    pub(crate) fn wait_started(&mut self) {
        assert!(self.wait_api(), "the agent did not answer /healthz within {STARTUP:?} (exit: {:?})", self.exit);
        if self.test_env().waits_for_workers() {
            let apps: Vec<(String, u32, bool)> = self
                .test_env()
                .apps()
                .iter()
                .map(|a| (a.name.clone(), a.instance_count(), a.deployed_from_git()))
                .collect();
            for (app, n, from_git) in apps {
                self.wait_online(&app, n as usize);
                // The first deploy's workers are online a moment before `current` is switched.
                if from_git {
                    assert!(
                        wait_until(STARTUP, || self.current_release(&app).is_some()),
                        "`{app}` has online workers but no `current` release"
                    );
                }
            }
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("an agent process").id()
    }

    /// The agent's own log (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("agent.err")).unwrap_or_default()
    }

    /// The value of the token named `name` (`admin` always exists).
    pub fn token(&self, name: &str) -> String {
        self.setup.token_value(name)
    }

    /// An API request with `token` (or none); no body unless `body` is given.
    pub fn api_request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http::request(self.api_port(), method, path, &headers, body, API_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` with the admin token.
    pub fn api_get(&self, path: &str) -> Response {
        self.api_request("GET", path, Some(&self.token("admin")), None)
    }

    /// `POST path` with the admin token and a JSON body.
    pub fn api_post(&self, path: &str, body: serde_json::Value) -> Response {
        self.api_request("POST", path, Some(&self.token("admin")), Some(&body.to_string()))
    }

    /// `POST /v1/apps/{app}/reload`.
    pub fn reload(&self, app: &str, update_env: bool) -> Response {
        self.api_post(&format!("/v1/apps/{app}/reload"), serde_json::json!({ "update_env": update_env }))
    }

    /// `GET /v1/apps`.
    pub fn apps(&self) -> Vec<AppStatus> {
        let r = self.api_get("/v1/apps");
        assert_eq!(r.status, 200, "GET /v1/apps: {}", r.body);
        r.json()
    }

    /// `GET /v1/apps/{app}`.
    pub fn app(&self, app: &str) -> AppStatus {
        let r = self.api_get(&format!("/v1/apps/{app}"));
        assert_eq!(r.status, 200, "GET /v1/apps/{app}: {}", r.body);
        r.json()
    }

    /// The pids of `app`'s workers, by instance id.
    pub fn pids(&self, app: &str) -> Vec<u32> {
        self.app(app).workers.iter().filter_map(|w| w.pid).collect()
    }

    /// Wait until `app` exists and has exactly `n` workers, all online; answers them.
    #[track_caller]
    pub fn wait_online(&self, app: &str, n: usize) -> Vec<WorkerStatus> {
        let online = poll(STARTUP, || {
            // The app may not exist yet (a SIGHUP not applied yet).
            let r = self.api_get(&format!("/v1/apps/{app}"));
            let status: AppStatus = (r.status == 200).then(|| r.json())?;
            let all_online =
                status.workers.len() == n && status.workers.iter().all(|w| w.state == "online" && w.pid.is_some());
            all_online.then_some(status.workers)
        });
        online.unwrap_or_else(|| {
            panic!("`{app}` did not have {n} online workers within {STARTUP:?}: {:#?}", self.app(app))
        })
    }

    /// `POST /v1/apps/{app}/deploys {"ref": git_ref}`; asserts 202 and answers the deploy id.
    #[track_caller]
    pub fn deploy(&self, app: &str, git_ref: &str) -> u64 {
        let r = self.api_post(&format!("/v1/apps/{app}/deploys"), serde_json::json!({ "ref": git_ref }));
        assert_eq!(r.status, 202, "POST /v1/apps/{app}/deploys: {}", r.body);
        r.json::<DeployAccepted>().id
    }

    /// `GET /v1/deploys/{id}`.
    #[track_caller]
    pub fn deploy_status(&self, id: u64) -> Deploy {
        let r = self.api_get(&format!("/v1/deploys/{id}"));
        assert_eq!(r.status, 200, "GET /v1/deploys/{id}: {}", r.body);
        r.json()
    }

    /// Wait until deploy `id` is in a final state; answers it.
    #[track_caller]
    pub fn wait_deploy(&self, id: u64) -> Deploy {
        let done = poll(DEPLOY_TIMEOUT, || {
            let d = self.deploy_status(id);
            d.is_final().then_some(d)
        });
        done.unwrap_or_else(|| {
            panic!("deploy {id} did not end within {DEPLOY_TIMEOUT:?}: {:#?}", self.deploy_status(id))
        })
    }

    /// Wait until deploy `id` has entered `state` (or passed it); answers it.
    #[track_caller]
    pub fn wait_deploy_state(&self, id: u64, state: &str) -> Deploy {
        let reached = poll(DEPLOY_TIMEOUT, || {
            let d = self.deploy_status(id);
            (d.state == state || d.events.iter().any(|e| e.state == state)).then_some(d)
        });
        reached.unwrap_or_else(|| {
            panic!("deploy {id} did not reach `{state}` within {DEPLOY_TIMEOUT:?}: {:#?}", self.deploy_status(id))
        })
    }

    /// `GET /v1/apps/{app}/deploys`, newest first.
    pub fn history(&self, app: &str) -> Vec<Deploy> {
        let r = self.api_get(&format!("/v1/apps/{app}/deploys"));
        assert_eq!(r.status, 200, "GET /v1/apps/{app}/deploys: {}", r.body);
        r.json()
    }

    /// The name of the release `current` points at (`<seq>-<shortsha>`), if any.
    pub fn current_release(&self, app: &str) -> Option<String> {
        let target = std::fs::read_link(self.app_dir(app).join("current")).ok()?;
        Some(target.file_name()?.to_str()?.to_string())
    }

    /// Run `deployer <args>` against this agent with the admin token.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_as(Some(&self.token("admin")), args)
    }

    /// Run `deployer <args>` against this agent with `token` (or none) in `DEPLOYER_TOKEN`.
    pub fn cli_as(&self, token: Option<&str>, args: &[&str]) -> CliOutput {
        let mut cmd = std::process::Command::new(crate::bin("deployer"));
        cmd.current_dir(self.dir())
            .env_remove("DEPLOYER_AGENT")
            .env_remove("DEPLOYER_TOKEN")
            .env("NO_COLOR", "1")
            .arg("--agent")
            .arg(format!("http://127.0.0.1:{}", self.api_port()))
            .args(args);
        if let Some(t) = token {
            cmd.env("DEPLOYER_TOKEN", t);
        }
        run_to_end(cmd, API_TIMEOUT)
    }

    /// Restate the test env and rewrite `agent.yaml` (the agent reads it on SIGHUP or
    /// `reload --update-env`). New apps get a port and a copy of the example app.
    pub fn reconfigure(&mut self, f: impl FnOnce(TestEnv) -> TestEnv) {
        self.setup.reconfigure(f);
    }

    /// Rewrite `app`'s `.env` (its `env_file`).
    pub fn write_env_file(&self, app: &str, content: &str) {
        std::fs::write(self.app_dir(app).join(".env"), content).expect("write .env");
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).unwrap_or_else(|e| panic!("{sig} to the agent: {e}"));
    }

    /// The exit status, if the agent has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let (None, Some(child)) = (self.exit, &mut self.child) {
            self.exit = child.try_wait().expect("wait for the agent");
        }
        self.exit
    }

    /// Wait up to `timeout` for the agent to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll(timeout, || self.exited())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
            let stuck = self.wait_exit(SHUTDOWN).is_none();
            if let (true, Some(child)) = (stuck, &mut self.child) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.config_path().display(), self.config_text());
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!("--- agent log (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}
