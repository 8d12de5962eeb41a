//! One app's part in its environment's rollouts, carried out by the agents themselves through
//! the engine, so a rollout goes on (and halts, and reverts) without the CLI that asked for it.
//!
//! Each wake (a write to the app's desired state or rollout keys, or a tick) this host reads
//! where the push stands and does its next step:
//! - already on the desired sha: records `done` (nothing moves);
//! - phase `canary` (implicit until the state key exists): takes one of `canary` canary slots
//!   (`create` with a TTL) or waits; after a live (and baked) canary, the state becomes `waves`
//!   by compare-and-set once `canary` canaries are live (or every present host is done);
//! - phase `waves`: takes one of `max_parallel` slots, deploys, gives the slot back;
//! - a failed deploy with `halt_on_failure` (or `rollback_on_failure`) sets `halted` (or
//!   `reverting`) by compare-and-set; nobody starts after that, and with `reverting` every host
//!   this push moved goes back to the commit it ran before, by itself.
//!
//! A host's `done` key is written once per push: a restarted agent or engine never deploys the
//! same push twice on a host. A slot is renewed while its deploy runs; a killed agent's slot
//! expires after [`SLOT_TTL`] and another host takes it.

use super::Member;
use super::node::Progress;
use crate::deploy::Target;
use deployer_fleet::proto::{self, Desired, FleetEvent, Outcome, Phase, RolloutState, SLOT_TTL, Slot, now_ms};
use deployer_fleet::{EngineError, Written};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a waiting host waits between two looks of its own (plus up to 1 s, per host): a
/// place given back wakes the hosts it is the own place of at once; this finds the others.
const WAIT_TICK: Duration = Duration::from_secs(2);
/// The longest an idle host waits between two looks (a wake lost while disconnected).
const IDLE_TICK: Duration = Duration::from_secs(10);

/// What this host already said about the push it works on (so each is said once).
#[derive(Default)]
struct Seen {
    push: String,
    waiting: bool,
    /// Nothing is left to do for this push here (halted, reverted).
    finished: bool,
    /// While waiting: for canary places or wave slots, and how many there are.
    wait_for: Option<(bool, u32)>,
}

/// Which places a host tries to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Every place, from its own (a new push, a new phase).
    All,
    /// Its own place and the next two (the periodic look of a waiting host).
    Near,
    /// One place, just given back.
    Place(u32),
}

/// This host's own place among `places`: hosts spread over the places, so a place given back
/// wakes about `hosts / places` of them into a race, not every waiting host.
fn home(host: &str, places: u32) -> u32 {
    host.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % places.max(1)
}

