//! Why a keyring could not be opened or changed. Each says what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("wrong passphrase or key{hint}")]
    WrongSecret { hint: &'static str },
    #[error("keyring {path} is corrupt ({reason}); restore it from a backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error("keyring {path} has format {found}, newer than this build reads ({supported}); upgrade holdfast")]
    NewerFormat { path: PathBuf, found: u16, supported: u16 },
    #[error("cannot {action} keyring {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("Argon2 parameters rejected: {0}")]
    KdfParams(String),
    #[error("key {0} is not in the keyring; `holdfast keys list` shows the ids")]
    UnknownKey(u32),
    #[error("key {0} is the active key; rotate first (`holdfast keys rotate`), then retire it")]
    ActiveKey(u32),
    #[error("a keyring already exists at {path}; open that store instead, or choose another key_prefix")]
    Exists { path: PathBuf },
    #[error("keyring {path} kept changing while this process tried to update it; run the command again")]
    Contended { path: PathBuf },
    /// The shared store holding the keyring did not answer (it logs that itself).
    #[error("keyring {path} cannot be reached: {reason}")]
    Unavailable { path: PathBuf, reason: String },
}
