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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use blake3::Hash;
use serde::{Deserialize, Serialize};

use crate::secret::SecretKey;
use crate::store::durable::write_atomically;

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

/// What [`Trail::open`] repaired or accepted after an interrupted append. Worth showing to the
/// operator: the same states can be staged by someone who restores an older head file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of an incomplete last line that were removed (0 if none).
    pub removed_torn_bytes: u64,
    /// The head file described the entry before the last one; the next append updates it.
    pub head_was_behind: bool,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.removed_torn_bytes > 0 {
            parts.push(format!(
                "removed an incomplete last line ({} bytes) left by an interrupted append",
                self.removed_torn_bytes
            ));
        }
        if self.head_was_behind {
            parts.push("the head file was one entry behind (an append was interrupted before updating it)".into());
        }
        f.write_str(&parts.join("; "))
    }
}

/// The chain's end, as the appender sees it.
struct ChainState {
    file: File,
    next_seq: u64,
    last_link: Hash,
    /// File length after our last append; anything else means someone else wrote to it.
    len: u64,
    /// Set when a failed append left bytes that could not be removed.
    damaged: bool,
}

/// An open trail, ready to append. Share it between threads (`&Trail` or `Arc<Trail>`).
pub struct Trail {
    path: PathBuf,
    head: PathBuf,
    key: SecretKey,
    state: Mutex<ChainState>,
    recovery: Option<Recovery>,
}

impl fmt::Debug for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trail({}, *****)", self.path.display())
    }
}

impl Trail {
    /// Opens (creating if missing) the JSON-Lines file at `path`. Reads the last line to continue
    /// the chain; does not verify the whole file (that is [`verify`]).
    ///
    /// It does check the last line against the head file, and refuses ([`TrailError::Inconsistent`])
    /// unless they agree or show an interrupted append (see [`Trail::recovery`]): appending to a
    /// trail whose end was removed would rewrite the head and hide the removal.
    pub fn open(path: &Path, key: SecretKey) -> Result<Self, TrailError> {
        let head = head_path(path);
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io_error("open", path))?;
        let len = file.metadata().map_err(io_error("inspect", path))?.len();
        let tail = read_tail(&file, len).map_err(io_error("read", path))?;
        let inconsistent = |reason: String| TrailError::Inconsistent { path: path.to_owned(), reason };

        let genesis = genesis_link(&key);
        let last = match &tail.last {
            Some(line) => Some((
                parse_line(line).map_err(|e| inconsistent(format!("its last complete line is not an entry ({e})")))?,
                link_hash(&key, line),
            )),
            None => None,
        };
        let (last_seq, last_link) = last.as_ref().map_or((0, genesis), |(entry, link)| (entry.seq, *link));

        let mut recovery = Recovery::default();
        match read_head(&head)? {
            None if len == 0 => write_head(&head, &key, 0, &genesis)?,
            None => return Err(inconsistent("the head file is missing".into())),
            Some(Err(reason)) => return Err(inconsistent(format!("the head file cannot be read ({reason})"))),
            Some(Ok(h)) if h.vouches(&key, last_seq, &last_link) => {}
            Some(Ok(h)) => {
                // Behind by one: the head vouches for the link the last entry points back to.
                let behind = last.as_ref().is_some_and(|(entry, _)| {
                    entry.seq >= 1 && parse_hash(&entry.prev).is_some_and(|prev| h.vouches(&key, entry.seq - 1, &prev))
                });
                if !behind {
                    return Err(inconsistent(describe_head_mismatch(h.seq, last_seq)));
                }
                recovery.head_was_behind = true;
            }
        }

        let mut len = len;
        if let Some(from) = tail.torn_from {
            // The head vouches for what precedes the fragment, so the fragment is an append that
            // never completed (and was never reported as done): drop it so the next line starts
            // on a line of its own.
            file.set_len(from).and_then(|()| file.sync_data()).map_err(io_error("repair", path))?;
            recovery.removed_torn_bytes = len - from;
            len = from;
        }

