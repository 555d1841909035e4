//! How streams end, seen from the client: a finished stream that lacks only its terminal event
//! is complete; a stream that breaks off ends in an error naming the failure; deadlines on the
//! first token and on silence between events.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

pub fn chat(prompt: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

pub fn claude(prompt: &str, stream: bool) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}],
        "stream": stream})
}

pub async fn post(url: &str, path: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{url}{path}"))
        .bearer_auth("sk-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The JSON data of every `data:` line that is JSON.
pub fn data_lines(sse: &str) -> Vec<Value> {
    sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect()
}

/// The answer text of an OpenAI chat stream.
pub fn chat_text(sse: &str) -> String {
    data_lines(sse).iter().filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect()
}

/// The answer text of an Anthropic messages stream.
pub fn claude_text(sse: &str) -> String {
    data_lines(sse).iter().filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned)).collect()
}

/// Reads a stream body as far as it goes: the text received, and whether it ended cleanly.
pub async fn read_stream(r: reqwest::Response) -> (String, bool) {
    use futures_util::StreamExt;
    let mut body = r.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stream_without_its_terminal_event_is_complete_and_stored() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    upstream.set_fault(Fault::NoTerminal);
    let mut body = chat("no done here", true);
    body["stream_options"] = json!({"include_usage": true});
    let (sse, clean) = read_stream(post(&proxy.url, "/v1/chat/completions", &body).await).await;
    assert!(clean, "a finished stream must end cleanly: {sse}");
    assert_eq!(chat_text(&sse), "echo: no done here");
    assert!(sse.trim_end().ends_with("data: [DONE]"), "the missing [DONE] is added: {sse}");
    assert!(data_lines(&sse).iter().any(|v| v["usage"]["completion_tokens"].is_u64()), "usage reached the client");

    let (sse, clean) = read_stream(post(&proxy.url, "/v1/messages", &claude("no stop here", true)).await).await;
    assert!(clean, "{sse}");
    assert_eq!(claude_text(&sse), "echo: no stop here");
    assert!(sse.trim_end().ends_with("data: {\"type\":\"message_stop\"}"), "{sse}");

    // Both were stored whole: with the provider gone they come back from the store.
    upstream.down().await;
    let r = post(&proxy.url, "/v1/chat/completions", &body).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(chat_text(&r.text().await.unwrap()), "echo: no done here");
    let r = post(&proxy.url, "/v1/messages", &claude("no stop here", false)).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(r.json::<Value>().await.unwrap()["content"][0]["text"], "echo: no stop here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_without_a_finish_reason_is_a_cut() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    // Role chunk and two pieces, then a clean close: no finish_reason, no [DONE].
    upstream.set_fault(Fault::EndAfter(3));
    let (sse, clean) = read_stream(post(&proxy.url, "/v1/chat/completions", &chat("cut short", true)).await).await;
    assert!(!clean, "an unfinished stream must not end cleanly: {sse}");
    assert!(!sse.contains("[DONE]"), "{sse}");
    let error = data_lines(&sse)
        .into_iter()
        .find(|v| v.get("error").is_some())
        .unwrap_or_else(|| panic!("an error event: {sse}"));
    assert_eq!(error["error"]["code"], "upstream_stream_interrupted");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("ended before its final event"), "names the failure: {message}");
    // Nothing was stored.
    upstream.down().await;
    let r = post(&proxy.url, "/v1/chat/completions", &chat("cut short", true)).await;
    assert_eq!(r.status(), 502);
}

