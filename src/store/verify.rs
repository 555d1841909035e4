//! Telling "entries missing" from "store empty": the integrity check at open, `cache verify`
//! (a full walk that reports every entry that does not open and every entry that is gone) and
//! `cache repair` (keeps what opens, drops the rest, and says how many were lost).

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::engine::RawAddress;
use super::error::{StoreError, StoreOpenError};
use super::integrity::{self, Tally};
use super::{Address, SCAN_PAGE, Store};
use crate::store::codec;
use crate::store::record::EntryMeta;

/// What `cache verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Entries walked (addresses with metadata or a value).
    pub checked: u64,
    /// Entries that opened.
    pub readable: u64,
    /// Entries the integrity record says the store should hold.
    pub expected: u64,
    /// Expected entries that are gone or no longer open (`expected - readable`, at least the
    /// number of bad entries).
    pub missing: u64,
    /// Each entry that is present but does not open: (address, why).
    pub bad: Vec<(String, String)>,
    /// Store-wide findings: a rolled-back database, a damaged integrity record, a scan that
    /// stopped on unreadable pages.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether anything is wrong (the command then exits 3).
    pub fn failed(&self) -> bool {
        !self.bad.is_empty() || self.missing > 0 || !self.problems.is_empty()
    }
}

/// What `cache repair` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Entries that open and were kept.
    pub kept: u64,
    /// Damaged entries removed (present but not opening).
    pub removed: u64,
    /// Entries the integrity record expected that are now gone for good (removed included).
    pub lost: u64,
    /// What verify had found before the repair.
    pub problems: Vec<String>,
}

