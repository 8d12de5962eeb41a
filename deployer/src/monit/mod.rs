//! `deployer monit [ENV]`: a live dashboard of every app and worker of one agent, or of every
//! host of an environment, like `pm2 monit`.
//!
//! One loop owns the [`Dashboard`] and the terminal; everything else sends it [`Update`]s over
//! one channel: a poller per host (`GET /v1/apps` every `--interval`), the log stream of the
//! selected app, the actions the keys asked for, and the key thread. After each batch of
//! updates the loop draws the screen again from the state ([`render::draw`]). Ending the loop
//! (a key, a signal, an error) drops the tasks with the runtime and gives the terminal back.

pub mod render;
mod screen;
pub mod state;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deployer_wire::{AppStatus, LogLine, ReloadRequest};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};
use crate::commands::Context;
use crate::fleet::rollout::reason;
use crate::output::{count, human_elapsed};
use crate::report::Hinted;
use screen::{Input, Keys, Screen};
use state::{AppKey, Dashboard, Failure, Status};

/// The fewest lines of log the stream replays when it is opened.
const LOG_REPLAY: u32 = 100;

/// The shortest `--interval`: faster would load the agents for nothing a person can read.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// How long a host may take to list its apps before it counts as unreachable: at least this,
/// or two intervals.
const MIN_ANSWER_TIME: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every host of this environment of deployer.yaml [default: the one agent of --agent]
    #[arg(value_name = "ENV")]
    pub env: Option<String>,

    /// Show only this app
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,

    /// How often to ask each agent for its apps and workers (200ms at the least)
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// What the loop is told.
#[derive(Debug)]
pub enum Update {
    Input(Input),
    /// Keys cannot be read any more (the terminal went away).
    InputFailed(String),
    /// A host's apps, or why it gave none.
    Apps {
        host: usize,
        answer: Result<Vec<AppStatus>, Failure>,
        at: Instant,
    },
    LogsOpened(AppKey),
    LogLine(AppKey, LogLine),
    LogsFailed(AppKey, String),
    /// An action ended: what it did, or why it failed.
    Done(Result<String, String>),
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if ctx.json {
        return Err(Hinted::new(
            "`monit` is a live view for a terminal; it has no --json",
            "for scripts: `deployer ls --json` (one agent) or `deployer status ENV --json` (an environment)",
        )
        .into());
    }
    if args.interval < MIN_INTERVAL {
        return Err(Hinted::new(
            format!("--interval {} is too short", humantime::format_duration(args.interval)),
            format!("ask every {} or less often", humantime::format_duration(MIN_INTERVAL)),
        )
        .into());
    }
    let (title, hosts): (String, Vec<(String, Client)>) = match &args.env {
        Some(env) => {
            let hosts: Vec<(String, Client)> =
                ctx.fleet_hosts(env)?.into_iter().map(|(host, client)| (host.label(), client)).collect();
            (format!("{env} ({})", count(hosts.len() as u32, "host")), hosts)
        }
        None => (ctx.client.agent(), vec![(ctx.client.agent(), ctx.client.clone())]),
    };
    if !screen::is_terminal() {
        return Err(Hinted::new(
            "`monit` needs a terminal: its input or output is not one",
            "run it in a terminal; for scripts: `deployer ls --json`, or `deployer status ENV --json`",
        )
        .into());
    }
    let labels = hosts.iter().map(|(label, _)| label.clone()).collect();
    let dashboard = Dashboard::new(title, args.interval, labels, args.app);
    let (mut monit, mut updates) = Monit::new(dashboard, hosts.into_iter().map(|(_, c)| c).collect());
    let result = monit.run(&mut updates).await;
    monit.stop();
    result.map(|()| ExitCode::SUCCESS)
}

/// The loop's own things besides the state: the hosts' clients, and the tasks it started.
struct Monit {
    dash: Dashboard,
    clients: Vec<Client>,
    /// Wakes a host's poller before its next tick (after an action on it).
    pokes: Vec<Arc<Notify>>,
    tx: UnboundedSender<Update>,
    /// The log stream of the selected app.
    logs: Option<(AppKey, JoinHandle<()>)>,
    pollers: Vec<JoinHandle<()>>,
}

