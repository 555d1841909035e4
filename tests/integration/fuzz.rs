//! Property tests over every parser that sees bytes from outside: whatever arrives, the answer
//! is a value or a typed error, never a panic. (cargo-fuzz needs a nightly toolchain; these run
//! in every `cargo test`, 256 cases per property unless `PROPTEST_CASES` says otherwise.)

use axum::http::{HeaderMap, HeaderValue};
use holdfast::cache_key::address::Address;
use holdfast::cache_key::normalize::Dialect;
use holdfast::secret::SecretKey;
use holdfast::store::crypto::{DataKey, open_in_place, seal};
use holdfast::wire::sse::{SseSplitter, parse_event};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep, with the field names the translators look for.
fn json() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "tools",
        "choices",
        "delta",
        "usage",
        "stop_reason",
        "finish_reason",
        "system",
        "max_tokens",
        "stream",
        "id",
        "function",
        "input",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["user", "assistant", "system", "tool", "text", "image", "tool_use"])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((names.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #[test]
    fn sse_splitting_never_panics_and_does_not_depend_on_where_chunks_were_cut(
        bytes in prop::collection::vec(prop::sample::select(vec![b'\n', b'\r', b':', b'd', b'a', b't', b' ', b'x', 0xff]), 0..400),
        cuts in prop::collection::vec(0usize..400, 0..8),
    ) {
        let mut whole = SseSplitter::new();
        let mut expected = whole.push(&bytes);
        expected.extend(whole.finish());
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut pieces = SseSplitter::new();
        let mut events = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            events.extend(pieces.push(&bytes[at..cut]));
            at = cut;
        }
        events.extend(pieces.finish());
        prop_assert_eq!(events.clone(), expected);
        for event in &events {
            let _ = parse_event(event);
        }
    }

    #[test]
    fn any_bytes_parse_as_an_event_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_event(&bytes);
    }

    #[test]
    fn an_envelope_of_any_bytes_is_refused_with_a_typed_error(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = DataKey::new(1, &SecretKey::from_bytes([7; 32]));
        let address = Address([3; 32]);
        let mut garbage = bytes.clone();
        prop_assert!(open_in_place(&key, &address, &mut garbage).is_err());
        // A real envelope with one flipped byte never opens either.
        let mut sealed = seal(&key, &address, &bytes);
        let i = flip.index(sealed.len());
        sealed[i] ^= 0x40;
        prop_assert!(open_in_place(&key, &address, &mut sealed).is_err());
    }

    #[test]
    fn addresses_parse_or_are_refused(text in ".{0,80}", hex in "[0-9a-fA-F]{64}") {
        let _ = text.parse::<Address>();
        let parsed: Address = hex.parse().unwrap();
        prop_assert_eq!(parsed.to_hex(), hex.to_ascii_lowercase());
    }

    #[test]
    fn retry_after_of_any_value_is_a_wait_or_none(value in "[ -~]{0,30}", ms in any::<bool>()) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(if ms { "retry-after-ms" } else { "retry-after" }, v);
        }
        let _ = holdfast::proxy::resilience::backoff::retry_after(&headers);
    }

    #[test]
    fn credentials_of_any_bytes_are_one_none_or_a_conflict(
        api_key in prop::collection::vec(any::<u8>(), 0..40),
        authorization in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&api_key) {
            headers.insert("x-api-key", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&authorization) {
            headers.insert("authorization", v);
        }
        if let Ok(Some(credential)) = holdfast::edge::credential::client_credential(&headers) {
            prop_assert!(!credential.is_empty() && credential.trim() == credential);
        }
    }

    #[test]
    fn any_request_body_normalizes_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..200), value in json()) {
        let _ = holdfast::cache_key::normalize::normalize("/v1/chat/completions", &bytes);
        let _ = holdfast::cache_key::normalize::normalize("/v1/messages", value.to_string().as_bytes());
    }

    #[test]
    fn translation_of_any_json_is_a_value_or_an_error(value in json()) {
        for (from, to) in [(Dialect::OpenAi, Dialect::Anthropic), (Dialect::Anthropic, Dialect::OpenAi)] {
            let _ = holdfast::wire::dialect::request(from, to, &value, "target-model");
            let _ = holdfast::wire::dialect::response(from, to, &value);
            let mut stream = holdfast::wire::dialect::StreamTranslator::new(from, to);
            let event = holdfast::wire::sse::format_event(None, &value.to_string());
            let _ = stream.push(&parse_event(&event));
        }
    }

    #[test]
    fn any_config_text_parses_or_names_its_problem(text in "[a-z_\\[\\]=\" .0-9\n]{0,120}") {
        if let Ok(config) = holdfast::config::Config::parse(&text) {
            let _ = config.validate();
        }
    }

    #[test]
    fn a_keyring_file_with_any_damage_is_refused_with_a_typed_error(
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let secret = holdfast::secret::StoreSecret::raw_key_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        holdfast::store::keyring::Keyring::create(&path, &secret, holdfast::store::keyring::KdfParams::default()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[flip.index(good.len())] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        prop_assert!(holdfast::store::keyring::Keyring::unlock(&path, &secret).is_err());
        std::fs::write(&path, &good[..cut.index(good.len())]).unwrap();
        prop_assert!(holdfast::store::keyring::Keyring::unlock(&path, &secret).is_err());
    }
}

