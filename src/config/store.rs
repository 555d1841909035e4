//! `[store]`: where the sealed store lives (a directory, or Redis / Valkey shared by every
//! replica), its retention, size budget, durability and the embedded engine.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, de_opt_duration, de_opt_size, de_size};

/// `[store]`: where answers are kept and for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the store; created on first `serve` if missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Entries are deleted this long after they were stored, e.g. "90d". Absent: kept.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub retention: Option<Duration>,
    /// Size budget for stored answers, e.g. "20GiB"; least recently served go first.
    #[serde(default, deserialize_with = "de_opt_size")]
    pub max_size: Option<u64>,
    /// Memory for the database's page cache, e.g. "64MiB".
    #[serde(default = "default_cache_memory", deserialize_with = "de_size")]
    pub cache_memory: u64,
    /// When a stored answer is on disk: `durable` (fsync'd before the client's last byte) or
    /// `relaxed` (within 200 ms after; a crash may lose that window).
    #[serde(default)]
    pub durability: StoreDurability,
    /// `embedded` (a directory at `path`, one process) or `redis` (Redis / Valkey at `url`,
    /// shared by every replica).
    #[serde(default)]
    pub backend: StoreBackend,
    /// Redis URL for `backend = "redis"`: `redis://` or `rediss://` (TLS). A password in it is
    /// a secret: never logged. `HOLDFAST_STORE_URL` overrides it.
    #[serde(default)]
    pub url: Option<StoreUrl>,
    /// Prepended to every Redis key, so one Redis can hold several stores.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Redis Cluster node URLs instead of `url` (any reachable node finds the others). A
    /// password in them is a secret: never logged. `HOLDFAST_STORE_CLUSTER` (comma-separated)
    /// overrides them.
    #[serde(default)]
    pub cluster: Vec<StoreUrl>,
    /// Longest a stored-answer lookup in Redis may take before the request goes on without
    /// it, e.g. "50ms". Writes wait ten times as long (at least 500 ms).
    #[serde(default = "default_store_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Memory for recently served entries of a Redis store, kept sealed in each replica, e.g.
    /// "32MiB"; 0 turns it off. Unused by the embedded store.
    #[serde(default = "default_hot_cache_bytes", deserialize_with = "de_size")]
    pub hot_cache_bytes: u64,
    /// Longest a replica serves an entry from that memory before reading Redis again: the
    /// bound on how late a purge or expiry elsewhere is noticed, e.g. "1s".
    #[serde(default = "default_hot_cache_max_age", deserialize_with = "de_duration")]
    pub hot_cache_max_age: Duration,
    /// The embedded database engine: `sled` (default), `redb` or `fjall` (each of the last two
    /// needs a build with its cargo feature; docs/storage.md compares them). A new store is
    /// created with it; an existing store must have been created with it. Absent: a new store
    /// gets sled, an existing one opens with the engine it was created with.
    #[serde(default)]
    pub engine: Option<crate::store::Engine>,
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Redis,
}

/// `store.url`: may carry a password, so `Debug` shows it without user and password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("?", ""));
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        write!(f, "StoreUrl({scheme}://{host})")
    }
}

impl StoreConfig {
    /// Where and how to reach the shared store, when `backend = "redis"`. `ttl` is the Redis
    /// TTL for entries without a retention deadline (see `shared_ttl`).
    pub fn redis_target(&self, ttl: Option<Duration>) -> Option<crate::store::RedisTarget> {
        if self.backend != StoreBackend::Redis {
            return None;
        }
        Some(crate::store::RedisTarget {
            url: self.url.as_ref().map(|u| u.0.clone()).unwrap_or_default(),
            cluster: self.cluster.iter().map(|u| u.0.clone()).collect(),
            key_prefix: self.key_prefix.clone(),
            timeout: self.timeout,
            ttl,
            hot_cache: crate::store::HotCacheLimits { bytes: self.hot_cache_bytes, max_age: self.hot_cache_max_age },
        })
    }

