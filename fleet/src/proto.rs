//! What agents and the CLI write into the engine: bucket, key and subject names, and the JSON
//! values. One place, so both sides spell them the same.
//!
//! Per environment `<env>`:
//! - KV `deployer_<env>_hosts` (per-key TTL): key `<host>` -> [`Presence`], renewed by its agent.
//! - KV `deployer_<env>_desired` (history 64, the push log): key `<app>` -> [`Desired`], written
//!   only by compare-and-set on the revision the writer read.
//! - KV `deployer_<env>_rollout` (per-key TTL): `lock` -> [`PushLock`]; per app and push
//!   `<app>.<push_id>.state` -> [`RolloutState`] (CAS), `<app>.<push_id>.canary.<i>` and
//!   `<app>.<push_id>.slot.<i>` -> [`Slot`] (created with a TTL, renewed while deploying),
//!   `<app>.<push_id>.done.<host>` -> [`Outcome`]; `<app>.poller` -> [`Slot`] (the lease of the
//!   host that pulls git for the environment, created with a TTL and renewed).
//! - Stream `deployer_<env>_events`, subjects `deployer.<env>.events.<host>` -> [`FleetEvent`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a host's presence lives without renewal (renewed every third of it).
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
/// How long a rollout slot lives without renewal (an agent killed mid-deploy frees it after this).
pub const SLOT_TTL: Duration = Duration::from_secs(10);
/// How long the push lock lives without renewal (a CLI killed holding it frees it after this).
pub const LOCK_TTL: Duration = Duration::from_secs(15);
/// History of the desired-state bucket: the push log (JetStream's largest KV history).
pub const DESIRED_HISTORY: i64 = 64;
/// The key of the push lock in the rollout bucket.
pub const LOCK_KEY: &str = "lock";

/// Whether `name` can be an environment, app or host name in bucket names, keys and subjects.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A machine's hostname as a name the engine takes: dots and other characters become `-`.
pub fn host_name_of(hostname: &str) -> String {
    let name: String =
        hostname.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    let name: String = name.chars().take(64).collect();
    if name.is_empty() { "localhost".into() } else { name }
}

