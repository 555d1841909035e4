//! Writing the trail: opening it (and repairing an interrupted append), appending entries to
//! the file, and appending to a trail kept in a shared store.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use blake3::Hash;

use super::{
    MAX_LISTED_ADDRESSES, TAIL_CHUNK, TrailCell, TrailEntry, TrailError, cell_error, genesis_link, head_path,
    head_text, io_error, link_hash, now_ms, parse_hash, parse_line, read_head, write_head,
};
use crate::secret::SecretKey;

/// One admin action before it is chained: what an append is given. The append adds its place
/// in the chain (seq, time, prev) to make the [`TrailEntry`].
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    /// Who acted, e.g. `cli:alice@host1` or `admin-token:3f2a9c1e from 10.0.0.7`.
    pub actor: &'a str,
    /// The command as the operator gave it, e.g. `cache purge --older-than 30d`.
    pub command: &'a str,
    /// Hex addresses involved; only the first [`MAX_LISTED_ADDRESSES`] are kept.
    pub addresses: &'a [String],
    /// How many entries were read or changed (all of them, listed or not).
    pub count: u64,
    /// `started`, `ok` or a short error.
    pub outcome: &'a str,
}

impl Action<'_> {
    /// The entry this action makes as number `seq`, chained to the line whose link is `prev`.
    fn entry(&self, seq: u64, prev: &Hash) -> TrailEntry {
        TrailEntry {
            seq,
            at_ms: now_ms(),
            actor: self.actor.to_owned(),
            command: self.command.to_owned(),
            addresses: self.addresses.iter().take(MAX_LISTED_ADDRESSES).cloned().collect(),
            count: self.count,
            outcome: self.outcome.to_owned(),
            prev: prev.to_hex().to_string(),
        }
    }
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
    /// The trail file, opened for appending.
    file: File,
    /// The seq the next entry gets.
    next_seq: u64,
    /// Chain hash of the last line: the next entry's `prev`.
    last_link: Hash,
    /// File length after our last append; anything else means someone else wrote to it.
    len: u64,
    /// Set when a failed append left bytes that could not be removed.
    damaged: bool,
}

/// An open trail, ready to append. Share it between threads (`&Trail` or `Arc<Trail>`).
pub struct Trail {
    /// The trail file, for appends and messages.
    path: PathBuf,
    /// Its head file, rewritten after every append.
    head: PathBuf,
    /// The trail key every link and the head's MAC are keyed with.
    key: SecretKey,
    /// The chain's end; the mutex serializes appends within the process.
    state: Mutex<ChainState>,
    /// What `open` repaired, kept so the caller can tell the operator.
    recovery: Option<Recovery>,
}

impl fmt::Debug for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trail({}, *****)", self.path.display())
    }
}

impl Trail {
    /// Opens (creating if missing) the JSON-Lines file at `path`. Reads the last line to continue
    /// the chain; does not verify the whole file (that is [`verify`](super::verify)).
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

    /// The trail file.
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
        self.record(&Action { actor, command, addresses, count, outcome })
    }

    /// [`Trail::append`], given the action as one value.
    pub fn record(&self, action: &Action<'_>) -> Result<TrailEntry, TrailError> {
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

        let entry = action.entry(state.next_seq, &state.last_link);
        let mut line = entry.line();
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

/// The end of a trail file: its last complete line (without the newline) and, if the file does
/// not end in a newline, the offset where the incomplete fragment after it starts.
pub(super) struct Tail {
    /// The last complete line, which the next append chains to (`None`: no complete line yet).
    pub(super) last: Option<Vec<u8>>,
    /// Where an incomplete fragment after it starts: an interrupted append `open` removes.
    pub(super) torn_from: Option<u64>,
}

/// Reads backwards from the end until the last complete line is in hand, so opening a long trail
/// costs the same as opening a short one.
pub(super) fn read_tail(mut file: &File, len: u64) -> io::Result<Tail> {
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

/// Appends one entry to a shared trail (as [`Trail::append`] does to the file), chained to the
/// last line there, atomically with respect to every other appender.
pub fn append_shared(cell: &dyn TrailCell, key: &SecretKey, action: &Action<'_>) -> Result<TrailEntry, TrailError> {
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
        let entry = action.entry(last_seq.saturating_add(1), &last_link);
        let line = entry.line();
        let head = head_text(key, entry.seq, &link_hash(key, &line));
        if cell.append(len, &line, head.as_bytes()).map_err(|e| cell_error(cell, "append to", e))? {
            return Ok(entry);
        }
    }
    Err(TrailError::ChangedOnDisk { path: PathBuf::from(cell.describe()) })
}