    /// The engine choice, and for a Redis store its URL or cluster nodes, key prefix and timeouts.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if let Some(engine) = self.engine {
            if self.backend == StoreBackend::Redis {
                problems.push(format!(
                    "store.engine: \"{engine}\" is an embedded engine; remove it with backend = \"redis\""
                ));
            } else if !engine.is_built() {
                problems.push(format!(
                    "store.engine: \"{engine}\" is not in this build; rebuild with `cargo build --release --features {}`",
                    engine.feature().unwrap_or_default()
                ));
            }
        }
        if self.backend != StoreBackend::Redis {
            if !self.cluster.is_empty() {
                problems.push("store.cluster: needs backend = \"redis\"".into());
            }
            return;
        }
        let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        if !self.cluster.is_empty() {
            if self.url.as_ref().is_some_and(|u| !u.0.is_empty()) {
                problems.push(
                    "store.url and store.cluster: give one of them (a URL for one primary, node URLs for a cluster)"
                        .into(),
                );
            }
            if self.cluster.iter().any(|u| !is_redis_url(&u.0)) {
                problems.push("store.cluster: every node must be a redis:// or rediss:// URL".into());
            }
            if self.key_prefix.contains(['{', '}']) {
                problems.push(
                    "store.key_prefix: must not contain { or } on a cluster (they would change the keys' hash slots)"
                        .into(),
                );
            }
        }
        match self.url.as_ref().map(|u| u.0.as_str()) {
            _ if !self.cluster.is_empty() => {}
            None | Some("") => problems.push(
                "store.url: backend = \"redis\" needs a URL like redis://127.0.0.1:6379/0 (or set HOLDFAST_STORE_URL)"
                    .into(),
            ),
            Some(url) if !is_redis_url(url) => {
                problems.push("store.url: must start with redis:// or rediss:// (TLS)".into());
            }
            Some(_) => {}
        }
        if self.key_prefix.is_empty() {
            problems.push("store.key_prefix: must not be empty (it keeps other data in the same Redis apart)".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(10) {
            problems.push("store.timeout: must be more than 0 and at most 10s (default 50ms)".into());
        }
        if self.hot_cache_bytes > 0
            && (self.hot_cache_max_age.is_zero() || self.hot_cache_max_age > Duration::from_secs(10))
        {
            problems.push(
                "store.hot_cache_max_age: must be more than 0 and at most 10s (default 1s); it bounds how late a \
                 purge is noticed. To turn the hot cache off, set store.hot_cache_bytes = 0"
                    .into(),
            );
        }
    }
}

fn default_key_prefix() -> String {
    "holdfast:".into()
}

fn default_store_timeout() -> Duration {
    Duration::from_millis(50)
}

/// Room for about 16,000 sealed 1 KiB answers (≈ 2 KB each with bookkeeping): as many
/// distinct entries as one replica can read from Redis within the default 1 s maximum age at
/// the peak measured hit rate (≈ 16,000/s, docs/performance.md, "Redis-backed store"), so
/// it is rarely full, and a replica with few hot keys uses a fraction of it.
fn default_hot_cache_bytes() -> u64 {
    32 * 1024 * 1024
}

fn default_hot_cache_max_age() -> Duration {
    Duration::from_secs(1)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            retention: None,
            max_size: None,
            cache_memory: default_cache_memory(),
            durability: StoreDurability::default(),
            backend: StoreBackend::default(),
            url: None,
            key_prefix: default_key_prefix(),
            cluster: Vec::new(),
            timeout: default_store_timeout(),
            hot_cache_bytes: default_hot_cache_bytes(),
            hot_cache_max_age: default_hot_cache_max_age(),
            engine: None,
        }
    }
}

/// `store.durability`; see docs/operations.md for what each guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreDurability {
    #[default]
    Durable,
    Relaxed,
}