        let state = ChainState { file, next_seq: last_seq.saturating_add(1), last_link, len, damaged: false };
        let recovery = (recovery != Recovery::default()).then_some(recovery);
        Ok(Self { path: path.to_owned(), head, key, state: Mutex::new(state), recovery })
    }

    /// What `open` repaired or accepted after an interrupted append, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (seq, at_ms and prev are filled in), fsyncs it, updates the head file,
    /// and returns it. Thread-safe. The file is opened in append mode with permissions 0600.
    ///
    /// Only the first [`MAX_LISTED_ADDRESSES`] addresses are listed; pass the total as `count`.
    ///
    /// If the line is written but the head file cannot be, the entry stays in the trail (it is
    /// durable) and the error is returned; the next successful append updates the head.
    pub fn append(
        &self,
        actor: &str,
        command: &str,
        addresses: &[String],
        count: u64,
        outcome: &str,
    ) -> Result<TrailEntry, TrailError> {
        // State is only changed after the writes it describes succeed, so a panic elsewhere
        // cannot leave it inconsistent and the poison flag carries no information.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.damaged {
            return Err(TrailError::Damaged { path: self.path.clone() });
        }
        let on_disk = state.file.metadata().map_err(io_error("inspect", &self.path))?.len();
        if on_disk != state.len {
            return Err(TrailError::ChangedOnDisk { path: self.path.clone() });
        }

        let entry = TrailEntry {
            seq: state.next_seq,
            at_ms: now_ms(),
            actor: actor.to_owned(),
            command: command.to_owned(),
            addresses: addresses.iter().take(MAX_LISTED_ADDRESSES).cloned().collect(),
            count,
            outcome: outcome.to_owned(),
            prev: state.last_link.to_hex().to_string(),
        };
        // Serializing strings and integers cannot fail: serde_json only errors on non-string
        // map keys or on Serialize impls that return errors, and this struct has neither.
        #[allow(clippy::expect_used, reason = "this struct of strings and integers always serializes")]
        let mut line = serde_json::to_vec(&entry).expect("trail entry serializes");
        let link = link_hash(&self.key, &line);
        line.push(b'\n');

        if let Err(source) = state.file.write_all(&line).and_then(|()| state.file.sync_data()) {
            // Take back whatever part of the line reached the file, so the next append does not
            // land after a fragment; if even that fails, refuse further appends until reopened.
            let len = state.len;
            if state.file.set_len(len).and_then(|()| state.file.sync_data()).is_err() {
                state.damaged = true;
            }
            return Err(TrailError::Io { action: "append to", path: self.path.clone(), source });
        }
        state.len += line.len() as u64;
        state.next_seq += 1;
        state.last_link = link;
        write_head(&self.head, &self.key, entry.seq, &link)?;
        Ok(entry)
    }
}

/// Reads every entry; a line that does not parse is reported with its line number rather than
/// skipped. Checks nothing else: use [`verify`] for that.
pub fn read(path: &Path) -> Result<Vec<TrailEntry>, TrailError> {
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    let (lines, torn) = split_lines(&bytes);
    lines
        .into_iter()
        .chain(torn)
        .zip(1u64..)
        .map(|(line, number)| {
            parse_line(line).map_err(|reason| TrailError::Unreadable { path: path.to_owned(), line: number, reason })
        })
        .collect()
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Lines in the trail, counting any that do not parse or are incomplete.
    pub entries: u64,
    /// The first problem found, scanning from the top; `None` if the whole trail checks out.
    pub first_broken: Option<BrokenLink>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// 1-based line number of the entry to blame (for removed entries: where they would be).
    pub line: u64,
    /// The entry's sequence number, where known.
    pub seq: Option<u64>,
    pub kind: BreakKind,
    /// A sentence for the operator, e.g. "entry 7 (line 7) was altered or removed: its
    /// successor's prev hash does not match".
    pub reason: String,
}

