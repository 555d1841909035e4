//! Paths Holdfast does not cache, passed through to the provider of the request's dialect:
//! against a small "provider" on 127.0.0.1:0 that records what reached it and counts an
//! upload's bytes as they stream in.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

fn json_reply(body: Value) -> Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// What the provider saw.
#[derive(Default)]
struct Seen {
    /// Upload bytes received so far, updated per frame as they arrive.
    received: AtomicU64,
    /// Requests per "METHOD path?query".
    requests: Mutex<Vec<String>>,
    /// Headers of the last request.
    headers: Mutex<HeaderMap>,
    /// 503s still to give on `GET /v1/flaky` and `POST /v1/flaky`.
    flaky: AtomicUsize,
}

type Shared = Arc<Seen>;

fn note(seen: &Seen, method: &str, uri: &Uri, headers: &HeaderMap) {
    seen.requests.lock().unwrap().push(format!("{method} {uri}"));
    *seen.headers.lock().unwrap() = headers.clone();
}

async fn upload(State(seen): State<Shared>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    note(&seen, "POST", &uri, &headers);
    let mut stream = body.into_data_stream();
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = stream.next().await {
        let Ok(frame) = frame else { return StatusCode::BAD_REQUEST.into_response() };
        seen.received.fetch_add(frame.len() as u64, Ordering::SeqCst);
        tail.extend_from_slice(&frame);
        let keep = tail.len().saturating_sub(64);
        tail.drain(..keep);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = json!({"id": "file-abc", "object": "file", "bytes": seen.received.load(Ordering::SeqCst),
        "content_type": content_type, "tail": String::from_utf8_lossy(&tail)});
    json_reply(body)
}

async fn echo(State(seen): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let method = if body.is_empty() { "GET" } else { "POST" };
    note(&seen, method, &uri, &headers);
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    json_reply(json!({"path": uri.path(), "query": uri.query(), "sent": sent, "data": []}))
}

async fn flaky(State(seen): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    note(&seen, "ANY", &uri, &headers);
    let left = seen.flaky.load(Ordering::SeqCst);
    if left > 0 {
        seen.flaky.store(left - 1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    json_reply(json!({"ok": true}))
}

async fn model(State(seen): State<Shared>, uri: Uri, headers: HeaderMap, Path(id): Path<String>) -> Response {
    note(&seen, "GET", &uri, &headers);
    json_reply(json!({"id": id, "object": "model"}))
}

async fn start_provider() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/files", post(upload).get(echo))
        .route("/v1/messages/batches", post(echo).get(echo))
        .route("/v1/messages/batches/{id}", get(echo))
        .route("/v1/responses/{id}", get(echo).delete(echo))
        .route("/v1/responses/{id}/input_items", get(echo))
        .route("/v1/moderations", post(echo))
        .route("/v1/models/{id}", get(model))
        .route("/v1/flaky", get(flaky).post(flaky))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

async fn proxy_for(provider: &str) -> Proxy {
    let mut config = config_for(provider);
    for p in &mut config.providers {
        p.timeout = Duration::from_secs(60);
        p.retry.attempts = 3;
        p.retry.backoff_base = Duration::from_millis(1);
        p.retry.backoff_cap = Duration::from_millis(5);
    }
    start_proxy(config).await
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The process's peak resident set (`VmHWM`), 0 where /proc is not available.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

const UPLOAD: u64 = 200 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
/// How far the provider may lag behind the client before the proxy counts as buffering.
const WINDOW: u64 = 16 * 1024 * 1024;

/// A 200 MB multipart upload reaches the provider while the client is still sending it: the
/// client sends a chunk only once the provider has received all but `WINDOW` bytes of what was
/// sent. A proxy that buffered the body (or most of it) would stall this, and the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_multipart_upload_streams_through_without_being_buffered() {
    let (provider, seen) = start_provider().await;
    let proxy = proxy_for(&provider).await;
    let boundary = "holdfast-test-boundary";
    let head = Bytes::from(format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\ncontent-type: application/octet-stream\r\n\r\n"
    ));
    let foot = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let total = head.len() as u64 + UPLOAD + foot.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let counter = seen.clone();
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        let pieces = std::iter::once(head).chain(std::iter::repeat_n(chunk, (UPLOAD as usize) / CHUNK)).chain([foot]);
        for piece in pieces {
            let waited = Instant::now();
            while counter.received.load(Ordering::SeqCst) + WINDOW < sent {
                if waited.elapsed() > Duration::from_secs(20) {
                    return Err(format!(
                        "provider had {} of {sent} bytes: the proxy is buffering",
                        counter.received.load(Ordering::SeqCst)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sent += piece.len() as u64;
            if tx.send(Ok(piece)).await.is_err() {
                return Err("the proxy stopped reading the upload".to_owned());
            }
        }
        Ok(sent)
    });
    let peak_before = peak_rss_kib();
    let started = Instant::now();
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let response = http()
        .post(format!("{}/v1/files", proxy.url))
        .bearer_auth("sk-upload")
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("content-length", total.to_string())
        .timeout(Duration::from_secs(120))
        .body(body)
        .send()
        .await;
    // The sender's verdict first: it says why, when the proxy holds the upload back.
    assert_eq!(sender.await.unwrap(), Ok(total));
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-holdfast-cache"), "bypass");
    let answer: Value = response.json().await.unwrap();
    // Informational only: other tests share this process, so the peak is not asserted.
    eprintln!(
        "200 MB upload through the proxy: {:?}; process peak RSS {} → {} KiB",
        started.elapsed(),
        peak_before,
        peak_rss_kib()
    );
    assert_eq!(answer["bytes"], total, "every byte arrived");
    assert!(answer["content_type"].as_str().unwrap().contains(boundary), "the boundary is forwarded: {answer}");
    assert!(answer["tail"].as_str().unwrap().ends_with(&format!("--{boundary}--\r\n")));
    assert_eq!(seen.headers.lock().unwrap()["authorization"], "Bearer sk-upload");
    assert_eq!(proxy.state.store.stats().entries, 0, "never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_endpoints_reach_the_provider_of_their_dialect_with_its_credentials() {
    let (provider, seen) = start_provider().await;
    let proxy = proxy_for(&provider).await;
    let last_headers = || seen.headers.lock().unwrap().clone();

    // OpenAI: GET /v1/files with its query, the credential as a bearer token.
    let r = http()
        .get(format!("{}/v1/files?purpose=batch&limit=2", proxy.url))
        .bearer_auth("sk-o")
        .header("openai-project", "proj_1")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-cache")), (200, "bypass".to_owned()));
    assert_eq!(header(&r, "x-holdfast-provider"), "fake-openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["query"], "purpose=batch&limit=2");
    assert_eq!(last_headers()["authorization"], "Bearer sk-o");
    assert_eq!(last_headers()["openai-project"], "proj_1");

    // Anthropic: message batches, the key as x-api-key, version and beta headers kept.
    let batch = json!({"requests": [{"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}}]});
    let r = http()
        .post(format!("{}/v1/messages/batches", proxy.url))
        .bearer_auth("sk-ant")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "message-batches-2024-09-24")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "fake-anthropic".to_owned()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sent"], batch, "the body arrives as sent");
    let h = last_headers();
    assert_eq!(
        (h["x-api-key"].to_str().unwrap(), h["anthropic-beta"].to_str().unwrap()),
        ("sk-ant", "message-batches-2024-09-24")
    );
    assert!(h.get("authorization").is_none(), "Anthropic gets the key in its own header");
    let r = http()
        .get(format!("{}/v1/messages/batches/msgbatch_1", proxy.url))
        .header("x-api-key", "sk-ant")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Anthropic's Files API shares the path with OpenAI's; anthropic-version picks the dialect.
    let r = http()
        .get(format!("{}/v1/files", proxy.url))
        .header("x-api-key", "sk-ant")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-holdfast-provider"), "fake-anthropic");

    // Responses follow-ups and models/{id}; moderations pass through too (never stored).
    for path in ["/v1/responses/resp_1", "/v1/responses/resp_1/input_items?limit=5", "/v1/models/gpt-4o-mini"] {
        let r = http().get(format!("{}{path}", proxy.url)).bearer_auth("sk-o").send().await.unwrap();
        assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-cache")), (200, "bypass".to_owned()), "{path}");
    }
    let r = http()
        .get(format!("{}/v1/models/claude-haiku-4-5", proxy.url))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-holdfast-provider"), "fake-anthropic", "the model in the path picks the provider");
    let r = http().delete(format!("{}/v1/responses/resp_1", proxy.url)).bearer_auth("sk-o").send().await.unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = http()
            .post(format!("{}/v1/moderations", proxy.url))
            .bearer_auth("sk-o")
            .json(&json!({"model": "omni-moderation-latest", "input": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-holdfast-cache"), "bypass");
    }
    let moderations = seen.requests.lock().unwrap().iter().filter(|r| r.contains("/v1/moderations")).count();
    assert_eq!(moderations, 2, "each moderation asks the provider");
    assert_eq!(proxy.state.store.stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_methods_are_retried_and_errors_come_in_the_clients_dialect() {
    let (provider, seen) = start_provider().await;
    let proxy = proxy_for(&provider).await;
    seen.flaky.store(2, Ordering::SeqCst);
    let r = http().get(format!("{}/v1/flaky", proxy.url)).bearer_auth("k").send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-attempts")), (200, "3".to_owned()), "GET retried");
    seen.flaky.store(1, Ordering::SeqCst);
    let r = http().post(format!("{}/v1/flaky", proxy.url)).bearer_auth("k").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503, "a POST may have taken effect: the provider's answer is passed on, not retried");
    assert_eq!(header(&r, "x-holdfast-cache"), "bypass");

    // Unreachable provider: an error in the client's dialect.
    let dead = start_proxy(config_for("http://127.0.0.1:9")).await;
    let r = http().get(format!("{}/v1/messages/batches", dead.url)).header("x-api-key", "k").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    let r = http().get(format!("{}/v1/files", dead.url)).bearer_auth("k").send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("unreachable"), "{v}");
    assert!(!v.to_string().contains("Bearer"), "no credential in errors");
}

/// `GET /v1/responses/{id}` of an answer Holdfast stored: the provider's while it is up, the
/// store's when it fails, and only for the tenant the answer belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_is_retrievable_by_id_in_an_outage_by_its_own_tenant_only() {
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let body = json!({"model": "gpt-4o-mini", "input": "remember me"});
    let r =
        http().post(format!("{}/v1/responses", proxy.url)).bearer_auth("sk-alice").json(&body).send().await.unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let get = |key: &'static str| {
        let url = format!("{}/v1/responses/{id}", proxy.url);
        async move { http().get(url).bearer_auth(key).send().await.unwrap() }
    };
    let up = get("sk-alice").await;
    assert_eq!(header(&up, "x-holdfast-cache"), "bypass", "while the provider is up it answers");
    upstream.set_fault(crate::fake_upstream::Fault::Status(503));
    let down = get("sk-alice").await;
    assert_eq!((down.status().as_u16(), header(&down, "x-holdfast-cache")), (200, "stale".to_owned()));
    let v: Value = down.json().await.unwrap();
    assert_eq!((v["id"].as_str(), v["object"].as_str()), (Some(id.as_str()), Some("response")));
    let other = get("sk-mallory").await;
    assert_eq!(other.status(), 503, "another tenant never gets alice's answer, even knowing its id");
    let sub = http()
        .get(format!("{}/v1/responses/{id}/input_items", proxy.url))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status(), 503, "only the response itself is kept");

    // Replay never calls upstream: the stored object is a hit, anything else passed through
    // is a 404 that says why.
    upstream.set_fault(crate::fake_upstream::Fault::None);
    let calls = upstream.calls();
    let replay = |path: String| async move {
        http().get(path).bearer_auth("sk-alice").header("x-holdfast-mode", "replay").send().await.unwrap()
    };
    let hit = replay(format!("{}/v1/responses/{id}", proxy.url)).await;
    assert_eq!((hit.status().as_u16(), header(&hit, "x-holdfast-cache")), (200, "hit".to_owned()));
    let files = replay(format!("{}/v1/files", proxy.url)).await;
    assert_eq!(files.status(), 404);
    let v: Value = files.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_recorded", "{v}");
    assert_eq!(upstream.calls(), calls, "replay made no upstream call");
}
