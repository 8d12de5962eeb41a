//! The agent's life: load the config, start the supervisor, serve the API, handle signals.

use crate::api::{self, ApiState, WebhookStats};
use crate::cli::{Cli, Command};
use crate::config;
use crate::deploy::Deployer;
use crate::report::Reporter;
use crate::state::Store;
use crate::supervisor::{self, Supervisor};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => Ok(check(&cli.config)),
        Command::Quickstart { dir, port, api_port } => {
            let qs = crate::quickstart::prepare(&dir, port, api_port)?;
            // SAFETY: still single-threaded: no runtime or other thread exists yet.
            unsafe { std::env::set_var("DEPLOYER_TOKEN", &qs.token) };
            eprintln!("{}", qs.instructions());
            run(Cli { config: qs.config, command: Some(Command::Run) })
        }
        Command::Run => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                // Colours only for a person: a log file or a journal gets plain text.
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
                )
                .init();
            // Before the runtime starts the threads that use libgit2.
            crate::source::configure_libgit2();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve(&cli.config))
        }
    }
}

/// `deployer-agent check`: validate and describe, start nothing.
fn check(path: &Path) -> ExitCode {
    match config::load(path).and_then(read_env_files) {
        Ok(loaded) => {
            println!("{}: ok", path.display());
            for line in supervisor::describe(&loaded.config) {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolve every app's worker spec as the agent does when it starts, so a missing or malformed
/// `env_file` fails `check` too instead of only the start.
fn read_env_files(loaded: config::Loaded) -> Result<config::Loaded, config::ConfigError> {
    for app in loaded.config.apps.values() {
        let release = app.path.as_deref().and_then(supervisor::current_release);
        supervisor::resolve_spec(app, release.as_ref())?;
    }
    Ok(loaded)
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = loaded.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the API on `{listen}` (is another agent running?)"))?;
    if loaded.tokens.is_empty() {
        tracing::warn!("no `tokens` configured: every /v1 request will get 401");
    }
    let supervisor = Supervisor::start(&loaded).await?;
    let store = Arc::new(Store::open(&loaded.config.state_dir.join("agent.db"))?);
    let stop_deploys = CancellationToken::new();
    // Reports first: the deploys that start now are reported too.
    let reporter = Reporter::start(store.clone(), &loaded.config, stop_deploys.clone());
    tokio::spawn(crate::report::watch_workers(
        supervisor.clone(),
        store.clone(),
        reporter.clone(),
        stop_deploys.clone(),
    ));
    let deployer = Deployer::start(store.clone(), supervisor.clone(), stop_deploys.clone())?;
    let stop_api = CancellationToken::new();
    let state = Arc::new(ApiState {
        supervisor: supervisor.clone(),
        deployer,
        tokens: RwLock::new(loaded.tokens.clone()),
        locks: Default::default(),
        metrics: Default::default(),
        shutdown: stop_api.clone(),
        store,
        webhooks: WebhookStats::default(),
    });
    let router = api::router(state.clone());
    let api = match &loaded.config.tls {
        // axum knows the peer address of its own listener only: no `ConnectInfo` over TLS.
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, crate::tls::acceptor(tls)?)?;
            tokio::spawn(
                axum::serve(listener, router.into_make_service())
                    .with_graceful_shutdown(stop_api.clone().cancelled_owned())
                    .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(stop_api.clone().cancelled_owned())
                .into_future(),
        ),
    };
    tracing::info!(%listen, tls = loaded.config.tls.is_some(), config = %path.display(), "agent ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match config::load(path) {
                Ok(fresh) => {
                    tracing::info!("SIGHUP: applying the re-read config");
                    *state.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh.tokens.clone();
                    reporter.apply(&fresh.config);
                    if let Err(e) = supervisor.apply(&fresh).await {
                        tracing::error!(error = %e, "could not apply all of the new config");
                    }
                    if let Err(e) = state.deployer.apply_config("config") {
                        tracing::error!(error = %e, "could not queue the first deploy of a new app");
                    }
                }
                Err(e) => tracing::error!("SIGHUP: the config has an error; keeping the running one\n{e}"),
            },
        }
    }
    tracing::info!("stopping: draining connections, then stopping workers");
    stop_deploys.cancel();
    supervisor.shutdown().await;
    stop_api.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