/// The kind of break, so the CLI can tell an interrupted append from tampering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// A line is not a trail entry at all.
    Unreadable,
    /// An entry was changed, moved, copied or inserted.
    Altered,
    /// Entries are missing before `line`.
    Removed,
    /// Entries are missing at the end, according to the head file.
    Truncated,
    /// The state a crash during an append leaves (see the module docs); not proof of tampering,
    /// but the last entry is not covered by the head file.
    InterruptedAppend,
    /// The head file is missing.
    HeadMissing,
    /// The head file cannot be read or does not match the trail in any way explained above.
    HeadMismatch,
    /// Nothing verifies under the given key: it is not the key the trail was written with.
    WrongKey,
}

/// Recomputes the chain with `key`. Also checks that seq goes up by 1 and that the last line
/// matches the head file, so editing or truncating the last entry is detected too.
///
/// Reads the whole trail into memory (entries are small; a year of admin actions is megabytes).
pub fn verify(path: &Path, key: &SecretKey) -> Result<Verification, TrailError> {
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    let (lines, torn) = split_lines(&bytes);
    let head = read_head(&head_path(path))?;
    let entries = (lines.len() + usize::from(torn.is_some())) as u64;
    let check = ChainCheck {
        key,
        genesis: genesis_link(key),
        parsed: lines.iter().map(|line| parse_line(line)).collect(),
        links: lines.iter().map(|line| link_hash(key, line)).collect(),
        torn: torn.is_some(),
        head,
    };
    Ok(Verification { entries, first_broken: check.first_break() })
}

/// Everything `verify` needs, computed once.
struct ChainCheck<'a> {
    key: &'a SecretKey,
    genesis: Hash,
    parsed: Vec<Result<TrailEntry, String>>,
    /// Chain hash of each complete line.
    links: Vec<Hash>,
    /// Whether an incomplete line follows the complete ones.
    torn: bool,
    head: Option<Result<Head, String>>,
}

fn broken(line: u64, seq: Option<u64>, kind: BreakKind, reason: String) -> Option<BrokenLink> {
    Some(BrokenLink { line, seq, kind, reason })
}