impl Monit {
    fn new(dash: Dashboard, clients: Vec<Client>) -> (Monit, UnboundedReceiver<Update>) {
        // Unbounded: the key thread sends without blocking, and the loop takes everything that
        // is there before each draw, so nothing piles up while the screen keeps pace.
        let (tx, rx) = unbounded_channel();
        let pokes = clients.iter().map(|_| Arc::new(Notify::new())).collect();
        (Monit { dash, clients, pokes, tx, logs: None, pollers: Vec::new() }, rx)
    }

    async fn run(&mut self, rx: &mut UnboundedReceiver<Update>) -> anyhow::Result<()> {
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        for host in 0..self.clients.len() {
            let poller = poll_host(
                host,
                self.clients[host].clone(),
                self.dash.interval,
                self.pokes[host].clone(),
                self.tx.clone(),
            );
            self.pollers.push(tokio::spawn(poller));
        }
        // Declared in this order, dropped in the other: the key thread stops before the
        // terminal is given back.
        let mut screen = Screen::enter().context("cannot take over the terminal")?;
        let _keys = Keys::spawn(self.tx.clone());
        loop {
            self.follow_selected();
            screen.terminal.draw(|frame| render::draw(frame, &self.dash)).context("cannot draw on the terminal")?;
            let first = tokio::select! {
                update = rx.recv() => update,
                _ = term.recv() => return Ok(()),
                _ = hangup.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
            };
            // The loop holds a sender: the channel never closes under it.
            let Some(first) = first else { return Ok(()) };
            // Everything already there is handled before the screen is drawn once.
            let mut next = Some(first);
            while let Some(update) = next {
                if !self.handle(update)? {
                    return Ok(());
                }
                next = rx.try_recv().ok();
            }
        }
    }

    /// Applies one update; `false` when the dashboard should end.
    fn handle(&mut self, update: Update) -> anyhow::Result<bool> {
        match update {
            Update::Input(Input::Quit) => return Ok(false),
            Update::Input(Input::Up) => self.dash.select(-1),
            Update::Input(Input::Down) => self.dash.select(1),
            Update::Input(Input::Redraw) => {}
            Update::Input(action) => self.act(action),
            Update::InputFailed(why) => return Err(anyhow::anyhow!("cannot read keys from the terminal: {why}")),
            Update::Apps { host, answer, at } => self.dash.apply(host, answer, at),
            Update::LogsOpened(key) => self.dash.logs_opened(&key),
            Update::LogLine(key, line) => self.dash.log_line(&key, line),
            Update::LogsFailed(key, why) => self.dash.logs_failed(&key, why),
            Update::Done(Ok(text)) => self.dash.status = Status::Done(text),
            Update::Done(Err(text)) => self.dash.status = Status::Failed(text),
        }
        Ok(true)
    }

    /// Opens the log stream of the selected app when the selection changed (closing the other).
    fn follow_selected(&mut self) {
        let wanted = self.dash.selected.clone();
        if self.logs.as_ref().map(|(key, _)| key) == wanted.as_ref() {
            return;
        }
        if let Some((_, task)) = self.logs.take() {
            task.abort();
        }
        if let Some(key) = wanted {
            self.dash.logs_opened(&key);
            let task = tokio::spawn(follow_logs(
                key.clone(),
                self.clients[key.host].clone(),
                self.dash.interval,
                self.tx.clone(),
            ));
            self.logs = Some((key, task));
        }
    }

