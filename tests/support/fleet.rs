//! Several agents deploying one app from one [`TestRepo`], and the `deployer` CLI run in that
//! repository against a `deployer.yaml` naming them: a fleet on loopback.

use crate::agent::Agent;
use crate::env::{AppSpec, TestEnv};
use crate::process::{CliOutput, run_to_end};
use crate::repo::TestRepo;
use deployer_wire::Release;
use std::time::Duration;

/// How long one CLI run may take (a push to five hosts, two at a time).
const CLI_TIMEOUT: Duration = Duration::from_secs(240);

/// The agents of a fleet, in host order, and the repository they deploy from.
pub struct TestFleet {
    pub repo: TestRepo,
    pub agents: Vec<Agent>,
    token: String,
}

impl TestFleet {
    /// `n` agents, each running `web` (two workers) deployed from `repo`'s `main`, all accepting
    /// one admin token; `tune(i, app)` changes agent `i`'s app. Answers once every agent serves.
    pub fn start(repo: TestRepo, n: usize, tune: impl Fn(usize, AppSpec) -> AppSpec + Sync) -> TestFleet {
        let token = format!("fleet-secret-{}", std::process::id());
        let agents = std::thread::scope(|s| {
            let started: Vec<_> = (0..n)
                .map(|i| {
                    let env = TestEnv::new().admin_token(&token).web(|a| tune(i, a.repo(&repo)));
                    s.spawn(move || env.start())
                })
                .collect();
            started.into_iter().map(|h| h.join().expect("an agent started")).collect()
        });
        TestFleet { repo, agents, token }
    }

    /// `n` agents as [`TestFleet::start`], each also joining environment `env` on the engine at
    /// `nats` (fleet mode) as host `h<i>`.
    pub fn start_on_nats(
        repo: TestRepo,
        n: usize,
        nats: &[String],
        env: &str,
        tune: impl Fn(usize, AppSpec) -> AppSpec + Sync,
    ) -> TestFleet {
        let token = format!("fleet-secret-{}", std::process::id());
        let agents = std::thread::scope(|s| {
            let started: Vec<_> = (0..n)
                .map(|i| {
                    let env = Self::nats_env(&repo, &token, nats, env, i, &tune);
                    s.spawn(move || env.start())
                })
                .collect();
            started.into_iter().map(|h| h.join().expect("an agent started")).collect()
        });
        TestFleet { repo, agents, token }
    }

    /// The test env of host `h<i>` of a fleet-mode environment (to start one more host later).
    pub fn nats_env(
        repo: &TestRepo,
        token: &str,
        nats: &[String],
        env: &str,
        i: usize,
        tune: impl Fn(usize, AppSpec) -> AppSpec,
    ) -> TestEnv {
        let fleet = format!("{{ nats: [{}], env: {env}, host: h{i}, labels: {{ index: \"{i}\" }} }}", nats.join(", "));
        TestEnv::new().admin_token(token).agent_set("fleet", &fleet).web(|a| tune(i, a.repo(repo)))
    }

    /// Writes `deployer.yaml` for a fleet-mode environment `env` on the engine at `nats`.
    pub fn write_nats_file(&self, env: &str, nats: &[String], rollout: &str) {
        let text =
            format!("app: web\nenvironments:\n  {env}:\n    nats: [{}]\n    rollout: {rollout}\n", nats.join(", "));
        std::fs::write(self.repo.path().join("deployer.yaml"), text).expect("write deployer.yaml");
    }

    /// A fleet of agents started otherwise (over TLS, say), all accepting `token` as `admin`.
    pub fn with_agents(repo: TestRepo, agents: Vec<Agent>, token: &str) -> TestFleet {
        TestFleet { repo, agents, token: token.to_string() }
    }

    /// The admin token every agent of the fleet accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The API URL of agent `i`.
    pub fn host(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.agents[i].api_port())
    }

    /// Every agent's URL, in order.
    pub fn hosts(&self) -> Vec<String> {
        (0..self.agents.len()).map(|i| self.host(i)).collect()
    }

    /// Writes `deployer.yaml` at the repository's root: app `web`, one environment `env` of
    /// `hosts`, its token in `DEPLOYER_FLEET_TOKEN`, and `rollout` as a YAML flow map.
    pub fn write_file(&self, env: &str, hosts: &[String], rollout: &str) {
        let hosts = hosts.join(", ");
        let text = format!(
            "app: web\nenvironments:\n  {env}:\n    hosts: [{hosts}]\n    token_env: DEPLOYER_FLEET_TOKEN\n    rollout: {rollout}\n"
        );
        std::fs::write(self.repo.path().join("deployer.yaml"), text).expect("write deployer.yaml");
    }

    /// Runs `deployer <args>` in the repository with the fleet's token.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        run_to_end(self.cli_command(args), CLI_TIMEOUT)
    }

    /// `deployer <args>` ready to spawn (for commands that run until stopped, like `logs -f`).
    pub fn cli_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(crate::bin("deployer"));
        cmd.current_dir(self.repo.path())
            .env_remove("DEPLOYER_AGENT")
            .env_remove("DEPLOYER_TOKEN")
            .env_remove("DEPLOYER_FILE")
            .env("NO_COLOR", "1")
            .env("DEPLOYER_FLEET_TOKEN", &self.token)
            .args(args);
        cmd
    }

    /// The commit agent `i`'s current release was made from.
    pub fn live_sha(&self, i: usize) -> Option<String> {
        let r = self.agents[i].api_get("/v1/apps/web/releases");
        assert_eq!(r.status, 200, "releases of agent {i}: {}", r.body);
        r.json::<Vec<Release>>().into_iter().find(|r| r.current).map(|r| r.sha)
    }
}
