//! Turns a request (endpoint, JSON body, answer-changing headers, query) into canonical form,
//! so that requests that must get the same answer share one stored entry.
//!
//! Canonical body: object keys sorted by their UTF-8 bytes (recursively), no insignificant
//! whitespace, strings escaped one way, and equal numbers written one way (`1`, `1.0` and `1e0`
//! all become `1`). Top-level fields that cannot change the answer are dropped; each is listed,
//! with its reason, in `IGNORED_FIELDS` and in `docs/cache-key.md`. Headers and query are
//! canonicalized in [`context`]; whether a request depends on provider-side state is decided in
//! [`stateful`].

pub mod canonical;
pub mod context;
pub mod stateful;

pub use context::{KEYED_HEADERS, KeyedHeader, canonical_headers, canonical_query};
pub use stateful::{Statefulness, statefulness};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use canonical::{CanonicalError, TopLevel, canonical_object, write_object, write_value};

/// Version of the rules below. It is hashed into every address, so changing the rules (a new
/// ignored field, another number format) can never make new requests alias old entries.
/// 2: answer-changing headers and the query string joined the key; `metadata` is ignored on
/// `/v1/chat/completions` only (it was ignored on every Anthropic endpoint before, and still is).
pub const NORMALIZATION_VERSION: u32 = 2;

/// Which API family an endpoint belongs to; the dropped fields differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn of_endpoint(endpoint: &str) -> Self {
        if endpoint.starts_with("/v1/messages") { Self::Anthropic } else { Self::OpenAi }
    }
}

/// Where an ignored field is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On every endpoint.
    All,
    /// On every endpoint of one dialect.
    Dialect(Dialect),
    /// On this one endpoint only.
    Endpoint(&'static str),
}

impl Scope {
    fn covers(self, endpoint: &str, dialect: Dialect) -> bool {
        match self {
            Self::All => true,
            Self::Dialect(d) => d == dialect,
            Self::Endpoint(e) => e == endpoint,
        }
    }
}

/// A top-level request field left out of the cache key, and why it cannot change the answer.
pub struct IgnoredField {
    /// Where the field is dropped; elsewhere it stays in the key.
    pub scope: Scope,
    /// The top-level member's name.
    pub name: &'static str,
    /// Why it cannot change the answer (copied into docs/cache-key.md).
    pub reason: &'static str,
}

/// Every field dropped before hashing.
pub const IGNORED_FIELDS: &[IgnoredField] = &[
    IgnoredField {
        scope: Scope::All,
        name: "stream",
        reason: "selects the transport form only; either form is served from the other",
    },
    IgnoredField {
        scope: Scope::Dialect(Dialect::OpenAi),
        name: "stream_options",
        reason: "shapes the stream's framing (a usage chunk), not the generated answer",
    },
    IgnoredField {
        scope: Scope::Dialect(Dialect::OpenAi),
        name: "user",
        reason: "end-user id for the provider's abuse monitoring; not an input to generation",
    },
    IgnoredField {
        scope: Scope::Dialect(Dialect::OpenAi),
        name: "safety_identifier",
        reason: "successor of `user` for abuse monitoring; not an input to generation",
    },
    IgnoredField {
        scope: Scope::Dialect(Dialect::OpenAi),
        name: "prompt_cache_key",
        reason: "routing hint for the provider's prompt cache; changes cost, not output",
    },
    IgnoredField {
        scope: Scope::Dialect(Dialect::Anthropic),
        name: "metadata",
        reason: "carries only `user_id` for abuse monitoring; not an input to generation",
    },
    IgnoredField {
        scope: Scope::Endpoint("/v1/chat/completions"),
        name: "metadata",
        reason: "tags a stored completion for the dashboard; not an input to generation and not in the answer",
    },
];

fn is_ignored(endpoint: &str, dialect: Dialect, key: &str) -> bool {
    IGNORED_FIELDS.iter().any(|f| f.name == key && f.scope.covers(endpoint, dialect))
}

