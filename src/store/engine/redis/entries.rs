//! The shared store's entries: the `Backend` trait on Redis (values and metadata under their
//! keys, with the entry's expiry) and the paged scans of every address.

use super::{RedisBackend, SCAN_TIMEOUT};
use crate::cache_key::address::Address;
use crate::store::codec;
use crate::store::engine::{Backend, EntryBytes, EntryFuture, MetaUpdate, RawAddress, Result};
use crate::store::record::EntryMeta;

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 1000;

impl RedisBackend {
    /// Absolute expiry (ms since the epoch) for an entry with this metadata: its retention
    /// deadline, else the configured TTL from now, else none. The metadata is decoded here
    /// (content-free bookkeeping) so that the byte-level trait stays as it is.
    fn expiry_ms(&self, meta: &[u8]) -> Option<u64> {
        let expires = codec::decode::<EntryMeta>(meta).ok().map_or(0, |m| m.expires_ms);
        if expires > 0 {
            return Some(expires);
        }
        self.ttl.map(|ttl| crate::clock::now_ms().saturating_add(ttl.as_millis() as u64))
    }

    /// Every address of one kind (`m` or `v`), sorted; one full SCAN of every primary.
    fn scan_all(&self, kind: u8) -> Result<Vec<RawAddress>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{}:*", escape_glob(&self.prefix), kind as char);
        let strip = self.prefix.len() + 2;
        let tagged = self.tagged;
        let address = move |key: &str| -> Option<RawAddress> {
            let hex = key.get(strip..)?;
            let hex = if tagged { hex.strip_prefix('{')?.strip_suffix('}')? } else { hex };
            hex.parse::<Address>().ok().map(|a| a.0)
        };
        let mut found = self.run(SCAN_TIMEOUT, "a scan", async move {
            let mut found = Vec::new();
            let nodes: Vec<Option<(String, u16)>> = match conn.primaries().await? {
                None => vec![None],
                Some(primaries) => primaries.into_iter().map(Some).collect(),
            };
            for node in &nodes {
                let mut cursor = 0u64;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
                    let (next, keys) = conn.scan_node(node.as_ref(), scan).await?;
                    found.extend(keys.iter().filter_map(|k| address(k)));
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(found)
        })?;
        found.sort_unstable();
        found.dedup(); // SCAN may return a key twice
        Ok(found)
    }

    /// Up to `limit` addresses of one kind after `after`, from the last full scan when paging.
    fn page(&self, kind: u8, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
        let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = !matches!((&*scanned, after), (Some((k, _)), Some(_)) if *k == kind);
        if fresh {
            *scanned = Some((kind, self.scan_all(kind)?));
        }
        let Some((_, all)) = &*scanned else { return Ok(Vec::new()) };
        let start = after.map_or(0, |a| all.partition_point(|x| x <= a));
        Ok(all.iter().skip(start).take(limit).copied().collect())
    }
}

impl Backend for RedisBackend {
    fn get_entry(&self, address: &RawAddress) -> Result<EntryBytes> {
        let mut conn = self.conn.clone();
        let (v, m) = (self.key("v", address), self.key("m", address));
        self.run(self.lookup_timeout, "a lookup", async move {
            redis::cmd("MGET").arg(v).arg(m).query_async(&mut conn).await
        })
    }

    fn get_entry_async(&self, address: &RawAddress) -> Option<EntryFuture<'_>> {
        let mut conn = self.conn.clone();
        let (v, m) = (self.key("v", address), self.key("m", address));
        Some(Box::pin(self.run_async(self.lookup_timeout, "a lookup", async move {
            redis::cmd("MGET").arg(v).arg(m).query_async(&mut conn).await
        })))
    }

    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        self.get(self.key("v", address), self.lookup_timeout, "a lookup")
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        self.get(self.key("m", address), self.lookup_timeout, "a lookup")
    }

    /// Value and metadata in one MULTI/EXEC, both with the entry's expiry. The tally is not
    /// kept (see the module docs).
    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], _tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let (mk, vk) = (self.key("m", address), self.key("v", address));
        let (meta, value, expiry) = (meta.to_vec(), value.to_vec(), self.expiry_ms(meta));
        self.run(self.write_timeout, "a write", async move {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("GET").arg(&mk);
            let set_m = pipe.cmd("SET").arg(&mk).arg(meta);
            if let Some(at) = expiry {
                set_m.arg("PXAT").arg(at);
            }
            set_m.ignore();
            let set_v = pipe.cmd("SET").arg(&vk).arg(value);
            if let Some(at) = expiry {
                set_v.arg("PXAT").arg(at);
            }
            set_v.ignore();
            let (previous,): (Option<Vec<u8>>,) = pipe.query_async(&mut conn).await?;
            Ok(previous)
        })
    }

    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool> {
        let (mut conn, script) = (self.conn.clone(), self.replace.clone());
        let (mk, vk) = (self.key("m", address), self.key("v", address));
        let (expected, meta, value) = (expected.to_vec(), meta.to_vec(), value.to_vec());
        self.run(self.write_timeout, "a re-seal", async move {
            let done: i64 = script.key(mk).key(vk).arg(expected).arg(meta).arg(value).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }

    /// Read, change in this process, compare-and-swap; retried when another writer won.
    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()> {
        let key = self.key("m", address);
        for _ in 0..8 {
            let Some(old) = self.get_meta(address)? else { return Ok(()) };
            let Some(new) = update(&old) else { return Ok(()) };
            let (mut conn, script, key) = (self.conn.clone(), self.swap.clone(), key.clone());
            let swapped = self.run(self.write_timeout, "a metadata update", async move {
                let done: i64 = script.key(key).arg(old).arg(new).invoke_async(&mut conn).await?;
                Ok(done == 1)
            })?;
            if swapped {
                return Ok(());
            }
        }
        Ok(()) // a served count lost to heavy contention: bookkeeping, not data
    }

    fn delete_entry(&self, address: &RawAddress, _tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let (mk, vk) = (self.key("m", address), self.key("v", address));
        self.run(self.write_timeout, "a delete", async move {
            let (previous,): (Option<Vec<u8>>,) = redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(&mk)
                .cmd("DEL")
                .arg(&mk)
                .arg(&vk)
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok(previous)
        })
    }

    fn get_tally(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn put_tally(&self, _tally: &[u8]) -> Result<()> {
        Ok(())
    }

    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
        self.page(b'v', after, limit)
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        let addresses = self.page(b'm', after, limit)?;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = addresses.iter().map(|a| self.key("m", a)).collect();
        let mut conn = self.conn.clone();
        let metas: Vec<Option<Vec<u8>>> =
            self.run(SCAN_TIMEOUT, "a scan", async move { redis::cmd("MGET").arg(keys).query_async(&mut conn).await })?;
        // An entry that expired between the scan and the read is simply not there.
        Ok(addresses.into_iter().zip(metas).filter_map(|(a, m)| Some((a, m?))).collect())
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_named(&format!("s:{name}"))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        let (mut conn, key, value) = (self.conn.clone(), self.named(&format!("s:{name}")), value.to_vec());
        self.run(self.write_timeout, "a write", async move {
            redis::cmd("SET").arg(key).arg(value).query_async(&mut conn).await
        })
    }

    /// Redis makes writes durable by its own persistence settings (AOF/RDB, replicas).
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Redis's memory is not this store's alone to count; `INFO memory` tells it.
    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// The prefix with SCAN's glob characters escaped, so it matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
