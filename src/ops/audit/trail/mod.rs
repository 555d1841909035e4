//! The access trail: a tamper-evident, append-only record of every admin action that decrypts or
//! changes stored data: when, which command, which addresses (or how many), and who.
//!
//! # Files
//! The trail is a JSON-Lines file, one [`TrailEntry`] per line. Beside it lives a small head file,
//! `<trail>.head` (see [`head_path`]), rewritten atomically after every append. Back up, copy and
//! move the two files together.
//!
//! # The chain
//! Each entry's `prev` is the keyed BLAKE3 hash, under the trail key, of the previous line's exact
//! bytes (without its newline); the first entry's `prev` is the keyed hash of
//! `b"holdfast trail genesis"`. Changing, removing, inserting or reordering any line breaks the
//! link from its successor, and `seq` must go up by exactly one per line.
//!
//! The hash is keyed on purpose. With a plain hash, anyone who can write the files could edit an
//! entry and recompute every later `prev` and the head, leaving a chain that verifies. With a
//! keyed hash they need the trail key, which the caller derives from the store keyring (it is
//! never written to disk in the clear). Disk access alone is therefore not enough to rewrite the
//! history consistently; key holders (anyone who can unlock the store) can, so the trail proves
//! integrity against people with file access only, not against an operator who holds the keys.
//! The trail key must stay the same for the trail's life: derive it from key material that
//! `keys rotate` does not replace.
//!
//! The last line has no successor to vouch for it, so the head file does. It holds the last
//! entry's `seq` and `mac` = keyed BLAKE3 of ("holdfast trail head v1\0" ‖ seq as u64 BE ‖ chain
//! hash of the last line). It is a MAC over the chain hash rather than the chain hash itself
//! because the chain hash of line N-1 is printed in line N's `prev`: a head that held just that
//! value could be forged by anyone who deletes line N. The domain prefix keeps the two kinds of
//! hash apart (a trail line always starts with `{`).
//!
//! # Crash safety
//! An append writes the line, fsyncs it, then replaces the head file (temporary file, fsync,
//! rename). A crash leaves one of two states, both named by [`verify`] as
//! [`BreakKind::InterruptedAppend`] rather than tampering:
//! - the line is complete but the head still describes the entry before it ("head file is behind
//!   by one entry"); the next append brings the head up to date;
//! - the line was cut short and the head describes the entry before it; [`Trail::open`] removes
//!   the fragment, which was never acknowledged to a caller.
//!
//! [`Trail::open`] reports either repair through [`Trail::recovery`] so the CLI can say so. It
//! refuses to open a trail in any other inconsistent state (such as a removed last entry), so that
//! the next append cannot overwrite the head file and hide the damage.
//!
//! # Limits
//! - One writing process at a time. Appends within a process are serialized by a mutex; across
//!   processes the caller must hold the store's exclusive lock while the trail is open. An append
//!   that finds the file changed underneath it refuses ([`TrailError::ChangedOnDisk`]).
//! - Deleting both files, or putting back older copies of both, cannot be detected from the files
//!   alone; neither can editing the last entry while it is not yet covered by the head (the state
//!   an interrupted append leaves, which someone could also fake by restoring an older head file).
//!   Ship the trail and its head off the host if that matters.
//!
//! # Code
//! - `writer`: [`Trail`], which opens a trail (repairing an interrupted append) and appends to
//!   it; [`append_shared`] for a trail kept in Redis.
//! - `reader`: [`read`] and [`verify`], which read a trail back and find the first break.
//! - here: the entry, the errors, and the chain and head hashes both sides compute.

mod reader;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use blake3::Hash;
use serde::{Deserialize, Serialize};

pub use reader::{BreakKind, BrokenLink, Verification, read, read_shared, verify, verify_shared};
pub use writer::{Action, Recovery, Trail, append_shared};

use crate::secret::SecretKey;
use crate::store::durable::write_atomically;
pub use crate::store::trail_cell::{TrailCell, TrailContents};

/// What the first entry's `prev` hashes (under the trail key).
const GENESIS: &[u8] = b"holdfast trail genesis";
/// Prefix of the head file's MAC input, so it can never equal a chain hash.
const HEAD_DOMAIN: &[u8] = b"holdfast trail head v1\0";
/// At most this many addresses are listed in one entry; `count` carries the total.
pub const MAX_LISTED_ADDRESSES: usize = 100;
/// How much of the file's end `open` reads at a time while looking for the last line.
const TAIL_CHUNK: u64 = 8 * 1024;

