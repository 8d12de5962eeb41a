//! Fleet mode: an environment of deployer.yaml with `nats:` instead of `hosts:`. The CLI talks
//! to the engine only: it takes the push lock (a key created with a TTL, renewed), writes the
//! desired state by compare-and-set, and follows the environment's event stream over one
//! connection. The agents carry the rollout out themselves, so a killed CLI stops nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use deployer_fleet::proto::{
    self, Desired, FleetEvent, LOCK_KEY, LOCK_TTL, Outcome, Presence, PushLock, Rollout, now_ms,
};
use deployer_fleet::{Credentials, Engine, EngineError, EngineOptions, Written};
use futures_util::StreamExt;
use serde::Serialize;

use super::file::{Environment, FleetFile, NatsCredentials};
use crate::output::{self, short_sha};
use crate::report::Hinted;

/// How often the CLI looks at presence while following (hosts that left are not waited for).
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// How long following waits for a first host of an environment where none is present.
const NO_HOST_GRACE: Duration = Duration::from_secs(5);

/// A fleet-mode environment, ready to connect.
pub struct NatsEnv {
    pub name: String,
    pub app: String,
    pub options: EngineOptions,
    pub rollout: Rollout,
}

impl NatsEnv {
    /// The environment `name` of `file` when it is a fleet-mode one (`nats:`).
    pub fn of(file: &FleetFile, name: &str, app: Option<&str>) -> anyhow::Result<Option<NatsEnv>> {
        let Some(env) = file.environment(name).filter(|e| !e.nats.is_empty()) else { return Ok(None) };
        let app = app.map(str::to_owned).or_else(|| env.app.clone()).or_else(|| file.app.clone()).ok_or_else(|| {
            Hinted::new(
                format!("`{}` names no app for environment `{name}`", file.path.display()),
                "add `app: <name>` at the top of deployer.yaml, or pass --app NAME",
            )
        })?;
        if !proto::valid_name(&app) {
            return Err(Hinted::new(
                format!("`{app}` cannot be an app of a fleet-mode environment"),
                "an app's name in the engine is letters, digits, `-` and `_` (at most 64), as in agent.yaml",
            )
            .into());
        }
        let base = file.path.parent().unwrap_or(Path::new("."));
        let options = options(env, base)?;
        let r = &env.rollout;
        // `bake` was checked when the file was read.
        let bake = r.bake.as_deref().and_then(|b| humantime::parse_duration(b).ok()).unwrap_or_default();
        let count = |key: &str, n: usize| {
            u32::try_from(n).map_err(|_| {
                Hinted::new(
                    format!("`rollout.{key}: {n}` of environment `{name}` is too large"),
                    format!("write a number of hosts, at most {}", u32::MAX),
                )
            })
        };
        let rollout = Rollout {
            canary: count("canary", r.canary)?,
            max_parallel: count("max_parallel", r.max_parallel.get())?,
            bake_ms: bake.as_millis() as u64,
            halt_on_failure: r.halt_on_failure,
            rollback_on_failure: r.rollback_on_failure,
        };
        Ok(Some(NatsEnv { name: name.to_owned(), app, options, rollout }))
    }

    /// Connect; an engine that is down or unfit is a clear error, never a push without it.
    pub async fn connect(&self) -> anyhow::Result<Engine> {
        Engine::connect(&self.options, &self.name).await.map_err(|e| engine_error(&self.name, e))
    }
}

