//! Encrypted, portable export bundles: `holdfast cache export` writes every stored entry into a
//! bundle file, and another replica imports it.
//!
//! A bundle is encrypted under a key derived with Argon2id (m = 19 MiB, t = 2, p = 1, a fresh
//! 16-byte salt per bundle) from a passphrase the operator gives, so it can travel over untrusted
//! channels and be opened on a replica whose store keys are different. It carries opaque frames:
//! the caller serializes each entry into one frame.
//!
//! ```text
//! header
//! offset  size  field
//! 0       8     magic "HFBUNDLE"
//! 8       2     bundle format version, big-endian (1)
//! 10      4     Argon2id memory cost in KiB, big-endian
//! 14      4     Argon2id time cost, big-endian
//! 18      4     Argon2id parallelism, big-endian
//! 22      16    Argon2id salt
//! 38      32    key check: keyed BLAKE3 of bytes 0..38 under the check key
//! 70      32    BLAKE3 of bytes 0..70
//! 102           first frame
//!
//! frame i (i = 0, 1, 2, ...)
//! 0       4     n: length of the ciphertext including its 16-byte tag, big-endian
//! 4       12    nonce (random)
//! 16      n     AES-256-GCM under the frame key of (payload ‖ kind),
//!               associated data = i as u64 big-endian ‖ BLAKE3 of header bytes 0..102
//!
//! kind 0: a data frame; the payload is the caller's frame (at most 256 MiB).
//! kind 1: the end frame; the payload is the number of data frames, u64 big-endian. It is last:
//!         no byte may follow it.
//! ```
//!
//! The Argon2id output is never used directly: BLAKE3 `derive_key` turns it into a frame key
//! (AES-256-GCM) and a check key (the header's key check), so no key serves two algorithms.
//!
//! Why each part is there:
//! - The header checksum tells a damaged header (`Corrupt`) from a wrong passphrase; the key
//!   check then tells a wrong passphrase (`WrongPassphrase`) before any frame is read. Neither
//!   is a security boundary; the frames' tags are.
//! - The frame index in the associated data means frames cannot be reordered or dropped; the
//!   header hash (which covers the random salt) means they cannot be moved between bundles.
//! - The end frame is authenticated and carries the count, so a bundle cut short at a frame
//!   boundary is an error rather than a smaller export. A reader returns `None` only after it.
//! - Frames are capped at 256 MiB on read, so a damaged length cannot make a reader allocate
//!   gigabytes; Argon2 costs in a header are bounded for the same reason.
//!
//! - `writer`: [`BundleWriter`], which creates a bundle and seals its frames.
//! - `reader`: [`BundleReader`], which checks a bundle and opens its frames one by one.
//! - `content`: what `cache export` puts in the frames (a header, then one entry a frame).

pub mod content;
mod reader;
mod writer;

use std::io;
use std::path::PathBuf;

pub use reader::BundleReader;
pub use writer::BundleWriter;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};

use crate::secret::SecretKey;
use crate::store::keyring::KdfParams;

const MAGIC: &[u8; 8] = b"HFBUNDLE";
/// The container version in the header (what `holdfast version` reports as the bundle format).
pub const BUNDLE_FORMAT: u16 = 1;
/// Bytes 0..CHECKED_LEN are covered by the key check.
const CHECKED_LEN: usize = 38;
const CHECKSUM_AT: usize = CHECKED_LEN + 32;
const HEADER_LEN: usize = CHECKSUM_AT + 32;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KIND_DATA: u8 = 0;
const KIND_END: u8 = 1;
/// The largest frame a bundle carries. Stored entries are far smaller; the cap keeps a damaged
/// length field from making a reader allocate gigabytes.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// AES-GCM with random 96-bit nonces stays within NIST's collision bound up to 2^32 messages per
/// key; each bundle has its own key, so that bounds the frames of one bundle (end frame included).
pub const MAX_FRAMES: u64 = (1 << 32) - 1;
const FRAME_KEY_CONTEXT: &str = "holdfast 2026-11 bundle frames v1";
const CHECK_KEY_CONTEXT: &str = "holdfast 2026-11 bundle key check v1";
const READ_BUFFER: usize = 64 * 1024;

