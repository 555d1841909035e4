//! The proxy end to end: a real HTTP client, the proxy on a socket, the fake upstream on
//! another, the real store in a temp dir.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use holdfast::store::BackendError;

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

/// The streaming endpoints and how to ask each for `prompt`.
#[derive(Clone, Copy, Debug)]
enum Api {
    Chat,
    Completions,
    Responses,
    Messages,
}

const STREAMING: [Api; 4] = [Api::Chat, Api::Completions, Api::Responses, Api::Messages];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }

    fn body(self, prompt: &str, stream: bool) -> Value {
        match self {
            Api::Chat => {
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "stream": stream})
            }
            Api::Completions => json!({"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "stream": stream}),
            Api::Responses => json!({"model": "gpt-4o-mini", "input": prompt, "stream": stream}),
            Api::Messages => json!({"model": "claude-haiku-4-5", "max_tokens": 64,
                "messages": [{"role": "user", "content": prompt}], "stream": stream}),
        }
    }

    /// The answer text of a non-streamed body.
    fn text_of(self, body: &Value) -> Option<String> {
        let v = match self {
            Api::Chat => &body["choices"][0]["message"]["content"],
            Api::Completions => &body["choices"][0]["text"],
            Api::Responses => &body["output"][0]["content"][0]["text"],
            Api::Messages => &body["content"][0]["text"],
        };
        v.as_str().map(str::to_owned)
    }

    /// The answer text assembled from a streamed body, as an SDK would.
    fn text_of_stream(self, sse: &str) -> String {
        let mut text = String::new();
        for data in sse.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim) {
            let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
            let piece = match self {
                Api::Chat => v["choices"][0]["delta"]["content"].as_str(),
                Api::Completions => v["choices"][0]["text"].as_str(),
                Api::Responses if v["type"] == "response.output_text.delta" => v["delta"].as_str(),
                Api::Messages if v["delta"]["type"] == "text_delta" => v["delta"]["text"].as_str(),
                _ => None,
            };
            text.push_str(piece.unwrap_or(""));
        }
        text
    }
}