/// OpenAI-dialect providers `a` then `b` for `gpt-4o-mini`, one attempt each, with stream
/// deadlines of `limit` on `a`.
pub fn two(a: &FakeUpstream, b: &FakeUpstream, limit: &str, extra: &str) -> holdfast::config::Config {
    let text = format!(
        "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-*\"]\n\
         first_token_timeout = \"{limit}\"\nstream_idle_timeout = \"{limit}\"\nretry = {{ attempts = 1 }}\n\
         [[providers]]\nname = \"b\"\napi = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-*\"]\nretry = {{ attempts = 1 }}\n\
         {extra}",
        a.base_url(),
        b.base_url()
    );
    let config = holdfast::config::Config::parse(&text).unwrap();
    config.validate().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_token_fails_over_before_the_client_sees_a_byte() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy(two(&a, &b, "300ms", "")).await;
    // Headers and the role chunk at once, the first token after 5 s.
    a.set_fault(Fault::SlowFirstToken(5000));
    let started = Instant::now();
    let r = post(&proxy.url, "/v1/chat/completions", &chat("slow to think", true)).await;
    assert_eq!(header(&r, "x-holdfast-provider"), "b");
    let (sse, clean) = read_stream(r).await;
    assert!(clean, "{sse}");
    assert_eq!(chat_text(&sse), "echo: slow to think", "exactly the whole answer, once");
    assert_eq!(sse.matches("\"role\":\"assistant\"").count(), 1, "nothing of a's stream reached the client");
    assert!(started.elapsed() < Duration::from_secs(4), "waited for a's first token: {:?}", started.elapsed());
    let metrics = http().get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_upstream_failures_total{provider=\"a\",class=\"timeout\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_ends_within_the_idle_limit_naming_the_stall() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // Without rescue (rescue.rs has the stall continued on b).
    let proxy = start_proxy(two(&a, &b, "300ms", "[resilience]\nresume_streams = false\n")).await;
    a.set_fault(Fault::StallAfter(3));
    let started = Instant::now();
    let r = post(&proxy.url, "/v1/chat/completions", &chat("stall after a few words", true)).await;
    assert_eq!(header(&r, "x-holdfast-provider"), "a");
    let (sse, clean) = read_stream(r).await;
    assert!(!clean, "{sse}");
    assert!(started.elapsed() < Duration::from_secs(4), "waited for the provider to hang up: {:?}", started.elapsed());
    let error = data_lines(&sse).into_iter().find(|v| v.get("error").is_some()).unwrap_or_else(|| panic!("{sse}"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("timeout: stream idle"), "names the original failure: {message}");
    let health: Value = http().get(format!("{}/admin/health", proxy.url)).send().await.unwrap().json().await.unwrap();
    let breaker = health["breakers"].as_array().unwrap().iter().find(|v| v["key"] == "a").unwrap().clone();
    assert_eq!(breaker["recent_failures"], 1, "a stall counts against the provider's breaker: {health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_chunk_follows_the_request_live_and_replayed() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    let routes = "[[routes]]\nmodel = \"gpt-via-claude\"\ntargets = [\"fake-anthropic:claude-haiku-4-5\"]\n";
    config.routes = holdfast::config::Config::parse(routes).unwrap().routes;
    let proxy = start_proxy(config).await;
    let usage_chunks = |sse: &str| data_lines(sse).iter().filter(|v| v["choices"] == json!([])).count();

    // Same dialect: Holdfast asks the provider for usage, the client without it does not see it.
    let (sse, _) = read_stream(post(&proxy.url, "/v1/chat/completions", &chat("usage plain", true)).await).await;
    assert_eq!((chat_text(&sse), usage_chunks(&sse)), ("echo: usage plain".to_owned(), 0), "{sse}");
    assert_eq!(upstream.last_body().unwrap()["stream_options"]["include_usage"], true);
    // Across dialects the translator always makes one; it is only for clients that asked.
    let mut via = chat("usage via claude", true);
    via["model"] = json!("gpt-via-claude");
    let (sse, _) = read_stream(post(&proxy.url, "/v1/chat/completions", &via).await).await;
    assert_eq!((chat_text(&sse), usage_chunks(&sse)), ("echo: usage via claude".to_owned(), 0), "{sse}");
    via["stream_options"] = json!({"include_usage": true});
    let (sse, _) = read_stream(post(&proxy.url, "/v1/chat/completions", &via).await).await;
    assert_eq!(usage_chunks(&sse), 1, "{sse}");

    // Replayed: the stream recorded without the client asking has usage for those who ask, and
    // its JSON form has `usage`.
    upstream.down().await;
    let mut asks = chat("usage plain", true);
    asks["stream_options"] = json!({"include_usage": true});
    let r = post(&proxy.url, "/v1/chat/completions", &asks).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(usage_chunks(&r.text().await.unwrap()), 1);
    let r = post(&proxy.url, "/v1/chat/completions", &chat("usage plain", false)).await;
    let body: Value = r.json().await.unwrap();
    assert!(body["usage"]["completion_tokens"].is_u64(), "{body}");
    let (sse, _) = read_stream(post(&proxy.url, "/v1/chat/completions", &via).await).await;
    assert_eq!(usage_chunks(&sse), 1, "{sse}");
    via.as_object_mut().unwrap().remove("stream_options");
    let (sse, _) = read_stream(post(&proxy.url, "/v1/chat/completions", &via).await).await;
    assert_eq!(usage_chunks(&sse), 0, "{sse}");
}

/// The error event that ended a broken stream, in OpenAI's shape, and its message.
fn stream_error(sse: &str) -> String {
    let error = data_lines(sse).into_iter().find(|v| v.get("error").is_some()).unwrap_or_else(|| panic!("{sse}"));
    assert_eq!(error["error"]["code"], "upstream_stream_interrupted", "{error}");
    error["error"]["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_after_content_ends_with_an_error_naming_the_break() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    // Role chunk and three pieces, then the connection dies.
    upstream.set_fault(Fault::CutAfter(4));
    let (sse, clean) = read_stream(post(&proxy.url, "/v1/chat/completions", &chat("cut mid answer", true)).await).await;
    assert!(!clean && !sse.contains("[DONE]"), "{sse}");
    assert_eq!(chat_text(&sse), "echo: cut mid a", "what arrived before the cut, whole events only");
    let message = stream_error(&sse);
    assert!(message.contains("connect: stream cut"), "names the original failure: {message}");

    // An event that is not JSON cannot be skipped: the stream ends there, named.
    upstream.set_fault(Fault::MalformedEventAt(3));
    let (sse, clean) = read_stream(post(&proxy.url, "/v1/chat/completions", &chat("garbled", true)).await).await;
    assert!(!clean && !sse.contains("{\"broken"), "the malformed event is not relayed: {sse}");
    let message = stream_error(&sse);
    assert!(message.contains("not JSON"), "{message}");

    // Anthropic clients get an `event: error` in their own shape.
    upstream.set_fault(Fault::CutAfter(5));
    let (sse, clean) = read_stream(post(&proxy.url, "/v1/messages", &claude("cut for claude", true)).await).await;
    assert!(!clean, "{sse}");
    assert!(sse.contains("event: error\n"), "{sse}");
    let error = data_lines(&sse).into_iter().find(|v| v["type"] == "error").unwrap_or_else(|| panic!("{sse}"));
    assert!(error["error"]["message"].as_str().unwrap_or_default().contains("stream cut"), "{error}");
    // None of them was stored.
    upstream.set_fault(Fault::None);
    assert_eq!(proxy.state.store.stats().entries, 0);
}
