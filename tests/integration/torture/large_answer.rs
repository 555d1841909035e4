//! An answer larger than `max_response_bytes` is relayed whole, not stored, and relaying it
//! keeps memory bounded.

use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;

use super::{Server, chat, soak, write_config};

/// One SSE chunk of about 1 KiB of text.
fn event() -> String {
    let delta = serde_json::json!({"id": "big", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "word ".repeat(200)}, "finish_reason": null}]});
    format!("data: {delta}\n\n")
}

/// Serves a stream of `megabytes` MiB of events, then a clean end.
async fn big_upstream(megabytes: usize) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            let one = event();
            let per_chunk = (64 * 1024) / one.len();
            let chunk = Bytes::from(one.repeat(per_chunk));
            let chunks = megabytes * 1024 * 1024 / chunk.len();
            let end = "data: {\"id\":\"big\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
            let body = futures_util::stream::iter(
                std::iter::repeat_n(chunk, chunks).chain(std::iter::once(Bytes::from_static(end.as_bytes()))).map(Ok::<_, std::io::Error>),
            );
            ([("content-type", "text/event-stream")], Body::from_stream(body))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_max_response_bytes_is_relayed_with_bounded_memory_and_not_stored() {
    let megabytes = if soak() { 200 } else { 24 };
    let dir = tempfile::tempdir().unwrap();
    let upstream = big_upstream(megabytes).await;
    let config = write_config(dir.path(), &dir.path().join("store"), &upstream, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[log]", "max_response_bytes = \"8MiB\"\n[log]")
        // The whole stream must fit in the provider's timeout; a debug build relays slowly.
        .replace("timeout = \"5s\"", "timeout = \"300s\"");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(dir.path(), &config).unwrap();
    let pid = server.child.id();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let before = rss_kib(pid, "VmRSS:");
    let response = client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&chat("a very long answer", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut tail = Vec::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.unwrap_or_else(|e| panic!("{e}\n{}", server.log_text())) {
        received += chunk.len();
        tail = chunk.to_vec();
    }
    let peak = rss_kib(pid, "VmHWM:");
    assert!(received >= megabytes * 1024 * 1024 * 99 / 100, "relayed {received} bytes");
    assert!(String::from_utf8_lossy(&tail).contains("[DONE]"), "the stream must end cleanly");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "relayed {} MiB: RSS {} MiB before, peak {} MiB (+{growth_mib} MiB)",
        received >> 20,
        before / 1024,
        peak / 1024
    );
    assert!(growth_mib < 100, "relaying {megabytes} MiB grew RSS by {growth_mib} MiB");
    let metrics = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_answers_too_large_total 1"), "{metrics}");
    assert!(metrics.contains("holdfast_store_entries 0"), "an answer over the limit must not be stored");
    server.kill9();
}