impl Store {
    /// Compares the database's integrity record with the file copy and, after an unclean
    /// close, with what the open-time scan counted. Findings go to `self.damage`.
    pub(super) fn check_at_open(&mut self) -> Result<(), StoreOpenError> {
        let key = *self.tally_key.expose();
        let io = |source| StoreOpenError::Io { path: self.path.clone(), source };
        let file = integrity::read_file(&self.path, &key).map_err(io)?;
        let db = self
            .backend
            .get_tally()
            .map_err(|e| StoreOpenError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        let mut problems = Vec::new();
        let db = match (db, &file) {
            (Some(bytes), _) => match Tally::open(&key, &bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(format!("the database's {e}"));
                    None
                }
            },
            // A store written before the integrity record existed: count it now.
            (None, None) => {
                let counted = self
                    .count_entries()
                    .map_err(|e| StoreOpenError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
                self.backend
                    .put_tally(&counted.seal(&key))
                    .and_then(|()| self.backend.flush())
                    .map_err(|e| StoreOpenError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
                integrity::write_file(&self.path, &key, &counted).map_err(io)?;
                tracing::info!(entries = counted.count, "integrity record created for an existing store");
                Some(counted)
            }
            (None, Some(_)) => {
                problems
                    .push("the database's integrity record is gone (the database was rolled back or replaced)".into());
                None
            }
        };
        let file = match file {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                problems.push(format!("the {} file's {e}", integrity::FILE));
                None
            }
            None => {
                problems.push(format!("the {} file is missing", integrity::FILE));
                None
            }
        };
        let mut expected = 0;
        if let (Some(db), Some(file)) = (db, file) {
            expected = db.count.max(file.count);
            if db.generation < file.generation {
                problems.push(format!(
                    "the database was rolled back: it holds {} of {} writes that were made durable \
                     ({} entries now, {} before)",
                    db.generation, file.generation, db.count, file.count
                ));
            } else if db.generation == file.generation && !db.same_entries(&file) {
                problems.push("the database's entries disagree with the integrity file".into());
            }
        }
        let mut found = None;
        if let (Some(db), Some(scanned)) = (db, self.scanned) {
            expected = expected.max(db.count);
            found = Some(scanned.count);
            if !db.same_entries(&scanned) {
                problems
                    .push(format!("the database should hold {} entries but {} are readable", db.count, scanned.count));
            }
        }
        *self.lock_tally() = db.or(self.scanned).unwrap_or_default();
        if !problems.is_empty() {
            let readable = found.unwrap_or_else(|| self.entries.load(Ordering::Relaxed));
            let lost = expected.saturating_sub(readable);
            self.lost.store(lost, Ordering::Relaxed);
            tracing::error!(lost, expected, problems = %problems.join("; "), path = %self.path.display(),
                "the store has lost entries");
        }
        self.damage = problems;
        Ok(())
    }

    /// A fresh count and digest of every entry whose metadata decodes.
    fn count_entries(&self) -> Result<Tally, StoreError> {
        let key = *self.tally_key.expose();
        let mut counted = Tally::default();
        self.for_each_meta(|address, _| counted.apply(&key, &address.0, true))?;
        Ok(counted)
    }

    /// Opens every entry, walks values without metadata, and compares what opens with the
    /// integrity record. Never stops at the first problem; a database that cannot be read
    /// further is itself reported.
    pub fn verify(&self, progress: &dyn Fn(u64, u64)) -> VerifyReport {
        let key = *self.tally_key.expose();
        let mut report = VerifyReport { problems: self.damage.clone(), ..VerifyReport::default() };
        let mut readable = Tally::default();
        let mut with_meta = std::collections::BTreeSet::new();
        let total = self.entries.load(Ordering::Relaxed);
        let mut after: Option<RawAddress> = None;
        'pages: loop {
            let page = match self.backend.scan_meta(after.as_ref(), SCAN_PAGE) {
                Ok(p) => p,
                Err(e) => {
                    report
                        .problems
                        .push(format!("the metadata could not be read past {} entries: {e}", report.checked));
                    break 'pages;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (raw, bytes) in page {
                let address = Address(raw);
                with_meta.insert(raw);
                report.checked += 1;
                let outcome = match codec::decode::<EntryMeta>(&bytes) {
                    Err(e) => Err(format!("metadata does not decode: {e}")),
                    Ok(_) => match self.get(&address) {
                        Ok(Some(_)) => Ok(()),
                        // Expired between listing and reading: not damage.
                        Ok(None) if self.backend.get_value(&raw).ok().flatten().is_some() => Ok(()),
                        Ok(None) => Err("metadata without a value".into()),
                        Err(StoreError::Tampered { reason, .. }) => Err(reason),
                        Err(e) => Err(e.to_string()),
                    },
                };
                match outcome {
                    Ok(()) => {
                        report.readable += 1;
                        readable.apply(&key, &raw, true);
                    }
                    Err(reason) => report.bad.push((address.to_hex(), reason)),
                }
                if report.checked.is_multiple_of(256) {
                    progress(report.checked, total);
                }
            }
        }
        let mut after: Option<RawAddress> = None;
        loop {
            let page = match self.backend.scan_values(after.as_ref(), SCAN_PAGE) {
                Ok(p) => p,
                Err(e) => {
                    report.problems.push(format!("the values could not be read to the end: {e}"));
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(*last);
            for raw in page.into_iter().filter(|a| !with_meta.contains(a)) {
                report.checked += 1;
                report.bad.push((Address(raw).to_hex(), "value without metadata".into()));
            }
        }
        progress(report.checked, report.checked);
        let recorded = *self.lock_tally();
        report.expected = match self.shared {
            // No tally in a shared store: Redis's own expiry and eviction remove entries.
            Some(_) => report.readable,
            None => recorded.count.max(self.lost.load(Ordering::Relaxed) + report.readable),
        };
        if self.shared.is_none() && self.damage.is_empty() && !recorded.same_entries(&readable) {
            report.problems.push(format!(
                "the integrity record lists {} entries but {} open{}",
                recorded.count,
                report.readable,
                if recorded.count == report.readable { " (a different set)" } else { "" }
            ));
        }
        report.missing = report.expected.saturating_sub(report.readable);
        if !report.problems.is_empty() && report.missing == 0 && report.bad.is_empty() {
            // Something is wrong but no count shows it: say so rather than report 0 missing.
            report.problems.push("how many entries are missing cannot be told".into());
        }
        self.lost.store(report.missing, Ordering::Relaxed);
        report
    }

    /// Keeps every entry that opens, removes the rest, and resets the integrity record to what
    /// is left, so the store serves again. Says how many entries were lost.
    pub fn repair(&self, progress: &dyn Fn(u64, u64)) -> Result<RepairReport, StoreError> {
        let found = self.verify(progress);
        let mut removed = 0;
        for (hex, reason) in &found.bad {
            let Ok(address) = hex.parse::<Address>() else { continue };
            if self.delete(&address)? {
                removed += 1;
                tracing::warn!(%address, %reason, "repair removed an entry that does not open");
            }
        }
        let kept = self.count_entries()?;
        if self.shared.is_some() {
            self.entries.store(kept.count, Ordering::Relaxed);
            return Ok(RepairReport { kept: kept.count, removed, lost: removed, problems: found.problems });
        }
        let key = *self.tally_key.expose();
        let mut tally = self.lock_tally();
        let next = Tally { generation: tally.generation.max(found.expected) + 1, ..kept };
        self.backend.put_tally(&next.seal(&key))?;
        self.backend.flush()?;
        integrity::write_file(&self.path, &key, &next).map_err(|e| StoreError::Backend(e.into()))?;
        *tally = next;
        drop(tally);
        self.entries.store(kept.count, Ordering::Relaxed);
        let lost = found.expected.saturating_sub(kept.count);
        self.lost.store(0, Ordering::Relaxed);
        tracing::warn!(kept = kept.count, removed, lost, "store repaired");
        Ok(RepairReport { kept: kept.count, removed, lost, problems: found.problems })
    }
}

impl From<std::io::Error> for super::BackendError {
    fn from(e: std::io::Error) -> Self {
        super::BackendError::Io(e.to_string())
    }
}