impl StoreDurability {
    pub fn to_store(self) -> crate::store::Durability {
        match self {
            Self::Durable => crate::store::Durability::Durable,
            Self::Relaxed => crate::store::Durability::Relaxed,
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("holdfast-data")
}
fn default_cache_memory() -> u64 {
    64 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn store_engine_names_an_embedded_engine_this_build_has() {
        let base =
            "[[providers]]\nname = \"p\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\nmodels = [\"*\"]\n";
        let c = Config::parse(&format!("[store]\nengine = \"sled\"\n{base}")).unwrap();
        assert_eq!(c.store.engine, Some(crate::store::Engine::Sled));
        c.validate().unwrap();
        assert!(Config::parse(&format!("[store]\nengine = \"rocksdb\"\n{base}")).is_err());
        let c = Config::parse(&format!(
            "[store]\nbackend = \"redis\"\nengine = \"sled\"\nurl = \"redis://127.0.0.1:1\"\n{base}"
        ))
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("store.engine"));
        let c = Config::parse(&format!("[store]\nengine = \"redb\"\n{base}")).unwrap();
        assert_eq!(c.validate().is_ok(), cfg!(feature = "engine-redb"));
    }

    #[test]
    fn a_redis_store_needs_a_url_and_never_shows_its_password() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let c = Config::parse(&format!("[store]\nbackend = \"redis\"\n{base}")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.url"), "{err}");
        let mut c = Config::parse(&format!("[store]\nbackend = \"redis\"\n{base}")).unwrap();
        c.apply_env(|v| (v == "HOLDFAST_STORE_URL").then(|| "redis://holdfast:hunter2@10.0.0.1:6379/0".to_owned()));
        c.validate().unwrap();
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.store.key_prefix, "holdfast:");
        let shown = format!("{c:?}");
        assert!(shown.contains("10.0.0.1:6379") && !shown.contains("hunter2"), "{shown}");
        let target = c.store.redis_target(None).unwrap();
        assert!(!format!("{target:?}").contains("hunter2"));
        assert!(Config::parse(&format!("[store]\nbackend = \"memcached\"\n{base}")).is_err());
    }

    #[test]
    fn the_hot_cache_is_on_by_default_and_its_maximum_age_stays_small() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let parse = |store: &str| {
            Config::parse(&format!("[store]\nbackend = \"redis\"\nurl = \"redis://a:1\"\n{store}\n{base}")).unwrap()
        };
        let c = parse("");
        c.validate().unwrap();
        let limits = c.store.redis_target(None).unwrap().hot_cache;
        assert_eq!((limits.bytes, limits.max_age), (32 << 20, Duration::from_secs(1)));
        let c = parse("hot_cache_bytes = \"256MiB\"\nhot_cache_max_age = \"250ms\"");
        c.validate().unwrap();
        assert_eq!(c.store.hot_cache_bytes, 256 << 20);
        let err = parse("hot_cache_max_age = \"1m\"").validate().unwrap_err().to_string();
        assert!(err.contains("store.hot_cache_max_age"), "{err}");
        // Turned off, its age does not matter.
        parse("hot_cache_bytes = 0\nhot_cache_max_age = \"1m\"").validate().unwrap();
    }

    #[test]
    fn a_redis_cluster_is_named_by_its_nodes_and_never_shows_their_passwords() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let parse = |store: &str| Config::parse(&format!("[store]\n{store}\n{base}")).unwrap();
        let nodes = "cluster = [\"redis://:hunter2@10.0.0.1:6379\", \"rediss://10.0.0.2:6380\"]";
        let c = parse(&format!("backend = \"redis\"\n{nodes}"));
        c.validate().unwrap();
        let target = c.store.redis_target(None).unwrap();
        assert_eq!(target.cluster.len(), 2);
        for shown in [format!("{c:?}"), format!("{target:?}"), target.location()] {
            assert!(shown.contains("10.0.0.1:6379") && !shown.contains("hunter2"), "{shown}");
        }
        let err = parse(&format!("backend = \"redis\"\nurl = \"redis://a:1\"\n{nodes}")).validate().unwrap_err();
        assert!(err.to_string().contains("store.url and store.cluster"), "{err}");
        let err = parse("backend = \"redis\"\ncluster = [\"http://a:1\"]").validate().unwrap_err();
        assert!(err.to_string().contains("store.cluster"), "{err}");
        let err = parse(&format!("backend = \"redis\"\nkey_prefix = \"{{hf}}:\"\n{nodes}")).validate().unwrap_err();
        assert!(err.to_string().contains("store.key_prefix"), "{err}");
        let err = parse(nodes).validate().unwrap_err();
        assert!(err.to_string().contains("needs backend"), "{err}");
        let mut c = parse("backend = \"redis\"");
        c.apply_env(|v| (v == "HOLDFAST_STORE_CLUSTER").then(|| "redis://10.0.0.1:1, redis://10.0.0.2:2".to_owned()));
        c.validate().unwrap();
        assert_eq!(c.store.redis_target(None).unwrap().cluster.len(), 2);
    }
}
