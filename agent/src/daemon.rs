//! The agent's life: load the config, start the supervisor, serve the API, handle signals.
//!
//! Every task has an owner that awaits it, and the stop (SIGTERM, SIGINT) waits for them in one
//! order: 1. triggers (no deploy is queued from the API, webhooks or pull loops, no SIGHUP is
//! applied, a reload or roll in progress is interrupted: new workers not yet in rotation are
//! ended); 2. running deploys (ended, their final state `interrupted` in SQLite); 3. reports (what
//! is due goes out within `REPORT_GRACE`); 4. fronts (no new connection, in-flight requests
//! drain) and 5. workers (signal, `kill_timeout`, SIGKILL), every app at once within one
//! `drain_timeout + kill_timeout`; 6. the API, which answered until then.

use crate::api::{self, ApiState};
use crate::cli::{Cli, Command};
use crate::config;
use crate::deploy::Deployer;
use crate::report::Reporter;
use crate::secrets::Secrets;
use crate::supervisor::{self, Supervisor};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        Command::Upgrade => {
            // Only `state_dir` is needed: the running agent checks the rest, and the secrets
            // its config names are the agent's, not this command's.
            let state_dir = config::state_dir_of(&cli.config).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(if crate::upgrade::ask(&state_dir)? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Import { file, env, output, force } => {
            let req = crate::import::Request { file: &file, env: env.as_deref(), output: output.as_deref(), force };
            Ok(crate::import::run(&req)?)
        }
        Command::SimulateFleet { nats, env, hosts, app, sha, deploy_time } => {
            crate::fleet::simulate(crate::fleet::Simulation { nats, env, hosts, app, sha, deploy_time })
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
            // Sockets systemd holds for us, while fd 3.. are still what it passed and before any
            // thread could read the environment.
            crate::listeners::claim_from_env();
            // Started by `deployer-agent upgrade`: take the old agent's sockets and lock.
            crate::handover::claim_from_env().context("cannot take over from the agent being upgraded")?;
            // The binary as it was started: an upgrade starts whatever is at this path then.
            let exe = std::env::current_exe().context("cannot find the agent's own binary")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let code = rt.block_on(serve(&cli.config, secrets, &exe));
            // Every task was awaited by its owner; what may still run is a blocking git call a
            // cancelled deploy left (libgit2 cannot be interrupted): not waited for.
            rt.shutdown_timeout(BLOCKING_GRACE);
            code
        }
    }
}

/// How long the agent's exit waits for a blocking call (a git fetch) a cancelled deploy left.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// How long the stop gives the report sender to deliver what is due (the deploys the stop
/// ended, mostly); what is left is sent by the next agent.
const REPORT_GRACE: Duration = Duration::from_secs(5);

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

/// Resolve every app's worker spec as the agent does when it starts (from the recorded live
/// release, read-only), so a missing or malformed `env_file` fails `check` too instead of only
/// the start.
fn read_env_files(loaded: config::Loaded) -> Result<config::Loaded, config::ConfigError> {
    for (name, app) in &loaded.config.apps {
        let release =
            app.source.app_dir().and_then(|dir| supervisor::recorded_release(&loaded.config.state_dir, name, dir));
        supervisor::resolve_spec(app, release.as_ref())?;
    }
    Ok(loaded)
}

