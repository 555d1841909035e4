//! Content addresses: a keyed BLAKE3 hash of a normalized request within a namespace.
//!
//! The hash is keyed with the store's address key (kept only in the encrypted keyring), so a
//! copy of the database does not let anyone confirm a guessed prompt by hashing it.

use std::fmt;
use std::str::FromStr;

use crate::cache_key::normalize::NormalizedRequest;
use crate::secret::SecretKey;

pub const ADDRESS_LEN: usize = 32;

/// Identifies one stored entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; ADDRESS_LEN]);

impl Address {
    pub fn as_bytes(&self) -> &[u8; ADDRESS_LEN] {
        &self.0
    }

    /// Every answer carries its address in `x-holdfast-key`: a table lookup per nibble, since
    /// `write!("{b:02x}")` per byte was 2% of a 1 KiB hit's CPU (perf).
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(ADDRESS_LEN * 2);
        // A nibble is below 16, so `get` always finds its digit.
        let digit = |n: u8| char::from(DIGITS.get(usize::from(n)).copied().unwrap_or(b'0'));
        for b in self.0 {
            s.push(digit(b >> 4));
            s.push(digit(b & 0x0f));
        }
        s
    }
}

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
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let &[hi, lo] = pair else { return Err(bad()) };
            let digit = |c: u8| char::from(c).to_digit(16).ok_or_else(bad);
            // Two hex digits make at most 255.
            *byte = u8::try_from(digit(hi)? * 16 + digit(lo)?).map_err(|_| bad())?;
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
    /// Keys every address, so addresses say nothing of the request without the store's key.
    address_key: SecretKey,
    /// Keys credential hashes into namespaces (its own key, see `keyring::file::Contents`).
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

    /// `BLAKE3-keyed(body ‖ endpoint ‖ namespace ‖ headers ‖ query ‖ trailer)`, where the
    /// fixed-size trailer is the five lengths (u64 big-endian each), the normalization version
    /// (u32 big-endian) and the domain tag. Read from the end, the trailer splits the input
    /// unambiguously; inside `headers` each name and item carries its own u32 length. The body
    /// goes first so it starts on a BLAKE3 chunk boundary, which lets large bodies take
    /// BLAKE3's parallel (SIMD) path.
    ///
    /// Every input is named below, field by field: a field added to `NormalizedRequest` does not
    /// compile until it is given a place here (or a reason to stay out in docs/cache-key.md).
    /// A request normalized under version 1 (a record from before headers joined the key) keeps
    /// its version-1 address, so an import never gives it a key it was not stored under.
    pub fn address(&self, namespace: &Namespace, request: &NormalizedRequest) -> Address {
        let NormalizedRequest { endpoint, canonical, headers, query, version } = request;
        let namespace = namespace.framing_bytes();
        let mut hasher = blake3::Hasher::new_keyed(self.address_key.expose());
        if *version <= 1 {
            let parts = [&canonical[..], endpoint.as_bytes(), namespace];
            let mut trailer = Vec::with_capacity(3 * 8 + 4 + ADDRESS_DOMAIN.len());
            for part in parts {
                hasher.update(part);
                trailer.extend_from_slice(&(part.len() as u64).to_be_bytes());
            }
            trailer.extend_from_slice(&1u32.to_be_bytes());
            trailer.extend_from_slice(ADDRESS_DOMAIN);
            hasher.update(&trailer);
            return Address(*hasher.finalize().as_bytes());
        }
        let mut header_bytes = Vec::with_capacity(headers.len() * 32);
        for (name, item) in headers {
            for text in [name, item] {
                header_bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
                header_bytes.extend_from_slice(text.as_bytes());
            }
        }
        let parts = [&canonical[..], endpoint.as_bytes(), namespace, &header_bytes, query.as_bytes()];
        let mut trailer = Vec::with_capacity(parts.len() * 8 + 4 + ADDRESS_DOMAIN.len());
        for part in parts {
            hasher.update(part);
            trailer.extend_from_slice(&(part.len() as u64).to_be_bytes());
        }
        trailer.extend_from_slice(&version.to_be_bytes());
        trailer.extend_from_slice(ADDRESS_DOMAIN);
        hasher.update(&trailer);
        Address(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_key::normalize::normalize;

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

    fn request(endpoint: &str, body: &'static [u8]) -> NormalizedRequest {
        NormalizedRequest {
            endpoint: endpoint.into(),
            canonical: bytes::Bytes::from_static(body),
            headers: Vec::new(),
            query: String::new(),
            version: crate::cache_key::normalize::NORMALIZATION_VERSION,
        }
    }

    #[test]
    fn framing_is_unambiguous_between_every_part() {
        let ad = addresser();
        let at = |r: &NormalizedRequest| ad.address(&Namespace::shared(), r);
        assert_ne!(at(&request("/v1/ab", b"{}")), at(&request("/v1/a", b"b{}")));
        let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        let with = |headers, query: &str| request("/v1/a", b"{}").with_context(headers, query.into());
        assert_ne!(at(&with(h(&[("ab", "c")]), "")), at(&with(h(&[("a", "bc")]), "")));
        assert_ne!(at(&with(h(&[("a", "b")]), "")), at(&with(Vec::new(), "ab")));
        assert_ne!(at(&with(h(&[("a", "b"), ("c", "d")]), "")), at(&with(h(&[("a", "bc"), ("", "d")]), "")));
        assert_eq!(at(&with(Vec::new(), "")), at(&request("/v1/a", b"{}")));
    }

    /// Entries stored before headers joined the key keep the address they were stored under.
    #[test]
    fn version_one_requests_keep_their_old_address() {
        let ad = addresser();
        let mut old = request("/v1/chat/completions", br#"{"model":"m"}"#);
        old.version = 1;
        let mut hasher = blake3::Hasher::new_keyed(&[9; 32]);
        hasher.update(br#"{"model":"m"}"#);
        hasher.update(b"/v1/chat/completions");
        let mut trailer = Vec::new();
        for len in [13u64, 20, 0] {
            trailer.extend_from_slice(&len.to_be_bytes());
        }
        trailer.extend_from_slice(&1u32.to_be_bytes());
        trailer.extend_from_slice(b"holdfast.address");
        hasher.update(&trailer);
        assert_eq!(ad.address(&Namespace::shared(), &old).0, *hasher.finalize().as_bytes());
        assert_ne!(
            ad.address(&Namespace::shared(), &old),
            ad.address(&Namespace::shared(), &request("/v1/chat/completions", br#"{"model":"m"}"#))
        );
    }
}
