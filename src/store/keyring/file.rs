//! The keyring's wrapped form, as kept in its file beside the database (or in a Redis key):
//! the contents sealed under a key-encryption key (KEK) derived from the operator's passphrase
//! (Argon2id) or raw key.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "HFKEYRNG"
//! 8       2     keyring format version, big-endian (1)
//! 10      1     wrapping: 1 = Argon2id passphrase, 2 = raw key
//! 11      4     Argon2 memory cost in KiB (0 for a raw key)
//! 15      4     Argon2 time cost
//! 19      4     Argon2 parallelism
//! 23      16    Argon2 salt (zero for a raw key)
//! 39      12    nonce
//! 51      4     ciphertext length n (including the 16-byte tag)
//! 55      32    the keyring's identity, in the clear (format 2 on; see below)
//! h       n     AES-256-GCM ciphertext of the contents, associated data = bytes 0..h
//! h+n     32    BLAKE3 of bytes 0..h+n
//! ```
//! `h` is 87 from format 2 on, 55 in format 1 (no identity); both are read, format 2 is written.
//! The trailing checksum tells corruption (checksum wrong) from a wrong secret (checksum right,
//! tag wrong), which the GCM tag alone cannot.
//!
//! The identity ([`KeySet::identity`], a one-way hash of the address key) names the store the
//! keyring belongs to; the database keeps the same value in its settings, in the clear too. It
//! is readable before unlocking so that another store's keyring is refused as such even when
//! the secret given does not unlock it ([`clear_identity`]).

use std::path::Path;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::KeyringError;
use crate::secret::{KEY_LEN, SecretKey, StoreSecret, fill_random};
use crate::store::codec;

const MAGIC: &[u8; 8] = b"HFKEYRNG";
/// The format this build writes (and the newest it reads).
pub const KEYRING_FORMAT: u16 = 2;
/// The fields every format has (bytes 0..55).
pub(super) const HEADER_LEN: usize = 55;
/// Length of the clear identity that follows them from format 2 on.
pub(super) const IDENTITY_LEN: usize = 32;
pub(super) const CHECKSUM_LEN: usize = 32;
const SALT_LEN: usize = 16;
const RAW_KEY_CONTEXT: &str = "holdfast 2026-11 keyring wrap v1";

/// Argon2id cost. Defaults follow OWASP's minimum (m = 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory per derivation in KiB: what makes guessing expensive on GPUs.
    pub memory_kib: u32,
    /// Passes over that memory (time cost).
    pub iterations: u32,
    /// Lanes computed in parallel.
    pub parallelism: u32,
}

impl KdfParams {
    /// Bounds on what a keyring may ask for, so a crafted header cannot make unlock allocate
    /// terabytes or spin for hours: up to 4 GiB, 64 passes, 64 lanes.
    pub(crate) fn check_plausible(&self) -> Result<(), String> {
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 64 {
            return Err(format!(
                "implausible Argon2 parameters m={} KiB, t={}, p={}",
                self.memory_kib, self.iterations, self.parallelism
            ));
        }
        Ok(())
    }
}

impl KdfParams {
    /// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const DEFAULT: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serialized inside the ciphertext. Zeroized on drop so decoded key bytes do not linger.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(super) struct Contents {
    /// Keys every address (`cache_key::address`); never rotates, so addresses stay put.
    pub(super) address_key: [u8; KEY_LEN],
    /// Keys the hash of a client credential into its tenant namespace. Separate from the
    /// address key so replicas can share tenants (a bundle import adopts it) while keeping
    /// their own address keys.
    pub(super) namespace_key: [u8; KEY_LEN],
    /// Every data key not yet retired, the active one among them.
    pub(super) keys: Vec<StoredKey>,
    /// The id of the data key new records are sealed under.
    pub(super) active: u32,
}

/// One data key as the wrapped keyring keeps it.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(super) struct StoredKey {
    /// The id every envelope sealed under this key names in its header.
    pub(super) id: u32,
    /// When it was made, for `keys list`.
    pub(super) created_ms: u64,
    /// Part of the encoded contents; this build removes a retired key from the keyring rather
    /// than marking it, so it always writes `false`.
    pub(super) retired: bool,
    /// The AES-256-GCM key itself.
    pub(super) key: [u8; KEY_LEN],
    /// Seals accounted for under this key so far (a high-water mark, written before use).
    pub(super) seals_reserved: u64,
}

/// How the KEK is made from the operator's secret.
#[derive(Clone, Copy)]
enum Wrapping {
    Passphrase { params: KdfParams, salt: [u8; SALT_LEN] },
    RawKey,
}

/// The key-encryption key that wraps the keyring, and how it was made from the operator's
/// secret (the header records that, so the next unlock can make it again).
pub(super) struct Kek {
    /// The AES-256-GCM key the contents are sealed under.
    key: SecretKey,
    /// Argon2id cost and salt, or "from a raw key": written into every header.
    wrapping: Wrapping,
}

