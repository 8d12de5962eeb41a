//! The agent's life: load the config, start the supervisor, serve the API, handle signals.

use crate::api::{self, ApiState, WebhookStats};
use crate::cli::{Cli, Command};
use crate::config;
use crate::deploy::Deployer;
use crate::report::Reporter;
use crate::secrets::Secrets;
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
        Command::Check => {
            // `deployer-agent check | head -1` ends quietly instead of panicking on a closed
            // stdout. Only here: the daemon keeps ignoring SIGPIPE.
            // SAFETY: single-threaded, nothing else runs yet.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            Ok(check(&cli.config))
        }
        Command::Quickstart { dir, port, api_port } => {
            let qs = crate::quickstart::prepare(&dir, port, api_port)?;
            // SAFETY: still single-threaded: no runtime or other thread exists yet.
            unsafe { std::env::set_var("DEPLOYER_TOKEN", &qs.token) };
            eprintln!("{}", qs.instructions());
            run(Cli { config: qs.config, command: Some(Command::Run) })
        }
        Command::Run => {
            close_inherited_on_exec();
            // Empty until the config is loaded; the log masks whatever it holds from then on.
            let secrets = Secrets::default();
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .with_writer(MaskedStderr(secrets.clone()))
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
            rt.block_on(serve(&cli.config, secrets))
        }
    }
}

/// Mark every fd above stderr that the agent inherited close-on-exec. Whoever started the agent
/// (a wrapper script's lock, a process manager) may have left fds open without it, and every
/// child inherits those: a worker run as `user:` could read or write through them what root
/// opened. The agent's own fds are all opened close-on-exec; a worker's listener in `fd` mode is
/// put on fd 3 after the fork.
fn close_inherited_on_exec() {
    // SAFETY: a plain syscall on the fd table; nothing else runs yet.
    let marked = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
    if marked {
        return;
    }
    // Kernels before 5.11: one by one. The list is read first (its own fd is then closed).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect())
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; an fd that is not open any more answers EBADF, which is fine.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
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
        let release = app.source.app_dir().and_then(supervisor::current_release);
        supervisor::resolve_spec(app, release.as_ref())?;
    }
    Ok(loaded)
}

async fn serve(path: &Path, secrets: Secrets) -> anyhow::Result<ExitCode> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::state_dir::secure(&loaded.config)?;
    let listen = loaded.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the API on `{listen}` (is another agent running?)"))?;
    if loaded.tokens.is_empty() {
        tracing::warn!("no `tokens` configured: every /v1 request will get 401");
    }
    secrets.update(&loaded.config);
    let nofile = crate::limits::raise_nofile().context("cannot read the fd limit (RLIMIT_NOFILE)")?;
    let budget = crate::limits::FdBudget::for_limit(nofile);
    tracing::info!(
        nofile,
        front_connections = budget.front_connections,
        api_connections = budget.api_connections,
        "file descriptors shared"
    );
    let supervisor = Supervisor::start(&loaded, secrets.clone(), budget.front_connections).await?;
    let store = supervisor.store();
    let stop_deploys = CancellationToken::new();
    // Reports first: the deploys that start now are reported too.
    let reporter = Reporter::start(store.clone(), &loaded.config, stop_deploys.clone());
    tokio::spawn(crate::report::watch_workers(
        supervisor.clone(),
        store.clone(),
        reporter.clone(),
        stop_deploys.clone(),
    ));
    let deployer = Deployer::start(store.clone(), supervisor.clone(), secrets.clone(), stop_deploys.clone())?;
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
        secrets: secrets.clone(),
    });
    let router = api::router(state.clone());
    let api = match &loaded.config.tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, crate::tls::acceptor(tls)?)?;
            tokio::spawn(api::serve::serve(listener, router, budget.api_connections, stop_api.clone()))
        }
        None => tokio::spawn(api::serve::serve(listener, router, budget.api_connections, stop_api.clone())),
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
                    // First: every child started from here on, and every text masked, follows
                    // the new config's secrets.
                    secrets.update(&fresh.config);
                    tracing::info!("SIGHUP: applying the re-read config");
                    if let Err(e) = crate::state_dir::secure(&fresh.config) {
                        tracing::error!(error = %e, "could not prepare the state dir");
                    }
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

/// The agent's own log: stderr, each event written whole with the agent's secrets masked (an
/// error from git or a receiver may quote one).
struct MaskedStderr(Secrets);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedEvent<'a>;
    fn make_writer(&'a self) -> MaskedEvent<'a> {
        MaskedEvent { secrets: &self.0, buf: Vec::new() }
    }
}

/// One event being written: kept until it is complete, then masked and written at once.
struct MaskedEvent<'a> {
    secrets: &'a Secrets,
    buf: Vec<u8>,
}

impl std::io::Write for MaskedEvent<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedEvent<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        // Nowhere to report a failed write of the log itself.
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), self.secrets.mask(&text).as_bytes());
    }
}
