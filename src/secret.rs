//! Wrappers for key material and credentials: zeroized on drop, never printable.
//!
//! Nothing in here implements `Display`, and `Debug` prints a fixed placeholder, so a key or a
//! passphrase cannot reach a log line or an error message by accident.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of every symmetric key Holdfast uses (AES-256, keyed BLAKE3).
pub const KEY_LEN: usize = 32;

/// 32 bytes of key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = Self([0; KEY_LEN]);
        fill_random(&mut key.0);
        key
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(*****)")
    }
}

/// What unlocks a store: a passphrase (stretched with Argon2id) or a raw 32-byte key.
#[derive(Clone)]
pub enum StoreSecret {
    Passphrase(Zeroizing<String>),
    RawKey(SecretKey),
}

impl fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("StoreSecret::Passphrase(*****)"),
            Self::RawKey(_) => f.write_str("StoreSecret::RawKey(*****)"),
        }
    }
}

/// Secrets read from the environment once, at start-up. The binary removes each variable from
/// the process environment right after reading it (before any thread starts), so they are not
/// left in `/proc/<pid>/environ`, in a core file or in the environment of a child process.
#[derive(Default)]
pub struct SecretEnv {
    /// Variable name to the value it held (kept even when empty: callers decide what empty means).
    values: std::collections::HashMap<String, Zeroizing<String>>,
}

impl SecretEnv {
    /// Reads each of `names` through `var` (unset ones are skipped); an earlier value is kept.
    pub fn read<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, var: impl Fn(&str) -> Option<String>) {
        for name in names {
            if !self.values.contains_key(name)
                && let Some(value) = var(name)
            {
                self.values.insert(name.to_owned(), Zeroizing::new(value));
            }
        }
    }

    /// The value `name` held when it was read, if it was set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|value| value.as_str().to_owned())
    }

    /// Whether `name` was set when it was read.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// Why a secret given by the operator could not be used. Never echoes the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the raw key is not valid base64; give 32 random bytes, e.g. from `openssl rand -base64 32`")]
    KeyNotBase64,
    #[error("the raw key decodes to {0} bytes; it must be exactly 32 (e.g. `openssl rand -base64 32`)")]
    KeyWrongLength(usize),
    #[error("the passphrase is empty; give a non-empty passphrase (a long random one is best)")]
    EmptyPassphrase,
    #[error("cannot read passphrase file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("both HOLDFAST_KEY and HOLDFAST_PASSPHRASE are set; unset the one this store does not use")]
    Ambiguous,
    #[error(
        "no passphrase or key given: set HOLDFAST_PASSPHRASE, or pass --passphrase-file FILE, or set \
         HOLDFAST_KEY to 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"
    )]
    Missing,
}

/// Finds the store secret: `--passphrase-file` first, then `HOLDFAST_KEY` or
/// `HOLDFAST_PASSPHRASE` (both set is an error rather than a guess).
pub fn resolve_secret(
    passphrase_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreSecret, SecretError> {
    if let Some(path) = passphrase_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretError::File { path: path.to_owned(), reason: e.to_string() })?;
        return StoreSecret::passphrase(text);
    }
    match (env("HOLDFAST_KEY").filter(|v| !v.is_empty()), env("HOLDFAST_PASSPHRASE").filter(|v| !v.is_empty())) {
        (Some(_), Some(_)) => Err(SecretError::Ambiguous),
        (Some(key), None) => StoreSecret::raw_key_base64(&Zeroizing::new(key)),
        (None, Some(pass)) => StoreSecret::passphrase(pass),
        (None, None) => Err(SecretError::Missing),
    }
}

impl StoreSecret {
    pub fn passphrase(text: impl Into<String>) -> Result<Self, SecretError> {
        let text = Zeroizing::new(text.into());
        // A passphrase read from a file usually ends in a newline that is not part of it.
        let trimmed = text.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Err(SecretError::EmptyPassphrase);
        }
        Ok(Self::Passphrase(Zeroizing::new(trimmed.to_owned())))
    }

    /// Parses a raw key given as base64 (the `HOLDFAST_KEY` form).
    pub fn raw_key_base64(text: &str) -> Result<Self, SecretError> {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| SecretError::KeyNotBase64)?,
        );
        let bytes: [u8; KEY_LEN] =
            decoded.as_slice().try_into().map_err(|_| SecretError::KeyWrongLength(decoded.len()))?;
        Ok(Self::RawKey(SecretKey::from_bytes(bytes)))
    }
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// A machine that cannot produce random bytes cannot run Holdfast safely at all (every nonce
/// and key depends on it), so failure aborts instead of degrading.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(err) = getrandom::fill(buf) {
        // Not a panic: a request task's panic is caught and the process would go on without
        // randomness.
        tracing::error!(error = %err, "the operating system's random number generator failed; aborting");
        eprintln!("holdfast: the operating system's random number generator failed: {err}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_key_or_passphrase() {
        let key = SecretKey::from_bytes([0xAB; KEY_LEN]);
        let shown = format!("{key:?} {:?}", StoreSecret::RawKey(key.clone()));
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab, ab"));
        let pass = StoreSecret::passphrase("correct horse battery").unwrap();
        assert!(!format!("{pass:?}").contains("horse"));
    }

    #[test]
    fn secret_env_keeps_the_first_value_and_shows_only_names() {
        let mut secrets = SecretEnv::default();
        secrets.read(["A_TOKEN", "UNSET"], |name| (name == "A_TOKEN").then(|| "first-value".to_owned()));
        secrets.read(["A_TOKEN"], |_| Some("second-value".into()));
        assert_eq!(secrets.get("A_TOKEN").as_deref(), Some("first-value"));
        assert!(!secrets.contains("UNSET"));
        let shown = format!("{secrets:?}");
        assert!(shown.contains("A_TOKEN") && !shown.contains("value"), "{shown}");
    }

    #[test]
    fn raw_key_must_be_32_bytes_of_base64() {
        assert_eq!(StoreSecret::raw_key_base64("not base64!").unwrap_err(), SecretError::KeyNotBase64);
        assert_eq!(StoreSecret::raw_key_base64("AAAA").unwrap_err(), SecretError::KeyWrongLength(3));
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(matches!(StoreSecret::raw_key_base64(&good), Ok(StoreSecret::RawKey(_))));
    }

    #[test]
    fn secret_sources_in_order_and_conflicts_refused() {
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let env = |k: &'static str, v: String| move |name: &str| (name == k).then(|| v.clone());
        assert!(matches!(resolve_secret(None, env("HOLDFAST_KEY", key.clone())), Ok(StoreSecret::RawKey(_))));
        assert!(matches!(
            resolve_secret(None, env("HOLDFAST_PASSPHRASE", "pw".into())),
            Ok(StoreSecret::Passphrase(_))
        ));
        assert_eq!(resolve_secret(None, |_| None).unwrap_err(), SecretError::Missing);
        assert_eq!(resolve_secret(None, |_| Some(key.clone())).unwrap_err(), SecretError::Ambiguous);
        let err = resolve_secret(Some(Path::new("/nonexistent/pass")), |_| None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pass"));
        assert!(SecretError::Missing.to_string().contains("HOLDFAST_PASSPHRASE"));
    }

    #[test]
    fn passphrase_from_file_loses_trailing_newline_only() {
        let StoreSecret::Passphrase(p) = StoreSecret::passphrase("  spaced pass \n").unwrap() else {
            panic!("expected passphrase")
        };
        assert_eq!(p.as_str(), "  spaced pass ");
        assert_eq!(StoreSecret::passphrase("\n").unwrap_err(), SecretError::EmptyPassphrase);
    }
}
