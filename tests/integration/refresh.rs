//! `holdfast cache refresh`: the most asked stored questions re-asked through the configured
//! routes, through a running server's admin API and on the store directly. What a refresh
//! cannot do (tenant entries, a provider that is down) leaves the stored answers as they were.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use holdfast::store::Store;
use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

const TOKEN: &str = "refresh-admin-token-5c1d0e2f";

/// `holdfast.toml` with both dialects routed to the fake; `sections` go before the providers.
fn config_text(upstream: &str, sections: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\n{sections}\n{}", fake_providers(upstream))
}

/// Runs `holdfast ARGS` in `dir` with the admin token; through `server` when given. Blocking,
/// so the fake provider keeps its runtime workers meanwhile.
fn holdfast(dir: &Path, store: &Path, server: Option<&str>, args: &[&str]) -> Output {
    let mut env = vec![("HOLDFAST_ADMIN_TOKEN", TOKEN)];
    env.extend(server.map(|url| ("HOLDFAST_SERVER", url)));
    tokio::task::block_in_place(|| holdfast_with(dir, store, PASSPHRASE, args, &env))
}

async fn chat(proxy: &str, prompt: &str, credential: Option<&str>) -> (String, String) {
    let mut request = http()
        .post(format!("{proxy}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}));
    if let Some(key) = credential {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-holdfast-cache"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    (cache, body["choices"][0]["message"]["content"].as_str().unwrap().to_owned())
}

async fn anthropic_stream(proxy: &str, prompt: &str) -> String {
    let response = http()
        .post(format!("{proxy}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3-5-haiku", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-holdfast-cache"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    assert!(body.contains("message_stop"), "{body}");
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_through_the_server_reasks_the_most_asked_questions_and_keeps_what_fails() {
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    drop(Store::open(&store, &passphrase(), create_options()).unwrap());
    let config = config_text(&fake.base_url(), "[admin]\nlisten = \"127.0.0.1:0\"");
    let served = tokio::task::block_in_place(|| serve_with_admin(dir.path(), &store, &config, TOKEN));
    let proxy = served.proxy.clone();

    // Asked three times, twice, twice by a tenant with its own key, and once.
    for _ in 0..3 {
        chat(&proxy, "popular question", None).await;
    }
    for _ in 0..2 {
        anthropic_stream(&proxy, "streamed question").await;
        chat(&proxy, "tenant question", Some("sk-tenant-one")).await;
    }
    chat(&proxy, "asked once", None).await;

    let admin = Some(served.admin.as_str());
    let calls = fake.calls();
    let plan = json_of(&holdfast(dir.path(), &store, admin, &["cache", "refresh", "--older-than", "0s", "--json"]));
    assert_eq!(fake.calls(), calls, "a plan without --yes sent requests");
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["eligible"], 3, "{plan}");
    assert_eq!(plan["picked"], 2, "{plan}");
    assert_eq!(plan["skipped_tenant_entries"], 1, "{plan}");
    let entries = plan["entries"].as_array().unwrap();
    // Most asked first: asked again twice, then once.
    assert_eq!(entries[0]["times_served"], 2, "{plan}");
    assert_eq!(entries[0]["endpoint"], "/v1/chat/completions", "{plan}");
    assert_eq!(entries[1]["endpoint"], "/v1/messages", "{plan}");
    assert!(entries.iter().all(|e| e["outcome"] == "would refresh"), "{plan}");
    assert!(plan["estimated_tokens"].as_u64().unwrap() > 0, "{plan}");
    let text = holdfast(dir.path(), &store, admin, &["cache", "refresh", "--older-than", "0s"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("add --yes") && text.contains("tokens"), "{text}");

    // The provider now answers differently: a refresh must store what it says now.
    fake.set_fault(Fault::Paraphrase);
    let started = Instant::now();
    let args = ["cache", "refresh", "--older-than", "0s", "--per-minute", "600", "--yes", "--json"];
    let done = json_of(&holdfast(dir.path(), &store, admin, &args));
    assert_eq!(done["refreshed"], 2, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(fake.calls(), calls + 2, "one request per picked entry, none for the tenant's");
    assert!(done["tokens_used"].as_u64().unwrap() > 0, "{done}");
    // 600 a minute is one request every 100 ms.
    assert!(started.elapsed() >= Duration::from_millis(100), "two requests in {:?}", started.elapsed());

    // In an outage, the refreshed answer is the one served.
    fake.down().await;
    assert_eq!(chat(&proxy, "popular question", None).await, ("stale".into(), "said: popular question".into()));
    assert_eq!(anthropic_stream(&proxy, "streamed question").await, "stale");
    // A refresh while the provider is down changes nothing it cannot replace.
    let failed = json_of(&holdfast(dir.path(), &store, admin, &args));
    assert_eq!((failed["refreshed"].as_u64(), failed["failed"].as_u64()), (Some(0), Some(2)), "{failed}");
    assert!(failed["entries"][0]["outcome"].as_str().unwrap().contains("stored answer kept"), "{failed}");
    assert_eq!(chat(&proxy, "popular question", None).await.1, "said: popular question");

    // Each run that sent requests is in the access trail, opened before it began.
    let trail = json_of(&holdfast(dir.path(), &store, admin, &["audit", "trail", "--verify", "--json"]));
    let refreshes: Vec<&Value> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["command"].as_str().unwrap_or("").starts_with("cache refresh"))
        .collect();
    let started_entries = refreshes.iter().filter(|e| e["outcome"] == "started").count();
    assert_eq!(started_entries, 2, "{trail}");
    assert_eq!(refreshes.len(), 2 + 2 + 2, "two plans, two runs with their opening entries: {trail}");
    assert!(trail["first_broken"].is_null(), "{trail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_the_store_directly_uses_the_configured_providers() {
    // Entries of the shared namespace (`cache.scope = "shared"`); the test above refreshes the
    // anonymous one.
    let fake = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, &passphrase(), create_options()).unwrap();
    let month_ago = holdfast::store::now_ms() - 30 * 86_400_000;
    let (old, request) = chat_request(&store, "asked often last month");
    store.put_as_of(&old, &record(request, "the answer of last month"), month_ago, month_ago, 5).unwrap();
    let (new, request) = chat_request(&store, "asked often today");
    let now = holdfast::store::now_ms();
    store.put_as_of(&new, &record(request, "today's answer"), now, now, 5).unwrap();
    drop(store);
    std::fs::write(dir.path().join("holdfast.toml"), config_text(&fake.base_url(), "[cache]\nscope = \"shared\""))
        .unwrap();

    let args = ["cache", "refresh", "--older-than", "7d", "--yes", "--json"];
    let done = json_of(&holdfast(dir.path(), &path, None, &args));
    assert_eq!((done["picked"].as_u64(), done["refreshed"].as_u64()), (Some(1), Some(1)), "{done}");
    assert_eq!(done["entries"][0]["address"], old.to_hex(), "{done}");
    assert_eq!(fake.calls(), 1);

    let store = reopen(&path);
    let refreshed = store.get(&old).unwrap().unwrap();
    assert_eq!(answer_of(&refreshed.record), "echo: asked often last month");
    assert!(refreshed.meta.created_ms >= now, "the refreshed entry is new");
    // A fresh answer keeps the count of the one it replaced, plus this ask.
    assert_eq!(refreshed.meta.times_served, 6);
    assert_eq!(answer_of(&store.get(&new).unwrap().unwrap().record), "today's answer");
}
