//! The record envelope: AES-256-GCM with a fresh random 96-bit nonce per seal.
//!
//! ```text
//! offset  size  field
//! 0       1     envelope version (1)
//! 1       4     data key id, big-endian
//! 5       12    nonce
//! 17      n     ciphertext
//! 17+n    16    GCM tag
//! ```
//! The associated data is the 17-byte header followed by the record's 32-byte address, so an
//! edited header or a value moved to another address fails to open.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};

use crate::cache_key::address::{ADDRESS_LEN, Address};
use crate::secret::{SecretKey, fill_random};

pub const ENVELOPE_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// A data key ready to use: the AES key schedule and GHASH key are computed once, at unlock,
/// never per request.
pub struct DataKey {
    /// The key's number in the keyring, written into every envelope it seals.
    pub id: u32,
    /// The expanded AES-256-GCM key.
    cipher: Aes256Gcm,
}

impl DataKey {
    pub fn new(id: u32, key: &SecretKey) -> Self {
        let cipher = Aes256Gcm::new(key.expose().into());
        Self { id, cipher }
    }
}

/// Why an envelope did not open. Deliberately coarse: the caller reports the address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("value is {0} bytes, shorter than an envelope's header and tag")]
    Truncated(usize),
    #[error("envelope version {0} is not one this build reads")]
    UnknownVersion(u8),
    #[error("sealed under key {0}, which is not in the keyring")]
    UnknownKey(u32),
    #[error("authentication failed: the value was altered, moved, or sealed under another key")]
    Inauthentic,
}

fn associated_data(header: &[u8; HEADER_LEN], address: &Address) -> [u8; HEADER_LEN + ADDRESS_LEN] {
    let mut aad = [0u8; HEADER_LEN + ADDRESS_LEN];
    let (head, rest) = aad.split_at_mut(HEADER_LEN);
    head.copy_from_slice(header);
    rest.copy_from_slice(address.as_bytes());
    aad
}

/// Seals `plaintext` for `address`, returning the full envelope.
pub fn seal(key: &DataKey, address: &Address, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&key.id.to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    out.extend_from_slice(&nonce);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&out);
    out.extend_from_slice(plaintext);
    let aad = associated_data(&header, address);
    let body = out.get_mut(HEADER_LEN..).unwrap_or_default();
    #[allow(clippy::expect_used, reason = "GCM only refuses plaintexts over 64 GiB; answers are capped far below")]
    let tag = key.cipher.encrypt_inout_detached(&Nonce::from(nonce), &aad, body.into()).expect("within AES-GCM limits");
    out.extend_from_slice(&tag);
    out
}

/// The envelope's header, or why it has none.
fn header_of(envelope: &[u8]) -> Result<&[u8; HEADER_LEN], EnvelopeError> {
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Err(EnvelopeError::Truncated(envelope.len()));
    }
    envelope.first_chunk::<HEADER_LEN>().ok_or(EnvelopeError::Truncated(envelope.len()))
}

/// Key id and version of an envelope, read without decrypting.
pub fn envelope_key_id(envelope: &[u8]) -> Result<u32, EnvelopeError> {
    let &[version, a, b, c, d, ..] = header_of(envelope)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    Ok(u32::from_be_bytes([a, b, c, d]))
}

/// Opens an envelope in place: on success `envelope` holds the plaintext.
pub fn open_in_place(key: &DataKey, address: &Address, envelope: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let id = envelope_key_id(envelope)?;
    if id != key.id {
        return Err(EnvelopeError::UnknownKey(id));
    }
    let truncated = EnvelopeError::Truncated(envelope.len());
    let header = *header_of(envelope)?;
    let tag_at = envelope.len().checked_sub(TAG_LEN).ok_or(truncated.clone())?;
    let (sealed, tag) = envelope.split_at_mut(tag_at);
    let tag = Tag::try_from(&*tag).map_err(|_| truncated.clone())?;
    let body = sealed.get_mut(HEADER_LEN..).ok_or(truncated)?;
    let nonce = Nonce::try_from(header.get(5..).unwrap_or_default()).map_err(|_| EnvelopeError::Inauthentic)?;
    let aad = associated_data(&header, address);
    key.cipher.decrypt_inout_detached(&nonce, &aad, body.into(), &tag).map_err(|_| EnvelopeError::Inauthentic)?;
    envelope.truncate(tag_at);
    envelope.drain(..HEADER_LEN);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> DataKey {
        DataKey::new(id, &SecretKey::from_bytes([id as u8; 32]))
    }

    #[test]
    fn round_trip_and_fresh_nonce_each_time() {
        let k = key(3);
        let addr = Address([1; 32]);
        let a = seal(&k, &addr, b"hello");
        let b = seal(&k, &addr, b"hello");
        assert_ne!(a, b, "two seals of one plaintext must differ (fresh nonce)");
        assert_eq!(envelope_key_id(&a).unwrap(), 3);
        let mut opened = a.clone();
        open_in_place(&k, &addr, &mut opened).unwrap();
        assert_eq!(opened, b"hello");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let k = key(1);
        let addr = Address([2; 32]);
        let sealed = seal(&k, &addr, b"some answer worth protecting");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open_in_place(&k, &addr, &mut bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn moved_value_and_wrong_key_are_detected() {
        let k = key(1);
        let sealed = seal(&k, &Address([2; 32]), b"x");
        let mut moved = sealed.clone();
        assert_eq!(open_in_place(&k, &Address([3; 32]), &mut moved), Err(EnvelopeError::Inauthentic));
        let other = DataKey::new(1, &SecretKey::from_bytes([42; 32]));
        let mut again = sealed.clone();
        assert_eq!(open_in_place(&other, &Address([2; 32]), &mut again), Err(EnvelopeError::Inauthentic));
        assert_eq!(open_in_place(&key(2), &Address([2; 32]), &mut sealed.clone()), Err(EnvelopeError::UnknownKey(1)));
        assert_eq!(envelope_key_id(&sealed[..10]), Err(EnvelopeError::Truncated(10)));
    }
}
