//! Operator commands — keys, audit, cache maintenance — as one library entry point shared by
//! the CLI (opening the store directly) and the server's admin API (while it serves).
//!
//! Each command is an [`AdminRequest`]; [`Admin::execute`] runs it against the store, reports
//! progress for long jobs, and appends an entry to the access trail for every command that
//! decrypts or changes stored data. Results are JSON so both paths render them the same way.
//!
//! - `command`: the commands as data — request, outcome, error — that every path shares.
//! - `auth`: who is acting (the trail's [`Actor`]) and the constant-time token check.
//! - `keys`, `cache`, `export`, `trail`: the commands themselves, by what they work on (the
//!   keyring; stored entries; files written and read; the access trail).
//! - `refresh`: `cache refresh`, re-asking the providers for the most asked questions.
//! - `api`: the server's `/admin/v1/execute` endpoint (bearer token, NDJSON progress).
//! - `client`: the CLI's side of that endpoint (`--server`).
//! - `render`: human-readable tables for results.
//! - `ui`: the dashboard at `/ui` on the admin listener, over the same commands.

pub mod api;
pub mod auth;
mod cache;
pub mod client;
pub mod command;
mod export;
mod keys;
pub mod refresh;
pub mod render;
mod trail;
pub mod ui;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub use auth::Actor;
pub use command::{AdminError, AdminRequest, NewSecret, Outcome, Progress, PurgeSelector, RefreshPlan, SecretText};
pub use refresh::Refresher;

use crate::ops::audit;
use crate::ops::audit::trail::{Action, MAX_LISTED_ADDRESSES, Trail, TrailCell};
use crate::store::Store;

/// The store and its access trail.
pub struct Admin {
    /// The store every command works on (the server's open one, or the CLI's).
    pub store: Arc<Store>,
    /// Opened on the first command that appends to it: `Trail::open` refuses a damaged trail,
    /// and that must not lock operators out of `audit trail --verify`, which shows the damage.
    trail: Mutex<Option<Trail>>,
    /// The trail's file, beside the store (`trail.jsonl`).
    trail_path: PathBuf,
    /// For a store shared through Redis, the trail kept there (then `trail` stays unused).
    shared_trail: Option<Arc<dyn TrailCell>>,
    /// The providers `cache refresh` asks; without them it can only list its plan.
    refresher: Option<Refresher>,
}

impl Admin {
    /// Commands over `store`, with its access trail beside it (or in Redis, for a shared store).
    pub fn open(store: Arc<Store>) -> Result<Self, AdminError> {
        let trail_path = store.path().join("trail.jsonl");
        let shared_trail = store.shared_trail();
        Ok(Self { store, trail: Mutex::new(None), trail_path, shared_trail, refresher: None })
    }

    /// Lets `cache refresh` ask providers, through `refresher`.
    pub fn with_refresher(mut self, refresher: Refresher) -> Self {
        self.refresher = Some(refresher);
        self
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
            let started =
                Action { actor: &actor.0, command: &request.describe(), addresses: &[], count: 0, outcome: "started" };
            self.append_trail(&started)?;
        }
        let result = self.run(request, progress, output, input, &mut touched);
        if request.is_trailed() {
            let (count, outcome) = match &result {
                Ok(o) => {
                    (o.result.get("count").and_then(Value::as_u64).unwrap_or(touched.len() as u64), "ok".to_owned())
                }
                Err(e) => (0, format!("error: {}", e.to_string().chars().take(200).collect::<String>())),
            };
            touched.truncate(MAX_LISTED_ADDRESSES);
            let done =
                Action { actor: &actor.0, command: &request.describe(), addresses: &touched, count, outcome: &outcome };
            self.append_trail(&done)?;
        }
        result
    }

    /// Dispatches `request` to the command that runs it; `touched` collects the addresses the
    /// command opened or changed, for the trail.
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
            AdminRequest::KeysRetire { id } => self.keys_retire(*id)?.into(),
            AdminRequest::KeysPassphrase { secret } => self.keys_passphrase(secret)?.into(),
            AdminRequest::AuditList { filter } => {
                let rows = audit::list(store, filter)?;
                touched.extend(rows.iter().map(|r| r.address.clone()));
                json!({"entries": rows, "count": rows.len()}).into()
            }
            AdminRequest::AuditShow { address } => {
                let parsed = command::parse_address(address)?;
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
                self.audit_export(path, progress)?.into()
            }
            AdminRequest::AuditTrail { verify } => self.audit_trail(*verify)?,
            AdminRequest::CacheStats => self.cache_stats()?.into(),
            AdminRequest::CachePurge { selector } => self.cache_purge(selector, touched)?.into(),
            AdminRequest::CacheVerify => self.cache_verify(progress),
            AdminRequest::CacheRepair => self.cache_repair(progress)?.into(),
            AdminRequest::CacheExport { passphrase } => {
                let path = output.ok_or(AdminError::MissingFile { what: "cache export", which: "an output file" })?;
                self.cache_export(path, passphrase.0.as_bytes(), progress)?.into()
            }
            AdminRequest::CacheImport { passphrase } => {
                let path = input.ok_or(AdminError::MissingFile { what: "cache import", which: "a bundle file" })?;
                self.cache_import(path, passphrase.0.as_bytes(), progress)?.into()
            }
            AdminRequest::CacheRefresh { plan } => {
                refresh::refresh(store, self.refresher.as_ref(), plan, progress, touched)?.into()
            }
        })
    }
}
