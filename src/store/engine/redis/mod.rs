//! The shared backend: Redis ≥ 7 or Valkey ≥ 8, so several `holdfast serve` replicas share one
//! store.
//!
//! - this file: where the store is (`RedisTarget`), connecting, and running each call with a
//!   deadline while keeping track of Redis's health.
//! - `entries`: the `Backend` trait on Redis (entries, their expiry, scans).
//! - `cells`: the keyring and the access trail, changed only by compare-and-swap.
//! - `connection`: one connection type for a single primary and for a cluster.
//!
//! Everything sent is already sealed by `Store` exactly as for the embedded store: values are
//! AES-GCM envelopes bound to their address, metadata is content-free bookkeeping, keys are
//! the keyed addresses in hex (never a plain hash of a prompt). Under `key_prefix`, on one
//! primary (`store.url`):
//!
//! ```text
//! <prefix>format        "holdfast store\nformat <N>\n", written last by `holdfast init`
//! <prefix>keyring       the wrapped keyring (keyring/file.rs), changed only by compare-and-swap
//! <prefix>s:<name>      store settings (format version, keyring identity, trail length, …)
//! <prefix>m:<address>   entry metadata         } both with the entry's TTL
//! <prefix>v:<address>   sealed entry value     }
//! <prefix>trail         the access trail, one JSON line per list element
//! <prefix>trail:head    the trail's head (the MAC over its last line)
//! ```
//!
//! On a Redis Cluster (`store.cluster`) every multi-key step (value and metadata written or
//! re-sealed together, the trail and its head appended together) needs its keys in one hash
//! slot, so the keys carry hash tags: an entry's two keys share the tag of its address, and
//! the store-wide keys share the tag `{store}`:
//!
//! ```text
//! <prefix>m:{<address>}  <prefix>v:{<address>}
//! <prefix>{store}format  <prefix>{store}keyring  <prefix>{store}s:<name>
//! <prefix>{store}trail   <prefix>{store}trail:head
//! ```
//!
//! The single-primary layout is unchanged, so stores made before cluster support open as
//! they are; the two layouts are not mixed under one prefix (docs/format.md).
//!
//! Commands used (the subset Redis 7 and Valkey 8 share): GET, MGET, SET (NX, PXAT, KEEPTTL),
//! DEL, SCAN, EVALSHA/EVAL (SCRIPT LOAD), MULTI/EXEC, LRANGE, LLEN, RPUSH, PING, CONFIG GET.
//! Compare-and-swap is done in Lua scripts, never with WATCH: the connection manager
//! multiplexes every caller over one connection, and WATCH state is per connection.
//!
//! # Not blocking the runtime
//! The `Backend` trait is synchronous, so `Store` (sealing, addressing, the keyring) is one code
//! path for both backends. Each call here runs its Redis commands on a small runtime of this
//! backend's own and waits for the answer, bounded by a timeout. When the caller is a worker of
//! a multi-threaded Tokio runtime (a request handler's inline lookup) the wait is wrapped in
//! `block_in_place`, which first hands that worker's other tasks to another thread: no request
//! queues behind a slow Redis, and the handler itself waits at most `timeout`. That hand-off
//! costs two thread switches per call, which dominated a Redis hit, so the one call on the
//! request path, the lookup, also has an async form (`get_entry_async`, awaited by
//! `Store::get_async`); admin commands and writes, which run off the async workers, keep the
//! waiting form. A full async twin of the trait would have doubled `Store` and every caller.
//!
//! # What is not kept here
//! The embedded store's integrity tally (count and digest of the addresses present) is not
//! kept: Redis expires and evicts entries by itself, and many replicas write at once, so a
//! count would report loss that is only expiry. Redis persistence and replication are the
//! durability story; `cache verify` still opens and authenticates every entry.

pub(super) mod cells;
mod connection;
mod entries;

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use super::{BackendError, RawAddress, Result};
use crate::cache_key::address::Address;
use connection::Connection;

