//! How streams end, seen from the client: a finished stream that lacks only its terminal event
//! is complete; a stream that breaks off ends in an error naming the failure; deadlines on the
//! first token and on silence between events.

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