/// One admin action, as one line of the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailEntry {
    /// 1 for the first entry, then up by one per line.
    pub seq: u64,
    /// When the entry was appended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who acted, e.g. `cli:alice@host1` or `admin-token:3f2a9c1e`.
    pub actor: String,
    /// The command as the operator gave it, e.g. `cache purge --older-than 30d`.
    pub command: String,
    /// Hex addresses involved; at most [`MAX_LISTED_ADDRESSES`], see `count`.
    pub addresses: Vec<String>,
    /// How many entries were read or changed.
    pub count: u64,
    /// `ok` or a short error.
    pub outcome: String,
    /// Hex keyed BLAKE3 of the previous line's exact bytes (see the module docs).
    pub prev: String,
}

impl TrailEntry {
    /// The entry as its line's exact bytes (without the newline): what the next link hashes.
    fn line(&self) -> Vec<u8> {
        // Serializing strings and integers cannot fail: serde_json only errors on non-string
        // map keys or on Serialize impls that return errors, and this struct has neither.
        #[allow(clippy::expect_used, reason = "this struct of strings and integers always serializes")]
        serde_json::to_vec(self).expect("trail entry serializes")
    }
}

/// Why the trail could not be opened, appended to or read.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("cannot {action} audit trail file {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "line {line} of audit trail {path} is not a trail entry ({reason}); run `holdfast audit trail --verify` to \
         see whether the trail was damaged or tampered with"
    )]
    Unreadable { path: PathBuf, line: u64, reason: String },
    #[error(
        "audit trail {path} does not match its head file: {reason}. Nothing was appended. Run `holdfast audit \
         trail --verify` to see what changed; keep both files as evidence and move them aside to start a new trail"
    )]
    Inconsistent { path: PathBuf, reason: String },
    #[error(
        "audit trail {path} changed on disk since it was opened (is another holdfast process writing to it?); \
         nothing was appended; run the command again"
    )]
    ChangedOnDisk { path: PathBuf },
    #[error(
        "an earlier append to audit trail {path} failed and its partial line could not be removed; open the \
         trail again (opening repairs an interrupted append)"
    )]
    Damaged { path: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TrailError {
    move |source| TrailError::Io { action, path: path.to_owned(), source }
}

/// The head file that vouches for the last line of the trail at `path`: `path` + `.head`.
pub fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn link_hash(key: &SecretKey, line: &[u8]) -> Hash {
    blake3::keyed_hash(key.expose(), line)
}

fn genesis_link(key: &SecretKey) -> Hash {
    link_hash(key, GENESIS)
}

fn head_mac(key: &SecretKey, seq: u64, link: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new_keyed(key.expose());
    hasher.update(HEAD_DOMAIN).update(&seq.to_be_bytes()).update(link.as_bytes());
    hasher.finalize()
}

fn parse_hash(hex: &str) -> Option<Hash> {
    Hash::from_hex(hex).ok()
}

fn parse_line(line: &[u8]) -> Result<TrailEntry, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// The head file, parsed.
struct Head {
    /// The seq of the entry it vouches for (0: an empty trail).
    seq: u64,
    /// Keyed MAC over that seq and the entry's chain hash (see the module docs).
    mac: Hash,
}

impl Head {
    /// Whether this head vouches for `link` being the chain hash of entry `seq`. `Hash`
    /// equality is constant-time.
    fn vouches(&self, key: &SecretKey, seq: u64, link: &Hash) -> bool {
        self.seq == seq && self.mac == head_mac(key, seq, link)
    }
}

#[derive(Serialize, Deserialize)]
struct HeadRecord {
    /// As in [`Head`].
    seq: u64,
    /// The MAC, 64 hex digits.
    mac: String,
}

/// `Ok(None)` if there is no head file; `Ok(Some(Err(_)))` if it exists but cannot be parsed.
fn read_head(path: &Path) -> Result<Option<Result<Head, String>>, TrailError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TrailError::Io { action: "read", path: path.to_owned(), source }),
    };
    Ok(Some(parse_head(&bytes)))
}

fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    serde_json::from_slice::<HeadRecord>(bytes).map_err(|e| e.to_string()).and_then(|record| {
        let mac = parse_hash(&record.mac).ok_or_else(|| "its mac is not 64 hex digits".to_owned())?;
        Ok(Head { seq: record.seq, mac })
    })
}

fn head_text(key: &SecretKey, seq: u64, link: &Hash) -> String {
    format!("{{\"seq\":{seq},\"mac\":\"{}\"}}\n", head_mac(key, seq, link).to_hex())
}

fn write_head(path: &Path, key: &SecretKey, seq: u64, link: &Hash) -> Result<(), TrailError> {
    write_atomically(path, head_text(key, seq, link).as_bytes()).map_err(io_error("write", path))
}

fn cell_error(cell: &dyn TrailCell, action: &'static str, reason: String) -> TrailError {
    TrailError::Io { action, path: PathBuf::from(cell.describe()), source: io::Error::other(reason) }
}

#[cfg(test)]
mod tests;
