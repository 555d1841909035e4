//! The keyring and the access trail in Redis: the two store-wide records every replica
//! changes, each only by compare-and-swap.

use std::sync::Arc;

use super::{RedisBackend, SCAN_TIMEOUT};
use crate::store::engine::Result;
use crate::store::trail_cell::{TrailCell, TrailContents};

impl RedisBackend {
    /// Compare-and-swap on one named key (the keyring); see `SWAP_SCRIPT`.
    pub(crate) fn swap_named(&self, name: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool> {
        let (mut conn, script) = (self.conn.clone(), self.swap.clone());
        let (key, expected, new) = (self.named(name), expected.unwrap_or_default().to_vec(), new.to_vec());
        self.run(self.write_timeout, "a compare-and-swap", async move {
            let done: i64 = script.key(key).arg(expected).arg(new).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }

    pub(crate) fn get_named(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get(self.named(name), self.write_timeout, "a read")
    }

    /// Every line of the access trail, in order, and its head.
    pub(crate) fn trail(&self) -> Result<TrailContents> {
        let mut conn = self.conn.clone();
        let (list, head) = (self.named("trail"), self.named("trail:head"));
        self.run(SCAN_TIMEOUT, "reading the access trail", async move {
            let lines: Vec<Vec<u8>> = redis::cmd("LRANGE").arg(&list).arg(0).arg(-1).query_async(&mut conn).await?;
            let head: Option<Vec<u8>> = redis::cmd("GET").arg(&head).query_async(&mut conn).await?;
            Ok((lines, head))
        })
    }

    /// The last trail line and how many there are.
    pub(crate) fn trail_tail(&self) -> Result<(u64, Option<Vec<u8>>)> {
        let mut conn = self.conn.clone();
        let list = self.named("trail");
        self.run(self.write_timeout, "reading the access trail", async move {
            let (len, last): (u64, Option<Vec<u8>>) =
                redis::pipe().cmd("LLEN").arg(&list).cmd("LINDEX").arg(&list).arg(-1).query_async(&mut conn).await?;
            Ok((len, last))
        })
    }

    /// Appends `line` with its `head` if the trail still has `len` lines. Returns whether it did.
    pub(crate) fn trail_append(&self, len: u64, line: &[u8], head: &[u8]) -> Result<bool> {
        let (mut conn, script) = (self.conn.clone(), self.trail_append.clone());
        let (list, head_key, line, head) =
            (self.named("trail"), self.named("trail:head"), line.to_vec(), head.to_vec());
        self.run(self.write_timeout, "appending to the access trail", async move {
            let done: i64 = script.key(list).key(head_key).arg(len).arg(line).arg(head).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }
}

/// The keyring kept in Redis at `<prefix>keyring`.
pub struct RedisKeyringCell(pub Arc<RedisBackend>);

impl crate::store::keyring::KeyringCell for RedisKeyringCell {
    fn describe(&self) -> String {
        format!("{} key {}keyring", self.0.location(), self.0.prefix)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        self.0.get_named("keyring").map_err(|e| e.to_string())
    }

    fn swap(&self, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
        self.0.swap_named("keyring", expected, new).map_err(|e| e.to_string())
    }
}

/// The access trail kept in Redis at `<prefix>trail` and `<prefix>trail:head`.
pub struct RedisTrailCell(pub Arc<RedisBackend>);

impl TrailCell for RedisTrailCell {
    fn describe(&self) -> String {
        format!("{} key {}trail", self.0.location(), self.0.prefix)
    }

    fn tail(&self) -> Result<(u64, Option<Vec<u8>>), String> {
        self.0.trail_tail().map_err(|e| e.to_string())
    }

    fn append(&self, len: u64, line: &[u8], head: &[u8]) -> Result<bool, String> {
        self.0.trail_append(len, line, head).map_err(|e| e.to_string())
    }

    fn all(&self) -> Result<TrailContents, String> {
        self.0.trail().map_err(|e| e.to_string())
    }
}