/// Where the shared store is and how long to wait for it.
#[derive(Clone)]
pub struct RedisTarget {
    /// `redis://` or `rediss://` URL; may hold a password, so it is never printed.
    pub url: Zeroizing<String>,
    /// Redis Cluster node URLs instead of `url` (any reachable node finds the others); may
    /// hold passwords too.
    pub cluster: Vec<Zeroizing<String>>,
    /// Prepended to every key, so one Redis can hold several stores.
    pub key_prefix: String,
    /// Longest a stored-answer lookup waits before the request goes on without the store.
    pub timeout: Duration,
    /// TTL for entries without a retention deadline (fresh window + stale-if-error).
    pub ttl: Option<Duration>,
    /// The in-process cache of recently served entries in front of Redis (`hot_cache`).
    pub hot_cache: crate::store::hot_cache::HotCacheLimits,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTarget({})", self.location())
    }
}

impl RedisTarget {
    /// Where the store is, without users or passwords: safe for logs and messages.
    pub fn location(&self) -> String {
        match self.cluster.first() {
            None => redacted(&self.url, &self.key_prefix),
            Some(first) => format!("cluster of {} nodes at {}", self.cluster.len(), redacted(first, &self.key_prefix)),
        }
    }
}

/// The URL without user or password, with the prefix: safe for logs and messages.
pub fn redacted(url: &str, prefix: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest} (prefix {prefix:?})")
}

/// Writes and maintenance wait this long at least: they are off the request path, and a
/// write given up too early is an answer lost for the next outage.
const WRITE_TIMEOUT_FLOOR: Duration = Duration::from_millis(500);
/// A full key scan (admin commands, counting at start-up).
const SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Errors are logged at most once per this interval (and counted always).
const LOG_INTERVAL_MS: u64 = 10_000;

/// Replaces a value and its metadata only if the value is still the expected one.
const REPLACE_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
  return 1
end
return 0";

/// Sets a key to ARGV[2] only if it holds ARGV[1] (an empty ARGV[1]: only if it is absent),
/// keeping its TTL.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1";

/// Appends a trail line and its new head if the trail still has ARGV[1] lines: each entry is
/// chained to the one before it, however many processes append.
const TRAIL_APPEND_SCRIPT: &str = r"
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1";

/// Reachability, for logs once per interval and for `/readyz`.
#[derive(Default)]
struct Health {
    /// Failed calls since the last log line.
    failures: AtomicU64,
    /// When the last failure was logged (ms since the epoch).
    logged_ms: AtomicU64,
    /// Whether the last call failed.
    down: AtomicBool,
    /// While down, calls before this time (ms since the epoch) fail at once without trying:
    /// one call per `PROBE_INTERVAL_MS` probes Redis, so a dead Redis costs a request
    /// nothing and a revived one is noticed within that interval.
    probe_at_ms: AtomicU64,
}

/// While Redis is failing, how often one call is let through to try it again.
const PROBE_INTERVAL_MS: u64 = 200;

pub struct RedisBackend {
    /// This backend's own runtime (an `Option` so that drop can shut it down without waiting,
    /// which Tokio allows inside an async context).
    runtime: Option<tokio::runtime::Runtime>,
    /// Where calls are spawned: the runtime above, also from inside another runtime.
    handle: tokio::runtime::Handle,
    /// The multiplexed connection (or cluster client) every call clones.
    conn: Connection,
    /// `store.key_prefix`, before every key, so one Redis can hold several stores.
    prefix: String,
    /// Keys carry hash tags (a Redis Cluster; see the module docs).
    tagged: bool,
    /// Where, without secrets.
    location: String,
    /// Longest a lookup on the request path waits (`store.timeout`).
    lookup_timeout: Duration,
    /// Longest a write or maintenance call waits: longer, as it is off the request path.
    write_timeout: Duration,
    /// Expiry of entries without a retention deadline.
    ttl: Option<Duration>,
    /// Limits of the store's hot cache in front of this backend, handed to `Store`.
    hot_cache: crate::store::hot_cache::HotCacheLimits,
    /// Reachability: logs once per interval, probes while down, and /readyz.
    health: Health,
    /// The sorted addresses of the last full scan, so paging through them (`after`) does not
    /// scan Redis again for every page: (`b'm'` or `b'v'`, addresses).
    scanned: Mutex<Option<(u8, Vec<RawAddress>)>>,
    /// `REPLACE_SCRIPT`, for re-sealing an entry (key rotation).
    replace: redis::Script,
    /// `SWAP_SCRIPT`, for the keyring and metadata updates.
    swap: redis::Script,
    /// `TRAIL_APPEND_SCRIPT`, for the access trail.
    trail_append: redis::Script,
}

