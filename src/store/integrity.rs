//! The store's integrity record: how many entries it holds and which, sealed, so that "entries
//! missing" can be told from "store empty".
//!
//! A *tally* is a write generation, an entry count and an order-independent digest of the
//! addresses present (the XOR of each address's keyed BLAKE3 hash: adding and removing an
//! address are the same operation, so it is kept up to date in O(1) per write). It is MAC'd with
//! a key derived from the address key, so it cannot be forged or edited without the store
//! secret.
//!
//! Two copies are kept:
//! - inside the database, written in the same transaction as every entry it counts (so it
//!   always agrees with the entries sled recovers, unless sled lost pages in the middle), and
//! - in the file `<store>/tally`, written after a flush has made its state durable (about once
//!   a second while writes happen, and exactly at a clean close). sled's recovery treats a
//!   damaged log record as a torn tail and rolls the whole database back to before it; the
//!   in-database tally rolls back with it, but the file does not: a database generation
//!   older than the file's is proof that acknowledged writes were lost.
//!
//! `Store::open` and `cache verify` compare them with each other and with a scan of what is
//! actually readable.

use std::path::Path;

use crate::store::durable::write_atomically;

/// Bytes of an encoded tally: generation, count, digest, MAC.
const LEN: usize = 8 + 8 + 32 + 32;
const MAC_CONTEXT: &[u8] = b"holdfast store tally v1";

/// Count and digest of the addresses in the store, at a write generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Bumped by every write that adds or removes an entry.
    pub generation: u64,
    /// Entries present.
    pub count: u64,
    /// XOR of `keyed_hash(tally key, address)` over the entries present.
    pub digest: [u8; 32],
}

/// Why a sealed tally was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum TallyError {
    /// Not the length a tally has.
    Length(usize),
    /// The MAC does not match: edited, damaged, or from another store.
    Mac,
}

impl std::fmt::Display for TallyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Length(n) => write!(f, "integrity record has {n} bytes, not {LEN}"),
            Self::Mac => f.write_str("integrity record fails its MAC (damaged, edited, or from another store)"),
        }
    }
}

impl Tally {
    /// Folds one address in or out (the same operation).
    pub fn toggle(&mut self, key: &[u8; 32], address: &[u8; 32]) {
        let h = blake3::keyed_hash(key, address);
        for (d, b) in self.digest.iter_mut().zip(h.as_bytes()) {
            *d ^= b;
        }
    }

    /// Records that `address` was added (`true`) or removed (`false`) at the next generation.
    pub fn apply(&mut self, key: &[u8; 32], address: &[u8; 32], added: bool) {
        self.toggle(key, address);
        self.generation += 1;
        if added {
            self.count += 1;
        } else {
            self.count = self.count.saturating_sub(1);
        }
    }

    /// Whether two tallies describe the same set of addresses (generations aside).
    pub fn same_entries(&self, other: &Tally) -> bool {
        self.count == other.count && self.digest == other.digest
    }

    pub fn seal(&self, key: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.digest);
        let mac = mac(key, &out);
        out.extend_from_slice(&mac);
        out
    }

    pub fn open(key: &[u8; 32], bytes: &[u8]) -> Result<Tally, TallyError> {
        if bytes.len() != LEN {
            return Err(TallyError::Length(bytes.len()));
        }
        let (body, tag) = bytes.split_at(LEN - 32);
        // Constant time: blake3's Hash equality is.
        if blake3::Hash::from(mac(key, body)) != blake3::Hash::from(<[u8; 32]>::try_from(tag).unwrap_or([0; 32])) {
            return Err(TallyError::Mac);
        }
        let u64_at = |i: usize| body.get(i..i + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
        let digest = body.get(16..48).and_then(|b| b.try_into().ok()).unwrap_or([0; 32]);
        Ok(Tally { generation: u64_at(0), count: u64_at(8), digest })
    }
}

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(MAC_CONTEXT);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The file copy's name inside the store directory.
pub const FILE: &str = "tally";

/// Reads the file copy: `Ok(None)` if there is none.
pub fn read_file(dir: &Path, key: &[u8; 32]) -> std::io::Result<Option<Result<Tally, TallyError>>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => Ok(Some(Tally::open(key, &bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the file copy (atomically, fsync'd).
pub fn write_file(dir: &Path, key: &[u8; 32], tally: &Tally) -> std::io::Result<()> {
    write_atomically(&dir.join(FILE), &tally.seal(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_order_independent_and_removal_undoes_addition() {
        let key = [7u8; 32];
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (mut x, mut y) = (Tally::default(), Tally::default());
        x.apply(&key, &a, true);
        x.apply(&key, &b, true);
        y.apply(&key, &b, true);
        y.apply(&key, &a, true);
        assert!(x.same_entries(&y));
        x.apply(&key, &b, false);
        let mut only_a = Tally::default();
        only_a.apply(&key, &a, true);
        assert!(x.same_entries(&only_a));
    }

    #[test]
    fn a_sealed_tally_opens_only_unchanged_and_under_its_key() {
        let key = [9u8; 32];
        let mut t = Tally::default();
        t.apply(&key, &[3u8; 32], true);
        let sealed = t.seal(&key);
        assert_eq!(Tally::open(&key, &sealed), Ok(t));
        let mut flipped = sealed.clone();
        flipped[9] ^= 1;
        assert_eq!(Tally::open(&key, &flipped), Err(TallyError::Mac));
        assert_eq!(Tally::open(&[0u8; 32], &sealed), Err(TallyError::Mac));
        assert_eq!(Tally::open(&key, &sealed[..10]), Err(TallyError::Length(10)));
    }
}