impl ChainCheck<'_> {
    /// The link line `i` (0-based) must point back to.
    fn expected_prev(&self, i: usize) -> Hash {
        i.checked_sub(1).and_then(|before| self.links.get(before)).copied().unwrap_or(self.genesis)
    }

    fn prev_of(&self, i: usize) -> Option<Hash> {
        self.entry(i).and_then(|e| parse_hash(&e.prev))
    }

    fn link_ok(&self, i: usize) -> bool {
        self.prev_of(i) == Some(self.expected_prev(i))
    }

    fn head(&self) -> Option<&Head> {
        self.head.as_ref().and_then(|h| h.as_ref().ok())
    }

    /// Whether line `i` is vouched for by what follows it: the next line's prev, or the head.
    fn vouched(&self, i: usize) -> bool {
        let Some(link) = self.links.get(i) else { return false };
        if i + 1 < self.links.len() {
            return self.prev_of(i + 1) == Some(*link);
        }
        let seq = self.entry(i).map(|e| e.seq);
        self.head().zip(seq).is_some_and(|(h, seq)| h.vouches(self.key, seq, link))
    }

    /// Whether anything at all verifies under the key: one good link, or a head that matches
    /// some entry. If nothing does, the key is wrong (or everything was rewritten).
    fn anything_verifies(&self) -> bool {
        let head_matches = self.head().is_some_and(|h| {
            h.vouches(self.key, 0, &self.genesis)
                || self
                    .parsed
                    .iter()
                    .zip(&self.links)
                    .any(|(e, link)| e.as_ref().is_ok_and(|e| h.vouches(self.key, e.seq, link)))
        });
        head_matches || (0..self.links.len()).any(|i| self.link_ok(i))
    }

    fn entry(&self, i: usize) -> Option<&TrailEntry> {
        self.parsed.get(i).and_then(|e| e.as_ref().ok())
    }

    fn first_break(&self) -> Option<BrokenLink> {
        let n = self.links.len();
        if n > 0 && self.parsed.iter().any(Result::is_ok) && !self.anything_verifies() {
            return broken(
                1,
                None,
                BreakKind::WrongKey,
                "no link of the trail verifies under this key: it is not the key the trail was written with \
                 (derived from a different keyring?), or every entry and the head file were rewritten"
                    .into(),
            );
        }
        for (i, parsed) in self.parsed.iter().enumerate().take(n) {
            let line = i as u64 + 1;
            let entry = match parsed {
                Ok(entry) => entry,
                Err(e) => {
                    let reason = format!("line {line} is not a trail entry ({e}): it was altered or damaged");
                    return broken(line, None, BreakKind::Unreadable, reason);
                }
            };
            // Entries before `i` all checked out, so `i - 1` parsed.
            let expected = if i == 0 { 1 } else { self.entry(i - 1).map_or(0, |e| e.seq.saturating_add(1)) };
            if self.link_ok(i) {
                if entry.seq != expected {
                    let reason = format!(
                        "entry {} (line {line}) was altered: its seq should be {expected}, one more than the line \
                         before it",
                        entry.seq
                    );
                    return broken(line, Some(entry.seq), BreakKind::Altered, reason);
                }
                continue;
            }
            if !self.vouched(i) {
                let reason = format!(
                    "entry {} (line {line}) was altered, moved or inserted: its prev hash does not match the line \
                     before it, and the line after it does not vouch for it either",
                    entry.seq
                );
                return broken(line, Some(entry.seq), BreakKind::Altered, reason);
            }
            // Line `i` is genuine (its successor vouches for it); what it points back to is not here.
            if entry.seq > expected {
                let reason = if expected + 1 == entry.seq {
                    format!("entry {expected} is missing before line {line}: it was removed")
                } else {
                    format!("entries {expected} to {} are missing before line {line}: they were removed", entry.seq - 1)
                };
                return broken(line, Some(expected), BreakKind::Removed, reason);
            }
            if entry.seq == expected && i > 0 {
                let reason = format!(
                    "entry {} (line {i}) was altered or removed: its successor's prev hash does not match",
                    expected - 1
                );
                return broken(i as u64, Some(expected - 1), BreakKind::Altered, reason);
            }
            let reason = format!(
                "entry {} (line {line}) is out of place: its seq should be {expected}; it was copied or moved here",
                entry.seq
            );
            return broken(line, Some(entry.seq), BreakKind::Altered, reason);
        }
        self.check_head()
    }

    /// With every complete line chained, checks the end of the trail against the head file.
    fn check_head(&self) -> Option<BrokenLink> {
        let n = self.links.len();
        let (last_seq, last_link) = match self.links.last() {
            Some(link) => (self.entry(n - 1).map_or(0, |e| e.seq), *link),
            None => (0, self.genesis),
        };
        let last_line = n as u64;
        let next_line = last_line + 1;
        let head = match &self.head {
            None if n == 0 && !self.torn => return None,
            None => {
                let reason = "the head file is missing, so the last entry cannot be checked and entries removed \
                              from the end would go unnoticed; restore it from a backup if there is one"
                    .into();
                return broken(last_line.max(1), (n > 0).then_some(last_seq), BreakKind::HeadMissing, reason);
            }
            Some(Err(e)) => {
                let reason = format!("the head file cannot be read ({e}): it was damaged or replaced");
                return broken(last_line.max(1), None, BreakKind::HeadMismatch, reason);
            }
            Some(Ok(head)) => head,
        };
        if head.vouches(self.key, last_seq, &last_link) {
            if self.torn {
                let reason = format!(
                    "line {next_line} is incomplete and the head file vouches for the entry before it: an append \
                     was interrupted mid-write (opening the trail removes the fragment)"
                );
                return broken(next_line, None, BreakKind::InterruptedAppend, reason);
            }
            return None;
        }
        if n > 0 && last_seq >= 1 && head.vouches(self.key, last_seq - 1, &self.expected_prev(n - 1)) {
            let reason = format!(
                "head file is behind by one entry: the last append may have been interrupted. Entry {last_seq} \
                 (line {last_line}) is not yet covered by the head file, so a change to it would go unnoticed; if \
                 no holdfast command was interrupted, treat it as suspect"
            );
            return broken(last_line, Some(last_seq), BreakKind::InterruptedAppend, reason);
        }
        if head.seq > last_seq {
            let reason = if self.torn && head.seq == last_seq + 1 {
                format!(
                    "line {next_line} is incomplete, but the head file records it as complete entry {}: the trail \
                     was cut short",
                    head.seq
                )
            } else if n == 0 {
                format!(
                    "the trail has no complete entries, but the head file records entry {}: every entry was removed \
                     (or this is not the trail's key)",
                    head.seq
                )
            } else {
                format!(
                    "the trail ends at entry {last_seq} (line {last_line}), but the head file records entry {}: the \
                     entries after it were removed",
                    head.seq
                )
            };
            return broken(next_line, Some(last_seq + 1), BreakKind::Truncated, reason);
        }
        if head.seq == last_seq && n > 0 {
            let reason = format!(
                "entry {last_seq} (line {last_line}) was altered, or the head file was replaced: the entry does not \
                 match the head file's hash"
            );
            return broken(last_line, Some(last_seq), BreakKind::Altered, reason);
        }
        let reason = format!(
            "the head file records entry {}, but the trail ends at entry {last_seq} and the hashes do not match: \
             the head file was replaced (or this is not the trail's key)",
            head.seq
        );
        broken(last_line.max(1), None, BreakKind::HeadMismatch, reason)
    }
}

