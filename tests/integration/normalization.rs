//! Property tests: requests that must share an answer share an address; requests that may
//! differ never do.

use std::collections::BTreeMap;

use holdfast::cache_key::address::{Addresser, Namespace};
use holdfast::cache_key::normalize::normalize;
use holdfast::secret::SecretKey;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn addresser() -> Addresser {
    Addresser::new(SecretKey::from_bytes([0x42; 32]), SecretKey::from_bytes([0x43; 32]))
}

fn address_of(endpoint: &str, body: &str) -> holdfast::cache_key::address::Address {
    addresser().address(&Namespace::shared(), &normalize(endpoint, body.as_bytes()).unwrap())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9 é\"\\\\\n\u{1F600}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request-shaped object: arbitrary fields plus the ones every chat request has.
fn request_body() -> impl Strategy<Value = Map<String, Value>> {
    (prop::collection::btree_map("[a-z_]{1,10}", json_value(), 0..6), "[a-z0-9-]{1,12}", json_value()).prop_map(
        |(extra, model, content)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for ignored in ["stream", "stream_options", "user", "safety_identifier", "prompt_cache_key", "metadata"] {
                m.remove(ignored);
            }
            m.insert("model".into(), Value::String(model));
            m.insert("messages".into(), serde_json::json!([{"role": "user", "content": content}]));
            m
        },
    )
}

/// Writes `v` as JSON with object keys in an order driven by `seed` and arbitrary spacing,
/// and numbers in alternative spellings where that keeps their value.
fn scramble(v: &Value, seed: u64, out: &mut String) {
    let space = |out: &mut String, s: u64| {
        out.push_str(match s % 4 {
            0 => "",
            1 => " ",
            2 => "\n  ",
            _ => "\t",
        })
    };
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| blake3::hash(format!("{seed}{k}").as_bytes()).as_bytes()[0]);
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(out, seed >> i);
                out.push_str(&serde_json::to_string(k).unwrap());
                space(out, seed >> (i + 1));
                out.push(':');
                scramble(&m[*k], seed.rotate_left(7) ^ i as u64, out);
            }
            space(out, seed >> 3);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(out, seed >> i);
                scramble(item, seed.rotate_left(3) ^ i as u64, out);
            }
            out.push(']');
        }
        // Only integers a float holds exactly may be respelled as floats without changing value.
        Value::Number(n) if exact_in_f64(n) && seed.is_multiple_of(3) => {
            out.push_str(&format!("{}.0", n.as_i64().unwrap()))
        }
        Value::Number(n) if exact_in_f64(n) && seed % 3 == 1 => out.push_str(&format!("{}e0", n.as_i64().unwrap())),
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_request_in_any_spelling_has_one_address(body in request_body(), seed in any::<u64>(), stream in any::<bool>()) {
        let canonical = Value::Object(body.clone()).to_string();
        let mut with_transport = body;
        with_transport.insert("stream".into(), Value::Bool(stream));
        with_transport.insert("user".into(), Value::String(format!("end-user-{seed}")));
        let mut scrambled = String::new();
        scramble(&Value::Object(with_transport), seed, &mut scrambled);
        prop_assert_eq!(address_of("/v1/chat/completions", &canonical), address_of("/v1/chat/completions", &scrambled));
    }

    #[test]
    fn any_change_to_a_kept_field_changes_the_address(body in request_body(), field in "[a-z_]{1,10}", value in json_value()) {
        prop_assume!(
            !["stream", "stream_options", "user", "safety_identifier", "prompt_cache_key", "metadata"].contains(&field.as_str())
        );
        let mut changed = body.clone();
        let old = changed.insert(field.clone(), value.clone());
        prop_assume!(old.as_ref().map(canonical_of) != Some(canonical_of(&value)));
        prop_assert_ne!(
            address_of("/v1/chat/completions", &Value::Object(body).to_string()),
            address_of("/v1/chat/completions", &Value::Object(changed).to_string())
        );
    }
}