pub(super) async fn run(member: Arc<Member>, app: String) {
    let engine = &member.engine;
    // Wakes: plain subscriptions to KV subjects (no JetStream consumer per host): the desired
    // state and the phases; while waiting, also its own place (`own` below). Slots taken and
    // outcomes written reach nobody else: a rollout's writes do not fan out to every host.
    let subjects = [format!("{}{app}", engine.desired.prefix), format!("{}{app}.*.state", engine.rollout.prefix)];
    let mut wakes = Vec::new();
    for subject in subjects {
        match engine.client.subscribe(subject.clone()).await {
            Ok(sub) => wakes.push(sub),
            Err(e) => tracing::warn!(error = %e, subject, "fleet: cannot subscribe; looking on a timer instead"),
        }
    }
    let mut wakes = futures_util::stream::select_all(wakes);
    let desired_prefix = engine.desired.prefix.clone();
    let mut seen = Seen::default();
    let mut failing = false;
    let mut scan = Scan::All;
    // Waiting hosts look on their own at different moments.
    let wait_tick = WAIT_TICK + Duration::from_millis(u64::from(home(&member.host, 1000)));
    // The subscription to this host's own place while it waits: (subject, subscription).
    let mut own: Option<(String, async_nats::Subscriber)> = None;
    loop {
        if !member.node.has_app(&app) {
            tracing::info!(app, "fleet: the app is gone from the config; it leaves the rollouts");
            return;
        }
        let pace = match step(&member, &app, &mut seen, scan).await {
            Ok(pace) => {
                if failing {
                    failing = false;
                    tracing::info!(app, "fleet: rollout steps work again");
                }
                pace
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(app, error = %e, "fleet: cannot read the rollout (engine down?); retrying");
                }
                Pace::Waiting
            }
        };
        let waiting = pace == Pace::Waiting;
        let place = seen.wait_for.filter(|_| waiting).map(|(canary, places)| {
            let at = home(&member.host, places);
            let key =
                if canary { proto::canary_key(&app, &seen.push, at) } else { proto::slot_key(&app, &seen.push, at) };
            (format!("{}{key}", engine.rollout.prefix), canary, at)
        });
        match &place {
            Some((subject, _, _)) if own.as_ref().map(|(s, _)| s) != Some(subject) => {
                own = engine.client.subscribe(subject.clone()).await.ok().map(|sub| (subject.clone(), sub));
            }
            Some(_) => {}
            None => own = None,
        }
        let tick = tokio::time::sleep(if waiting { wait_tick } else { IDLE_TICK });
        tokio::pin!(tick);
        scan = loop {
            tokio::select! {
                message = wakes.next() => match message.map(|m| classify(&m, &desired_prefix)) {
                    Some(Wake::Look) => break Scan::All,
                    Some(_) => continue,
                    // No subscription: the tick alone.
                    None => {
                        tick.as_mut().await;
                        break if waiting { Scan::Near } else { Scan::All };
                    }
                },
                Some(message) = next_of(&mut own) => {
                    if let (Wake::Freed { .. }, Some((_, _, at))) = (classify(&message, &desired_prefix), &place) {
                        break Scan::Place(*at);
                    }
                }
                () = tick.as_mut() => break if waiting { Scan::Near } else { Scan::All },
                () = member.stop.cancelled() => return,
            }
        };
        // A burst of writes is one look, not one per write.
        while let Some(Some(m)) = futures_util::FutureExt::now_or_never(wakes.next()) {
            if classify(&m, &desired_prefix) == Wake::Look {
                scan = Scan::All;
            }
        }
    }
}

/// The next message of the own-place subscription, if there is one (else never).
async fn next_of(own: &mut Option<(String, async_nats::Subscriber)>) -> Option<async_nats::Message> {
    match own {
        Some((_, sub)) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// What a write to the app's keys means to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The desired state or the phase changed: look again.
    Look,
    /// A place was given back (deleted, purged, expired).
    Freed { canary: bool, place: u32 },
    /// A place taken or renewed, an outcome written: nothing for the others to do.
    Nothing,
}

fn classify(message: &async_nats::Message, desired_prefix: &str) -> Wake {
    let subject = message.subject.as_str();
    if subject.starts_with(desired_prefix) || subject.ends_with(".state") {
        return Wake::Look;
    }
    let headers = message.headers.as_ref();
    let operation = headers.and_then(|h| h.get("KV-Operation")).map(|v| v.as_str().to_string());
    let expired = headers.is_some_and(|h| h.get("Nats-Marker-Reason").is_some());
    if !(expired || matches!(operation.as_deref(), Some("DEL" | "PURGE"))) {
        return Wake::Nothing;
    }
    let mut tokens = subject.rsplit('.');
    match (tokens.next().and_then(|p| p.parse().ok()), tokens.next()) {
        (Some(place), Some("slot")) => Wake::Freed { canary: false, place },
        (Some(place), Some("canary")) => Wake::Freed { canary: true, place },
        _ => Wake::Nothing,
    }
}

/// How soon a host looks again without a wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// It waits for a place: every [`WAIT_TICK`], and when its own place is given back.
    Waiting,
    /// Nothing to do until the desired state or the phase changes: every [`IDLE_TICK`].
    Idle,
}