fn describe_head_mismatch(head_seq: u64, last_seq: u64) -> String {
    if head_seq > last_seq {
        format!("the head file records entry {head_seq} but the trail ends at entry {last_seq}: entries were removed")
    } else if head_seq == last_seq {
        format!(
            "the last entry ({last_seq}) does not match the head file: it was altered, or this is not the key the \
             trail was written with"
        )
    } else {
        format!(
            "the head file records entry {head_seq} but the trail ends at entry {last_seq}: the head file was \
             replaced, or this is not the key the trail was written with"
        )
    }
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

/// Splits a trail into its complete lines (without newlines) and an incomplete last line, if the
/// file does not end in a newline.
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
    match bytes.iter().rposition(|&b| b == b'\n').and_then(|end| bytes.split_at_checked(end)) {
        Some((complete, rest)) => {
            // `rest` starts with the newline at `end`; what follows it is the torn line.
            let torn = rest.get(1..).filter(|torn| !torn.is_empty());
            (complete.split(|&b| b == b'\n').collect(), torn)
        }
        None => (Vec::new(), (!bytes.is_empty()).then_some(bytes)),
    }
}

/// The end of a trail file: its last complete line (without the newline) and, if the file does
/// not end in a newline, the offset where the incomplete fragment after it starts.
struct Tail {
    last: Option<Vec<u8>>,
    torn_from: Option<u64>,
}

/// Reads backwards from the end until the last complete line is in hand, so opening a long trail
/// costs the same as opening a short one.
fn read_tail(mut file: &File, len: u64) -> io::Result<Tail> {
    let mut start = len;
    let mut buf = Vec::new();
    let mut newlines = 0;
    // Two newlines guarantee one whole line: the one that ends the last line, and the one before it.
    while start > 0 && newlines < 2 {
        let step = TAIL_CHUNK.min(start);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    // Unless `buf` starts at the beginning of the file, its first bytes end a line that began earlier.
    let skip = if start == 0 { 0 } else { buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1) };
    let region = buf.get(skip..).unwrap_or_default();
    let region_start = start + skip as u64;
    Ok(match region.iter().rposition(|&b| b == b'\n').and_then(|end| Some((end, region.split_at_checked(end)?.0))) {
        None => Tail { last: None, torn_from: (!region.is_empty()).then_some(region_start) },
        Some((end, complete)) => {
            let last = complete.rsplit(|&b| b == b'\n').next().unwrap_or_default();
            let torn_from = (end + 1 < region.len()).then_some(region_start + end as u64 + 1);
            Tail { last: Some(last.to_vec()), torn_from }
        }
    })
}

