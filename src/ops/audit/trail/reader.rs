//! Reading the trail back: every entry, and the verification that finds the first place the
//! chain, the sequence numbers or the head file do not agree.

use std::fs;
use std::path::{Path, PathBuf};

use blake3::Hash;

use super::{
    Head, TrailCell, TrailEntry, TrailError, cell_error, genesis_link, head_path, io_error, link_hash, parse_hash,
    parse_head, parse_line, read_head,
};
use crate::secret::SecretKey;

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
    /// Whether nothing is broken.
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
    /// What kind of break, so an interrupted append reads differently from tampering.
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
    /// The trail key the links and the head are checked under.
    key: &'a SecretKey,
    /// The link the first entry must point back to.
    genesis: Hash,
    /// Each complete line as an entry, or why it is not one.
    parsed: Vec<Result<TrailEntry, String>>,
    /// Chain hash of each complete line.
    links: Vec<Hash>,
    /// Whether an incomplete line follows the complete ones.
    torn: bool,
    /// The head file: `None` if missing, an error if unreadable.
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