async fn step(m: &Member, app: &str, seen: &mut Seen, scan: Scan) -> Result<Pace, EngineError> {
    let engine = &m.engine;
    let Some((desired, _)) = engine.read::<Desired>(&engine.desired, app).await? else { return Ok(Pace::Idle) };
    let push = desired.push_id.clone();
    if seen.push != push {
        *seen = Seen { push: push.clone(), ..Seen::default() };
    }
    if seen.finished {
        return Ok(Pace::Idle);
    }
    if let Err(why) = desired.check() {
        // Once per push: nothing of it is deployed, and whoever follows it hears why.
        seen.finished = true;
        tracing::error!(app, push, who = desired.who, "fleet: desired state refused: {why}; nothing deployed");
        let message = format!("refused: {why}; nothing deployed");
        m.publish(event(m, app, &desired, "failed", &message, None)).await;
        return Ok(Pace::Idle);
    }
    let phase = engine
        .read::<RolloutState>(&engine.rollout, &proto::state_key(app, &push))
        .await?
        .map(|(s, _)| s.phase)
        .unwrap_or(if desired.rollout.canary > 0 { Phase::Canary } else { Phase::Waves });
    let done_key = proto::done_key(app, &push, &m.host);
    let mine = engine.read::<Outcome>(&engine.rollout, &done_key).await?;
    match phase {
        Phase::Halted | Phase::Reverting => {
            match mine {
                None => m.publish(event(m, app, &desired, "halted", "not moved: the rollout halted", None)).await,
                Some((outcome, rev)) if phase == Phase::Reverting => revert(m, app, &desired, outcome, rev).await?,
                Some(_) => {}
            }
            seen.finished = true;
            return Ok(Pace::Idle);
        }
        Phase::Canary | Phase::Waves => {}
    }
    if let Some((outcome, _)) = mine {
        if outcome.ok && phase == Phase::Canary {
            advance(m, app, &desired).await?;
        }
        return Ok(Pace::Idle);
    }
    let live = m.node.live_sha(app);
    if live.as_deref() == Some(desired.sha.as_str()) {
        let outcome = Outcome {
            host: m.host.clone(),
            ok: true,
            from_sha: live,
            canary: false,
            message: "already live".into(),
            at_ms: now_ms(),
        };
        if let Written::Ok(_) = engine.create(&engine.rollout, &done_key, &outcome, None).await? {
            m.publish(event(m, app, &desired, "live", "already live", None)).await;
        }
        if phase == Phase::Canary {
            advance(m, app, &desired).await?;
        }
        return Ok(Pace::Idle);
    }
    let canary = phase == Phase::Canary;
    let places = if canary { desired.rollout.canary } else { desired.rollout.max_parallel.max(1) };
    let mut held = None;
    // From its own place: N hosts racing for N places mostly take one each at the first try.
    let own = home(&m.host, places);
    let tries: Vec<u32> = match scan {
        Scan::All => (0..places).map(|k| (own + k) % places).collect(),
        Scan::Near => (0..places.min(3)).map(|k| (own + k) % places).collect(),
        Scan::Place(p) if p < places && seen.wait_for.is_some_and(|(c, _)| c == canary) => vec![p],
        Scan::Place(_) => Vec::new(),
    };
    seen.wait_for = Some((canary, places));
    for i in tries {
        let key = if canary { proto::canary_key(app, &push, i) } else { proto::slot_key(app, &push, i) };
        let slot = Slot { host: m.host.clone(), at_ms: now_ms() };
        if let Written::Ok(rev) = engine.create(&engine.rollout, &key, &slot, Some(SLOT_TTL)).await? {
            held = Some((key, rev));
            break;
        }
    }
    let Some((slot_key, slot_rev)) = held else {
        if !seen.waiting {
            seen.waiting = true;
            let why = if canary { "waiting for the canary" } else { "waiting for a slot" };
            m.publish(event(m, app, &desired, "waiting", why, None)).await;
        }
        return Ok(Pace::Waiting);
    };
    let (ok, message, slot_rev) = deploy_in_slot(m, app, &desired, &slot_key, slot_rev).await;
    let outcome =
        Outcome { host: m.host.clone(), ok, from_sha: live, canary, message: message.clone(), at_ms: now_ms() };
    engine.create(&engine.rollout, &done_key, &outcome, None).await?;
    let halts = !ok && (desired.rollout.halt_on_failure || desired.rollout.rollback_on_failure);
    if canary && (ok || halts) {
        // The canary place stays taken (without a TTL now): another host must not become a
        // second canary of this push.
        let slot = Slot { host: m.host.clone(), at_ms: now_ms() };
        engine.write(&engine.rollout, &slot_key, &slot, Some(slot_rev), None).await?;
    } else {
        engine.release(&engine.rollout, &slot_key, slot_rev).await?;
    }
    m.publish(event(m, app, &desired, if ok { "live" } else { "failed" }, &message, None)).await;
    if halts {
        let phase = if desired.rollout.rollback_on_failure { Phase::Reverting } else { Phase::Halted };
        set_phase(m, app, &push, phase, &format!("{} failed: {message}", m.host)).await?;
    } else if ok && canary {
        advance(m, app, &desired).await?;
    }
    Ok(Pace::Idle)
}

