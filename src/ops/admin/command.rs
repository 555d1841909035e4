//! The admin commands as data: what an operator asks for ([`AdminRequest`]), what it answers
//! ([`Outcome`]), and how it fails ([`AdminError`]). Shared by the CLI, the admin API, its
//! client and the dashboard, which all send or run these same values.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cache_key::address::{Address, ParseAddressError};
use crate::ops::audit::{AuditFilter, trail};
use crate::ops::bundle::BundleError;
use crate::store::StoreError;

/// A passphrase or key passed to a command; never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(
    /// The text as given; wiped when dropped.
    pub Zeroizing<String>,
);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// A new store secret: exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSecret {
    /// A passphrase the keyring is to be unlocked by from now on (stretched with Argon2id).
    pub passphrase: Option<SecretText>,
    /// Or a 32-byte raw key, base64, for unlocking from a secret manager without a KDF.
    pub raw_key: Option<SecretText>,
}

/// Which entries `cache purge` deletes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeSelector {
    /// Only entries stored at least this long ago (`--older-than`).
    pub older_than_ms: Option<u64>,
    /// Only entries whose model matches this glob (`--model`); the purge decrypts to decide.
    pub model: Option<String>,
    /// Just the entry at this hex address (`--address`); the other conditions are then ignored.
    pub address: Option<String>,
    /// Everything (`--all`): an empty selector must not purge by accident, so this is explicit.
    pub all: bool,
}

/// One admin command, as the CLI parses it and the admin API carries it (JSON, tagged by
/// `command`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum AdminRequest {
    KeysList,
    KeysRotate {
        /// Also re-seal every entry under the new key, so the old ones can then be retired.
        reencrypt: bool,
    },
    KeysRetire {
        /// The data key to destroy; refused while it is active or any entry is sealed under it.
        id: u32,
    },
    KeysPassphrase {
        /// What unlocks the keyring from now on.
        secret: NewSecret,
    },
    AuditList {
        /// Which entries to list.
        filter: AuditFilter,
    },
    AuditShow {
        /// The entry's hex address, as `audit list` prints it.
        address: String,
    },
    AuditSearch {
        /// Searched for in the decrypted prompts and answers; never written to the trail.
        text: String,
        /// Narrows the search (the dashboard's filters); absent from older clients: everything.
        #[serde(default)]
        filter: AuditFilter,
    },
    /// Writes JSON Lines to the output file.
    AuditExport,
    AuditTrail {
        /// Also recompute the chain and check it against the head and the store's count.
        verify: bool,
    },
    CacheStats,
    CachePurge {
        /// Which entries to delete.
        selector: PurgeSelector,
    },
    CacheVerify,
    /// Removes entries that do not open and resets the integrity record to what is left.
    CacheRepair,
    /// Writes an encrypted bundle to the output file.
    CacheExport {
        /// What the bundle is encrypted under (not the store's secret: the bundle travels).
        passphrase: SecretText,
    },
    /// Reads an encrypted bundle from the input file.
    CacheImport {
        /// The passphrase the bundle was exported with.
        passphrase: SecretText,
    },
    /// Re-asks the providers for the most asked stored questions (or lists them, dry run).
    CacheRefresh {
        /// Which entries to re-ask, how many and how fast.
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
    pub(super) fn is_trailed(&self) -> bool {
        !matches!(self, Self::KeysList | Self::AuditTrail { .. })
    }

    /// Commands that change stored data or keys: their trail entry is written before the first
    /// change too, so a command killed half-way still shows in the trail.
    pub(super) fn changes_store(&self) -> bool {
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

    /// Commands that write a file (`--out`); the admin API hands it back for download.
    pub fn writes_output(&self) -> bool {
        matches!(self, Self::AuditExport | Self::CacheExport { .. })
    }

    /// Commands that read a file (a bundle); the admin API receives it after the command line.
    pub fn reads_input(&self) -> bool {
        matches!(self, Self::CacheImport { .. })
    }
}

/// A purge selector as the flags that would give it.
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

/// Why an admin command failed; its message is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("access trail: {0}")]
    Trail(#[from] trail::TrailError),
    #[error("bundle: {0}")]
    Bundle(#[from] BundleError),
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
    /// The answer, as JSON: printed by `--json`, rendered as a table otherwise, sent as is by the
    /// admin API. Its `count` is what the trail records as the number of entries involved.
    pub result: Value,
    /// `cache verify` or `audit trail --verify` found a problem: the CLI exits with 3 so scripts
    /// can tell a damaged store from a failed command.
    pub verification_failed: bool,
}

impl From<Value> for Outcome {
    fn from(result: Value) -> Self {
        Self { result, verification_failed: false }
    }
}

/// Which entries `cache refresh` re-asks, and how fast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshPlan {
    /// Only entries stored at least this long ago.
    pub older_than_ms: u64,
    /// Only entries asked again at least this many times (see `EntryMeta::times_served`).
    pub min_served: u64,
    /// At most this many entries, most asked first.
    pub limit: usize,
    /// Requests sent per minute, at most.
    pub per_minute: u32,
    /// List the plan and its cost; send nothing.
    pub dry_run: bool,
}

impl RefreshPlan {
    pub fn describe(&self) -> String {
        format!(
            "cache refresh --older-than {}s --min-served {} --limit {} --per-minute {}{}",
            self.older_than_ms / 1000,
            self.min_served,
            self.limit,
            self.per_minute,
            if self.dry_run { " --dry-run" } else { "" }
        )
    }
}

/// `text` as an address, or the parse error as a usage error.
pub(super) fn parse_address(text: &str) -> Result<Address, AdminError> {
    text.parse().map_err(|e: ParseAddressError| AdminError::Invalid(e.to_string()))
}