    /// Starts what a key asked of the selected app; its end comes back as [`Update::Done`].
    fn act(&mut self, input: Input) {
        let Some((key, app)) = self.dash.selected_app() else {
            self.dash.status = Status::Failed("no app selected: wait for an agent to answer".into());
            return;
        };
        let client = self.clients[key.host].clone();
        let name = key.app.clone();
        let on =
            if self.dash.hosts.len() > 1 { format!(" on {}", self.dash.hosts[key.host].label) } else { String::new() };
        let host = key.host;
        match input {
            Input::Reload => self.spawn_action(host, format!("reloading {name}{on}"), async move {
                match client.reload(&name, &ReloadRequest::default()).await {
                    Ok(o) if o.ok => Ok(format!(
                        "reloaded {name}{on}: {} replaced in {}",
                        count(o.replaced, "worker"),
                        human_elapsed(o.duration_ms)
                    )),
                    Ok(o) => Err(format!(
                        "reload of {name}{on} failed: {}",
                        o.error.as_deref().unwrap_or("the agent gave no reason")
                    )),
                    Err(e) => Err(format!("reload of {name}{on} failed: {}", why(&e))),
                }
            }),
            Input::Restart => self.spawn_action(host, format!("restarting {name}{on}"), async move {
                match client.restart(&name).await {
                    Ok(s) => Ok(format!("restarted {name}{on}: {} running", count(s.workers.len() as u32, "worker"))),
                    Err(e) => Err(format!("restart of {name}{on} failed: {}", why(&e))),
                }
            }),
            Input::Scale(by) => {
                let to = i64::from(app.status.instances) + i64::from(by);
                let Ok(to) = u32::try_from(to) else {
                    self.dash.status = Status::Failed(format!("{name} runs no instance to take away"));
                    return;
                };
                self.spawn_action(host, format!("scaling {name}{on} to {to}"), async move {
                    match client.scale(&name, &deployer_wire::ScaleRequest { instances: Some(to), by: None }).await {
                        Ok(s) => Ok(format!("scaled {name}{on} to {}", count(s.instances, "instance"))),
                        Err(e) => Err(format!("scale of {name}{on} to {to} failed: {}", why(&e))),
                    }
                })
            }
            Input::Up | Input::Down | Input::Quit | Input::Redraw => {}
        }
    }

    fn spawn_action(
        &mut self,
        host: usize,
        doing: String,
        action: impl Future<Output = Result<String, String>> + Send + 'static,
    ) {
        self.dash.status = Status::Pending(doing);
        let tx = self.tx.clone();
        let poke = self.pokes[host].clone();
        // Not kept: an action runs to its end while the dashboard does (quitting drops it with
        // the runtime, as Ctrl-C does to `deployer reload`).
        tokio::spawn(async move {
            let done = action.await;
            // The host is shown as it is now, not at its next tick.
            poke.notify_one();
            // Sending fails only once the loop ended, when nobody shows it.
            let _ = tx.send(Update::Done(done));
        });
    }

    fn stop(&mut self) {
        for task in self.pollers.drain(..) {
            task.abort();
        }
        if let Some((_, task)) = self.logs.take() {
            task.abort();
        }
    }
}

/// Asks a host for its apps every `interval` (and when poked), until aborted.
async fn poll_host(host: usize, client: Client, interval: Duration, poke: Arc<Notify>, tx: UnboundedSender<Update>) {
    let limit = (interval * 2).max(MIN_ANSWER_TIME);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = poke.notified() => {}
        }
        let answer = match tokio::time::timeout(limit, client.apps()).await {
            Ok(Ok(apps)) => Ok(apps),
            Ok(Err(e)) => Err(Failure { answered: matches!(e, ClientError::Api { .. }), why: why(&e) }),
            Err(_) => Err(Failure::unreachable(format!("no answer within {}", humantime::format_duration(limit)))),
        };
        if tx.send(Update::Apps { host, answer, at: Instant::now() }).is_err() {
            return;
        }
    }
}

/// Follows the log lines of `key`, opening the stream again (after `retry`) when it ends or
/// breaks, until aborted.
async fn follow_logs(key: AppKey, client: Client, retry: Duration, tx: UnboundedSender<Update>) {
    loop {
        let why = match client.follow_logs(&key.app, LOG_REPLAY, None).await {
            Err(e) => why(&e),
            Ok(mut stream) => {
                // The stream replays its last lines: they replace the ones shown.
                if tx.send(Update::LogsOpened(key.clone())).is_err() {
                    return;
                }
                loop {
                    match stream.next().await {
                        Ok(Some(line)) => {
                            if tx.send(Update::LogLine(key.clone(), line)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the agent ended the stream".to_owned(),
                        Err(e) => break why(&e),
                    }
                }
            }
        };
        if tx.send(Update::LogsFailed(key.clone(), why)).is_err() {
            return;
        }
        tokio::time::sleep(retry.max(Duration::from_secs(1))).await;
    }
}

/// Why a request failed, in few words: the host is on the screen already.
fn why(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { cause, .. } => cause.to_string(),
        ClientError::TimedOut { after, .. } => format!("no answer within {}s", after.as_secs()),
        ClientError::Broken { cause, .. } => format!("the connection broke: {cause}"),
        ClientError::Api { body, .. } => match &body.hint {
            Some(hint) => format!("{e} (hint: {hint})"),
            None => e.to_string(),
        },
        other => reason(other),
    }
}
