//! Which 4xx answers end the chain and which fail over: context length, refused server keys,
//! and the client's own key.

use serde_json::Value;

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};
use crate::streams::{chat, claude, header, post};

/// OpenAI-dialect `a` and `b`, Anthropic `c`, one attempt each; `keyed` gives a and b an
/// `api_key_env`. `extra` is appended (routes).
fn config(a: &FakeUpstream, b: &FakeUpstream, c: &FakeUpstream, keyed: bool, extra: &str) -> holdfast::config::Config {
    let key = if keyed { "api_key_env = \"HOLDFAST_TEST_KEY\"\n" } else { "" };
    let provider = |name: &str, api: &str, base: String, models: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\napi = \"{api}\"\nbase_url = \"{base}\"\nmodels = {models}\n{key}\
             retry = {{ attempts = 3, backoff_base = \"10ms\", backoff_cap = \"20ms\" }}\n\
             breaker = {{ failures = 100 }}\n"
        )
    };
    let text = format!(
        "{}{}{}{extra}",
        provider("a", "openai", a.base_url(), "[\"gpt-*\"]"),
        provider("b", "openai", b.base_url(), "[\"gpt-*\"]"),
        provider("c", "anthropic", c.base_url(), "[\"claude-*\"]"),
    );
    holdfast::config::Config::parse(&text).unwrap()
}

async fn breaker(proxy: &Proxy, key: &str) -> Value {
    let health: Value = http().get(format!("{}/admin/health", proxy.url)).send().await.unwrap().json().await.unwrap();
    health["breakers"].as_array().unwrap().iter().find(|b| b["key"] == key).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_moves_on_to_the_next_target_without_retry_or_penalty() {
    let (a, b, c) = (FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await);
    let routes = "[[routes]]\nmodel = \"gpt-4o-mini\"\ntargets = [\"a\", \"b:gpt-4o-long\"]\n\
                  [[routes]]\nmodel = \"claude-*\"\ntargets = [\"c\", \"b:gpt-4o-long\"]\n";
    let proxy = start_proxy(config(&a, &b, &c, false, routes)).await;
    a.set_fault(Fault::ContextLength);
    let r = post(&proxy.url, "/v1/chat/completions", &chat("a very long prompt", false)).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "b".to_owned()));
    assert_eq!(r.json::<Value>().await.unwrap()["model"], "gpt-4o-long");
    assert_eq!(a.calls(), 1, "context length is not retried on the same target");
    let a_model = breaker(&proxy, "a/gpt-4o-mini").await;
    assert_eq!(a_model["recent_failures"], 0, "no breaker penalty: {a_model}");

    // Anthropic's "prompt is too long", failing over across dialects.
    c.set_fault(Fault::ContextLength);
    let r = post(&proxy.url, "/v1/messages", &claude("long for claude", false)).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "b".to_owned()));
    assert_eq!(r.json::<Value>().await.unwrap()["content"][0]["text"], "echo: long for claude");

    // When every target is too small the client gets the provider's own 400.
    b.set_fault(Fault::ContextLength);
    let r = post(&proxy.url, "/v1/chat/completions", &chat("too long everywhere", false)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_key_is_a_provider_fault_that_fails_over_and_serves_stale() {
    let (a, b, c) = (FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy_keyed(config(&a, &b, &c, true, "")).await;
    a.set_fault(Fault::Status(401));
    let r = post(&proxy.url, "/v1/chat/completions", &chat("keys rotate", false)).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "b".to_owned()));
    assert_eq!(a.calls(), 1, "a refused key is not retried");
    assert_eq!(a.last_headers().unwrap()["authorization"], format!("Bearer {SERVER_KEY}"));
    let a_breaker = breaker(&proxy, "a").await;
    assert_eq!(a_breaker["recent_failures"], 1, "the provider's breaker counts it: {a_breaker}");

    // Both keys refused: the stored answer is served, naming the refusal.
    b.set_fault(Fault::Status(403));
    let r = post(&proxy.url, "/v1/chat/completions", &chat("keys rotate", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert!(header(&r, "x-holdfast-upstream-error").starts_with("auth: status 403"), "{:?}", r.headers());
    // Nothing stored: a 502 that names the refusal, not the provider's 401/403 body (which would
    // tell the client its own key is wrong) and never the key.
    let r = post(&proxy.url, "/v1/chat/completions", &chat("never answered", false)).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("auth: status 403") && text.contains("upstream_unavailable"), "{text}");
    assert!(!text.contains(SERVER_KEY), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_key_refused_is_passed_through() {
    let (a, b, c) = (FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy(config(&a, &b, &c, false, "")).await;
    a.set_fault(Fault::Status(401));
    let r = post(&proxy.url, "/v1/chat/completions", &chat("my key is wrong", false)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    assert_eq!((a.calls(), b.calls()), (1, 0), "the client's verdict: no failover");
}
