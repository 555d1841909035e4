//! Content addresses: a keyed BLAKE3 hash of a normalized request within a namespace.
//!
//! The hash is keyed with the store's address key (kept only in the encrypted keyring), so a
//! copy of the database does not let anyone confirm a guessed prompt by hashing it.

use std::fmt;
use std::str::FromStr;

use crate::normalize::{NORMALIZATION_VERSION, NormalizedRequest};
use crate::secret::SecretKey;

pub const ADDRESS_LEN: usize = 32;

/// Identifies one stored entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; ADDRESS_LEN]);

impl Address {
    pub fn as_bytes(&self) -> &[u8; ADDRESS_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(ADDRESS_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xF)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_hex())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an address: expected 64 hexadecimal characters")]
pub struct ParseAddressError(pub String);

impl FromStr for Address {
    type Err = ParseAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseAddressError(s.chars().take(80).collect());
        let s = s.trim();
        if s.len() != ADDRESS_LEN * 2 {
            return Err(bad());
        }
        let mut out = [0u8; ADDRESS_LEN];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Self(out))
    }
}

/// The tenant an entry belongs to. Entries in different namespaces never share an address.
#[derive(Clone, PartialEq, Eq)]
pub struct Namespace(NamespaceKind);

#[derive(Clone, PartialEq, Eq)]
enum NamespaceKind {
    Shared,
    Credential([u8; 32]),
}

impl Namespace {
    /// One namespace for every client (`cache.scope = "shared"`).
    pub fn shared() -> Self {
        Self(NamespaceKind::Shared)
    }

    /// A credential namespace's 32-byte hash (kept inside records so a store can be
    /// re-addressed); `None` for the shared namespace.
    pub fn hash(&self) -> Option<[u8; 32]> {
        match &self.0 {
            NamespaceKind::Shared => None,
            NamespaceKind::Credential(h) => Some(*h),
        }
    }

    /// The namespace a stored hash stands for.
    pub fn from_hash(hash: Option<[u8; 32]>) -> Self {
        Self(hash.map_or(NamespaceKind::Shared, NamespaceKind::Credential))
    }

    /// Bytes hashed into the address. The shared namespace is empty and a credential namespace
    /// is 32 bytes; the length fields in `Addresser::address` keeps the two apart.
    fn framing_bytes(&self) -> &[u8] {
        match &self.0 {
            NamespaceKind::Shared => &[],
            NamespaceKind::Credential(h) => h,
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            NamespaceKind::Shared => f.write_str("Namespace(shared)"),
            // A keyed hash reveals nothing, but the first bytes suffice to tell tenants apart.
            NamespaceKind::Credential(h) => write!(f, "Namespace({:02x}{:02x}{:02x}{:02x}…)", h[0], h[1], h[2], h[3]),
        }
    }
}

/// Computes addresses and namespaces with a store's address key.
#[derive(Clone)]
pub struct Addresser {
    address_key: SecretKey,
    /// Keys credential hashes into namespaces (its own key, see `keyring::Contents`).
    namespace_key: SecretKey,
}

impl fmt::Debug for Addresser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Addresser(*****)")
    }
}

const ADDRESS_DOMAIN: &[u8] = b"holdfast.address";

impl Addresser {
    pub fn new(address_key: SecretKey, namespace_key: SecretKey) -> Self {
        Self { address_key, namespace_key }
    }

    /// The namespace of a client credential (an `Authorization` or `x-api-key` value). Only this
    /// keyed hash is ever kept; the credential itself is not.
    pub fn namespace_for_credential(&self, credential: &[u8]) -> Namespace {
        Namespace(NamespaceKind::Credential(*blake3::keyed_hash(self.namespace_key.expose(), credential).as_bytes()))
    }

    /// `BLAKE3-keyed(body ‖ endpoint ‖ namespace ‖ trailer)`, where the fixed-size trailer is
    /// `len(body) ‖ len(endpoint) ‖ len(namespace)` (u64 big-endian each), the normalization
    /// version (u32 big-endian) and the domain tag. Read from the end, the trailer splits the
    /// input unambiguously. The body goes first so it starts on a BLAKE3 chunk boundary, which
    /// lets large bodies take BLAKE3's parallel (SIMD) path.
    pub fn address(&self, namespace: &Namespace, request: &NormalizedRequest) -> Address {
        let parts = [&request.canonical[..], request.endpoint.as_bytes(), namespace.framing_bytes()];
        let mut hasher = blake3::Hasher::new_keyed(self.address_key.expose());
        let mut trailer = [0u8; 3 * 8 + 4 + ADDRESS_DOMAIN.len()];
        for (i, part) in parts.iter().enumerate() {
            hasher.update(part);
            trailer[i * 8..i * 8 + 8].copy_from_slice(&(part.len() as u64).to_be_bytes());
        }
        trailer[24..28].copy_from_slice(&NORMALIZATION_VERSION.to_be_bytes());
        trailer[28..].copy_from_slice(ADDRESS_DOMAIN);
        hasher.update(&trailer);
        Address(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn addresser() -> Addresser {
        Addresser::new(SecretKey::from_bytes([9; 32]), SecretKey::from_bytes([10; 32]))
    }

    #[test]
    fn hex_round_trip_and_bad_input() {
        let a = Address([0xA5; 32]);
        assert_eq!(a.to_hex().parse::<Address>().unwrap(), a);
        assert!("zz".parse::<Address>().is_err());
        assert!("g".repeat(64).parse::<Address>().is_err());
    }

    #[test]
    fn namespace_endpoint_and_key_all_separate_addresses() {
        let ad = addresser();
        let req = normalize("/v1/chat/completions", br#"{"model":"m"}"#).unwrap();
        let shared = ad.address(&Namespace::shared(), &req);
        let alice = ad.address(&ad.namespace_for_credential(b"Bearer sk-alice"), &req);
        let bob = ad.address(&ad.namespace_for_credential(b"Bearer sk-bob"), &req);
        assert!(shared != alice && alice != bob && shared != bob);
        let other_endpoint = normalize("/v1/completions", br#"{"model":"m"}"#).unwrap();
        assert_ne!(ad.address(&Namespace::shared(), &other_endpoint), shared);
        let other_key = Addresser::new(SecretKey::from_bytes([8; 32]), SecretKey::from_bytes([10; 32]));
        assert_ne!(other_key.address(&Namespace::shared(), &req), shared);
    }

    #[test]
    fn framing_is_unambiguous_between_endpoint_and_body() {
        let ad = addresser();
        let a = NormalizedRequest { endpoint: "/v1/ab".into(), canonical: bytes::Bytes::from_static(b"{}") };
        let b = NormalizedRequest { endpoint: "/v1/a".into(), canonical: bytes::Bytes::from_static(b"b{}") };
        assert_ne!(ad.address(&Namespace::shared(), &a), ad.address(&Namespace::shared(), &b));
    }
}