fn options(env: &Environment, base: &Path) -> anyhow::Result<EngineOptions> {
    let credentials = match &env.credentials {
        None => None,
        Some(NatsCredentials::Env(var)) => Some(Credentials::Text(std::env::var(var).map_err(|_| {
            Hinted::new(
                format!("`credentials.env` names `{var}`, which is not set"),
                format!("export {var}=<.creds or token>"),
            )
        })?)),
        Some(NatsCredentials::File(path)) => Some(Credentials::File(base.join(path))),
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    Ok(EngineOptions {
        urls: env.nats.clone(),
        credentials,
        ca_cert: env.ca_cert.as_ref().map(|c| base.join(c)),
        name: format!("deployer@{user}"),
    })
}

fn engine_error(env: &str, e: EngineError) -> anyhow::Error {
    let hint = e.hint().unwrap_or_else(|| "check the engine's log".into());
    Hinted::new(format!("fleet `{env}`: {e}"), hint).into()
}

/// `deployer push <env>` in fleet mode.
pub async fn push(
    env: &NatsEnv,
    sha: &str,
    git_ref: &str,
    who: Option<String>,
    detach: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let engine = env.connect().await?;
    let who = who.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "someone".into());
    let push_id = proto::new_push_id();
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let lock = PushLock { who: who.clone(), push_id: push_id.clone(), machine, at_ms: now_ms() };
    let lock_rev = match engine.create(&engine.rollout, LOCK_KEY, &lock, Some(LOCK_TTL)).await {
        Ok(Written::Ok(rev)) => rev,
        Ok(Written::Conflict) => {
            let holder = engine.read::<PushLock>(&engine.rollout, LOCK_KEY).await.ok().flatten();
            let by = holder.map_or_else(
                || "someone (it was just released; try again)".to_owned(),
                |(h, _)| {
                    format!(
                        "{} on {} (push {}) since {}",
                        h.who,
                        h.machine,
                        h.push_id,
                        output::human_age(now_ms().saturating_sub(h.at_ms))
                    )
                },
            );
            return Err(Hinted::new(
                format!("another push of `{}` is running: held by {by}", env.name),
                format!(
                    "wait for it (`deployer watch {}` follows it); a lock whose CLI died lapses in {}s",
                    env.name,
                    LOCK_TTL.as_secs()
                ),
            )
            .into());
        }
        Err(e) => return Err(engine_error(&env.name, e)),
    };
    let (stop_renewing, renewed) = tokio::sync::oneshot::channel::<()>();
    let renewer = tokio::spawn(renew_lock(engine.clone(), lock, lock_rev, renewed));
    let result = async {
        // Where the stream is now: the push's events all come after it.
        let start = engine.events.get_info().await.map(|i| i.state.last_sequence + 1).unwrap_or(1);
        // Only the revision matters for the compare-and-set: a value this CLI cannot read (a
        // newer CLI's, or garbage) is replaced like any other, not a push refused forever.
        let current = engine.entry(&engine.desired, &env.app).await.map_err(|e| engine_error(&env.name, e))?;
        let desired = Desired {
            sha: sha.to_owned(),
            git_ref: git_ref.to_owned(),
            push_id: push_id.clone(),
            who,
            rollout: env.rollout.clone(),
            at_ms: now_ms(),
        };
        let expect = current.map_or(0, |entry| entry.revision);
        match engine.write(&engine.desired, &env.app, &desired, Some(expect), None).await {
            Ok(Written::Ok(_)) => {}
            Ok(Written::Conflict) => {
                return Err(Hinted::new(
                    format!("the desired state of `{}` in `{}` changed while this push wrote it", env.app, env.name),
                    "someone pushed without the lock (an older CLI?); `deployer history` shows who",
                )
                .into());
            }
            Err(e) => return Err(engine_error(&env.name, e)),
        }
        if !json {
            anstream::println!(
                "pushing {} {} ({git_ref}) to {} (push {push_id}): canary {}, {} at a time",
                env.app,
                short_sha(sha),
                env.name,
                env.rollout.canary,
                env.rollout.max_parallel
            );
        }
        if detach {
            if json {
                output::print_json(&desired)?;
            } else {
                anstream::println!(
                    "detached: the hosts roll it out by themselves; `deployer watch {}` follows it",
                    env.name
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        follow(&engine, env, &desired, DeliverPolicy::ByStartSequence { start_sequence: start }, json).await
    };
    // Ctrl-C or SIGTERM (a cancelled CI job, `timeout`) stop following, and the lock is given back
    // below instead of lapsing after its TTL. Stopped before the desired state was written,
    // nothing moves; after, the hosts roll it out by themselves.
    let result = tokio::select! {
        code = result => code,
        signal = stop_signal() => Err(Hinted::new(
            format!("stopped ({signal}) following the push to `{}`; if its desired state was written, the hosts roll it out by themselves", env.name),
            format!("`deployer watch {}` follows it again; `deployer history {}` shows whether it was written", env.name, env.name),
        ).into()),
    };
    // Released whatever happened (Ctrl-C too): the desired state is written or not, by now.
    let _ = stop_renewing.send(());
    if let Ok(Some(rev)) = renewer.await
        && let Err(e) = engine.release(&engine.rollout, LOCK_KEY, rev).await
    {
        output::print_warning(&format!("cannot release the push lock ({e}); it lapses in {}s", LOCK_TTL.as_secs()));
    }
    result
}

/// The first of SIGINT (Ctrl-C) and SIGTERM, by name. One that cannot be listened for (no
/// signal handling here) never comes.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => "Ctrl-C",
        () = terminated => "SIGTERM",
    }
}

/// Renew the lock until told to stop; answers its last revision (`None`: lost it).
async fn renew_lock(
    engine: Engine,
    lock: PushLock,
    mut rev: u64,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<u64> {
    loop {
        tokio::select! {
            _ = &mut stop => return Some(rev),
            () = tokio::time::sleep(LOCK_TTL / 3) => {}
        }
        match engine.write(&engine.rollout, LOCK_KEY, &lock, Some(rev), Some(LOCK_TTL)).await {
            Ok(Written::Ok(r)) => rev = r,
            Ok(Written::Conflict) => {
                output::print_warning("the push lock lapsed (the engine was unreachable too long)");
                return None;
            }
            // The engine is briefly away: the next renewal may still be in time.
            Err(e) => output::print_warning(&format!("cannot renew the push lock: {e}")),
        }
    }
}

/// `deployer watch <env>`: the current push of the app, from its first event.
pub async fn watch(env: &NatsEnv, json: bool) -> anyhow::Result<ExitCode> {
    let engine = env.connect().await?;
    let Some((desired, _)) =
        engine.read::<Desired>(&engine.desired, &env.app).await.map_err(|e| engine_error(&env.name, e))?
    else {
        return Err(Hinted::new(
            format!("nothing was pushed to `{}` of `{}` yet", env.app, env.name),
            format!("`deployer push {}` pushes", env.name),
        )
        .into());
    };
    let desired = untrusted(desired);
    if !json {
        anstream::println!(
            "push {} of {} {} ({}) by {}, {}",
            desired.push_id,
            env.app,
            short_sha(&desired.sha),
            desired.git_ref,
            desired.who,
            output::human_age(now_ms().saturating_sub(desired.at_ms))
        );
    }
    follow(&engine, env, &desired, DeliverPolicy::All, json).await
}

/// Print each host's steps of the push as they come; ends when every present host is done with
/// it. Exit 0 only when every one of them is live on the sha.
async fn follow(
    engine: &Engine,
    env: &NatsEnv,
    desired: &Desired,
    from: DeliverPolicy,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let consumer = engine
        .events
        .create_consumer(pull::OrderedConfig {
            filter_subject: proto::events_subject(&env.name, "*"),
            deliver_policy: from,
            ..Default::default()
        })
        .await
        .map_err(|e| Hinted::new(format!("cannot follow the events of `{}`: {e}", env.name), "check the engine"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Hinted::new(format!("cannot follow the events of `{}`: {e}", env.name), "check the engine"))?;
    let mut last: BTreeMap<String, FleetEvent> = BTreeMap::new();
    // The hosts that take part in this app's pushes: one without the app (or with it but not
    // deployed from git) never reports, and waiting for it would hang the push.
    let mut known = BTreeMap::new();
    let mut present = engine.hosts_rolling(&env.app, &mut known).await;
    // Agents starting now join within a second; with none at all nobody would ever report, and
    // following would hang (holding the push lock, for a push).
    let grace = tokio::time::Instant::now() + NO_HOST_GRACE;
    while present.is_empty() && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(250)).await;
        present = engine.hosts_rolling(&env.app, &mut known).await;
    }
    if present.is_empty() {
        return Err(Hinted::new(
            format!(
                "no host of `{}` with `{}` deployed from git is present: nobody deploys push {} now",
                env.name, env.app, desired.push_id
            ),
            format!(
                "the desired state stays written: agents with `fleet: {{ env: {} }}` deploy it when they join \
                 (`deployer status {}` lists the hosts)",
                env.name, env.name
            ),
        )
        .into());
    }
    let mut looked = tokio::time::Instant::now();
    let (mut quiet_since, mut checked) = (tokio::time::Instant::now(), tokio::time::Instant::now());
    loop {
        // Every host there (or seen in this push and still there) is done: the push is over.
        let waiting: Vec<&String> =
            present.iter().filter(|h| !last.get(*h).is_some_and(FleetEvent::is_final)).collect();
        if !present.is_empty() && waiting.is_empty() {
            break;
        }
        let next = tokio::time::timeout(PRESENCE_EVERY, messages.next()).await;
        if looked.elapsed() >= PRESENCE_EVERY {
            present = engine.hosts_rolling(&env.app, &mut known).await;
            looked = tokio::time::Instant::now();
        }
        // An event lost while the engine was away: once the stream is quiet, the `done` key of
        // each host still unfinished says how it ended.
        if quiet_since.elapsed() >= PRESENCE_EVERY && checked.elapsed() >= PRESENCE_EVERY {
            checked = tokio::time::Instant::now();
            let unfinished: Vec<String> =
                present.iter().filter(|h| !last.get(*h).is_some_and(FleetEvent::is_final)).cloned().collect();
            for host in &unfinished {
                let key = proto::done_key(&env.app, &desired.push_id, host);
                if let Ok(Some((outcome, _))) = engine.read::<Outcome>(&engine.rollout, &key).await {
                    let state = if outcome.ok { "live" } else { "failed" };
                    let event = FleetEvent {
                        host: host.clone(),
                        app: env.app.clone(),
                        push_id: desired.push_id.clone(),
                        sha: desired.sha.clone(),
                        state: state.into(),
                        message: output::untrusted::text(&outcome.message).into_owned(),
                        deploy_id: None,
                        at_ms: outcome.at_ms,
                    };
                    last.insert(host.clone(), event);
                }
            }
        }
        let Ok(Some(message)) = next else { continue };
        quiet_since = tokio::time::Instant::now();
        let message =
            message.map_err(|e| Hinted::new(format!("lost the events of `{}`: {e}", env.name), "check the engine"))?;
        let Ok(event) = serde_json::from_slice::<FleetEvent>(&message.payload).map(untrusted) else { continue };
        // A host publishes on its own subject: an event naming another host is not believed.
        let publisher = message.subject.as_str().rsplit('.').next().unwrap_or_default();
        if event.push_id != desired.push_id || event.app != env.app || event.host != publisher {
            continue;
        }
        if !json && event.state != "log" {
            anstream::println!("{:<20} {:<11} {}", event.host, event.state, event.message);
        }
        if !present.contains(&event.host) {
            present.push(event.host.clone());
        }
        last.insert(event.host.clone(), event);
    }
    let results: Vec<&FleetEvent> = present.iter().filter_map(|h| last.get(h)).collect();
    let live = results.iter().filter(|e| e.state == "live").count();
    if json {
        output::print_json(&results)?;
    } else if live == results.len() {
        output::print_success(&format!(
            "{} is live on {} on all {} hosts of {}",
            env.app,
            short_sha(&desired.sha),
            live,
            env.name
        ));
    } else {
        let style = output::FAILURE;
        anstream::println!(
            "{style}✗{style:#} {live} of {} hosts of {} are live on {}",
            results.len(),
            env.name,
            short_sha(&desired.sha)
        );
    }
    Ok(if live == results.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A value read from the engine, whose every string is made safe to print: whoever can write to
/// the engine (any agent, anyone with the account) must not steer the terminal of the person
/// following a push, as in direct mode ([`output::untrusted`]).
fn untrusted<T: Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    let Ok(mut json) = serde_json::to_value(&value) else { return value };
    output::untrusted::json(&mut json);
    serde_json::from_value(json).unwrap_or(value)
}

async fn present_hosts(engine: &Engine) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Ok(mut keys) = engine.hosts.keys().await {
        while let Some(Ok(key)) = keys.next().await {
            hosts.push(key);
        }
    }
    hosts.sort();
    hosts
}

/// `deployer status <env>` in fleet mode: the hosts present, from their own keys.
pub async fn status(env: &NatsEnv, json: bool) -> anyhow::Result<ExitCode> {
    let engine = env.connect().await?;
    let mut hosts: Vec<Presence> = Vec::new();
    for host in present_hosts(&engine).await {
        if let Ok(Some((p, _))) = engine.read::<Presence>(&engine.hosts, &host).await {
            hosts.push(untrusted(p));
        }
    }
    if json {
        output::print_json(&hosts)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hosts.is_empty() {
        anstream::println!(
            "no host of `{}` is present (agents with `fleet: {{ env: {} }}` join it)",
            env.name,
            env.name
        );
        return Ok(ExitCode::FAILURE);
    }
    let now = now_ms();
    anstream::println!("{:<20} {:<10} {:<9} {:<12} {:<22} LABELS", "HOST", "APP", "SHA", "STATE", "LAST DEPLOY");
    for p in &hosts {
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let last = p.last_deploy.as_ref().map_or("-".to_owned(), |e| {
            format!("{} {} {}", e.state, short_sha(&e.sha), output::human_age(now.saturating_sub(e.at_ms)))
        });
        for a in p.apps.iter().filter(|a| a.app == env.app) {
            anstream::println!(
                "{:<20} {:<10} {:<9} {:<12} {:<22} {}",
                p.host,
                a.app,
                a.sha.as_deref().map_or("-", short_sha),
                a.state,
                last,
                labels.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One push of `deployer history <env> --json` in fleet mode.
#[derive(Debug, Serialize)]
struct Pushed {
    revision: u64,
    #[serde(flatten)]
    desired: Desired,
}

/// `deployer history <env>` in fleet mode: the desired state's revisions, newest first.
pub async fn history(env: &NatsEnv, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let engine = env.connect().await?;
    let mut pushes = Vec::new();
    let mut entries = engine
        .desired
        .history(&env.app)
        .await
        .map_err(|e| Hinted::new(format!("cannot read the push log of `{}`: {e}", env.name), "check the engine"))?;
    while let Some(entry) = entries.next().await {
        let Ok(entry) = entry else { break };
        if let Ok(desired) = deployer_fleet::decode::<Desired>(&entry) {
            pushes.push(Pushed { revision: entry.revision, desired: untrusted(desired) });
        }
    }
    pushes.reverse();
    pushes.truncate(limit as usize);
    if json {
        output::print_json(&pushes)?;
    } else if pushes.is_empty() {
        anstream::println!("nothing was pushed to `{}` of `{}` yet", env.app, env.name);
    } else {
        let now = now_ms();
        anstream::println!("{:<22} {:<9} {:<16} {:<12} WHEN", "PUSH", "SHA", "REF", "WHO");
        for p in &pushes {
            let d = &p.desired;
            anstream::println!(
                "{:<22} {:<9} {:<16} {:<12} {}",
                d.push_id,
                short_sha(&d.sha),
                d.git_ref,
                d.who,
                output::human_age(now.saturating_sub(d.at_ms))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