/// Keyed header names with random items: each header as a list of items.
fn header_set() -> impl Strategy<Value = Vec<(&'static str, Vec<String>)>> {
    let names: Vec<&'static str> = holdfast::cache_key::normalize::KEYED_HEADERS.iter().map(|h| h.name).collect();
    prop::collection::vec((prop::sample::select(names), prop::collection::vec("[a-zA-Z0-9._=-]{1,12}", 1..4)), 0..6)
}

/// `headers` spelled one way of many: names in random case, items in random order and
/// grouping across header lines, random spacing and empty items, plus unkeyed noise.
fn spell(headers: &[(&'static str, Vec<String>)], seed: u64) -> axum::http::HeaderMap {
    let mut map = axum::http::HeaderMap::new();
    let mut lines: Vec<(String, String)> = Vec::new();
    for (i, (name, items)) in headers.iter().enumerate() {
        let mut items = items.clone();
        let s = seed.rotate_left(i as u32 * 5);
        let len = items.len().max(1);
        items.rotate_left((s as usize) % len);
        let name: String =
            name.chars().enumerate().map(|(j, c)| if (s >> j) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect();
        let pad = [" ", "", "	", "  "][(s % 4) as usize];
        if s & 16 == 0 {
            lines.push((name, items.iter().map(|it| format!("{pad}{it}{pad}")).collect::<Vec<_>>().join(",")));
        } else {
            for item in items {
                lines.push((name.clone(), format!("{item},{pad}")));
            }
        }
    }
    let len = lines.len().max(1);
    lines.rotate_left((seed as usize) % len);
    for (name, value) in lines {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, axum::http::HeaderValue::from_str(&value).unwrap());
    }
    map.insert("user-agent", axum::http::HeaderValue::from_str(&format!("sdk/{seed}")).unwrap());
    map
}

fn header_address(headers: &axum::http::HeaderMap, query: &str) -> holdfast::cache_key::address::Address {
    let request = normalize("/v1/messages", br#"{"model":"m"}"#).unwrap().with_context(
        holdfast::cache_key::normalize::canonical_headers(headers),
        holdfast::cache_key::normalize::canonical_query(Some(query)),
    );
    addresser().address(&Namespace::shared(), &request)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn header_order_case_and_spacing_never_change_the_address(set in header_set(), a in any::<u64>(), b in any::<u64>()) {
        prop_assert_eq!(header_address(&spell(&set, a), "x=1&y=2"), header_address(&spell(&set, b), "y=2&x=1"));
    }

    #[test]
    fn a_changed_header_item_changes_the_address(set in header_set(), seed in any::<u64>(), pick in any::<usize>(), new in "[a-zA-Z0-9._=-]{1,12}") {
        prop_assume!(!set.is_empty());
        let mut changed = set.clone();
        let at = pick % set.len();
        let name = set[at].0;
        let items_of = |s: &[(&'static str, Vec<String>)]| -> std::collections::BTreeSet<String> {
            s.iter().filter(|(n, _)| *n == name).flat_map(|(_, it)| it.iter().cloned()).collect()
        };
        let before = items_of(&set);
        prop_assume!(!before.contains(&new));
        changed[at].1[0] = new;
        let after = items_of(&changed);
        prop_assume!(before != after);
        prop_assert_ne!(header_address(&spell(&set, seed), ""), header_address(&spell(&changed, seed), ""));
    }
}

fn exact_in_f64(n: &serde_json::Number) -> bool {
    n.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53)
}

fn canonical_of(v: &Value) -> Vec<u8> {
    holdfast::cache_key::normalize::canonical_json(v)
}

#[test]
fn parameters_that_change_the_answer_change_the_address() {
    let base = serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "max_tokens": 100,
    });
    let variants: BTreeMap<&str, Value> = [
        ("model", serde_json::json!("gpt-4o-mini")),
        ("temperature", serde_json::json!(0.3)),
        ("max_tokens", serde_json::json!(101)),
        ("tools", serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
        ("response_format", serde_json::json!({"type": "json_object"})),
        ("seed", serde_json::json!(7)),
        ("n", serde_json::json!(2)),
        ("top_p", serde_json::json!(0.9)),
    ]
    .into_iter()
    .collect();
    let base_address = address_of("/v1/chat/completions", &base.to_string());
    for (field, value) in variants {
        let mut changed = base.clone();
        changed[field] = value;
        assert_ne!(address_of("/v1/chat/completions", &changed.to_string()), base_address, "{field} ignored");
    }
    let mut reordered_messages = base.clone();
    reordered_messages["messages"].as_array_mut().unwrap().reverse();
    assert_ne!(address_of("/v1/chat/completions", &reordered_messages.to_string()), base_address);
    assert_ne!(address_of("/v1/completions", &base.to_string()), base_address);
}

/// The canonical bytes of parsing `body` into a `Value` and writing that: what every stored
/// entry's address was computed from before normalization read bodies directly.
fn canonical_via_value(endpoint: &str, body: &str) -> Vec<u8> {
    let value: Value = serde_json::from_str(body).unwrap();
    holdfast::cache_key::normalize::normalize_value(endpoint, &value).unwrap().canonical.to_vec()
}

/// `s` with some characters written as `\uXXXX` escapes, as some clients send them.
fn escape_some(s: &str, seed: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (seed >> (i % 64)) & 1 == 1 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reading_bodies_directly_gives_the_bytes_the_value_path_gave(
        body in request_body(), seed in any::<u64>(), endpoint in prop_oneof![
            Just("/v1/chat/completions"), Just("/v1/messages"), Just("/v1/responses")],
        ignored in prop::collection::vec(prop_oneof![Just("stream"), Just("user"), Just("metadata"), Just("n")], 0..3),
        duplicate in "[a-z_]{1,10}", first in json_value(), last in json_value(),
        text in "[a-zA-Z é\"\\\\\n\u{1F600}]{0,16}",
    ) {
        let mut scrambled = String::new();
        scramble(&Value::Object(body), seed, &mut scrambled);
        // Fields dropped on some endpoints, a key given twice (the last counts), escapes.
        let mut extra = String::new();
        for (i, name) in ignored.iter().enumerate() {
            extra.push_str(&format!("\"{name}\":{i},"));
        }
        extra.push_str(&format!("\"{duplicate}\":{first},\"t\":{},\"{duplicate}\":{last},", escape_some(&text, seed)));
        let body = scrambled.replacen('{', &format!("{{{extra}"), 1);
        let direct = holdfast::cache_key::normalize::normalize(endpoint, body.as_bytes()).unwrap();
        let via_value = canonical_via_value(endpoint, &body);
        prop_assert_eq!(String::from_utf8_lossy(&direct.canonical), String::from_utf8_lossy(&via_value));
        // Members read as values on the way (kept, ignored, repeated) are those of the parse.
        let wanted = |k: &str| k == "messages" || k == "stream" || k == duplicate;
        let (same, captured) = holdfast::cache_key::normalize::normalize_capturing(endpoint, body.as_bytes(), &wanted).unwrap();
        prop_assert_eq!(&same, &direct);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        let expected: Map<String, Value> =
            parsed.as_object().unwrap().iter().filter(|(k, _)| wanted(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(captured, expected);
    }
}

#[test]
fn reading_bodies_directly_refuses_what_parsing_refused() {
    use holdfast::cache_key::normalize::{NormalizeError, normalize};
    for (body, kind) in
        [("[1]", "an array"), ("\"x\"", "a string"), ("3", "a number"), ("null", "null"), ("true", "a boolean")]
    {
        assert!(
            matches!(normalize("/v1/chat/completions", body.as_bytes()), Err(NormalizeError::NotAnObject(k)) if k == kind),
            "{body}"
        );
    }
    for bad in ["{\"a\":", "{\"a\":1} x", "{\"a\":1,}", "{\"a\":\"\\ud800\"}", "{\"a\":1e400}", ""] {
        assert!(
            matches!(normalize("/v1/chat/completions", bad.as_bytes()), Err(NormalizeError::InvalidJson(_))),
            "{bad}"
        );
        assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad} parses as a Value");
    }
    // Nesting deeper than serde_json's limit is refused the same way.
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    assert!(matches!(normalize("/v1/chat/completions", deep.as_bytes()), Err(NormalizeError::InvalidJson(_))));
}