pub fn hosts_bucket(env: &str) -> String {
    format!("deployer_{env}_hosts")
}
pub fn desired_bucket(env: &str) -> String {
    format!("deployer_{env}_desired")
}
pub fn rollout_bucket(env: &str) -> String {
    format!("deployer_{env}_rollout")
}
pub fn events_stream(env: &str) -> String {
    format!("deployer_{env}_events")
}
/// Every event subject of `env` (`host`: `*` for all).
pub fn events_subject(env: &str, host: &str) -> String {
    format!("deployer.{env}.events.{host}")
}
pub fn state_key(app: &str, push_id: &str) -> String {
    format!("{app}.{push_id}.state")
}
pub fn canary_key(app: &str, push_id: &str, i: u32) -> String {
    format!("{app}.{push_id}.canary.{i}")
}
pub fn slot_key(app: &str, push_id: &str, i: u32) -> String {
    format!("{app}.{push_id}.slot.{i}")
}
pub fn done_key(app: &str, push_id: &str, host: &str) -> String {
    format!("{app}.{push_id}.done.{host}")
}
/// The lease of the host that pulls git for the whole environment.
pub fn poller_key(app: &str) -> String {
    format!("{app}.poller")
}
/// Every key of one push (for a watch).
pub fn push_keys(app: &str, push_id: &str) -> String {
    format!("{app}.{push_id}.>")
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A host of the environment, as its agent says it is (`deployer status <env>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub apps: Vec<AppPresence>,
    /// The last deploy this agent ran for the fleet.
    #[serde(default)]
    pub last_deploy: Option<FleetEvent>,
    /// The agent's version.
    #[serde(default)]
    pub agent: String,
    /// This run of the agent (fresh at each start): two agents given one host name tell each
    /// other apart by it.
    #[serde(default)]
    pub instance: String,
    pub at_ms: u64,
}

/// One app on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPresence {
    pub app: String,
    /// The commit live now.
    pub sha: Option<String>,
    /// The live release's name.
    pub release: Option<String>,
    /// `running`, `starting`, `stopped`...
    pub state: String,
    /// Whether this host takes part in the app's pushes (the app is deployed from git there):
    /// a push waits only for the hosts that do.
    #[serde(default)]
    pub rolls: bool,
}

impl Presence {
    /// Whether this host takes part in `app`'s pushes.
    pub fn rolls(&self, app: &str) -> bool {
        self.apps.iter().any(|a| a.app == app && a.rolls)
    }
}

/// What an app of an environment should run: written by `deployer push`, by compare-and-set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// The full commit sha.
    pub sha: String,
    /// What the person pushed (`main`, a tag, a sha).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Names this push in every key and event.
    pub push_id: String,
    pub who: String,
    pub rollout: Rollout,
    pub at_ms: u64,
}

impl Desired {
    /// Why an agent must not act on this value: whoever can write to the engine could put a
    /// branch name there (each host would deploy whatever it names when it fetches: hosts on
    /// different commits, none ever "already live") or a push id that is no key (`*`, `a.>`).
    /// `deployer push` and the poller write a full sha and a [`new_push_id`].
    pub fn check(&self) -> Result<(), String> {
        let full_sha = matches!(self.sha.len(), 40 | 64) && self.sha.chars().all(|c| c.is_ascii_hexdigit());
        if !full_sha {
            return Err(format!("`{}` is not a full commit sha (40 hex digits)", self.sha.escape_debug()));
        }
        if !valid_name(&self.push_id) {
            return Err(format!(
                "push id `{}` is not letters, digits, `-` and `_` (it names keys in the engine)",
                self.push_id.escape_debug()
            ));
        }
        Ok(())
    }
}

/// How the agents roll a push out among themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts that deploy first, alone; the others wait until they are live (and baked).
    pub canary: u32,
    /// Hosts deploying at once after the canary.
    pub max_parallel: u32,
    /// How long a host stays live before its slot is given back (ms).
    pub bake_ms: u64,
    /// A failed host stops the rollout: no other host starts.
    pub halt_on_failure: bool,
    /// A failed host sends every host this push moved back to what it ran before.
    pub rollback_on_failure: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout { canary: 1, max_parallel: 1, bake_ms: 0, halt_on_failure: true, rollback_on_failure: false }
    }
}

/// Where a push's rollout stands; advanced by compare-and-set only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The canaries deploy; nobody else starts.
    Canary,
    /// Every host may take a slot.
    Waves,
    /// A host failed: nobody starts.
    Halted,
    /// A host failed: the hosts this push moved go back.
    Reverting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// The host whose change moved the phase, and why.
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

/// A slot a host holds while it deploys (renewed with its TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub host: String,
    pub at_ms: u64,
}

/// What a push did on one host: written once, when the host is done with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub host: String,
    pub ok: bool,
    /// What the host ran before (what a revert goes back to).
    pub from_sha: Option<String>,
    /// Whether this host was a canary.
    pub canary: bool,
    pub message: String,
    pub at_ms: u64,
}

/// One step of a push on one host, published to the environment's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    pub host: String,
    pub app: String,
    pub push_id: String,
    pub sha: String,
    /// `waiting`, a deploy state (`fetching` ... `live`, `failed`), `halted`, `reverting`, `reverted`.
    pub state: String,
    pub message: String,
    /// The agent's deploy id, when a deploy runs.
    #[serde(default)]
    pub deploy_id: Option<u64>,
    pub at_ms: u64,
}

impl FleetEvent {
    /// Whether this host is done with the push (whatever the outcome).
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "live" | "failed" | "halted" | "reverted" | "cancelled" | "interrupted")
    }
}

/// The push lock's value: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushLock {
    pub who: String,
    pub push_id: String,
    /// The machine the CLI runs on.
    pub machine: String,
    pub at_ms: u64,
}

/// A fresh push id: time and randomness from the OS, hex.
pub fn new_push_id() -> String {
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // Without /dev/urandom, the pid and the clock's nanoseconds still tell two pushes apart.
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        bytes[4..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", now_ms() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(sha: &str, push_id: &str) -> Desired {
        Desired {
            sha: sha.into(),
            git_ref: "main".into(),
            push_id: push_id.into(),
            who: "ana".into(),
            rollout: Rollout::default(),
            at_ms: 0,
        }
    }

    #[test]
    fn only_a_full_sha_and_a_push_id_that_names_keys_are_acted_on() {
        let sha = "08da8007e14d546862ae1053d0326851750ecd1a";
        assert_eq!(desired(sha, &new_push_id()).check(), Ok(()));
        assert_eq!(desired(&"a".repeat(64), "p-1_x").check(), Ok(()));
        for bad_sha in ["main", "08da800", "--upload-pack=touch x", "", &format!("{sha}0"), &"g".repeat(40)] {
            assert!(desired(bad_sha, "p1").check().is_err(), "{bad_sha}");
        }
        for bad_push in ["", "*", "a.>", "a.b", "ünï", "a b", &"p".repeat(65)] {
            assert!(desired(sha, bad_push).check().is_err(), "{bad_push}");
        }
    }
}
