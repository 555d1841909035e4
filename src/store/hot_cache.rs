//! The in-process hot cache in front of a shared (Redis) store: the entries this replica served
//! in the last moment, kept **sealed**, bounded by bytes and by age.
//!
//! # Why sealed
//! It holds exactly the bytes Redis holds (the AES-GCM envelope and the content-free metadata),
//! and every hit opens them again under the keyring, as a Redis read does. So the cache adds
//! no plaintext to this process's memory beyond the answer being sent, and a heap that leaks
//! (a core dump, swap, a read-past-the-end bug) shows no more than Redis itself would. The
//! price is one AES-GCM open per hit, about 0.7 µs for a 1 KiB answer and 13 µs for 32 KiB
//! (`cargo bench --bench store`), against the Redis lookup it saves: a round trip and
//! redis-server's own work (a 1 KiB hit ran at 0.49× the bare baseline through Redis and 0.68×
//! with this cache; docs/performance.md).
//!
//! # Never serving what it must not
//! Another replica or `holdfast cache purge` run against Redis deletes entries without this
//! process knowing. Every cached entry therefore has a **maximum age** (`store.hot_cache_max_age`,
//! default 1 s): after it, the entry is read from Redis again, so a purge or a Redis expiry is
//! honoured on every replica within that bound, with or without Redis reachable (a cache that
//! waited for an invalidation message would serve a purged entry for as long as Redis is
//! partitioned away). Writes and deletes made through this process drop the entry at once, and
//! a lookup that raced with one does not put its (older) answer back (see `epoch`).
//! Addresses carry the tenant, so isolation is as in the store. Only entries that opened under
//! the keyring are admitted, and the retention deadline in the metadata is checked on every hit
//! by the caller, as for a Redis read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache_key::address::Address;

/// What one cached entry costs beyond its bytes (the map slot, the queue slot, the address).
const ENTRY_OVERHEAD: usize = 128;

/// How big and how old the hot cache may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotCacheLimits {
    /// Bytes of sealed values and metadata kept; 0 turns the cache off.
    pub bytes: u64,
    /// Longest an entry is served from memory before it is read from Redis again: the bound
    /// on how long a purge or an expiry elsewhere can go unnoticed here.
    pub max_age: Duration,
}

impl Default for HotCacheLimits {
    fn default() -> Self {
        Self { bytes: 0, max_age: Duration::from_secs(1) }
    }
}

/// A sealed entry as Redis returned it, and when it was read.
struct Cached {
    /// The sealed record, as Redis holds it.
    value: Vec<u8>,
    /// The sealed bookkeeping beside it.
    meta: Vec<u8>,
    /// When it was read, for `max_age`.
    read_at: Instant,
    /// Its place in `Entries::order`, so a stale queue slot (the entry was replaced) is told apart.
    seq: u64,
}

