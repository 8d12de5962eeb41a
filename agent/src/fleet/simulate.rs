//! `deployer-agent simulate-fleet`: N simulated hosts in one process, each with its own
//! connection to the engine, running this agent's fleet code (presence, rollouts) with a deploy
//! that only waits ([`super::node::SimNode`]): the fleet benchmark's 1,000 hosts without 1,000
//! agents and their workers.

use super::node::{Node, SimNode};
use deployer_fleet::EngineOptions;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What `simulate-fleet` was asked for.
pub struct Simulation {
    pub nats: Vec<String>,
    pub env: String,
    pub hosts: usize,
    pub app: String,
    /// The commit every host runs at start.
    pub sha: String,
    pub deploy_time: Duration,
}

/// Run the simulated hosts until SIGINT or SIGTERM.
pub fn simulate(sim: Simulation) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (stop, hosts) = (CancellationToken::new(), TaskTracker::new());
        for i in 0..sim.hosts {
            let host = format!("sim{i}");
            let options = EngineOptions {
                urls: sim.nats.clone(),
                credentials: None,
                ca_cert: None,
                name: format!("deployer-sim@{host}"),
            };
            let node: Arc<dyn Node> = Arc::new(SimNode {
                app: sim.app.clone(),
                live: Arc::new(Mutex::new(Some(sim.sha.clone()))),
                deploy_time: sim.deploy_time,
            });
            hosts.spawn(super::join(options, sim.env.clone(), host, Default::default(), node, stop.clone()));
        }
        hosts.close();
        eprintln!("{} simulated hosts joining `{}`", sim.hosts, sim.env);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
        hosts.wait().await;
        Ok(ExitCode::SUCCESS)
    })
}
