//! The parts of a request outside its body that can change the answer: a fixed list of
//! headers and the query string, each reduced to one canonical form.
//!
//! The rule is the body's: a header is in the key when the provider acts on it. Holdfast
//! forwards exactly these headers upstream (`src/upstream.rs` reads this list), so no header
//! that reaches a provider is outside the key. Every other header stays in Holdfast.

use axum::http::HeaderMap;

use super::Dialect;

/// A request header that can change the provider's answer, so it is part of the key.
pub struct KeyedHeader {
    /// Lower-case header name.
    pub name: &'static str,
    /// The dialect whose providers receive it (a failover target of the other dialect does
    /// not); in the key whichever endpoint it arrives on.
    pub dialect: Dialect,
    /// Why it changes the answer (copied into docs/cache-key.md).
    pub reason: &'static str,
}

/// The answer-changing headers, in the key and forwarded upstream.
pub const KEYED_HEADERS: &[KeyedHeader] = &[
    KeyedHeader {
        name: "anthropic-beta",
        dialect: Dialect::Anthropic,
        reason: "turns on beta behaviour: interleaved thinking, longer output, 1M context, new tools",
    },
    KeyedHeader {
        name: "anthropic-version",
        dialect: Dialect::Anthropic,
        reason: "the API version decides which fields are accepted and how answers are shaped",
    },
    KeyedHeader {
        name: "openai-beta",
        dialect: Dialect::OpenAi,
        reason: "opts into beta API behaviour (e.g. assistants=v2)",
    },
    KeyedHeader {
        name: "openai-organization",
        dialect: Dialect::OpenAi,
        reason: "picks the organization: its fine-tuned models, policies and stored objects",
    },
    KeyedHeader {
        name: "openai-project",
        dialect: Dialect::OpenAi,
        reason: "picks the project: its models, limits, retention and stored objects",
    },
];

/// The keyed headers of `headers` in canonical form: names lower-case (as `HeaderMap` keeps
/// them), every occurrence's value split at commas, each item trimmed, empty items dropped,
/// then the `(name, item)` pairs sorted and deduplicated. So order, case of the name, spacing
/// and repetition do not matter, and any change of an item does.
pub fn canonical_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for keyed in KEYED_HEADERS {
        for value in headers.get_all(keyed.name) {
            let text = escape(value.as_bytes());
            for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                out.push((keyed.name.to_owned(), item.to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Header bytes as text, one-to-one: visible ASCII and spaces as they are, `%` and every other
/// byte as `%XX`. (A lossy UTF-8 conversion could make two different values one key.)
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b == b' ' || b == b'\t' || b.is_ascii_graphic()) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query parameters some gateways accept credentials in. Their values are kept only as a
/// BLAKE3 hash, so a key sent this way never reaches a stored record or an audit in clear.
const CREDENTIAL_PARAMS: &[&str] = &["key", "api_key", "api-key", "apikey", "x-api-key", "access_token", "token"];

/// The query string in canonical form: its `&`-separated pairs with empty ones dropped,
/// sorted, joined with `&`. Pairs are compared as sent, not percent-decoded: two spellings of
/// one value get two keys (a lower hit rate), never one key for two values. A credential
/// parameter's value is replaced by its hash (`CREDENTIAL_PARAMS`).
pub fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if CREDENTIAL_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=blake3:{}", blake3::hash(value.as_bytes()).to_hex())
            }
            _ => pair.to_owned(),
        })
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_order_spacing_and_repetition_do_not_matter() {
        let a = canonical_headers(&map(&[("anthropic-beta", "b, a"), ("anthropic-version", "2023-06-01")]));
        let b = canonical_headers(&map(&[
            ("anthropic-version", " 2023-06-01 "),
            ("anthropic-beta", "a"),
            ("anthropic-beta", "b,,a"),
        ]));
        assert_eq!(a, b);
        assert_eq!(a[0], ("anthropic-beta".to_owned(), "a".to_owned()));
        assert_ne!(a, canonical_headers(&map(&[("anthropic-beta", "a, c"), ("anthropic-version", "2023-06-01")])));
    }

    #[test]
    fn other_headers_are_not_keyed_and_odd_bytes_stay_distinct() {
        assert!(canonical_headers(&map(&[("user-agent", "x"), ("authorization", "Bearer k")])).is_empty());
        let mut h = HeaderMap::new();
        h.insert("openai-project", HeaderValue::from_bytes(b"p\xff").unwrap());
        let odd = canonical_headers(&h);
        assert_eq!(odd[0].1, "p%FF");
        assert_ne!(odd, canonical_headers(&map(&[("openai-project", "p%FF")])));
    }

    #[test]
    fn query_pairs_are_sorted_and_empty_ones_dropped() {
        assert_eq!(canonical_query(Some("b=2&&a=1")), "a=1&b=2");
        assert_eq!(canonical_query(None), "");
        assert_ne!(canonical_query(Some("beta=true")), canonical_query(Some("beta=false")));
        let hidden = canonical_query(Some("api-key=sk-secret&v=1"));
        assert!(!hidden.contains("sk-secret") && hidden.starts_with("api-key=blake3:"), "{hidden}");
        assert_ne!(hidden, canonical_query(Some("api-key=sk-other&v=1")));
    }
}