impl RedisBackend {
    /// Connects; fails if Redis cannot be reached (a replica cannot unlock its keyring
    /// without it). Later outages are survived: the connection manager reconnects by itself.
    pub fn connect(target: &RedisTarget) -> Result<Self> {
        let location = target.location();
        let tagged = !target.cluster.is_empty();
        let what = if tagged { "store.cluster" } else { "store.url" };
        let urls = if tagged { target.cluster.clone() } else { vec![target.url.clone()] };
        for url in &urls {
            // Parsed here too, so a malformed URL is told apart from an unreachable Redis.
            redis::Client::open(url.as_str())
                .map_err(|e| BackendError::Unavailable(format!("{what} is not a Redis URL ({:?})", e.kind())))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holdfast-redis")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Io(format!("cannot start the Redis client: {e}")))?;
        let handle = runtime.handle().clone();
        let connect = async move {
            match urls.as_slice() {
                [url] if !tagged => Connection::single(url).await,
                nodes => Connection::cluster(nodes).await,
            }
        };
        let conn = wait_for(&handle, Duration::from_secs(10), connect)
            .map_err(|e| BackendError::Unavailable(format!("cannot reach Redis at {location}: {e}")))?;
        let write_timeout = (target.timeout * 10).max(WRITE_TIMEOUT_FLOOR);
        Ok(Self {
            runtime: Some(runtime),
            handle,
            conn,
            prefix: target.key_prefix.clone(),
            tagged,
            location,
            lookup_timeout: target.timeout,
            write_timeout,
            ttl: target.ttl,
            hot_cache: target.hot_cache,
            health: Health::default(),
            scanned: Mutex::new(None),
            replace: redis::Script::new(REPLACE_SCRIPT),
            swap: redis::Script::new(SWAP_SCRIPT),
            trail_append: redis::Script::new(TRAIL_APPEND_SCRIPT),
        })
    }

    /// Where the store is, without user or password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// How big and how old the store's hot cache in front of this backend may get.
    pub fn hot_cache_limits(&self) -> crate::store::hot_cache::HotCacheLimits {
        self.hot_cache
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        !self.health.down.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, address: &RawAddress) -> String {
        let hex = Address(*address).to_hex();
        if self.tagged { format!("{}{kind}:{{{hex}}}", self.prefix) } else { format!("{}{kind}:{hex}", self.prefix) }
    }

    pub(crate) fn named(&self, name: &str) -> String {
        if self.tagged { format!("{}{{store}}{name}", self.prefix) } else { format!("{}{name}", self.prefix) }
    }

    /// Runs `fut` on this backend's runtime and waits up to `limit` for it (see the module
    /// docs for why waiting here never stalls a runtime worker).
    fn run<T: Send + 'static>(&self, limit: Duration, what: &str, fut: impl Call<T>) -> Result<T> {
        self.admit(what)?;
        self.settle(what, wait_for(&self.handle, limit, fut))
    }

