//! Operator commands — keys, audit, cache maintenance — as one library entry point shared by
//! the CLI (opening the store directly) and the server's admin API (while it serves).
//!
//! Each command is an [`AdminRequest`]; [`Admin::execute`] runs it against the store, reports
//! progress for long jobs, and appends an entry to the access trail for every command that
//! decrypts or changes stored data. Results are JSON so both paths render them the same way.
//!
//! - `api`: the server's `/admin/v1/execute` endpoint (bearer token, NDJSON progress).
//! - `client`: the CLI's side of that endpoint (`--server`).
//! - `refresh`: `cache refresh`, re-asking the providers for the most asked questions.
//! - `render`: human-readable tables for results.
//! - `ui`: the dashboard at `/ui` on the admin listener, over the same commands.

pub mod api;
pub mod client;
pub mod refresh;
pub mod render;
pub mod ui;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cache_key::address::{Address, Namespace};
use crate::ops::audit::{self, AuditFilter, trail};
use crate::ops::bundle::{BundleReader, BundleWriter};
use crate::secret::{SecretKey, StoreSecret};
use crate::store::codec;
use crate::store::keyring::KdfParams;
use crate::store::record::{EntryMeta, Record};
use crate::store::{Store, StoreError, now_ms};
pub use refresh::{RefreshPlan, Refresher};

/// Who ran a command, as the access trail records it.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl Actor {
    /// The local user and host (`cli:alice@db-3`).
    pub fn local() -> Self {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown-host".into());
        Self(format!("cli:{user}@{host}"))
    }

    /// An admin API caller, identified by a hash prefix of its token (never the token).
    pub fn token(token: &str, peer: &str) -> Self {
        let id = blake3::hash(token.as_bytes()).to_hex();
        Self(format!("admin-token:{} from {peer}", &id[..8]))
    }
}

/// A passphrase or key passed to a command; never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub Zeroizing<String>);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// A new store secret: exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSecret {
    pub passphrase: Option<SecretText>,
    pub raw_key: Option<SecretText>,
}

/// Which entries `cache purge` deletes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeSelector {
    pub older_than_ms: Option<u64>,
    pub model: Option<String>,
    pub address: Option<String>,
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum AdminRequest {
    KeysList,
    KeysRotate {
        reencrypt: bool,
    },
    KeysRetire {
        id: u32,
    },
    KeysPassphrase {
        secret: NewSecret,
    },
    AuditList {
        filter: AuditFilter,
    },
    AuditShow {
        address: String,
    },
    AuditSearch {
        text: String,
        /// Narrows the search (the dashboard's filters); absent from older clients: everything.
        #[serde(default)]
        filter: AuditFilter,
    },
    /// Writes JSON Lines to the output file.
    AuditExport,
    AuditTrail {
        verify: bool,
    },
    CacheStats,
    CachePurge {
        selector: PurgeSelector,
    },
    CacheVerify,
    /// Removes entries that do not open and resets the integrity record to what is left.
    CacheRepair,
    /// Writes an encrypted bundle to the output file.
    CacheExport {
        passphrase: SecretText,
    },
    /// Reads an encrypted bundle from the input file.
    CacheImport {
        passphrase: SecretText,
    },
    /// Re-asks the providers for the most asked stored questions (or lists them, dry run).
    CacheRefresh {
        plan: RefreshPlan,
    },
}

