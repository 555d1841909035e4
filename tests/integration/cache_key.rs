//! docs/cache-key.md, tested through the real proxy against the fake upstream: for every
//! header and field the contract names, changing it does (or does not) change the
//! `x-holdfast-key` a client sees; stateful requests bypass the store.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

const CHAT: &str = "/v1/chat/completions";
const RESPONSES: &str = "/v1/responses";
const MESSAGES: &str = "/v1/messages";

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "key test"}]})
}

fn responses() -> Value {
    json!({"model": "gpt-4o-mini", "input": "key test"})
}

fn messages() -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "key test"}]})
}

fn with(base: Value, extra: Value) -> Value {
    let mut out = base;
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    out
}

/// What the client sees of one request: status, `x-holdfast-key`, `x-holdfast-cache`.
struct Seen {
    status: StatusCode,
    key: String,
    cache: String,
    stateful: String,
}

async fn ask(proxy: &Proxy, path_and_query: &str, body: &Value, headers: &[(&str, &str)]) -> Seen {
    let mut request = http().post(format!("{}{path_and_query}", proxy.url)).json(body);
    request = if path_and_query.starts_with(MESSAGES) {
        request.header("x-api-key", "sk-ant-key-test")
    } else {
        request.bearer_auth("sk-key-test")
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let get = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let seen = Seen {
        status: response.status(),
        key: get("x-holdfast-key"),
        cache: get("x-holdfast-cache"),
        stateful: get("x-holdfast-stateful"),
    };
    let _ = response.bytes().await;
    assert!(seen.status.is_success(), "{path_and_query} {body}: {}", seen.status);
    assert_eq!(seen.key.len(), 64, "every answer names its key");
    seen
}

async fn key(proxy: &Proxy, path: &str, body: &Value, headers: &[(&str, &str)]) -> String {
    ask(proxy, path, body, headers).await.key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keyed_header_changes_the_key_and_its_spelling_does_not() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    for (path, body) in [(CHAT, chat()), (MESSAGES, messages())] {
        let base = key(&proxy, path, &body, &[]).await;
        for name in ["anthropic-beta", "anthropic-version", "openai-beta", "openai-organization", "openai-project"] {
            let value = if name == "anthropic-version" { "2026-10-21" } else { "a1,b2" };
            let keyed = key(&proxy, path, &body, &[(name, value)]).await;
            assert_ne!(keyed, base, "{path}: {name} must be in the key");
            if name != "anthropic-version" {
                let respelled = key(&proxy, path, &body, &[(name, " b2 , a1 ")]).await;
                assert_eq!(respelled, keyed, "{path}: {name} order and spacing must not matter");
                let split = key(&proxy, path, &body, &[(name, "b2"), (name, "a1,")]).await;
                assert_eq!(split, keyed, "{path}: {name} over two lines is the same set");
                let changed = key(&proxy, path, &body, &[(name, "a1,b3")]).await;
                assert_ne!(changed, keyed, "{path}: a changed {name} item is a new key");
            }
        }
        let upper = key(&proxy, path, &body, &[("Anthropic-Beta", "x")]).await;
        assert_eq!(upper, key(&proxy, path, &body, &[("anthropic-beta", "x")]).await, "names are case-insensitive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_provider_never_sees_do_not_change_the_key() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let base = key(&proxy, CHAT, &chat(), &[]).await;
    let ignored: &[(&str, &str)] = &[
        ("user-agent", "OpenAI/Python 3.54"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-retry-count", "2"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("idempotency-key", "stainless-retry-1"),
        ("x-request-id", "req-1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "vendor=1"),
        ("content-type", "application/json; charset=utf-8"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("cache-control", "no-cache"),
        ("x-holdfast-timeout", "30s"),
        ("x-holdfast-mode", "fallback"),
    ];
    for header in ignored {
        assert_eq!(key(&proxy, CHAT, &chat(), &[*header]).await, base, "{} must stay out of the key", header.0);
    }
    // The credential picks the tenant: another key, whichever header carries it.
    let bob = http().post(format!("{}{CHAT}", proxy.url)).bearer_auth("sk-bob").json(&chat()).send().await.unwrap();
    assert_ne!(bob.headers()["x-holdfast-key"].to_str().unwrap(), base);
    let same = http().post(format!("{}{CHAT}", proxy.url)).header("x-api-key", "sk-key-test").json(&chat());
    assert_eq!(same.send().await.unwrap().headers()["x-holdfast-key"].to_str().unwrap(), base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_is_in_the_key_in_any_order() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let plain = key(&proxy, MESSAGES, &messages(), &[]).await;
    let beta = key(&proxy, "/v1/messages?beta=true", &messages(), &[]).await;
    assert_ne!(beta, plain, "the Anthropic SDK's ?beta=true is in the key");
    assert_ne!(key(&proxy, "/v1/messages?beta=false", &messages(), &[]).await, beta);
    let two = key(&proxy, "/v1/chat/completions?api-version=2024-10-21&x=1", &chat(), &[]).await;
    assert_eq!(key(&proxy, "/v1/chat/completions?x=1&&api-version=2024-10-21", &chat(), &[]).await, two);
    assert_eq!(key(&proxy, "/v1/messages?", &messages(), &[]).await, plain, "an empty query is no query");
}

/// An endpoint, its base body, and members added to it.
type Variant = (&'static str, fn() -> Value, Value);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_fields_do_not_change_the_key_and_kept_ones_do() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let ignored: &[Variant] = &[
        (CHAT, chat, json!({"stream": false})),
        (CHAT, chat, json!({"stream_options": {"include_usage": true}})),
        (CHAT, chat, json!({"user": "end-user-1"})),
        (CHAT, chat, json!({"safety_identifier": "end-user-1"})),
        (CHAT, chat, json!({"prompt_cache_key": "tenant-a"})),
        (CHAT, chat, json!({"metadata": {"team": "a"}})),
        (RESPONSES, responses, json!({"stream": false})),
        (RESPONSES, responses, json!({"user": "end-user-1"})),
        (MESSAGES, messages, json!({"stream": false})),
        (MESSAGES, messages, json!({"metadata": {"user_id": "end-user-1"}})),
    ];
    for (path, base, extra) in ignored {
        let plain = key(&proxy, path, &base(), &[]).await;
        assert_eq!(key(&proxy, path, &with(base(), extra.clone()), &[]).await, plain, "{path} {extra} is ignored");
    }
    let kept: &[Variant] = &[
        (CHAT, chat, json!({"temperature": 0.3})),
        (CHAT, chat, json!({"seed": 7})),
        (CHAT, chat, json!({"n": 2})),
        (CHAT, chat, json!({"service_tier": "flex"})),
        (CHAT, chat, json!({"store": false})),
        (CHAT, chat, json!({"max_completion_tokens": 9})),
        (CHAT, chat, json!({"response_format": {"type": "json_object"}})),
        (RESPONSES, responses, json!({"metadata": {"team": "a"}})),
        (RESPONSES, responses, json!({"store": false})),
        (RESPONSES, responses, json!({"prompt": {"id": "pmpt_1", "version": "2"}})),
        (MESSAGES, messages, json!({"user": "u"})),
        (MESSAGES, messages, json!({"service_tier": "auto"})),
        (MESSAGES, messages, json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})),
    ];
    for (path, base, extra) in kept {
        let plain = key(&proxy, path, &base(), &[]).await;
        assert_ne!(key(&proxy, path, &with(base(), extra.clone()), &[]).await, plain, "{path} {extra} is kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_anthropic_version_is_keyed_as_the_version_the_provider_is_sent() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    let proxy = start_proxy(config.clone()).await;
    let absent = key(&proxy, MESSAGES, &messages(), &[]).await;
    assert_eq!(key(&proxy, MESSAGES, &messages(), &[("anthropic-version", "2023-06-01")]).await, absent);
    assert_eq!(upstream.last_headers().unwrap()["anthropic-version"], "2023-06-01");
    proxy.stop().await;

    config.providers[1].anthropic_version = Some("2026-10-21".into());
    let proxy = start_proxy(config).await;
    let configured = key(&proxy, MESSAGES, &messages(), &[]).await;
    assert_eq!(upstream.last_headers().unwrap()["anthropic-version"], "2026-10-21");
    assert_ne!(configured, absent, "a new configured version gets new entries");
    assert_eq!(key(&proxy, MESSAGES, &messages(), &[("anthropic-version", "2026-10-21")]).await, configured);
}

/// A chat client failing over to an Anthropic target of version 2026-10-21: the target is sent
/// no sampling parameters (it would refuse them with a 400), and the client gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translation_follows_the_configured_anthropic_version() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    config.providers[1].anthropic_version = Some("2026-10-21".into());
    config.routes = vec![holdfast::config::RouteConfig {
        model: "gpt-4o-mini".into(),
        targets: vec!["fake-anthropic:claude-haiku-4-5".into()],
    }];
    let proxy = start_proxy(config).await;
    let seen = ask(&proxy, CHAT, &with(chat(), json!({"temperature": 0.2, "top_p": 0.5})), &[]).await;
    assert_eq!(seen.status, StatusCode::OK);
    let sent = upstream.last_body().unwrap();
    assert!(sent.get("temperature").is_none() && sent.get("top_p").is_none(), "{sent}");
    assert_eq!(upstream.last_headers().unwrap()["anthropic-version"], "2026-10-21");
}

/// Each stateful rule of docs/cache-key.md, in the default `cache.stateful = "bypass"`.
fn stateful_requests() -> Vec<(&'static str, Value)> {
    vec![
        (RESPONSES, with(responses(), json!({"previous_response_id": "resp_1"}))),
        (RESPONSES, with(responses(), json!({"conversation": "conv_1"}))),
        (RESPONSES, with(responses(), json!({"prompt": {"id": "pmpt_1"}}))),
        (RESPONSES, with(responses(), json!({"background": true}))),
        (RESPONSES, with(responses(), json!({"store": true}))),
        (RESPONSES, with(responses(), json!({"input": [{"type": "item_reference", "id": "msg_1"}]}))),
        (RESPONSES, with(responses(), json!({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}))),
        (CHAT, with(chat(), json!({"store": true}))),
        (MESSAGES, with(messages(), json!({"container": "container_1"}))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_requests_bypass_the_store_by_default_even_in_cache_first() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let first = [("x-holdfast-mode", "cache-first")];
    for (path, body) in stateful_requests() {
        let calls = upstream.calls();
        for _ in 0..2 {
            let seen = ask(&proxy, path, &body, &first).await;
            assert_eq!(seen.cache, "bypass", "{path} {body}");
            assert!(!seen.stateful.is_empty(), "the client is told why");
        }
        assert_eq!(upstream.calls(), calls + 2, "{path} {body}: both went upstream");
        upstream.set_fault(Fault::Status(503));
        let down = http()
            .post(format!("{}{path}", proxy.url))
            .bearer_auth("sk-key-test")
            .header("x-api-key", "sk-key-test")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(down.status(), 503, "{path}: nothing stored, so nothing to fall back on");
        upstream.set_fault(Fault::None);
    }
    // The pure request next to them is cached as usual.
    ask(&proxy, RESPONSES, &responses(), &first).await;
    assert_eq!(ask(&proxy, RESPONSES, &responses(), &first).await.cache, "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_stores_stateful_answers_for_outages_but_never_serves_them_fresh() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    config.cache.stateful = holdfast::config::StatefulPolicy::ServeStale;
    let proxy = start_proxy(config).await;
    let first = [("x-holdfast-mode", "cache-first")];
    for (path, body) in stateful_requests() {
        assert_eq!(ask(&proxy, path, &body, &first).await.cache, "miss", "{path} {body}");
        let calls = upstream.calls();
        assert_eq!(ask(&proxy, path, &body, &first).await.cache, "miss", "{path}: cache-first still asks upstream");
        assert_eq!(upstream.calls(), calls + 1);
        upstream.set_fault(Fault::Status(503));
        assert_eq!(ask(&proxy, path, &body, &first).await.cache, "stale", "{path}: the outage is bridged");
        upstream.set_fault(Fault::None);
    }
}

/// `response.incomplete` ends the client's stream cleanly, but the answer stopped early: it is
/// never stored, streamed or not, so an outage gets the provider's error, not half an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_responses_reach_the_client_but_are_never_stored() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let ask =
        |body: &Value| http().post(format!("{}{RESPONSES}", proxy.url)).bearer_auth("sk-key-test").json(body).send();
    for stream in [true, false] {
        let body = with(responses(), json!({"max_output_tokens": 1, "stream": stream}));
        let response = ask(&body).await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("incomplete"), "the client sees the provider's answer as it came: {text}");
        upstream.set_fault(Fault::Status(503));
        let down = ask(&body).await.unwrap();
        assert_eq!(down.status(), 503, "stream={stream}: nothing was stored to serve");
        upstream.set_fault(Fault::None);
    }
    assert_eq!(proxy.state.store.stats().entries, 0);
}

/// Anthropic's model list pages: the query reaches the provider, the page honours `limit`
/// (`has_more` says another follows), and each page is its own entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_list_pages_follow_the_query_and_are_keyed_by_it() {
    let upstream = FakeUpstream::start().await;
    upstream.set_models(&["claude-a", "claude-b", "claude-c"]);
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let page = |query: &'static str| {
        let url = format!("{}/v1/models{query}", proxy.url);
        async move {
            let r = http()
                .get(url)
                .header("x-api-key", "k")
                .header("anthropic-version", "2023-06-01")
                .send()
                .await
                .unwrap();
            let key = r.headers()["x-holdfast-key"].to_str().unwrap().to_owned();
            (key, r.json::<Value>().await.unwrap())
        }
    };
    let (first_key, first) = page("?limit=2").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!((first["has_more"].clone(), first["last_id"].clone()), (json!(true), json!("claude-b")));
    let (all_key, all) = page("?limit=20").await;
    assert_eq!((all["data"].as_array().unwrap().len(), all["has_more"].clone()), (3, json!(false)));
    assert_ne!(first_key, all_key);
    let (after_key, _) = page("?limit=2&after_id=claude-b").await;
    assert_ne!(after_key, first_key);
    assert_eq!(upstream.last_headers().unwrap()["anthropic-version"], "2023-06-01");
    upstream.set_fault(Fault::Status(503));
    let (stale_key, stale) = page("?limit=2").await;
    assert_eq!((stale_key, stale["has_more"].clone()), (first_key, json!(true)), "the stored page survives an outage");
}
