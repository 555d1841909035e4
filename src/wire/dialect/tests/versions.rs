//! Each Anthropic version's rules, applied by the translator.

use super::*;

fn body(extra: Value) -> Value {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn at(version: &str, extra: Value) -> std::result::Result<Value, Untranslatable> {
    request_for_version(OpenAi, Anthropic, &body(extra), "claude-haiku-4-5", version)
}

#[test]
fn every_version_row_keeps_or_drops_sampling_as_its_table_says() {
    for rules in ANTHROPIC_VERSIONS {
        let out = at(rules.version, json!({"temperature": 0.5, "top_p": 0.9})).unwrap();
        for key in ["temperature", "top_p"] {
            assert_eq!(out.get(key).is_some(), rules.sampling, "{} {key}: {out}", rules.version);
        }
        assert!(out.get("top_k").is_none());
        assert_eq!(out["messages"][0]["content"], "hi", "{}: the rest still translates", rules.version);
    }
}

#[test]
fn version_2026_10_21_drops_sampling_instead_of_refusing_it() {
    // Out of Anthropic's range: refused where it would be sent, irrelevant where it is dropped.
    assert!(at("2023-06-01", json!({"temperature": 1.5})).is_err());
    let out = at("2026-10-21", json!({"temperature": 1.5, "top_p": 0.2})).unwrap();
    assert!(out.get("temperature").is_none() && out.get("top_p").is_none(), "{out}");
    // Still checked for shape: a malformed value is the client's error, whatever the version.
    assert!(at("2026-10-21", json!({"temperature": "hot"})).is_err());
    assert_eq!(request(OpenAi, Anthropic, &body(json!({"temperature": 0.5})), "m").unwrap()["temperature"], 0.5);
}

#[test]
fn unknown_versions_follow_the_row_before_them_or_are_refused() {
    assert!(at("2027-03-01", json!({"temperature": 0.5})).unwrap().get("temperature").is_none());
    assert_eq!(at("2024-01-01", json!({"temperature": 0.5})).unwrap()["temperature"], 0.5);
    let err = at("yesterday", json!({})).unwrap_err();
    assert_eq!(err.field(), "anthropic-version");
    // The other direction has no version to follow.
    let anthropic =
        json!({"model": "m", "max_tokens": 5, "temperature": 0.3, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(request_for_version(Anthropic, OpenAi, &anthropic, "gpt-4o", "2026-10-21").unwrap()["temperature"], 0.3);
}