impl AdminRequest {
    /// The command line an operator would type, for the trail (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Self::KeysList => "keys list".into(),
            Self::KeysRotate { reencrypt } => format!("keys rotate{}", if *reencrypt { " --reencrypt" } else { "" }),
            Self::KeysRetire { id } => format!("keys retire {id}"),
            Self::KeysPassphrase { secret } => {
                format!("keys passphrase ({})", if secret.raw_key.is_some() { "to raw key" } else { "to passphrase" })
            }
            Self::AuditList { .. } => "audit list".into(),
            Self::AuditShow { address } => format!("audit show {address}"),
            Self::AuditSearch { .. } => "audit search (text not recorded)".into(),
            Self::AuditExport => "audit export".into(),
            Self::AuditTrail { verify } => format!("audit trail{}", if *verify { " --verify" } else { "" }),
            Self::CacheStats => "cache stats".into(),
            Self::CachePurge { selector } => format!("cache purge {}", describe_selector(selector)),
            Self::CacheVerify => "cache verify".into(),
            Self::CacheRepair => "cache repair".into(),
            Self::CacheExport { .. } => "cache export".into(),
            Self::CacheImport { .. } => "cache import".into(),
            Self::CacheRefresh { plan } => plan.describe(),
        }
    }

    /// Commands that only read bookkeeping or the trail itself are not trail events.
    fn is_trailed(&self) -> bool {
        !matches!(self, Self::KeysList | Self::AuditTrail { .. })
    }

    /// Commands that change stored data or keys: their trail entry is written before the first
    /// change too, so a command killed half-way still shows in the trail.
    fn changes_store(&self) -> bool {
        matches!(
            self,
            Self::KeysRotate { .. }
                | Self::KeysRetire { .. }
                | Self::KeysPassphrase { .. }
                | Self::CachePurge { .. }
                | Self::CacheImport { .. }
                | Self::CacheRepair
        ) || matches!(self, Self::CacheRefresh { plan } if !plan.dry_run)
    }

    pub fn writes_output(&self) -> bool {
        matches!(self, Self::AuditExport | Self::CacheExport { .. })
    }

    pub fn reads_input(&self) -> bool {
        matches!(self, Self::CacheImport { .. })
    }
}