impl Kek {
    /// A KEK for `secret`: a fresh salt and Argon2id at `params` for a passphrase.
    pub(super) fn new(secret: &StoreSecret, params: KdfParams) -> Result<Self, KeyringError> {
        Ok(match secret {
            StoreSecret::Passphrase(p) => {
                let mut salt = [0u8; SALT_LEN];
                fill_random(&mut salt);
                Self { key: derive_kek(p.as_bytes(), &salt, params)?, wrapping: Wrapping::Passphrase { params, salt } }
            }
            StoreSecret::RawKey(k) => Self { key: raw_kek(k), wrapping: Wrapping::RawKey },
        })
    }

    /// The keyring's bytes in `format`: `contents` encrypted under this KEK, with header and
    /// checksum. `path` names the keyring in errors. (Tests write format 1 to check that old
    /// keyrings still open.)
    pub(super) fn wrap(&self, format: u16, contents: &Contents, path: &Path) -> Result<Vec<u8>, KeyringError> {
        let (kek, wrapping) = (&self.key, self.wrapping);
        let plaintext = Zeroizing::new(
            codec::encode(contents).map_err(|e| KeyringError::Corrupt { path: path.into(), reason: e.to_string() })?,
        );
        let mut header = Vec::with_capacity(header_len(format));
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&format.to_be_bytes());
        match wrapping {
            Wrapping::Passphrase { params, salt } => {
                header.push(1);
                for v in [params.memory_kib, params.iterations, params.parallelism] {
                    header.extend_from_slice(&v.to_be_bytes());
                }
                header.extend_from_slice(&salt);
            }
            Wrapping::RawKey => {
                header.push(2);
                header.extend_from_slice(&[0u8; 12 + SALT_LEN]);
            }
        }
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        header.extend_from_slice(&nonce);
        header.extend_from_slice(&((plaintext.len() + 16) as u32).to_be_bytes());
        if format >= 2 {
            header.extend_from_slice(&identity_of(&contents.address_key));
        }
        debug_assert_eq!(header.len(), header_len(format));

        let mut sealed = plaintext.to_vec();
        let cipher = Aes256Gcm::new(kek.expose().into());
        #[allow(clippy::expect_used, reason = "GCM only refuses over 64 GiB; a keyring is kilobytes")]
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &header, sealed.as_mut_slice().into())
            .expect("keyring within AES-GCM limits");
        let mut file_bytes = header.clone();
        file_bytes.append(&mut sealed);
        file_bytes.extend_from_slice(&tag);
        let checksum = blake3::hash(&file_bytes);
        file_bytes.extend_from_slice(checksum.as_bytes());
        Ok(file_bytes)
    }
}

/// The identity of the keyring whose address key is `address_key` (`KeySet::identity`).
pub(super) fn identity_of(address_key: &[u8; KEY_LEN]) -> [u8; 32] {
    blake3::derive_key("holdfast 2026-12 keyring identity v1", address_key)
}

/// Where the ciphertext starts in a keyring of `format`.
fn header_len(format: u16) -> usize {
    if format >= 2 { HEADER_LEN + IDENTITY_LEN } else { HEADER_LEN }
}

/// The identity in the clear header of wrapped keyring `bytes`, without unlocking them: `None`
/// for a keyring written before format 2, or bytes that are not a whole keyring.
pub fn clear_identity(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return None;
    }
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(CHECKSUM_LEN)?)?;
    if blake3::hash(body).as_bytes() != checksum {
        return None;
    }
    let format = u16::from_be_bytes(body.get(8..10)?.try_into().ok()?);
    if !(2..=KEYRING_FORMAT).contains(&format) {
        return None;
    }
    body.get(HEADER_LEN..HEADER_LEN + IDENTITY_LEN)?.try_into().ok()
}