/// A bundle of three frames and the passphrase it was written with, made once: its Argon2id
/// derivation is the slow part, and every case damages a copy of the same bytes.
fn good_bundle() -> &'static [u8] {
    static BUNDLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        let mut writer = holdfast::ops::bundle::BundleWriter::create(&path, b"bundle passphrase").unwrap();
        for frame in [&b"first frame"[..], &[7u8; 300][..], b""] {
            writer.append(frame).unwrap();
        }
        writer.finish().unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// Reads every frame of the bundle at `path`; `Err` at the first refusal.
fn read_bundle(path: &std::path::Path) -> Result<Vec<Vec<u8>>, holdfast::ops::bundle::BundleError> {
    let mut reader = holdfast::ops::bundle::BundleReader::open(path, b"bundle passphrase")?;
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

proptest! {
    // Each case runs an Argon2id derivation; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_bundle_with_any_damage_is_refused_with_a_typed_error(
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let good = good_bundle();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        std::fs::write(&path, good).unwrap();
        prop_assert_eq!(read_bundle(&path).unwrap().len(), 3);
        let mut flipped = good.to_vec();
        flipped[flip.index(good.len())] ^= 1 << bit;
        std::fs::write(&path, &flipped).unwrap();
        prop_assert!(read_bundle(&path).is_err(), "a flipped bit went unnoticed");
        std::fs::write(&path, &good[..cut.index(good.len())]).unwrap();
        prop_assert!(read_bundle(&path).is_err(), "a cut bundle read as whole");
    }

    #[test]
    fn a_trail_with_any_damage_is_reported_broken_or_refused(
        flip in any::<prop::sample::Index>(),
        bit in 0u8..7,
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trail");
        let key = || SecretKey::from_bytes([9; 32]);
        let trail = holdfast::ops::audit::trail::Trail::open(&path, key()).unwrap();
        for command in ["audit list", "audit show", "keys rotate"] {
            trail.append("operator", command, &["ab".repeat(32)], 1, "ok").unwrap();
        }
        drop(trail);
        let good = std::fs::read(&path).unwrap();
        prop_assert!(holdfast::ops::audit::trail::verify(&path, &key()).unwrap().is_intact());
        // ASCII stays ASCII (bit < 7): the damage is to the text, not a UTF-8 failure.
        let mut flipped = good.clone();
        flipped[flip.index(good.len())] ^= 1 << bit;
        std::fs::write(&path, &flipped).unwrap();
        let _ = holdfast::ops::audit::trail::read(&path);
        let verdict = holdfast::ops::audit::trail::verify(&path, &key());
        prop_assert!(verdict.map_or(true, |v| !v.is_intact()), "a changed trail verified as intact");
        let cut = cut.index(good.len());
        std::fs::write(&path, &good[..cut]).unwrap();
        let verdict = holdfast::ops::audit::trail::verify(&path, &key());
        let whole_lines = good[..cut].ends_with(b"\n") || cut == 0;
        prop_assert!(whole_lines || verdict.map_or(true, |v| !v.is_intact()), "a torn line verified");
    }
}