/// The head file, parsed.
struct Head {
    seq: u64,
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
    seq: u64,
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

/// A trail kept in a shared store (Redis) rather than in files: one element per line and the
/// head beside it. Several processes append at once, so an append is a compare-and-swap on
/// the number of lines: each entry is chained to the one it was computed from, or retried.
/// Every line of a shared trail, in order, and its head.
pub type TrailContents = (Vec<Vec<u8>>, Option<Vec<u8>>);

pub trait TrailCell: Send + Sync {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// How many lines there are, and the last one.
    fn tail(&self) -> Result<(u64, Option<Vec<u8>>), String>;
    /// Appends `line` and replaces the head with `head` if there are still `len` lines.
    fn append(&self, len: u64, line: &[u8], head: &[u8]) -> Result<bool, String>;
    /// Every line, in order, and the head.
    fn all(&self) -> Result<TrailContents, String>;
}

fn cell_error(cell: &dyn TrailCell, action: &'static str, reason: String) -> TrailError {
    TrailError::Io { action, path: PathBuf::from(cell.describe()), source: io::Error::other(reason) }
}

/// Appends one entry to a shared trail (as [`Trail::append`] does to the file), chained to the
/// last line there, atomically with respect to every other appender.
pub fn append_shared(
    cell: &dyn TrailCell,
    key: &SecretKey,
    actor: &str,
    command: &str,
    addresses: &[String],
    count: u64,
    outcome: &str,
) -> Result<TrailEntry, TrailError> {
    for _ in 0..32 {
        let (len, last) = cell.tail().map_err(|e| cell_error(cell, "read", e))?;
        let (last_seq, last_link) = match &last {
            Some(line) => {
                let entry = parse_line(line).map_err(|reason| TrailError::Inconsistent {
                    path: PathBuf::from(cell.describe()),
                    reason: format!("its last line is not an entry ({reason})"),
                })?;
                (entry.seq, link_hash(key, line))
            }
            None => (0, genesis_link(key)),
        };
        let entry = TrailEntry {
            seq: last_seq.saturating_add(1),
            at_ms: now_ms(),
            actor: actor.to_owned(),
            command: command.to_owned(),
            addresses: addresses.iter().take(MAX_LISTED_ADDRESSES).cloned().collect(),
            count,
            outcome: outcome.to_owned(),
            prev: last_link.to_hex().to_string(),
        };
        // Serializing strings and integers cannot fail (see `Trail::append`).
        #[allow(clippy::expect_used, reason = "this struct of strings and integers always serializes")]
        let line = serde_json::to_vec(&entry).expect("trail entry serializes");
        let head = head_text(key, entry.seq, &link_hash(key, &line));
        if cell.append(len, &line, head.as_bytes()).map_err(|e| cell_error(cell, "append to", e))? {
            return Ok(entry);
        }
    }
    Err(TrailError::ChangedOnDisk { path: PathBuf::from(cell.describe()) })
}

/// [`verify`] for a shared trail.
pub fn verify_shared(cell: &dyn TrailCell, key: &SecretKey) -> Result<Verification, TrailError> {
    let (lines, head) = cell.all().map_err(|e| cell_error(cell, "read", e))?;
    let check = ChainCheck {
        key,
        genesis: genesis_link(key),
        parsed: lines.iter().map(|line| parse_line(line)).collect(),
        links: lines.iter().map(|line| link_hash(key, line)).collect(),
        torn: false,
        head: head.map(|h| parse_head(&h)),
    };
    Ok(Verification { entries: lines.len() as u64, first_broken: check.first_break() })
}

/// [`read`] for a shared trail.
pub fn read_shared(cell: &dyn TrailCell) -> Result<Vec<TrailEntry>, TrailError> {
    let (lines, _) = cell.all().map_err(|e| cell_error(cell, "read", e))?;
    lines
        .iter()
        .zip(1u64..)
        .map(|(line, number)| {
            parse_line(line).map_err(|reason| TrailError::Unreadable {
                path: PathBuf::from(cell.describe()),
                line: number,
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
