//! Why a store could not be opened (`StoreOpenError`, at start-up) and why an operation on an
//! open one failed (`StoreError`, logged and survived by the request path).

use std::path::PathBuf;

use super::codec::CodecError;
use super::engine::{BackendError, Engine};
use crate::cache_key::address::Address;
use crate::store::keyring::KeyringError;

/// Why a store could not be opened. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("no store at {path}; create one with `holdfast init` (or let `holdfast serve` create it)")]
    NotFound { path: PathBuf },
    #[error("{path} is not a Holdfast store: {reason}. Point the store path at a new or empty directory")]
    NotAStore { path: PathBuf, reason: String },
    #[error("store at {path} already exists; open it instead, or choose another path")]
    AlreadyExists { path: PathBuf },
    #[error(
        "store at {path} has format {found}, newer than this build supports ({supported}); \
         upgrade holdfast (nothing was changed)"
    )]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("store at {path} has format {found}; run `holdfast migrate` to upgrade it to {current}")]
    OlderFormat { path: PathBuf, found: u32, current: u32 },
    #[error(
        "store at {path} is open in another process (a running `holdfast serve`?); stop it, or run the \
         command against the server with --server URL"
    )]
    InUse { path: PathBuf },
    #[error(
        "store at {path} was created with the {found} engine, but store.engine is {configured}; set \
         store.engine = \"{found}\" (nothing was changed)"
    )]
    EngineMismatch { path: PathBuf, found: Engine, configured: Engine },
    #[error(
        "the {engine} storage engine is not in this build{}; rebuild with `cargo build --release --features {}`",
        .path.as_ref().map(|p| format!(" (the store at {} uses it)", p.display())).unwrap_or_default(),
        .engine.feature().unwrap_or_default()
    )]
    EngineNotBuilt { path: Option<PathBuf>, engine: Engine },
    #[error("store at {path} is damaged: {reason}; restore it from a backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "store at {path} has lost entries: {}. Nothing was served from it. Run `holdfast cache verify` to see \
         what is missing, then restore a backup or run `holdfast cache repair` to go on with what still opens",
        .problems.join("; ")
    )]
    Damaged { path: PathBuf, problems: Vec<String> },
    #[error(
        "the keyring at {path}/keyring belongs to another store: its keys are not this database's. \
         Put this store's own keyring file back (nothing was changed)"
    )]
    ForeignKeyring { path: PathBuf },
    #[error("cannot open store at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot use the Redis store at {location}: {reason}. Check store.url (or HOLDFAST_STORE_URL) and that \
         Redis is running"
    )]
    Unreachable { location: String, reason: String },
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Why a store operation failed. The proxy logs these and carries on as if the store were
/// empty: a store failure never fails a request upstream can answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("entry {address} is tampered or corrupt: {reason}")]
    Tampered { address: Address, reason: String },
    #[error("cannot encode record: {0}")]
    Encode(CodecError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("key {id} still seals {records} records; re-encrypt them first (`holdfast keys rotate --reencrypt`)")]
    KeyInUse { id: u32, records: u64 },
    #[error(
        "the disk holding the store has {free} bytes free and {needed} are kept in reserve; answers are \
         served but not stored until space is freed (no restart needed)"
    )]
    DiskFull { free: u64, needed: u64 },
}

impl StoreError {
    /// Whether a network store did not answer (it logs that itself, once per interval).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Backend(BackendError::Unavailable(_)) | Self::Keyring(KeyringError::Unavailable { .. }))
    }
}