/// A request reduced to what can change its answer: every input of its address except the
/// tenant. Stored inside every record (encrypted) so audits show exactly what was sent and an
/// import can re-address the entry. `Addresser::address` destructures it field by field, so a
/// field added here does not compile until someone decides how it is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedRequest {
    /// API path, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// Canonical JSON of the body, without the ignored fields.
    pub canonical: Bytes,
    /// The answer-changing headers ([`KEYED_HEADERS`]), canonical: `(name, item)` pairs with
    /// lower-case names and trimmed comma-separated items, sorted and deduplicated.
    pub headers: Vec<(String, String)>,
    /// The canonical query string (`&`-separated pairs, sorted); empty without one.
    pub query: String,
    /// The `NORMALIZATION_VERSION` this request was normalized under. Records from before
    /// version 2 decode as version 1 and keep their old address (see `address.rs`).
    pub version: u32,
}

impl NormalizedRequest {
    /// Adds the request's answer-changing headers and query (already canonical).
    pub fn with_context(mut self, headers: Vec<(String, String)>, query: String) -> Self {
        self.headers = headers;
        self.query = query;
        self
    }
}

/// How a `NormalizedRequest` is encoded inside records: still the version-1 pair
/// `(endpoint, canonical)`, so entries written before version 2 decode unchanged. From version
/// 2 on, the wire `endpoint` is the path, a `\n` (never part of a URI path), then the canonical
/// JSON `[version, headers, query]`. Old builds reading a new record see an odd endpoint, not a
/// decode error.
#[derive(Serialize, Deserialize)]
struct WireRequest {
    /// The path, plus (from version 2) `\n` and the canonical `[version, headers, query]`.
    endpoint: String,
    /// The canonical body, as in version 1.
    canonical: Bytes,
}

impl Serialize for NormalizedRequest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self { endpoint, canonical, headers, query, version } = self;
        let endpoint = if *version <= 1 {
            endpoint.clone()
        } else {
            let extra = serde_json::json!([version, headers, query]);
            format!("{endpoint}\n{}", String::from_utf8_lossy(&canonical_json(&extra)))
        };
        WireRequest { endpoint, canonical: canonical.clone() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NormalizedRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let WireRequest { endpoint, canonical } = WireRequest::deserialize(deserializer)?;
        let Some((path, extra)) = endpoint.split_once('\n') else {
            return Ok(Self { endpoint, canonical, headers: Vec::new(), query: String::new(), version: 1 });
        };
        let (version, headers, query): (u32, Vec<(String, String)>, String) =
            serde_json::from_str(extra).map_err(|e| D::Error::custom(format!("stored request context: {e}")))?;
        Ok(Self { endpoint: path.to_owned(), canonical, headers, query, version })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("request body must be a JSON object, found {0}")]
    NotAnObject(&'static str),
}

/// Normalizes a raw body, reading it once without building a `Value` (see [`canonical`]).
pub fn normalize(endpoint: &str, body: &[u8]) -> Result<NormalizedRequest, NormalizeError> {
    normalize_capturing(endpoint, body, &|_| false).map(|(request, _)| request)
}

/// As `normalize`, also returning the top-level members `capture` names, parsed (an object
/// with just those).
pub fn normalize_capturing(
    endpoint: &str,
    body: &[u8],
    capture: &dyn Fn(&str) -> bool,
) -> Result<(NormalizedRequest, Map<String, Value>), NormalizeError> {
    let dialect = Dialect::of_endpoint(endpoint);
    let top = TopLevel { keep: &|key| !is_ignored(endpoint, dialect, key), capture };
    let (canonical, captured) = canonical_object(body, &top).map_err(|e| match e {
        CanonicalError::Json(e) => NormalizeError::InvalidJson(e),
        CanonicalError::NotAnObject(kind) => NormalizeError::NotAnObject(kind),
    })?;
    let request = NormalizedRequest {
        endpoint: endpoint.to_owned(),
        canonical: Bytes::from(canonical),
        headers: Vec::new(),
        query: String::new(),
        version: NORMALIZATION_VERSION,
    };
    Ok((request, captured))
}

/// Normalizes a body the caller has already parsed (the proxy needs the parsed form anyway).
pub fn normalize_value(endpoint: &str, body: &Value) -> Result<NormalizedRequest, NormalizeError> {
    let Value::Object(fields) = body else {
        return Err(NormalizeError::NotAnObject(kind_name(body)));
    };
    let dialect = Dialect::of_endpoint(endpoint);
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, fields, |key| !is_ignored(endpoint, dialect, key));
    Ok(NormalizedRequest {
        endpoint: endpoint.to_owned(),
        canonical: Bytes::from(out),
        headers: Vec::new(),
        query: String::new(),
        version: NORMALIZATION_VERSION,
    })
}