impl Cached {
    fn cost(&self) -> usize {
        self.value.len() + self.meta.len() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Entries {
    /// The cached entries by address.
    map: HashMap<Address, Cached>,
    /// Insertion order, oldest first: entries leave in this order when over budget, which with
    /// a short maximum age is the same as least recently read from Redis.
    order: VecDeque<(Address, u64)>,
    /// What the entries cost in memory, against `limits.bytes`.
    bytes: usize,
    /// The `seq` the next cached entry gets.
    next_seq: u64,
}

/// When a Redis read began, for `HotCache::admit`.
#[derive(Clone, Copy)]
pub struct ReadStart {
    /// `HotCache::epoch` when the read began.
    epoch: u64,
    /// When the read began: an entry is as old as its read.
    at: Instant,
}

pub struct HotCache {
    /// The memory budget and the maximum age (`store.hot_cache_*`).
    limits: HotCacheLimits,
    /// The entries and their order, behind one lock held only for a map operation.
    entries: Mutex<Entries>,
    /// Bumped by every local invalidation. A lookup notes it before reading Redis and admits
    /// its answer only if it is unchanged: an answer read before a local delete or write must
    /// not be cached after it.
    epoch: AtomicU64,
}

impl HotCache {
    /// A cache within `limits`, or `None` if they turn it off.
    pub fn new(limits: HotCacheLimits) -> Option<Self> {
        (limits.bytes > 0 && !limits.max_age.is_zero()).then(|| Self {
            limits,
            entries: Mutex::new(Entries::default()),
            epoch: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sealed value and metadata at `address`, if read from Redis within the maximum age.
    pub fn get(&self, address: &Address) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut entries = self.lock();
        let cached = entries.map.get(address)?;
        if cached.read_at.elapsed() < self.limits.max_age {
            return Some((cached.value.clone(), cached.meta.clone()));
        }
        if let Some(old) = entries.map.remove(address) {
            entries.bytes -= old.cost();
        }
        None
    }

    /// To be taken just before a Redis read whose answer may be admitted: the entry's age
    /// then counts from before the read, so the maximum age bounds the time since Redis had it.
    pub fn begin_read(&self) -> ReadStart {
        ReadStart { epoch: self.epoch.load(Ordering::Acquire), at: Instant::now() }
    }

    /// Keeps an entry read from Redis (and opened) by the read that began at `start`, unless
    /// a local change came in between or it alone is over the budget.
    pub fn admit(&self, address: &Address, start: ReadStart, value: &[u8], meta: &[u8]) {
        let mut entries = self.lock();
        // Checked under the lock that `invalidate` also takes, so no change slips in between.
        if self.epoch.load(Ordering::Acquire) != start.epoch {
            return;
        }
        let seq = entries.next_seq;
        let cached = Cached { value: value.to_vec(), meta: meta.to_vec(), read_at: start.at, seq };
        let budget = usize::try_from(self.limits.bytes).unwrap_or(usize::MAX);
        if cached.cost() > budget {
            return;
        }
        entries.next_seq += 1;
        entries.bytes += cached.cost();
        if let Some(old) = entries.map.insert(*address, cached) {
            entries.bytes -= old.cost();
        }
        entries.order.push_back((*address, seq));
        while entries.bytes > budget {
            let Some((oldest, seq)) = entries.order.pop_front() else { break };
            if entries.map.get(&oldest).is_some_and(|c| c.seq == seq)
                && let Some(gone) = entries.map.remove(&oldest)
            {
                entries.bytes -= gone.cost();
            }
        }
        // Slots of replaced or expired entries are dropped as they reach the front; keep the
        // queue from growing without bound under a steady stream of re-reads of one entry.
        if entries.order.len() > 2 * entries.map.len() + 64 {
            let Entries { map, order, .. } = &mut *entries;
            order.retain(|(a, s)| map.get(a).is_some_and(|c| c.seq == *s));
        }
    }

    /// Forgets the entry at `address` (this process wrote, re-sealed or deleted it).
    pub fn invalidate(&self, address: &Address) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(old) = entries.map.remove(address) {
            entries.bytes -= old.cost();
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(n: u8) -> Address {
        Address([n; crate::cache_key::address::ADDRESS_LEN])
    }

    fn cache(bytes: u64, max_age: Duration) -> HotCache {
        HotCache::new(HotCacheLimits { bytes, max_age }).unwrap()
    }

    #[test]
    fn zero_bytes_or_zero_age_turns_it_off() {
        assert!(HotCache::new(HotCacheLimits { bytes: 0, max_age: Duration::from_secs(1) }).is_none());
        assert!(HotCache::new(HotCacheLimits { bytes: 1 << 20, max_age: Duration::ZERO }).is_none());
    }

    #[test]
    fn an_entry_older_than_the_maximum_age_is_not_served() {
        let hot = cache(1 << 20, Duration::from_millis(50));
        hot.admit(&address(1), hot.begin_read(), b"sealed", b"meta");
        assert_eq!(hot.get(&address(1)), Some((b"sealed".to_vec(), b"meta".to_vec())));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(hot.get(&address(1)), None);
        assert_eq!(hot.bytes(), 0);
    }

    #[test]
    fn a_read_that_raced_with_a_local_delete_is_not_admitted() {
        let hot = cache(1 << 20, Duration::from_secs(5));
        let before = hot.begin_read();
        hot.invalidate(&address(1));
        hot.admit(&address(1), before, b"deleted meanwhile", b"m");
        assert_eq!(hot.get(&address(1)), None);
        hot.admit(&address(2), hot.begin_read(), b"v", b"m");
        hot.invalidate(&address(2));
        assert_eq!(hot.get(&address(2)), None);
    }

    #[test]
    fn the_byte_budget_holds_and_the_oldest_go_first() {
        let value = vec![7u8; 1000];
        let per_entry = (value.len() + 4 + ENTRY_OVERHEAD) as u64;
        let hot = cache(per_entry * 3, Duration::from_secs(5));
        for n in 0..10 {
            hot.admit(&address(n), hot.begin_read(), &value, b"meta");
            assert!(hot.bytes() as u64 <= per_entry * 3);
        }
        assert!(hot.get(&address(6)).is_none());
        assert!((7..10).all(|n| hot.get(&address(n)).is_some()));
        // An entry bigger than the whole budget is simply not kept.
        hot.admit(&address(99), hot.begin_read(), &vec![0u8; 10_000], b"meta");
        assert!(hot.get(&address(99)).is_none());
        // Re-reading one entry again and again keeps the budget and the queue small.
        for _ in 0..1000 {
            hot.admit(&address(8), hot.begin_read(), &value, b"meta");
        }
        assert!(hot.bytes() as u64 <= per_entry * 3);
        assert!(hot.lock().order.len() < 200);
    }
}