async fn send(proxy: &Proxy, path: &str, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().post(format!("{}{path}", proxy.url)).json(body);
    if path.starts_with("/v1/messages") {
        request = request.header("x-api-key", "sk-ant-test").header("anthropic-version", "2023-06-01");
    } else {
        request = request.bearer_auth("sk-test");
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_then_serves_every_streaming_endpoint_when_upstream_is_down() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    for api in STREAMING {
        for stream in [false, true] {
            let prompt = format!("record {api:?} stream={stream}");
            let body = api.body(&prompt, stream);
            let live = send(&proxy, api.path(), &body, &[]).await;
            assert_eq!(live.status(), 200, "{api:?} stream={stream}");
            assert_eq!(header(&live, "x-holdfast-cache"), "miss");
            let provider = if matches!(api, Api::Messages) { "fake-anthropic" } else { "fake-openai" };
            assert_eq!(header(&live, "x-holdfast-provider"), provider);
            let key = header(&live, "x-holdfast-key");
            assert_eq!(key.len(), 64);
            let live_bytes = live.bytes().await.unwrap();
            let expected = format!("echo: {prompt}");
            if stream {
                assert_eq!(api.text_of_stream(std::str::from_utf8(&live_bytes).unwrap()), expected);
            } else {
                assert_eq!(api.text_of(&serde_json::from_slice(&live_bytes).unwrap()).unwrap(), expected);
            }

            upstream.down().await;
            let stale = send(&proxy, api.path(), &body, &[]).await;
            assert_eq!(stale.status(), 200, "{api:?} stream={stream} not served from the store");
            assert_eq!(header(&stale, "x-holdfast-cache"), "stale");
            assert_eq!(header(&stale, "x-holdfast-key"), key);
            assert!(header(&stale, "x-holdfast-upstream-error").starts_with("connect"), "{:?}", stale.headers());
            assert!(header(&stale, "age").parse::<u64>().is_ok());
            let stale_bytes = stale.bytes().await.unwrap();
            assert_eq!(stale_bytes, live_bytes, "{api:?} stream={stream}: replay must be byte-for-byte");
            upstream.up().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_then_serves_embeddings_and_count_tokens() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let calls = [
        ("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "embed me"})),
        (
            "/v1/messages/count_tokens",
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "count these words"}]}),
        ),
    ];
    for (path, body) in &calls {
        let live = send(&proxy, path, body, &[]).await;
        assert_eq!(live.status(), 200, "{path}");
        let live_body = live.bytes().await.unwrap();
        upstream.set_fault(Fault::Status(503));
        let stale = send(&proxy, path, body, &[]).await;
        assert_eq!(stale.status(), 200, "{path}");
        assert_eq!(header(&stale, "x-holdfast-cache"), "stale");
        assert_eq!(header(&stale, "x-holdfast-upstream-error"), "status 503");
        assert_eq!(stale.bytes().await.unwrap(), live_body);
        upstream.set_fault(Fault::None);
    }
    let count: Value = send(&proxy, calls[1].0, &calls[1].1, &[]).await.json().await.unwrap();
    assert_eq!(count["input_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_form_serves_the_other() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    for api in STREAMING {
        // Recorded non-streamed, asked for as a stream.
        let prompt = format!("cross A {api:?}");
        assert_eq!(send(&proxy, api.path(), &api.body(&prompt, false), &[]).await.status(), 200);
        // Recorded streamed, asked for whole.
        let prompt_b = format!("cross B {api:?}");
        let live = send(&proxy, api.path(), &api.body(&prompt_b, true), &[]).await;
        live.bytes().await.unwrap();

        upstream.down().await;
        let as_stream = send(&proxy, api.path(), &api.body(&prompt, true), &[]).await;
        assert_eq!(as_stream.status(), 200);
        assert!(header(&as_stream, "content-type").starts_with("text/event-stream"), "{api:?}");
        let sse = as_stream.text().await.unwrap();
        assert_eq!(api.text_of_stream(&sse), format!("echo: {prompt}"), "{api:?} JSON→stream: {sse}");
        let terminal = match api {
            Api::Chat | Api::Completions => "data: [DONE]",
            Api::Responses => "response.completed",
            Api::Messages => "message_stop",
        };
        assert!(sse.contains(terminal), "{api:?}: synthesized stream has no terminal event");

        let as_json = send(&proxy, api.path(), &api.body(&prompt_b, false), &[]).await;
        assert_eq!(as_json.status(), 200);
        let body: Value = as_json.json().await.unwrap();
        assert_eq!(api.text_of(&body).as_deref(), Some(format!("echo: {prompt_b}").as_str()), "{api:?} stream→JSON");
        upstream.up().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_reaches_the_client_as_an_error_and_is_never_stored() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    for api in STREAMING {
        // Four events reach past the first content in every dialect (a cut before any content
        // is an ordinary failed attempt, answered like any other upstream failure).
        upstream.set_fault(Fault::CutAfter(4));
        let body = api.body(&format!("cut {api:?}"), true);
        let response = send(&proxy, api.path(), &body, &[]).await;
        assert_eq!(response.status(), 200, "the stream had started");
        assert!(response.bytes().await.is_err(), "{api:?}: a cut stream must not end cleanly");
        upstream.set_fault(Fault::None);
        upstream.down().await;
        let after = send(&proxy, api.path(), &body, &[]).await;
        assert_eq!(after.status(), StatusCode::BAD_GATEWAY, "{api:?}: the cut stream was stored");
        upstream.up().await;
    }
    assert!(proxy.state.store.stats().entries == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_others_answers() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let body = Api::Chat.body("tenant secret", false);
    let url = format!("{}/v1/chat/completions", proxy.url);
    let alice = http().post(&url).bearer_auth("sk-alice").json(&body).send().await.unwrap();
    assert_eq!(alice.status(), 200);
    upstream.down().await;
    let bob = http().post(&url).bearer_auth("sk-bob").json(&body).send().await.unwrap();
    assert_eq!(bob.status(), StatusCode::BAD_GATEWAY, "bob was served alice's answer");
    let anonymous = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::BAD_GATEWAY);
    // The same key through x-api-key is the same tenant.
    let alice_again = http().post(&url).header("x-api-key", "sk-alice").json(&body).send().await.unwrap();
    assert_eq!(alice_again.status(), 200);
    assert_eq!(header(&alice_again, "x-holdfast-cache"), "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_is_honoured_and_replay_mode_never_calls_upstream() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let secret = Api::Chat.body("do not keep", false);
    let r = send(&proxy, "/v1/chat/completions", &secret, &[("cache-control", "no-store")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-cache"), "bypass");
    let kept = Api::Messages.body("keep me", false);
    assert_eq!(send(&proxy, "/v1/messages", &kept, &[]).await.status(), 200);
    assert_eq!(proxy.state.store.stats().entries, 1);

    let calls_before = upstream.calls();
    let replayed = send(&proxy, "/v1/messages", &kept, &[("x-holdfast-mode", "replay")]).await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(header(&replayed, "x-holdfast-cache"), "hit");
    let missing =
        send(&proxy, "/v1/messages", &Api::Messages.body("never seen", false), &[("x-holdfast-mode", "replay")]).await;
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");
    let missing_openai = send(&proxy, "/v1/chat/completions", &secret, &[("x-holdfast-mode", "replay")]).await;
    assert_eq!(missing_openai.status(), 404);
    let error: Value = missing_openai.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_recorded");
    assert_eq!(upstream.calls(), calls_before, "replay mode called upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_first_hits_make_zero_upstream_calls() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    config.cache.mode = holdfast::config::CacheMode::CacheFirst;
    let proxy = start_proxy(config).await;
    let body = Api::Chat.body("cache first", false);
    let first = send(&proxy, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(header(&first, "x-holdfast-cache"), "miss");
    let calls = upstream.calls();
    for _ in 0..5 {
        let hit = send(&proxy, "/v1/chat/completions", &body, &[]).await;
        assert_eq!(header(&hit, "x-holdfast-cache"), "hit");
        assert_eq!(Api::Chat.text_of(&hit.json().await.unwrap()).unwrap(), "echo: cache first");
    }
    assert_eq!(upstream.calls(), calls, "a cache-first hit called upstream");
    // no-cache forces a fresh answer; max-age=0 makes the stored one too old.
    send(&proxy, "/v1/chat/completions", &body, &[("cache-control", "no-cache")]).await;
    send(&proxy, "/v1/chat/completions", &body, &[("cache-control", "max-age=0")]).await;
    assert_eq!(upstream.calls(), calls + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_the_clients_dialect() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    upstream.down().await;
    let r = send(&proxy, "/v1/chat/completions", &Api::Chat.body("x", false), &[]).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("unreachable"));
    assert_eq!(v["error"]["type"], "api_error");
    let r = send(&proxy, "/v1/messages", &Api::Messages.body("x", false), &[]).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("api_error")));
    upstream.up().await;

    // A provider's own error with nothing stored is passed through as it is.
    upstream.set_fault(Fault::Status(500));
    let r = send(&proxy, "/v1/chat/completions", &Api::Chat.body("y", false), &[]).await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-holdfast-upstream-error"), "status 500");
    upstream.set_fault(Fault::Status(400));
    let r = send(&proxy, "/v1/chat/completions", &Api::Chat.body("z", false), &[]).await;
    assert_eq!(r.status(), 400);
    upstream.set_fault(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_and_store_nothing() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    config.max_request_bytes = 4096;
    let proxy = start_proxy(config).await;
    let url = format!("{}/v1/chat/completions", proxy.url);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http().post(&url).body("{not json"), 400, "not valid JSON"),
        (http().post(&url).body("[1,2]"), 400, "JSON object"),
        (http().post(&url).json(&json!({"messages": []})), 400, "model"),
        (http().post(&url).body(format!("{{\"model\":\"gpt-4o\",\"p\":\"{}\"}}", "x".repeat(5000))), 413, "limit"),
        (http().post(&url).json(&json!({"model": "mystery-model"})), 404, "mystery-model"),
        // Paths under /v1/ are passed through (passthrough.rs); others are refused here.
        (http().post(format!("{}/v2/unknown", proxy.url)).json(&json!({})), 404, "unsupported path"),
        (
            http().post(&url).header("x-holdfast-mode", "sometimes").json(&Api::Chat.body("m", false)),
            400,
            "x-holdfast-mode",
        ),
    ];
    for (request, status, needle) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{needle}");
        let v: Value = r.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} should mention {needle:?}");
    }
    assert_eq!(upstream.calls(), 0, "bad requests must not reach upstream");
    assert_eq!(proxy.state.store.stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_json_and_hangs_fall_back_to_the_store() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let body = Api::Chat.body("fragile", false);
    send(&proxy, "/v1/chat/completions", &body, &[]).await.bytes().await.unwrap();

    upstream.set_fault(Fault::MalformedJson);
    let r = send(&proxy, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert!(header(&r, "x-holdfast-upstream-error").starts_with("invalid answer"));
    let unseen = send(&proxy, "/v1/chat/completions", &Api::Chat.body("unseen", false), &[]).await;
    assert_eq!(unseen.status(), 502);
    assert_eq!(proxy.state.store.stats().entries, 1, "a malformed answer was stored");

    upstream.set_fault(Fault::Hang);
    let started = Instant::now();
    let r = send(&proxy, "/v1/chat/completions", &body, &[("x-holdfast-timeout", "1s")]).await;
    let waited = started.elapsed();
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(header(&r, "x-holdfast-upstream-error"), "timeout: deadline");
    assert!(waited < Duration::from_millis(1500), "deadline is 1s, took {waited:?}");
    let streamed = send(&proxy, "/v1/chat/completions", &Api::Chat.body("fragile", true), &[]).await;
    assert_eq!(header(&streamed, "x-holdfast-upstream-error"), "timeout: first byte");
    upstream.set_fault(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_requests_while_upstream_flips_all_get_their_recorded_answer() {
    let upstream = std::sync::Arc::new(FakeUpstream::start().await);
    let proxy = std::sync::Arc::new(start_proxy(config_for(&upstream.base_url())).await);
    let prompts: Vec<String> = (0..20).map(|i| format!("flip prompt {i}")).collect();
    for p in &prompts {
        assert_eq!(send(&proxy, "/v1/chat/completions", &Api::Chat.body(p, false), &[]).await.status(), 200);
    }
    let flipping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flipper = {
        let (upstream, flipping) = (upstream.clone(), flipping.clone());
        tokio::spawn(async move {
            let faults = [Fault::Status(503), Fault::None, Fault::ResetConnection, Fault::Status(429), Fault::None];
            let mut i = 0;
            while flipping.load(std::sync::atomic::Ordering::Relaxed) {
                match i % 6 {
                    5 => {
                        upstream.down().await;
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        upstream.up().await;
                    }
                    n => upstream.set_fault(faults[n]),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            upstream.set_fault(Fault::None);
        })
    };
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (proxy, prompts) = (proxy.clone(), prompts.clone());
        tasks.push(tokio::spawn(async move {
            let mut served = [0usize; 2];
            for i in 0..1000 / 16 + usize::from(worker < 1000 % 16) {
                let prompt = &prompts[(worker * 7 + i) % prompts.len()];
                let r = send(&proxy, "/v1/chat/completions", &Api::Chat.body(prompt, false), &[]).await;
                assert_eq!(r.status(), 200, "request for {prompt:?} failed while upstream flipped");
                served[usize::from(header(&r, "x-holdfast-cache") == "stale")] += 1;
                let body: Value = r.json().await.unwrap();
                assert_eq!(Api::Chat.text_of(&body).unwrap(), format!("echo: {prompt}"));
            }
            served
        }));
    }
    let mut totals = [0usize; 2];
    for t in tasks {
        let s = t.await.unwrap();
        totals[0] += s[0];
        totals[1] += s[1];
    }
    flipping.store(false, std::sync::atomic::Ordering::Relaxed);
    flipper.await.unwrap();
    assert_eq!(totals[0] + totals[1], 1000);
    assert!(totals[1] > 0, "upstream never failed during the run: {totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_merged_and_the_last_good_list_survives_an_outage() {
    let upstream = FakeUpstream::start().await;
    upstream.set_models(&["fake-gpt", "fake-gpt-mini"]);
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let get = || http().get(format!("{}/v1/models", proxy.url)).bearer_auth("sk-test").send();
    let live: Value = get().await.unwrap().json().await.unwrap();
    let ids: Vec<_> = live["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["fake-gpt", "fake-gpt-mini"]);
    upstream.down().await;
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    let stale: Value = r.json().await.unwrap();
    assert_eq!(stale["data"], live["data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    send(&proxy, "/v1/chat/completions", &Api::Chat.body("m", false), &[]).await;
    upstream.set_fault(Fault::Status(503));
    send(&proxy, "/v1/chat/completions", &Api::Chat.body("m", false), &[]).await;
    let get = |p: &str| http().get(format!("{}{p}", proxy.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "holdfast_requests_total{endpoint=\"/v1/chat/completions\",provider=\"fake-openai\",cache=\"miss\"} 1",
        "holdfast_requests_total{endpoint=\"/v1/chat/completions\",provider=\"fake-openai\",cache=\"stale\"} 1",
        "holdfast_upstream_failures_total{provider=\"fake-openai\",class=\"5xx\"} 1",
        "holdfast_store_entries 1",
        "holdfast_upstream_latency_seconds_count{provider=\"fake-openai\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("sk-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_stream_in_flight_finish() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let response = send(&proxy, "/v1/messages", &Api::Messages.body("finish me please", true), &[]).await;
    let stop = tokio::spawn(proxy.stop());
    let sse = response.text().await.expect("in-flight stream must complete");
    assert_eq!(Api::Messages.text_of_stream(&sse), "echo: finish me please");
    stop.await.unwrap();
}

/// A backend whose every read and write fails, as a full disk or a broken network store would.
struct BrokenBackend;

impl holdfast::store::Backend for BrokenBackend {
    fn get_value(&self, _: &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> {
        Err(BackendError::Io("disk on fire".into()))
    }
    fn get_meta(&self, _: &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> {
        Err(BackendError::Io("disk on fire".into()))
    }
    fn put_entry(&self, _: &[u8; 32], _: &[u8], _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Err(BackendError::Io("No space left on device".into()))
    }
    fn replace_entry(&self, _: &[u8; 32], _: &[u8], _: &[u8], _: &[u8]) -> Result<bool, BackendError> {
        Err(BackendError::Io("No space left on device".into()))
    }
    fn update_meta(&self, _: &[u8; 32], _: holdfast::store::MetaUpdate<'_>) -> Result<(), BackendError> {
        Err(BackendError::Io("No space left on device".into()))
    }
    fn delete_entry(&self, _: &[u8; 32], _: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Err(BackendError::Io("disk on fire".into()))
    }
    fn get_tally(&self) -> Result<Option<Vec<u8>>, BackendError> {
        Err(BackendError::Io("disk on fire".into()))
    }
    fn put_tally(&self, _: &[u8]) -> Result<(), BackendError> {
        Err(BackendError::Io("No space left on device".into()))
    }
    fn scan_values(&self, _: Option<&[u8; 32]>, _: usize) -> Result<Vec<[u8; 32]>, BackendError> {
        Ok(Vec::new())
    }
    fn scan_meta(&self, _: Option<&[u8; 32]>, _: usize) -> Result<Vec<([u8; 32], Vec<u8>)>, BackendError> {
        Ok(Vec::new())
    }
    fn get_setting(&self, _: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(None)
    }
    fn put_setting(&self, _: &str, _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, BackendError> {
        Ok(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_store_never_fails_a_request_upstream_can_answer() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(holdfast::store::Store::open(&path, &passphrase(), create_options()).unwrap());
    let keyring = holdfast::store::keyring::Keyring::unlock(&path.join("keyring"), &passphrase()).unwrap();
    let store = holdfast::store::Store::with_backend(
        &path,
        std::sync::Arc::new(BrokenBackend),
        keyring,
        holdfast::store::StoreOptions::default(),
    )
    .unwrap();
    let proxy = start_proxy_with(config_for(&upstream.base_url()), store, dir).await;
    for api in STREAMING {
        for stream in [false, true] {
            let prompt = format!("broken store {api:?} {stream}");
            let r = send(&proxy, api.path(), &api.body(&prompt, stream), &[]).await;
            assert_eq!(r.status(), 200, "{api:?} stream={stream}");
            let text = r.text().await.unwrap();
            let got = if stream {
                api.text_of_stream(&text)
            } else {
                api.text_of(&serde_json::from_str(&text).unwrap()).unwrap()
            };
            assert_eq!(got, format!("echo: {prompt}"));
        }
    }
    let metrics = http().get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("holdfast_store_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(errors >= 8, "store failures must be counted, saw {errors}");
}