    /// As `run`, awaited instead of waited for: the client's task runs on the client's runtime
    /// and the caller's worker goes on with other requests meanwhile.
    async fn run_async<T: Send + 'static>(&self, limit: Duration, what: &str, fut: impl Call<T>) -> Result<T> {
        self.admit(what)?;
        let answer = self.handle.spawn(tokio::time::timeout(limit, fut)).await;
        self.settle(what, outcome(answer, limit))
    }

    /// While Redis is down, lets one call through per probe interval and refuses the rest at
    /// once, so a dead Redis costs requests nothing.
    fn admit(&self, what: &str) -> Result<()> {
        if self.health.down.load(Ordering::Relaxed) {
            let now = crate::clock::now_ms();
            let probe_at = self.health.probe_at_ms.load(Ordering::Relaxed);
            let probing = now >= probe_at
                && self
                    .health
                    .probe_at_ms
                    .compare_exchange(probe_at, now + PROBE_INTERVAL_MS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !probing {
                self.health.failures.fetch_add(1, Ordering::Relaxed);
                return Err(BackendError::Unavailable(format!(
                    "Redis store {what} skipped: Redis is unreachable (retried every {PROBE_INTERVAL_MS} ms)"
                )));
            }
        }
        Ok(())
    }

    /// Notes a call's outcome in the store's health: recovery is logged, failures counted.
    fn settle<T>(&self, what: &str, result: Result<T, String>) -> Result<T> {
        match result {
            Ok(v) => {
                if self.health.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(store = %self.location, "the Redis store is reachable again; recording resumes");
                }
                Ok(v)
            }
            Err(reason) => Err(self.failed(what, reason)),
        }
    }

    /// Counts a failure, logs it at most once per interval, and says what happened.
    fn failed(&self, what: &str, reason: String) -> BackendError {
        let failures = self.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::clock::now_ms();
        if !self.health.down.swap(true, Ordering::Relaxed) {
            self.health.probe_at_ms.store(now + PROBE_INTERVAL_MS, Ordering::Relaxed);
        }
        let last = self.health.logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOG_INTERVAL_MS
            && self.health.logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.health.failures.store(0, Ordering::Relaxed);
            tracing::error!(store = %self.location, failures, error = %reason,
                "the Redis store is failing ({what}); requests are proxied without it (logged once per 10 s)");
        }
        BackendError::Unavailable(format!("Redis store {what} failed: {reason}"))
    }

    /// The `maxmemory-policy` Redis runs with, if it lets us ask (managed services often
    /// refuse CONFIG).
    /// On a cluster every primary is asked, and the first policy that differs from the
    /// others' is the one reported (so a warning names the odd one out).
    pub fn eviction_policy(&self) -> Option<String> {
        let mut conn = self.conn.clone();
        let policies = self
            .run(self.write_timeout, "CONFIG GET", async move { conn.config_get("maxmemory-policy").await })
            .ok()?;
        let first = policies.first()?;
        Some(policies.iter().find(|p| !is_volatile(p)).unwrap_or(first).clone())
    }

    /// The value of one key, waiting up to `limit`.
    fn get(&self, key: String, limit: Duration, what: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        self.run(limit, what, async move { redis::cmd("GET").arg(key).query_async(&mut conn).await })
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it, at most `limit`.
fn wait_for<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    fut: impl Call<T>,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(tokio::time::timeout(limit, fut).await);
    });
    let receive = move || rx.recv();
    let received = match tokio::runtime::Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(receive)
        }
        _ => receive(),
    };
    outcome(received, limit)
}

/// Redis commands on their way, as handed to the backend's runtime.
trait Call<T>: Future<Output = redis::RedisResult<T>> + Send + 'static {}

impl<T, F: Future<Output = redis::RedisResult<T>> + Send + 'static> Call<T> for F {}

/// What a call's task came back with (`Err` from the hand-back: the client's runtime is gone),
/// its error described for messages.
fn outcome<T, Gone>(
    received: Result<Result<redis::RedisResult<T>, tokio::time::error::Elapsed>, Gone>,
    limit: Duration,
) -> Result<T, String> {
    match received {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(describe(&e)),
        Ok(Err(_)) => Err(format!("no answer within {} ms", limit.as_millis())),
        Err(_) => Err("the Redis client stopped".into()),
    }
}

/// A Redis error for messages (server replies and I/O errors: never a command's arguments).
fn describe(e: &redis::RedisError) -> String {
    e.to_string()
}

/// Whether an eviction policy evicts only keys with a TTL (or nothing), never the keyring.
fn is_volatile(policy: &str) -> bool {
    policy.starts_with("volatile-") || policy == "noeviction"
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