/// Why a bundle cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path} already exists; give a new file name for the bundle (an existing file is never overwritten)")]
    Exists { path: PathBuf },
    #[error("the bundle passphrase is empty; give a non-empty passphrase (a long random one is best)")]
    EmptyPassphrase,
    #[error("wrong passphrase for bundle {path}; give the passphrase that was used when it was exported")]
    WrongPassphrase { path: PathBuf },
    #[error("bundle {path} is damaged ({reason}); copy it again from the exporting replica, or export a new one")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "bundle {path} is incomplete ({reason}); copy it again in full, or export a new one (an export that \
         did not finish also leaves an incomplete bundle)"
    )]
    Truncated { path: PathBuf, reason: String },
    #[error("bundle {path} has format {found}, newer than this build reads ({supported}); upgrade holdfast here")]
    NewerFormat { path: PathBuf, found: u16, supported: u16 },
    #[error("a frame of {len} bytes is larger than a bundle carries ({max} bytes); this entry cannot be exported")]
    FrameTooLarge { len: usize, max: usize },
    #[error("bundle {path} already holds {max} frames, the most one bundle may; split the export into several")]
    TooManyFrames { path: PathBuf, max: u64 },
    #[error("cannot {action} bundle {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("Argon2 parameters rejected: {0}")]
    Kdf(String),
    #[error("an earlier write to bundle {path} failed, so it is incomplete; delete it and export again")]
    WriteFailed { path: PathBuf },
}

/// The two keys derived from the passphrase.
struct BundleKeys {
    /// Seals and opens every frame (AES-256-GCM).
    frame: SecretKey,
    /// Keys the header's key check, which tells a wrong passphrase before any frame is read.
    check: SecretKey,
}

/// The frame and check keys for `passphrase`, under this bundle's salt and Argon2 cost.
fn derive_keys(passphrase: &[u8], salt: &[u8], cost: KdfParams) -> Result<BundleKeys, String> {
    let master = crate::store::keyring::argon2id(passphrase, salt, cost)?;
    Ok(BundleKeys {
        frame: SecretKey::from_bytes(blake3::derive_key(FRAME_KEY_CONTEXT, master.as_ref())),
        check: SecretKey::from_bytes(blake3::derive_key(CHECK_KEY_CONTEXT, master.as_ref())),
    })
}

/// The header's key check over its first `CHECKED_LEN` bytes.
fn key_check(key: &SecretKey, checked: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key.expose(), checked)
}

/// Seals and opens the frames of one bundle: the frame key, bound to that bundle's header.
struct FrameCipher {
    /// AES-256-GCM under the frame key derived from the passphrase.
    aead: Aes256Gcm,
    /// BLAKE3 of the header, in every frame's associated data: frames cannot move between bundles.
    header_hash: [u8; 32],
}

impl FrameCipher {
    fn new(keys: &BundleKeys, header: &[u8]) -> Self {
        Self { aead: Aes256Gcm::new(keys.frame.expose().into()), header_hash: *blake3::hash(header).as_bytes() }
    }

    /// What frame `index` is authenticated with besides its bytes: its place, and which bundle.
    fn associated_data(&self, index: u64) -> [u8; 8 + 32] {
        let mut aad = [0u8; 8 + 32];
        aad[..8].copy_from_slice(&index.to_be_bytes());
        aad[8..].copy_from_slice(&self.header_hash);
        aad
    }

    /// Encrypts `plain` in place as frame `index`; the tag to write after it.
    fn seal(&self, index: u64, nonce: [u8; NONCE_LEN], plain: &mut [u8]) -> Result<Tag, aes_gcm::Error> {
        self.aead.encrypt_inout_detached(&Nonce::from(nonce), &self.associated_data(index), plain.into())
    }

    /// Decrypts `sealed` in place as frame `index`, if `tag` proves it authentic.
    fn open(&self, index: u64, nonce: [u8; NONCE_LEN], sealed: &mut [u8], tag: &Tag) -> Result<(), aes_gcm::Error> {
        self.aead.decrypt_inout_detached(&Nonce::from(nonce), &self.associated_data(index), sealed.into(), tag)
    }
}

#[cfg(test)]
mod tests;