/// What unwraps a keyring: the operator's secret (at unlock) or the KEK already derived from
/// it (re-reading a shared keyring, so Argon2 is not run again).
#[derive(Clone, Copy)]
pub(super) enum Opener<'a> {
    Secret(&'a StoreSecret),
    Kek(&'a Kek),
}

/// Checks and decrypts a wrapped keyring. Returns the KEK (and how it was made) and the contents.
pub(super) fn open_envelope(bytes: &[u8], path: &Path, opener: Opener<'_>) -> Result<(Kek, Contents), KeyringError> {
    let corrupt = |reason: &str| KeyringError::Corrupt { path: path.into(), reason: reason.into() };
    if bytes.len() < HEADER_LEN + 16 + CHECKSUM_LEN || bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(corrupt("not a Holdfast keyring file"));
    }
    // Checksum first: a damaged version byte must read as corruption, not "upgrade holdfast".
    let (body, checksum) = bytes.split_at(bytes.len().saturating_sub(CHECKSUM_LEN));
    let header = body.first_chunk::<HEADER_LEN>().ok_or_else(|| corrupt("header"))?;
    if blake3::hash(body).as_bytes() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    let format = u16::from_be_bytes(field(header, 8));
    if format > KEYRING_FORMAT {
        return Err(KeyringError::NewerFormat { path: path.into(), found: format, supported: KEYRING_FORMAT });
    }
    if format == 0 {
        return Err(corrupt("format version 0"));
    }
    let wrapping = match field::<1>(header, 10) {
        [1] => Wrapping::Passphrase {
            params: KdfParams {
                memory_kib: u32::from_be_bytes(field(header, 11)),
                iterations: u32::from_be_bytes(field(header, 15)),
                parallelism: u32::from_be_bytes(field(header, 19)),
            },
            salt: field(header, 23),
        },
        [2] => Wrapping::RawKey,
        [other] => return Err(corrupt(&format!("unknown wrapping kind {other}"))),
    };
    if let Wrapping::Passphrase { params, .. } = wrapping {
        params.check_plausible().map_err(|reason| corrupt(&reason))?;
    }
    let kek = match (wrapping, opener) {
        (_, Opener::Kek(kek)) => kek.key.clone(),
        (Wrapping::Passphrase { params, salt }, Opener::Secret(StoreSecret::Passphrase(p))) => {
            derive_kek(p.as_bytes(), &salt, params)?
        }
        (Wrapping::RawKey, Opener::Secret(StoreSecret::RawKey(k))) => raw_kek(k),
        (Wrapping::Passphrase { .. }, Opener::Secret(StoreSecret::RawKey(_))) => {
            return Err(KeyringError::WrongSecret {
                hint: " (this store is locked with a passphrase: give HOLDFAST_PASSPHRASE or --passphrase-file, not HOLDFAST_KEY)",
            });
        }
        (Wrapping::RawKey, Opener::Secret(StoreSecret::Passphrase(_))) => {
            return Err(KeyringError::WrongSecret {
                hint: " (this store is locked with a raw key: give HOLDFAST_KEY, not a passphrase)",
            });
        }
    };
    let ct_len = usize::try_from(u32::from_be_bytes(field(header, 51))).unwrap_or(usize::MAX);
    let header_len = header_len(format);
    if header_len.checked_add(ct_len) != Some(body.len()) || ct_len < 16 {
        return Err(corrupt("length field does not match file size"));
    }
    // The whole header, clear identity included, is the associated data.
    let (aad, rest) = body.split_at_checked(header_len).ok_or_else(|| corrupt("header"))?;
    let (sealed, tag) = rest.split_at_checked(rest.len().saturating_sub(16)).ok_or_else(|| corrupt("tag"))?;
    let mut plaintext = Zeroizing::new(sealed.to_vec());
    let tag = Tag::try_from(tag).map_err(|_| corrupt("tag"))?;
    let nonce = Nonce::from(field::<12>(header, 39));
    let cipher = Aes256Gcm::new(kek.expose().into());
    cipher.decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag).map_err(|_| {
        KeyringError::WrongSecret {
            hint: if matches!(opener, Opener::Kek(_)) {
                " (the shared keyring was re-wrapped under a new passphrase by another process; restart with it)"
            } else {
                ""
            },
        }
    })?;
    let contents: Contents = codec::decode(&plaintext).map_err(|e| corrupt(&e.to_string()))?;
    if !contents.keys.iter().any(|k| k.id == contents.active && !k.retired) {
        return Err(corrupt("no active data key"));
    }
    if format >= 2 && aad.get(HEADER_LEN..) != Some(&identity_of(&contents.address_key)[..]) {
        return Err(corrupt("the identity in its header is not that of its keys"));
    }
    Ok((Kek { key: kek, wrapping }, contents))
}

fn derive_kek(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<SecretKey, KeyringError> {
    let out = argon2id(passphrase, salt, params).map_err(KeyringError::KdfParams)?;
    Ok(SecretKey::from_bytes(*out))
}

/// 32 bytes of Argon2id (v1.3) output; the keyring's KEK and the export bundle's keys.
pub(crate) fn argon2id(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let argon_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(KEY_LEN))
        .map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon.hash_password_into(passphrase, salt, out.as_mut()).map_err(|e| e.to_string())?;
    Ok(out)
}

fn raw_kek(key: &SecretKey) -> SecretKey {
    SecretKey::from_bytes(blake3::derive_key(RAW_KEY_CONTEXT, key.expose()))
}

/// `N` bytes of the header at `at`; every offset used is inside `HEADER_LEN`, so the zero
/// fallback is never taken (and would only fail authentication if it were).
fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    header.get(at..at + N).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
}