/// Deploy the desired commit through the agent's pipeline while holding `slot_key` (renewed),
/// then bake; answers whether it is live, why, and the slot's last revision.
async fn deploy_in_slot(m: &Member, app: &str, desired: &Desired, slot_key: &str, rev: u64) -> (bool, String, u64) {
    let deploy = async {
        let (ok, message) = deploy(m, app, desired, Target::Ref(desired.sha.clone())).await;
        if !ok || desired.rollout.bake_ms == 0 {
            return (ok, message);
        }
        m.publish(event(m, app, desired, "baking", "live; baking", None)).await;
        tokio::time::sleep(Duration::from_millis(desired.rollout.bake_ms)).await;
        if m.node.live_sha(app).as_deref() == Some(desired.sha.as_str()) {
            (true, message)
        } else {
            (false, "rolled back during the bake".into())
        }
    };
    tokio::pin!(deploy);
    let mut rev = rev;
    loop {
        tokio::select! {
            result = &mut deploy => return (result.0, result.1, rev),
            () = tokio::time::sleep(SLOT_TTL / 3) => {
                let slot = Slot { host: m.host.clone(), at_ms: now_ms() };
                match m.engine.write(&m.engine.rollout, slot_key, &slot, Some(rev), Some(SLOT_TTL)).await {
                    Ok(Written::Ok(r)) => rev = r,
                    Ok(Written::Conflict) => tracing::warn!(app, slot_key, "fleet: the slot expired under a running deploy"),
                    Err(e) => tracing::warn!(app, error = %e, "fleet: cannot renew the slot"),
                }
            }
        }
    }
}

/// One deploy through the host's [`super::node::Node`] (on an agent: [`crate::deploy::Deployer::request`],
/// the API's entry point), its steps published as they come; answers whether it ended live, and
/// its last message.
async fn deploy(m: &Member, app: &str, desired: &Desired, target: Target) -> (bool, String) {
    let mut steps = m.node.deploy(app, target, &desired.who, m.stop.clone());
    while let Some(step) = steps.next().await {
        match step {
            Progress::Step { state, message, deploy_id } => {
                m.publish(event(m, app, desired, &state, &message, deploy_id)).await;
            }
            Progress::End { ok, message } => return (ok, message),
        }
    }
    (false, "interrupted: the agent is stopping".into())
}