async fn serve(path: &Path, secrets: Secrets, exe: &Path) -> anyhow::Result<ExitCode> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::state_dir::secure(&loaded.config)?;
    let listen = loaded.config.listen;
    let listener = crate::listeners::tcp("api", listen)
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| format!("cannot bind the API on `{listen}` (is another agent running?)"))?;
    let api_fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
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
    if crate::handover::is_new_side() {
        // The old agent takes every connection until this one's workers are ready.
        crate::front::accept::hold();
    }
    let supervisor = Supervisor::open(&loaded, secrets.clone(), budget.front_connections)?;
    if crate::handover::is_new_side() {
        // The old agent serves (the API too) until this one's workers are ready.
        boot(&supervisor).await;
    }
    // Only now, under the state dir's lock: an agent refused for a running one must not take the
    // running one's control socket away.
    let control = crate::upgrade::control_listener(&loaded.config.state_dir).with_context(|| {
        format!("cannot listen on `{}`", crate::upgrade::control_path(&loaded.config.state_dir).display())
    })?;
    let control_fd = std::os::fd::AsFd::as_fd(&control).try_clone_to_owned()?;
    let store = supervisor.store();
    // Reports first: the deploys that start now are reported too.
    let reporter = Reporter::start(store.clone(), &loaded.config);
    reporter.watch_workers(supervisor.clone(), store.clone());
    // Fleet mode: one agent of the environment pulls git for all (`fleet/poller.rs`), not each.
    let fleet_pulls = loaded.config.fleet.is_some();
    let deployer = Deployer::start(store.clone(), supervisor.clone(), secrets.clone(), fleet_pulls)?;
    // Fleet mode (`fleet:`): one task, owned here, stopped with the triggers.
    let (fleet, stop_fleet) = (TaskTracker::new(), CancellationToken::new());
    crate::fleet::start(
        loaded.config.fleet.as_ref(),
        loaded.config.host.as_deref(),
        deployer.clone(),
        supervisor.clone(),
        &fleet,
        stop_fleet.clone(),
    );
    fleet.close();
    let stop_api = CancellationToken::new();
    let state = Arc::new(ApiState {
        supervisor: supervisor.clone(),
        deployer,
        tokens: RwLock::new(loaded.tokens.clone()),
        locks: Default::default(),
        metrics: Default::default(),
        shutdown: stop_api.clone(),
        secrets: secrets.clone(),
    });
    let router = api::router(state.clone());
    // The API's accept loop (and TLS handshakes); its connections are the accept loop's own.
    let api = TaskTracker::new();
    match &loaded.config.tls {
        Some(tls) => {
            let acceptor = crate::tls::acceptor(tls)?;
            let listener = crate::tls::TlsListener::new(listener, acceptor, &api, stop_api.clone())?;
            api.spawn(api::serve::serve(listener, router, budget.api_connections, stop_api.clone()))
        }
        None => api.spawn(api::serve::serve(listener, router, budget.api_connections, stop_api.clone())),
    };
    tracing::info!(%listen, tls = loaded.config.tls.is_some(), config = %path.display(), "agent ready");
    crate::listeners::close_unused();
    let (upgrades_tx, mut upgrades) = tokio::sync::mpsc::channel(1);
    let by_signal = upgrades_tx.clone();
    api.spawn(crate::upgrade::serve_control(
        tokio::net::UnixListener::from_std(control)?,
        upgrades_tx,
        stop_api.clone(),
        api.clone(),
    ));
    if crate::handover::is_new_side() {
        // Serving less than the old agent is not an upgrade: say why and stop; the old one
        // serves on.
        let failed = supervisor.failed_at_start();
        if !failed.is_empty() {
            let why = format!("workers did not start: {}", failed.join("; "));
            crate::handover::say_failed(&why);
            anyhow::bail!("giving up the upgrade: {why}");
        }
        crate::front::accept::open();
        let sup = supervisor.clone();
        crate::handover::say_ready(move || {
            sup.rewrite_pid_record();
            tracing::info!("upgrade complete: the previous agent has exited");
        });
    }
    if crate::handover::is_new_side() {
        crate::sd_notify::notify("READY=1");
    } else {
        // The API answers from now on; the apps come up meanwhile, each `starting` until its
        // workers are ready. The unit is ready (`systemctl start` returns) once they are.
        let sup = supervisor.clone();
        api.spawn(async move {
            boot(&sup).await;
            crate::sd_notify::notify("READY=1");
        });
    }
    api.spawn(crate::memory::return_freed(stop_api.clone()));
    if let Some(every) = crate::sd_notify::watchdog_interval() {
        // Pings until the API stops, last (a stop is bounded by the unit's TimeoutStopSec).
        let (supervisor, stop) = (supervisor.clone(), stop_api.clone());
        api.spawn(async move {
            tokio::select! {
                () = crate::sd_notify::watchdog(every, supervisor) => {}
                () = stop.cancelled() => {}
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // SIGUSR2 asks for an upgrade as `deployer-agent upgrade` does; its progress is in the log.
    let mut usr2 = signal(SignalKind::user_defined2())?;
    // SIGHUPs are applied by a task of their own, so a SIGTERM is heard while one is applied.
    let sighup = Sighup {
        path: path.to_path_buf(),
        secrets: secrets.clone(),
        state: state.clone(),
        reporter: reporter.clone(),
        wake: Arc::new(Notify::new()),
        stop: CancellationToken::new(),
    };
    let applying = tokio::spawn(sighup.clone().run());
    // Set when an upgrade handed over: its asker, the new pid, and the pair the new agent
    // watches (closed when this process exits).
    let mut upgraded = None;
    let signal = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            // Several SIGHUPs during one apply make one more apply, of the file as it is then.
            _ = hup.recv() => sighup.wake.notify_one(),
            _ = usr2.recv() => {
                let (progress, _) = tokio::sync::mpsc::unbounded_channel();
                if by_signal.try_send(crate::upgrade::Request { progress }).is_err() {
                    tracing::warn!("SIGUSR2: an upgrade is already asked for");
                }
            }
            Some(req) = upgrades.recv() => {
                let sockets = match supervisor.handover_fds() {
                    Ok(mut fds) => {
                        fds.push(("api".into(), api_fd.try_clone()?));
                        fds.push(("control".into(), control_fd.try_clone()?));
                        crate::upgrade::Sockets { fds }
                    }
                    Err(e) => {
                        req.say(format!("error: cannot copy the sockets to hand over: {e}"));
                        continue;
                    }
                };
                // No new deploy from here on (requests answer 503, pull loops pause): the new
                // agent takes them once it serves; the running ones end first.
                state.deployer.pause();
                let started = async {
                    crate::upgrade::wait_for_deploys(|| state.deployer.busy_apps(), &req).await?;
                    crate::upgrade::start_new(exe, path, sockets, &req).await
                };
                // A stop asked meanwhile wins: the new agent (if started) is ended with the
                // future that holds it, and this one stops as asked.
                let outcome = tokio::select! {
                    r = started => r,
                    _ = term.recv() => {
                        req.say("error: the agent was asked to stop (SIGTERM) during the upgrade; it stops");
                        break "SIGTERM";
                    }
                    _ = int.recv() => {
                        req.say("error: the agent was asked to stop (SIGINT) during the upgrade; it stops");
                        break "SIGINT";
                    }
                };
                match outcome {
                    Ok((pid, pair)) => {
                        req.say(format!("the new agent (pid {pid}) serves; this one stops taking connections and drains"));
                        crate::sd_notify::notify(&format!("MAINPID={pid}"));
                        upgraded = Some((req, pid, pair));
                        break "upgrade";
                    }
                    Err(e) => {
                        supervisor.rewrite_pid_record();
                        state.deployer.resume();
                        req.say(format!("error: {e}"));
                    }
                }
            }
        }
    };

    // Our copies of the API's and the control socket's fds: closed now, so no connection waits
    // in a socket nobody will accept from (after an upgrade the new agent holds its own).
    drop((api_fd, control_fd));
    // The stop, in order; each step waits for the one before.
    let stopping = Instant::now();
    let ms = |t: Instant| t.elapsed().as_millis() as u64;
    tracing::info!(signal, "stopping: triggers, then deploys, reports, connections, workers");
    if upgraded.is_none() {
        // Not after an upgrade: the unit's main process is the new agent now, and it runs on.
        crate::sd_notify::notify("STOPPING=1");
    }
    // 1. Triggers: no deploy is queued from now on (API, webhooks, pull loops), no SIGHUP applied;
    //    a reload or roll in progress (a SIGHUP's too) is interrupted, its new workers ended.
    state.deployer.close();
    stop_fleet.cancel();
    sighup.stop.cancel();
    supervisor.halt();
    if let Err(e) = applying.await {
        tracing::error!(error = %e, "the SIGHUP task ended abnormally");
    }
    // 2. Running deploys end, each with its final state in the database; the fleet task (which
    //    follows them) then leaves the environment.
    state.deployer.shutdown().await;
    if tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await.is_err() {
        tracing::warn!("fleet: still leaving the environment after 5s; its presence expires by itself");
    }
    tracing::info!(after_ms = ms(stopping), "deploys ended and recorded");
    // 3. Reports: what is due now goes out, within a grace.
    reporter.shutdown(REPORT_GRACE).await;
    tracing::info!(after_ms = ms(stopping), "reports flushed");
    // 4 and 5. Fronts stop accepting and drain, then workers stop: every app at once, each
    //    within its drain_timeout + kill_timeout.
    supervisor.shutdown().await;
    tracing::info!(after_ms = ms(stopping), "connections drained, workers stopped");
    if let Some((req, pid, _pair)) = &upgraded {
        req.say(format!("ok: upgraded; the new agent (pid {pid}) serves, this one stopped"));
    }
    let pair = upgraded.map(|(_, _, pair)| pair); // the asker's channel closes here; the pair at exit
    // 6. The API answered until now (status, streams); its streams end here.
    stop_api.cancel();
    api.close();
    if tokio::time::timeout(Duration::from_secs(5), api.wait()).await.is_err() {
        tracing::warn!("API connections still open after 5s; closing them");
    }
    tracing::info!(after_ms = ms(stopping), "stopped");
    drop(pair);
    Ok(ExitCode::SUCCESS)
}

/// Start every app's workers (see [`Supervisor::boot`]) and say when they are up.
async fn boot(supervisor: &Supervisor) {
    let started = Instant::now();
    supervisor.boot().await;
    let failed = supervisor.failed_at_start();
    let apps = supervisor.list().len();
    let after_ms = started.elapsed().as_millis() as u64;
    if failed.is_empty() {
        tracing::info!(apps, after_ms, "apps started");
    } else {
        tracing::warn!(
            apps,
            failed = failed.len(),
            after_ms,
            "apps started, some of them failed: `deployer ls` shows which"
        );
    }
}

/// Applies the config file on SIGHUP, one apply at a time, until the agent stops.
#[derive(Clone)]
struct Sighup {
    path: PathBuf,
    secrets: Secrets,
    state: Arc<ApiState>,
    reporter: Arc<Reporter>,
    /// Notified per SIGHUP (a permit is kept while an apply runs).
    wake: Arc<Notify>,
    /// The agent stops: no further apply (the running one is interrupted by `Supervisor::halt`).
    stop: CancellationToken,
}

impl Sighup {
    async fn run(self) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            crate::sd_notify::notify(&crate::sd_notify::reloading());
            self.apply().await;
            crate::sd_notify::notify("READY=1");
        }
    }

    async fn apply(&self) {
        let fresh = match config::load(&self.path) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!("SIGHUP: the config has an error; keeping the running one\n{e}");
                return;
            }
        };
        // First: every child started from here on, and every text masked, follows the new
        // config's secrets.
        self.secrets.update(&fresh.config);
        tracing::info!("SIGHUP: applying the re-read config");
        if let Err(e) = crate::state_dir::secure(&fresh.config) {
            tracing::error!(error = %e, "could not prepare the state dir");
        }
        *self.state.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh.tokens.clone();
        self.reporter.apply(&fresh.config);
        if let Err(e) = self.state.supervisor.apply(&fresh).await {
            tracing::error!(error = %e, "could not apply all of the new config");
        }
        if self.stop.is_cancelled() {
            tracing::info!("SIGHUP: interrupted by the agent's stop");
            return;
        }
        if let Err(e) = self.state.deployer.apply_config(deployer_wire::Trigger::Config) {
            tracing::error!(error = %e, "could not queue the first deploy of a new app");
        }
    }
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
