//! The client's credential, by one rule used for tenancy, forwarding and client authentication.
//!
//! SDKs send their key as `x-api-key: K` (Anthropic's raw API, older SDKs) or
//! `Authorization: Bearer K` (OpenAI's, and the current Anthropic SDK). The credential is the
//! first non-empty, well-formed one of the two; the scheme is matched without regard to case
//! (RFC 7235), values are trimmed. An empty or malformed header is no credential at all, so it
//! can never stand in for a real one (an empty `x-api-key` beside a real `Authorization` used
//! to file the answer under the anonymous tenant). Two different credentials in one request are
//! refused: which one the provider would act on is not ours to guess.

use axum::http::{HeaderMap, HeaderValue};

/// Why a request's credentials cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the request carries two different credentials (x-api-key and Authorization); send one")]
    Conflicting,
}

/// The client's credential, or `None` when it sent none that is well formed.
pub fn client_credential(headers: &HeaderMap) -> Result<Option<&str>, CredentialError> {
    let api_key = headers.get("x-api-key").and_then(well_formed);
    let bearer = headers.get("authorization").and_then(well_formed).and_then(bearer_token);
    match (api_key, bearer) {
        (Some(a), Some(b)) if a != b => Err(CredentialError::Conflicting),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// The bytes the tenant namespace is derived from: the same for `Authorization: Bearer K` and
/// `x-api-key: K`, so one key is one tenant whichever header its SDK uses. Empty when the
/// client sent no credential (all such clients share one anonymous namespace). Requests with
/// conflicting credentials are refused before they are addressed; here they read as none.
pub fn credential_for_namespace(headers: &HeaderMap) -> &[u8] {
    client_credential(headers).ok().flatten().map(str::as_bytes).unwrap_or_default()
}

/// A header value as trimmed, non-empty visible ASCII; anything else is not a credential.
fn well_formed(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')).then_some(text)
}

/// The token of `Bearer <token>`, scheme in any case; other schemes carry no API key.
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// Client keys Holdfast accepts (`[clients] keys_env`), compared in constant time. With a list
/// configured, a request must present one of them; the provider is then asked with its own
/// `api_key_env` key, never with the client's.
#[derive(Default)]
pub struct ClientKeys {
    /// BLAKE3 hashes of the accepted keys: comparing hashes keeps the comparison
    /// constant-time and keeps the keys themselves out of memory after start-up.
    hashes: Vec<blake3::Hash>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKeys({} keys)", self.hashes.len())
    }
}

impl ClientKeys {
    /// Keys from a comma- or whitespace-separated list; blank items are ignored.
    pub fn parse(list: &str) -> Self {
        let hashes = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(|k| blake3::hash(k.as_bytes()))
            .collect();
        Self { hashes }
    }

    /// Whether client authentication is on.
    pub fn enabled(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Whether `presented` is one of the accepted keys. Every key is compared, so the time
    /// taken says nothing about which one (if any) matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = blake3::hash(presented.as_bytes());
        self.hashes.iter().fold(false, |found, h| found | (*h == presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    #[test]
    fn an_empty_api_key_never_overrides_a_real_authorization() {
        let h = headers(&[("x-api-key", b""), ("authorization", b"Bearer sk-K")]);
        assert_eq!(client_credential(&h), Ok(Some("sk-K")));
        let h = headers(&[("x-api-key", b"   "), ("authorization", b"Bearer sk-K")]);
        assert_eq!(client_credential(&h), Ok(Some("sk-K")));
        let h = headers(&[("x-api-key", "sk-\u{e9}".as_bytes()), ("authorization", b"Bearer sk-K")]);
        assert_eq!(client_credential(&h), Ok(Some("sk-K")), "non-ASCII is malformed, not a credential");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_values_are_trimmed() {
        for auth in [&b"Bearer K"[..], b"BEARER K", b"bearer   K ", b"  bEaReR K"] {
            assert_eq!(client_credential(&headers(&[("authorization", auth)])), Ok(Some("K")), "{auth:?}");
        }
        assert_eq!(client_credential(&headers(&[("x-api-key", b" K ")])), Ok(Some("K")));
        assert_eq!(
            credential_for_namespace(&headers(&[("authorization", b"BEARER K")])),
            credential_for_namespace(&headers(&[("x-api-key", b"K")])),
        );
    }

    #[test]
    fn malformed_or_empty_credentials_are_none() {
        for auth in [&b""[..], b"Bearer", b"Bearer ", b"Basic dXNlcjpwYXNz", b"K", b"Bearer a b"] {
            assert_eq!(client_credential(&headers(&[("authorization", auth)])), Ok(None), "{auth:?}");
        }
        assert_eq!(client_credential(&HeaderMap::new()), Ok(None));
        assert_eq!(credential_for_namespace(&headers(&[("x-api-key", b"")])), b"");
    }

    #[test]
    fn two_different_credentials_are_refused_and_two_equal_ones_are_one() {
        let h = headers(&[("x-api-key", b"sk-A"), ("authorization", b"Bearer sk-B")]);
        assert_eq!(client_credential(&h), Err(CredentialError::Conflicting));
        let h = headers(&[("x-api-key", b"sk-A"), ("authorization", b"bearer sk-A")]);
        assert_eq!(client_credential(&h), Ok(Some("sk-A")));
    }

    #[test]
    fn client_keys_accept_only_listed_keys() {
        let keys = ClientKeys::parse("ck-one, ck-two\nck-three,,");
        assert!(keys.accepts("ck-one") && keys.accepts("ck-two") && keys.accepts("ck-three"));
        assert!(!keys.accepts("ck-four") && !keys.accepts("") && !keys.accepts("ck-one "));
        assert!(!ClientKeys::parse(" , ").enabled());
        assert!(!format!("{keys:?}").contains("ck-one"));
    }
}