/// A failed host asked for `reverting`: this host goes back to what it ran before the push,
/// once (its `done` key then says there is nothing left to revert).
async fn revert(m: &Member, app: &str, desired: &Desired, outcome: Outcome, rev: u64) -> Result<(), EngineError> {
    let Some(from) = outcome.from_sha.clone().filter(|from| outcome.ok && *from != desired.sha) else {
        return Ok(());
    };
    m.publish(event(m, app, desired, "reverting", &format!("back to {}", short(&from)), None)).await;
    let (ok, message) = deploy(m, app, desired, Target::Rollback(Some(from.clone()))).await;
    let reverted = Outcome { from_sha: None, message: format!("reverted to {}: {message}", short(&from)), ..outcome };
    m.engine
        .write(&m.engine.rollout, &proto::done_key(app, &desired.push_id, &m.host), &reverted, Some(rev), None)
        .await?;
    let state = if ok { "reverted" } else { "failed" };
    m.publish(event(m, app, desired, state, &reverted.message, None)).await;
    Ok(())
}

/// `canary` -> `waves` once enough canaries are live: `canary` of them, or every present host
/// is done (fewer hosts than canaries, or hosts already on the commit).
async fn advance(m: &Member, app: &str, desired: &Desired) -> Result<(), EngineError> {
    let engine = &m.engine;
    let push = &desired.push_id;
    // Only the hosts that take part: one that has no git app of this name never deploys.
    let hosts = engine.hosts_rolling(app, &mut std::collections::BTreeMap::new()).await;
    // The outcomes, 32 reads in flight (a thousand hosts are not read one by one). Owned
    // futures: the loop runs in a spawned task, which must be `Send` for any lifetime.
    let reads: Vec<_> = hosts
        .iter()
        .map(|host| {
            let (engine, key) = (engine.clone(), proto::done_key(app, push, host));
            async move { engine.read::<Outcome>(&engine.rollout, &key).await }
        })
        .collect();
    let outcomes: Vec<Result<Option<(Outcome, u64)>, EngineError>> =
        futures_util::stream::iter(reads).buffer_unordered(32).collect().await;
    let (mut done, mut canaries) = (0, 0);
    for outcome in outcomes {
        if let Some((o, _)) = outcome?
            && o.ok
        {
            done += 1;
            canaries += usize::from(o.canary);
        }
    }
    let needed = (desired.rollout.canary as usize).min(hosts.len()).max(1);
    if canaries >= needed || done >= hosts.len() {
        set_phase(m, app, push, Phase::Waves, &format!("{canaries} canary host(s) live")).await?;
    }
    Ok(())
}

/// Move the push's phase by compare-and-set. Only forward: `canary` -> `waves`, and either of
/// them -> `halted` / `reverting`; a push already halted or reverting stays so.
async fn set_phase(m: &Member, app: &str, push: &str, phase: Phase, reason: &str) -> Result<(), EngineError> {
    let engine = &m.engine;
    let key = proto::state_key(app, push);
    for _ in 0..8 {
        let current = engine.read::<RolloutState>(&engine.rollout, &key).await?;
        let expect = match &current {
            Some((s, _)) if matches!(s.phase, Phase::Halted | Phase::Reverting) || s.phase == phase => return Ok(()),
            Some((_, rev)) => *rev,
            None => 0,
        };
        let state = RolloutState { phase, by: m.host.clone(), reason: reason.to_string(), at_ms: now_ms() };
        if let Written::Ok(_) = engine.write(&engine.rollout, &key, &state, Some(expect), None).await? {
            tracing::info!(app, push, ?phase, reason, "fleet: rollout phase moved");
            return Ok(());
        }
    }
    Ok(())
}

fn event(m: &Member, app: &str, desired: &Desired, state: &str, message: &str, deploy_id: Option<u64>) -> FleetEvent {
    FleetEvent {
        host: m.host.clone(),
        app: app.to_string(),
        push_id: desired.push_id.clone(),
        sha: desired.sha.clone(),
        state: state.to_string(),
        message: message.to_string(),
        deploy_id,
        at_ms: now_ms(),
    }
}

fn short(sha: &str) -> &str {
    &sha[..7.min(sha.len())]
}