fn describe_selector(s: &PurgeSelector) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = s.older_than_ms {
        parts.push(format!("--older-than {}s", ms / 1000));
    }
    if let Some(m) = &s.model {
        parts.push(format!("--model {m}"));
    }
    if let Some(a) = &s.address {
        parts.push(format!("--address {a}"));
    }
    if s.all {
        parts.push("--all".into());
    }
    parts.join(" ")
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("access trail: {0}")]
    Trail(#[from] trail::TrailError),
    #[error("bundle: {0}")]
    Bundle(#[from] crate::ops::bundle::BundleError),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} needs {which} (give --out FILE / the bundle file)")]
    MissingFile { what: &'static str, which: &'static str },
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Reports progress of long jobs: (done, total).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// The result of a command, plus whether a verification it ran failed (exit code 3).
pub struct Outcome {
    pub result: Value,
    pub verification_failed: bool,
}

impl From<Value> for Outcome {
    fn from(result: Value) -> Self {
        Self { result, verification_failed: false }
    }
}

/// The store and its access trail.
pub struct Admin {
    pub store: Arc<Store>,
    /// Opened on the first command that appends to it: `Trail::open` refuses a damaged trail,
    /// and that must not lock operators out of `audit trail --verify`, which shows the damage.
    trail: std::sync::Mutex<Option<trail::Trail>>,
    trail_path: PathBuf,
    /// For a store shared through Redis, the trail kept there (then `trail` stays unused).
    shared_trail: Option<Arc<dyn trail::TrailCell>>,
    /// The providers `cache refresh` asks; without them it can only list its plan.
    refresher: Option<Refresher>,
}

/// Setting marking an unfinished `keys rotate --reencrypt`: the key being re-encrypted to.
const REENCRYPT_SETTING: &str = "reencrypt_to";
/// Setting holding the sequence number of the last trail entry written.
const TRAIL_SEQ_SETTING: &str = "trail_seq";

impl Admin {
    pub fn open(store: Arc<Store>) -> Result<Self, AdminError> {
        let trail_path = store.path().join("trail.jsonl");
        let shared_trail = store.shared_trail();
        Ok(Self { store, trail: std::sync::Mutex::new(None), trail_path, shared_trail, refresher: None })
    }

    /// Lets `cache refresh` ask providers, through `refresher`.
    pub fn with_refresher(mut self, refresher: Refresher) -> Self {
        self.refresher = Some(refresher);
        self
    }

    /// Appends to the trail, opening it first if needed; logs a repair it had to make.
    fn append_trail(
        &self,
        actor: &Actor,
        command: &str,
        touched: &[String],
        count: u64,
        outcome: &str,
    ) -> Result<(), AdminError> {
        if let Some(cell) = &self.shared_trail {
            let key = self.store.keyring().snapshot().trail_key();
            let entry = trail::append_shared(cell.as_ref(), &key, &actor.0, command, touched, count, outcome)?;
            self.store.set_setting(TRAIL_SEQ_SETTING, &entry.seq.to_be_bytes())?;
            return Ok(());
        }
        self.open_trail()?;
        let guard = self.trail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(trail) = guard.as_ref() {
            let entry = trail.append(&actor.0, command, touched, count, outcome)?;
            // The store remembers how long the trail is, so deleting the trail files (which
            // the chain alone cannot reveal) shows up in `audit trail --verify`.
            self.store.set_setting(TRAIL_SEQ_SETTING, &entry.seq.to_be_bytes())?;
        }
        Ok(())
    }

    fn open_trail(&self) -> Result<(), AdminError> {
        if self.shared_trail.is_some() {
            return Ok(());
        }
        let mut guard = self.trail.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let opened = trail::Trail::open(&self.trail_path, self.store.keyring().snapshot().trail_key())?;
            if let Some(recovery) = opened.recovery() {
                tracing::warn!(%recovery, "access trail repaired on open");
            }
            *guard = Some(opened);
        }
        Ok(())
    }

    /// Entries the store says the trail should have (0 before the first).
    fn expected_trail_len(&self) -> Result<u64, AdminError> {
        Ok(self
            .store
            .setting(TRAIL_SEQ_SETTING)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Runs one command. `output`/`input` are the files export writes and import reads.
    pub fn execute(
        &self,
        request: &AdminRequest,
        actor: &Actor,
        progress: Progress<'_>,
        output: Option<&Path>,
        input: Option<&Path>,
    ) -> Result<Outcome, AdminError> {
        let mut touched: Vec<String> = Vec::new();
        // Served counts are noted in memory by a running server; show them current.
        self.store.flush_served()?;
        if request.is_trailed() {
            // Open (and so check) the trail before acting: a command that cannot be recorded
            // must not run.
            self.open_trail()?;
        }
        if request.changes_store() {
            // Written (and synced) before the first change: a SIGKILL mid-way leaves "started"
            // with no closing entry, which is what the trail must then show.
            self.append_trail(actor, &request.describe(), &[], 0, "started")?;
        }
        let result = self.run(request, progress, output, input, &mut touched);
        if request.is_trailed() {
            let (count, outcome) = match &result {
                Ok(o) => {
                    (o.result.get("count").and_then(Value::as_u64).unwrap_or(touched.len() as u64), "ok".to_owned())
                }
                Err(e) => (0, format!("error: {}", e.to_string().chars().take(200).collect::<String>())),
            };
            touched.truncate(trail::MAX_LISTED_ADDRESSES);
            self.append_trail(actor, &request.describe(), &touched, count, &outcome)?;
        }
        result
    }

    fn run(
        &self,
        request: &AdminRequest,
        progress: Progress<'_>,
        output: Option<&Path>,
        input: Option<&Path>,
        touched: &mut Vec<String>,
    ) -> Result<Outcome, AdminError> {
        let store = &self.store;
        Ok(match request {
            AdminRequest::KeysList => self.keys_list()?.into(),
            AdminRequest::KeysRotate { reencrypt } => self.keys_rotate(*reencrypt, progress)?.into(),
            AdminRequest::KeysRetire { id } => {
                store.retire_key(*id)?;
                json!({"retired": id, "count": 0}).into()
            }
            AdminRequest::KeysPassphrase { secret } => {
                let secret = match (&secret.passphrase, &secret.raw_key) {
                    (Some(p), None) => StoreSecret::passphrase(p.0.as_str()),
                    (None, Some(k)) => StoreSecret::raw_key_base64(&k.0),
                    _ => return Err(AdminError::Invalid("give exactly one of a passphrase or a raw key".into())),
                }
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
                let kind = if matches!(secret, StoreSecret::RawKey(_)) { "raw key" } else { "passphrase" };
                store.keyring().change_secret(&secret, KdfParams::default()).map_err(StoreError::from)?;
                json!({"rewrapped": true, "now_unlocked_by": kind, "count": 0}).into()
            }
            AdminRequest::AuditList { filter } => {
                let rows = audit::list(store, filter)?;
                touched.extend(rows.iter().map(|r| r.address.clone()));
                json!({"entries": rows, "count": rows.len()}).into()
            }
            AdminRequest::AuditShow { address } => {
                let parsed: Address = address
                    .parse()
                    .map_err(|e: crate::cache_key::address::ParseAddressError| AdminError::Invalid(e.to_string()))?;
                touched.push(parsed.to_hex());
                let entry = store.get(&parsed)?.ok_or_else(|| {
                    AdminError::Invalid(format!("no entry at {address}; `holdfast audit list` shows addresses"))
                })?;
                let mut detail = audit::detail(&parsed, &entry);
                if let Some(fields) = detail.as_object_mut() {
                    fields.insert("count".into(), json!(1));
                }
                detail.into()
            }
            AdminRequest::AuditSearch { text, filter } => {
                let rows = audit::search(store, text, filter)?;
                touched.extend(rows.iter().map(|r| r.address.clone()));
                json!({"entries": rows, "count": rows.len()}).into()
            }
            AdminRequest::AuditExport => {
                let path = output.ok_or(AdminError::MissingFile { what: "audit export", which: "an output file" })?;
                remove_on_error(path, self.audit_export(path, progress))?.into()
            }
            AdminRequest::AuditTrail { verify } => {
                let expected = self.expected_trail_len()?;
                let trail_key = store.keyring().snapshot().trail_key();
                let exists = match &self.shared_trail {
                    Some(cell) => {
                        cell.tail()
                            .map_err(|e| trail::TrailError::Io {
                                action: "read",
                                path: PathBuf::from(cell.describe()),
                                source: std::io::Error::other(e),
                            })?
                            .0
                            > 0
                    }
                    None => self.trail_path.exists(),
                };
                // Verify first: a damaged line must not stop the check that names it.
                let verification = match (*verify, exists, &self.shared_trail) {
                    (true, true, Some(cell)) => Some(trail::verify_shared(cell.as_ref(), &trail_key)?),
                    (true, true, None) => Some(trail::verify(&self.trail_path, &trail_key)?),
                    _ => None,
                };
                let mut broken = verification.as_ref().and_then(|v| v.first_broken.as_ref()).map(
                    |b| json!({"line": b.line, "seq": b.seq, "kind": format!("{:?}", b.kind), "reason": b.reason}),
                );
                if *verify && broken.is_none() {
                    let found = verification.as_ref().map_or(0, |v| v.entries);
                    if found < expected {
                        broken = Some(json!({"line": found + 1, "seq": null, "kind": "Removed",
                            "reason": format!("the store recorded {expected} trail entries but the trail holds {found}: \
                                               entries or the whole trail were deleted")}));
                    }
                }
                if !exists && broken.is_none() {
                    return Ok(Outcome {
                        verification_failed: false,
                        result: json!({"entries": [], "verified": *verify, "first_broken": null, "count": 0}),
                    });
                }
                let read = match &self.shared_trail {
                    Some(cell) => trail::read_shared(cell.as_ref()),
                    None => trail::read(&self.trail_path),
                };
                let (entries, unreadable) = match read {
                    Ok(entries) => (entries, None),
                    Err(e) if broken.is_some() => (Vec::new(), Some(e.to_string())),
                    Err(e) => return Err(e.into()),
                };
                Outcome {
                    verification_failed: broken.is_some(),
                    result: json!({
                        "entries": entries,
                        "verified": verification.is_some(),
                        "first_broken": broken,
                        "unreadable": unreadable,
                        "count": entries.len(),
                    }),
                }
            }
            AdminRequest::CacheStats => self.cache_stats()?.into(),
            AdminRequest::CachePurge { selector } => self.cache_purge(selector, touched)?.into(),
            AdminRequest::CacheVerify => {
                let report = store.verify(progress);
                let failed = report.failed();
                let bad: Vec<Value> =
                    report.bad.iter().map(|(address, reason)| json!({"address": address, "reason": reason})).collect();
                let result = json!({
                    "checked": report.checked,
                    "readable": report.readable,
                    "expected": report.expected,
                    "missing": report.missing,
                    "bad": bad,
                    "problems": report.problems,
                    "count": report.checked,
                });
                Outcome { result, verification_failed: failed }
            }
            AdminRequest::CacheRepair => {
                let report = store.repair(progress)?;
                json!({
                    "kept": report.kept,
                    "removed": report.removed,
                    "lost": report.lost,
                    "problems": report.problems,
                    "count": report.removed,
                })
                .into()
            }
            AdminRequest::CacheExport { passphrase } => {
                let path = output.ok_or(AdminError::MissingFile { what: "cache export", which: "an output file" })?;
                let existed = path.exists();
                let result = self.cache_export(path, passphrase, progress);
                // The writer refuses an existing file; only a file it created is ours to remove.
                if existed { result? } else { remove_on_error(path, result)? }.into()
            }
            AdminRequest::CacheImport { passphrase } => {
                let path = input.ok_or(AdminError::MissingFile { what: "cache import", which: "a bundle file" })?;
                self.cache_import(path, passphrase, progress)?.into()
            }
            AdminRequest::CacheRefresh { plan } => {
                refresh::refresh(store, self.refresher.as_ref(), plan, progress, touched)?.into()
            }
        })
    }

    fn keys_list(&self) -> Result<Value, AdminError> {
        let counts = self.store.count_by_key()?;
        let keys: Vec<Value> = self
            .store
            .keyring()
            .snapshot()
            .infos()
            .into_iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "created_ms": k.created_ms,
                    "status": if k.active { "active" } else { "retired" },
                    "records": counts.get(&k.id).copied().unwrap_or(0),
                })
            })
            .collect();
        Ok(json!({"keys": keys}))
    }

    /// Rotates (unless an interrupted re-encryption is being resumed) and, with `reencrypt`,
    /// re-seals every entry not under the active key. Resumable: the work left is exactly the
    /// entries under other keys, and a marker remembers the target key across a kill.
    fn keys_rotate(&self, reencrypt: bool, progress: Progress<'_>) -> Result<Value, AdminError> {
        /// Sweeps over the entries still under another key; see below.
        const REENCRYPT_PASSES: usize = 4;
        let keyring = self.store.keyring();
        let pending = self
            .store
            .setting(REENCRYPT_SETTING)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes);
        let active = keyring.snapshot().active_id();
        let (key, resumed) = match pending {
            Some(target) if reencrypt && target == active => (target, true),
            _ => (keyring.rotate().map_err(StoreError::from)?, false),
        };
        if !reencrypt {
            return Ok(json!({"active": key, "resumed": false, "resealed": 0, "count": 0}));
        }
        self.store.set_setting(REENCRYPT_SETTING, &key.to_be_bytes())?;
        // A write sealed under the old key just before the rotation may land after the pass
        // went by its address; later passes catch those (only writes already sealing when the
        // key changed can add any, so they end quickly).
        let mut resealed = 0u64;
        for pass in 0..REENCRYPT_PASSES {
            if pass > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let mut todo = Vec::new();
            self.store.for_each_meta(|a, m| {
                if m.key_id != key {
                    todo.push(a);
                }
            })?;
            if todo.is_empty() {
                break;
            }
            let total = todo.len() as u64;
            for (i, address) in todo.iter().enumerate() {
                match self.store.reseal(address) {
                    Ok(true) => resealed += 1,
                    Ok(false) => {}
                    // A tampered entry cannot be re-sealed; `cache verify` names it.
                    Err(StoreError::Tampered { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                if i % 64 == 0 || i as u64 + 1 == total {
                    progress(i as u64 + 1, total);
                }
            }
        }
        self.store.flush()?;
        self.store.clear_setting(REENCRYPT_SETTING)?;
        Ok(json!({"active": key, "resumed": resumed, "resealed": resealed, "count": resealed}))
    }

    fn audit_export(&self, path: &Path, progress: Progress<'_>) -> Result<Value, AdminError> {
        use std::io::Write as _;
        let io = |source| AdminError::Io { path: path.to_owned(), source };
        let file = create_new(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let mut write_error = None;
        let count = audit::for_each_entry(&self.store, |address, entry, done, total| {
            let line = audit::detail(address, entry).to_string();
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
            if done % 256 == 0 || done == total {
                progress(done, total);
            }
            Ok(())
        })?;
        if let Some(e) = write_error {
            return Err(io(e));
        }
        out.flush().map_err(io)?;
        out.get_ref().sync_all().map_err(io)?;
        Ok(json!({"exported": count, "path": path, "count": count}))
    }

    fn cache_stats(&self) -> Result<Value, AdminError> {
        /// `cache stats` groups entries by how often they were served: (name, at most).
        const SERVE_BUCKETS: [(&str, u64); 4] = [("0", 0), ("1", 1), ("2-9", 9), ("10+", u64::MAX)];
        let stats = self.store.stats();
        let mut by_provider: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_model: BTreeMap<String, u64> = BTreeMap::new();
        let (mut served, mut oldest, mut newest) = (0u64, u64::MAX, 0u64);
        // How often entries were asked for: what the size budget keeps longest.
        let mut by_serves: BTreeMap<&'static str, u64> = SERVE_BUCKETS.iter().map(|(name, _)| (*name, 0)).collect();
        let count = audit::for_each_entry(&self.store, |_, entry, _, _| {
            *by_provider.entry(entry.record.provider.clone()).or_default() += 1;
            *by_model.entry(entry.record.model.clone()).or_default() += 1;
            served += entry.meta.times_served;
            let bucket = SERVE_BUCKETS.iter().find(|(_, up_to)| entry.meta.times_served <= *up_to);
            if let Some((name, _)) = bucket {
                *by_serves.entry(name).or_default() += 1;
            }
            oldest = oldest.min(entry.meta.created_ms);
            newest = newest.max(entry.meta.created_ms);
            Ok(())
        })?;
        Ok(json!({
            "entries": stats.entries,
            "readable": count,
            "bytes": stats.bytes,
            "disk_bytes": stats.disk_bytes,
            "times_served": served,
            "oldest_ms": (count > 0).then_some(oldest),
            "newest_ms": (count > 0).then_some(newest),
            "by_provider": by_provider,
            "by_model": by_model,
            "by_times_served": by_serves,
            "eviction": format!(
                "over max_size, entries served least often and longest ago go first \
                 (worth = 1 + times served, halved every {} days without a serve)",
                crate::store::record::KEEP_HALF_LIFE_MS / 86_400_000
            ),
            "count": count,
        }))
    }

    fn cache_purge(&self, selector: &PurgeSelector, touched: &mut Vec<String>) -> Result<Value, AdminError> {
        if selector.older_than_ms.is_none() && selector.model.is_none() && selector.address.is_none() && !selector.all {
            return Err(AdminError::Invalid("say what to purge: --older-than, --model, --address or --all".into()));
        }
        let now = now_ms();
        let mut doomed: Vec<Address> = Vec::new();
        if let Some(a) = &selector.address {
            doomed.push(
                a.parse()
                    .map_err(|e: crate::cache_key::address::ParseAddressError| AdminError::Invalid(e.to_string()))?,
            );
        } else {
            let mut metas: Vec<(Address, EntryMeta)> = Vec::new();
            self.store.for_each_meta(|a, m| metas.push((a, m)))?;
            for (address, meta) in metas {
                let old_enough = selector.older_than_ms.is_none_or(|age| now.saturating_sub(meta.created_ms) >= age);
                if !old_enough {
                    continue;
                }
                if let Some(pattern) = &selector.model {
                    // The model is inside the sealed record: this purge decrypts to decide.
                    match self.store.get(&address) {
                        Ok(Some(e)) if crate::config::glob_match(pattern, &e.record.model) => {}
                        _ => continue,
                    }
                }
                doomed.push(address);
            }
        }
        let mut removed = 0u64;
        for address in doomed {
            if self.store.delete(&address)? {
                removed += 1;
                touched.push(address.to_hex());
            }
        }
        self.store.flush()?;
        Ok(json!({"purged": removed, "count": removed}))
    }

    fn cache_export(&self, path: &Path, passphrase: &SecretText, progress: Progress<'_>) -> Result<Value, AdminError> {
        let mut writer = BundleWriter::create(path, passphrase.0.as_bytes())?;
        let header = BundleHeader {
            format: BUNDLE_CONTENT_FORMAT,
            normalization: crate::cache_key::normalize::NORMALIZATION_VERSION,
            exported_ms: now_ms(),
            namespace_key: *self.store.keyring().snapshot().namespace_key().expose(),
        };
        writer.append(&zeroize::Zeroizing::new(codec::encode(&header).map_err(StoreError::Encode)?))?;
        let mut bundle_error = None;
        let mut too_large = 0u64;
        let count = audit::for_each_entry(&self.store, |address, entry, done, total| {
            let item = BundleItem { record: entry.record.clone(), meta: entry.meta };
            match codec::encode(&item) {
                // One entry too large for a frame (stored before max_response_bytes existed)
                // is left out and counted; it must not cost the export of every other entry.
                Ok(bytes) if bytes.len() > crate::ops::bundle::MAX_FRAME => {
                    too_large += 1;
                    tracing::warn!(%address, bytes = bytes.len(), "entry too large for a bundle frame; not exported");
                }
                Ok(bytes) => {
                    if let Err(e) = writer.append(&zeroize::Zeroizing::new(bytes)) {
                        bundle_error.get_or_insert(e);
                    }
                }
                Err(e) => return Err(StoreError::Encode(e)),
            }
            if done % 256 == 0 || done == total {
                progress(done, total);
            }
            Ok(())
        })?;
        if let Some(e) = bundle_error {
            return Err(e.into());
        }
        writer.finish()?;
        let exported = count - too_large;
        Ok(json!({"exported": exported, "skipped_too_large": too_large, "path": path, "count": exported}))
    }

    /// Re-seals every bundled entry under this store's keys and re-addresses it under this
    /// store's address key. Tenant entries need the source's namespace key: an empty store
    /// adopts it; a store that already has entries keeps its own and skips them (their tenants
    /// could not find them here).
    fn cache_import(&self, path: &Path, passphrase: &SecretText, progress: Progress<'_>) -> Result<Value, AdminError> {
        let mut reader = BundleReader::open(path, passphrase.0.as_bytes())?;
        let header: BundleHeader = match reader.next_frame()? {
            Some(frame) => codec::decode(&zeroize::Zeroizing::new(frame))
                .map_err(|e| AdminError::Invalid(format!("bundle header does not decode: {e}")))?,
            None => return Err(AdminError::Invalid("bundle is empty".into())),
        };
        if header.format != BUNDLE_CONTENT_FORMAT {
            return Err(AdminError::Invalid(format!(
                "bundle content format {} is not one this build reads ({BUNDLE_CONTENT_FORMAT}); upgrade holdfast",
                header.format
            )));
        }
        if header.normalization != crate::cache_key::normalize::NORMALIZATION_VERSION {
            return Err(AdminError::Invalid(format!(
                "bundle requests were normalized by rules v{}, this build uses v{}: their addresses would not match; \
                 import with the same holdfast version that exported them",
                header.normalization,
                crate::cache_key::normalize::NORMALIZATION_VERSION
            )));
        }
        let theirs = SecretKey::from_bytes(header.namespace_key);
        let same_tenants = self.store.keyring().snapshot().namespace_key() == &theirs;
        let adopted = !same_tenants && self.store.stats().entries == 0;
        if adopted {
            self.store.keyring().adopt_namespace_key(&theirs).map_err(StoreError::from)?;
        }
        let tenants_ok = same_tenants || adopted;
        let addresser = self.store.addresser();
        let (mut imported, mut skipped) = (0u64, 0u64);
        // Each frame is authentic on its own, so entries before a damaged frame are kept; the
        // error says how many, so the operator knows what the store now holds.
        let partial = |imported: u64, e: crate::ops::bundle::BundleError| {
            AdminError::Invalid(format!("{e}; {imported} entries were imported before the bundle turned out damaged"))
        };
        while let Some(frame) = reader.next_frame().map_err(|e| partial(imported, e))? {
            let item: BundleItem = codec::decode(&zeroize::Zeroizing::new(frame))
                .map_err(|e| AdminError::Invalid(format!("bundle entry does not decode: {e}")))?;
            if item.record.namespace.is_some() && !tenants_ok {
                skipped += 1;
                continue;
            }
            let address = addresser.address(&Namespace::from_hash(item.record.namespace), &item.record.request);
            self.store.put_as_of(
                &address,
                &item.record,
                item.meta.created_ms,
                item.meta.last_served_ms,
                item.meta.times_served,
            )?;
            imported += 1;
            if imported % 256 == 0 {
                progress(imported, 0);
            }
        }
        // Writes no longer evict inline; an import over budget trims here, once.
        self.store.evict_to_budget()?;
        self.store.flush()?;
        Ok(json!({
            "imported": imported,
            "skipped_tenant_entries": skipped,
            "adopted_tenant_key": adopted,
            "count": imported,
        }))
    }
}

/// The first frame of an export bundle.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct BundleHeader {
    format: u32,
    /// Normalization rules the entries' requests were canonicalized under; an importer with
    /// other rules would re-address them into addresses its clients never compute.
    normalization: u32,
    exported_ms: u64,
    namespace_key: [u8; 32],
}

/// The bundle layout `cache export` writes (the header above, then one `BundleItem` a frame).
const BUNDLE_CONTENT_FORMAT: u32 = 1;

/// Every later frame: one entry, decrypted (the bundle's own encryption protects it).
#[derive(Serialize, Deserialize)]
struct BundleItem {
    record: Record,
    meta: EntryMeta,
}

/// Removes a half-written export so a retry can use the same path.
fn remove_on_error(path: &Path, result: Result<Value, AdminError>) -> Result<Value, AdminError> {
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Creates `path`, refusing to overwrite (an export must never clobber a file), mode 0600.
pub fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