/// Canonical JSON of any value, nothing dropped.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value);
    out
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> String {
        String::from_utf8(normalize("/v1/chat/completions", body.as_bytes()).unwrap().canonical.to_vec()).unwrap()
    }

    #[test]
    fn map_is_sorted() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":2,"é":3,"Z":4}"#).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "serde_json must be built without preserve_order");
    }

    #[test]
    fn key_order_whitespace_and_escapes_do_not_matter() {
        let a = canon(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9llo"}]}"#);
        let b = canon("{ \"messages\" : [ {\"content\":\"héllo\", \"role\":\"user\"} ],\n\"model\":\"gpt-4o\" }");
        assert_eq!(a, b);
        assert_eq!(a, r#"{"messages":[{"content":"héllo","role":"user"}],"model":"gpt-4o"}"#);
    }

    #[test]
    fn equal_numbers_are_written_one_way() {
        assert_eq!(canon(r#"{"t":1}"#), canon(r#"{"t":1.0}"#));
        assert_eq!(canon(r#"{"t":1}"#), canon(r#"{"t":1e0}"#));
        assert_eq!(canon(r#"{"t":0.5}"#), canon(r#"{"t":5e-1}"#));
        assert_eq!(canon(r#"{"t":-0.0}"#), canon(r#"{"t":0}"#));
        assert_ne!(canon(r#"{"t":0.7}"#), canon(r#"{"t":0.70001}"#));
        assert_eq!(canon(r#"{"t":0.7}"#), r#"{"t":0.7}"#);
    }

    /// serde_json's default float parser can be one ULP off; `float_roundtrip` must stay on.
    #[test]
    fn large_integral_floats_parse_exactly() {
        assert_eq!(canon(r#"{"b":-7867128232302745.0}"#), canon(r#"{"b":-7867128232302745}"#));
    }

    #[test]
    fn transport_and_tracking_fields_are_dropped_per_dialect() {
        assert_eq!(
            canon(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#),
            r#"{"model":"m"}"#
        );
        let anthropic =
            normalize("/v1/messages", br#"{"model":"m","stream":true,"metadata":{"user_id":"x"}}"#).unwrap();
        assert_eq!(&anthropic.canonical[..], br#"{"model":"m"}"#);
        // `metadata` tags a stored chat completion only, but a Responses object echoes it, so it
        // stays in the key there; nested fields named like ignored ones are content and stay.
        assert_eq!(canon(r#"{"metadata":{"a":"b"}}"#), "{}");
        let responses = normalize("/v1/responses", br#"{"metadata":{"a":"b"}}"#).unwrap();
        assert_eq!(&responses.canonical[..], br#"{"metadata":{"a":"b"}}"#);
        assert_eq!(canon(r#"{"x":{"stream":true}}"#), r#"{"x":{"stream":true}}"#);
    }

    #[test]
    fn stored_requests_of_both_versions_decode() {
        let v2 = normalize("/v1/messages", br#"{"model":"m"}"#)
            .unwrap()
            .with_context(vec![("anthropic-beta".into(), "x".into())], "beta=true".into());
        let decoded: NormalizedRequest =
            crate::store::codec::decode(&crate::store::codec::encode(&v2).unwrap()).unwrap();
        assert_eq!(decoded, v2);
        // A version-1 record is exactly the old pair.
        let old = WireRequest { endpoint: "/v1/messages".into(), canonical: Bytes::from_static(b"{}") };
        let decoded: NormalizedRequest =
            crate::store::codec::decode(&crate::store::codec::encode(&old).unwrap()).unwrap();
        assert_eq!((decoded.version, decoded.headers.len(), decoded.query.as_str()), (1, 0, ""));
        assert_eq!(decoded.endpoint, "/v1/messages");
    }

    #[test]
    fn non_objects_and_bad_json_are_rejected() {
        assert!(matches!(normalize("/v1/chat/completions", b"[1]"), Err(NormalizeError::NotAnObject("an array"))));
        assert!(matches!(normalize("/v1/chat/completions", b"{\"a\":"), Err(NormalizeError::InvalidJson(_))));
    }
}
