//! Retries, deadlines, circuit breakers and failover, against real fake upstreams.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

/// Two OpenAI-dialect providers `a` and `b` and an Anthropic-dialect `c`, with `extra` TOML
/// appended (routes, overrides). Fast backoff so tests do not sleep long.
fn config(a: &FakeUpstream, b: &FakeUpstream, c: &FakeUpstream, extra: &str) -> holdfast::config::Config {
    let provider = |name: &str, api: &str, base: String, models: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\napi = \"{api}\"\nbase_url = \"{base}\"\nmodels = {models}\n\
             first_byte_timeout = \"2s\"\ntimeout = \"5s\"\n\
             retry = {{ attempts = 3, backoff_base = \"20ms\", backoff_cap = \"100ms\", retry_after_cap = \"3s\" }}\n\
             breaker = {{ failures = 3, cooldown = \"400ms\" }}\n"
        )
    };
    let text = format!(
        "{}{}{}{extra}",
        provider("a", "openai", a.base_url(), "[\"gpt-*\"]"),
        provider("b", "openai", b.base_url(), "[\"gpt-*\"]"),
        provider("c", "anthropic", c.base_url(), "[\"claude-*\"]"),
    );
    let config = holdfast::config::Config::parse(&text).unwrap();
    config.validate().unwrap();
    config
}

async fn three() -> (FakeUpstream, FakeUpstream, FakeUpstream) {
    (FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await)
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

async fn post(proxy: &Proxy, path: &str, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut r = http().post(format!("{}{path}", proxy.url)).bearer_auth("sk-test").json(body);
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_the_provider_answers() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(config(&a, &b, &c, "")).await;
    a.set_fault_for(Fault::Status(500), 2);
    let r = post(&proxy, "/v1/chat/completions", &chat("retry me", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-attempts"), "3");
    assert_eq!(header(&r, "x-holdfast-provider"), "a");
    assert_eq!((a.calls(), b.calls()), (3, 0), "the primary recovered: no failover needed");

    a.set_fault_for(Fault::ResetConnection, 1);
    let r = post(&proxy, "/v1/chat/completions", &chat("reset once", false), &[]).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-attempts")), (200, "2".to_owned()));

    // A 400 is the provider's verdict: no retry, no failover, passed through.
    a.set_fault_for(Fault::Status(400), 5);
    let before = a.calls();
    let r = post(&proxy, "/v1/chat/completions", &chat("bad request", false), &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!((a.calls() - before, b.calls()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_a_long_one_fails_over_instead() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(config(&a, &b, &c, "")).await;
    // The fake sends `retry-after: 1` with 429.
    a.set_fault_for(Fault::Status(429), 1);
    let started = Instant::now();
    let r = post(&proxy, "/v1/chat/completions", &chat("patience", false), &[]).await;
    let waited = started.elapsed();
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "a".to_owned()));
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 was not honoured ({waited:?})");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // Asked to wait longer than retry_after_cap: go to the next target at once.
    let proxy = start_proxy(config(&a, &b, &c, "")).await;
    let mut short_cap = proxy.state.config.clone();
    short_cap.providers[0].retry.retry_after_cap = Duration::from_millis(100);
    drop(proxy);
    let proxy = start_proxy(short_cap).await;
    a.set_fault(Fault::Status(429));
    let started = Instant::now();
    let r = post(&proxy, "/v1/chat/completions", &chat("no patience", false), &[]).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "b".to_owned()));
    assert!(started.elapsed() < Duration::from_millis(900), "waited for a Retry-After over the cap");
    a.set_fault(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_fail_over_in_order_and_the_answer_is_kept_under_the_clients_request() {
    let (a, b, c) = three().await;
    let routes = "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a:gpt-4o\", \"b:gpt-4o-mini\"]\n";
    let proxy = start_proxy(config(&a, &b, &c, routes)).await;
    a.down().await;
    let r = post(&proxy, "/v1/chat/completions", &chat("failover", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-provider"), "b");
    assert_eq!(header(&r, "x-holdfast-attempts"), "4", "3 tries on a, then b");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o-mini", "b was asked for the route's model");
    assert_eq!(b.last_body().unwrap()["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: failover");

    // Now the backup fails too: the answer it gave is served from the store.
    b.down().await;
    let r = post(&proxy, "/v1/chat/completions", &chat("failover", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(header(&r, "x-holdfast-provider"), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_skips_the_provider_then_probes_and_closes() {
    let (a, b, c) = three().await;
    let mut cfg = config(&a, &b, &c, "");
    cfg.providers[0].retry.attempts = 1;
    // Long enough that the "while open" requests below finish inside it on a loaded machine
    // (1.5 s was not, with the whole suite running on 2 shared cores, each stored answer
    // waiting for an fsync and the torture suite alongside).
    cfg.providers[0].breaker.cooldown = Duration::from_millis(4000);
    let proxy = start_proxy(cfg).await;
    a.set_fault(Fault::Status(503));
    for i in 0..3 {
        let r = post(&proxy, "/v1/chat/completions", &chat(&format!("trip {i}"), false), &[]).await;
        assert_eq!(header(&r, "x-holdfast-provider"), "b", "b takes over while a fails");
    }
    assert_eq!(a.calls(), 3);
    let health: Value = http().get(format!("{}/admin/health", proxy.url)).send().await.unwrap().json().await.unwrap();
    let breaker = health["breakers"].as_array().unwrap().iter().find(|b| b["key"] == "a/gpt-4o").unwrap().clone();
    assert_eq!(breaker["state"], "open", "{health}");
    let metrics = http().get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_breaker_state{breaker=\"a/gpt-4o\"} 2"), "{metrics}");

    // While open: no request reaches a at all.
    for i in 0..5 {
        let r = post(&proxy, "/v1/chat/completions", &chat(&format!("skip {i}"), false), &[]).await;
        assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-attempts")), (200, "1".to_owned()));
    }
    assert_eq!(a.calls(), 3, "an open breaker must not let requests through");

    // After the cooldown one probe goes through; a's recovery closes the breaker.
    a.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let r = post(&proxy, "/v1/chat/completions", &chat("probe", false), &[]).await;
    assert_eq!(header(&r, "x-holdfast-provider"), "a");
    let health: Value = http().get(format!("{}/admin/health", proxy.url)).send().await.unwrap().json().await.unwrap();
    let breaker = health["breakers"].as_array().unwrap().iter().find(|b| b["key"] == "a/gpt-4o").unwrap().clone();
    assert_eq!(breaker["state"], "closed");
    assert_eq!(breaker["transitions"], 3, "closed → open → half-open → closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_trips_its_breaker_so_stored_answers_come_fast() {
    let (a, b, c) = three().await;
    let mut cfg = config(&a, &b, &c, "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a\"]\n");
    cfg.providers[0].breaker.cooldown = Duration::from_secs(60);
    let proxy = start_proxy(cfg).await;
    for i in 0..3 {
        post(&proxy, "/v1/chat/completions", &chat(&format!("kept {i}"), false), &[]).await.bytes().await.unwrap();
    }
    a.down().await;
    // The first request pays for the retries that open the breaker…
    let r = post(&proxy, "/v1/chat/completions", &chat("kept 0", false), &[]).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(header(&r, "x-holdfast-attempts"), "3");
    // …later ones make no attempt at all.
    for i in 1..3 {
        let r = post(&proxy, "/v1/chat/completions", &chat(&format!("kept {i}"), false), &[]).await;
        assert_eq!(header(&r, "x-holdfast-cache"), "stale");
        assert_eq!(header(&r, "x-holdfast-upstream-error"), "circuit open");
        assert_eq!(header(&r, "x-holdfast-attempts"), "");
    }
    let r = post(&proxy, "/v1/chat/completions", &chat("never stored", false), &[]).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-should-retry"), "", "no attempt was made, so nothing to say about retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_answered_within_the_deadline() {
    let (a, b, c) = three().await;
    let mut cfg = config(&a, &b, &c, "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a\", \"b\"]\n");
    cfg.resilience.deadline = Duration::from_millis(1500);
    cfg.resilience.stale_reserve = Duration::from_millis(200);
    let proxy = start_proxy(cfg).await;
    post(&proxy, "/v1/chat/completions", &chat("slow day", false), &[]).await.bytes().await.unwrap();
    a.set_fault(Fault::Hang);
    b.set_fault(Fault::Hang);
    for (prompt, status) in [("slow day", 200), ("never asked", 504)] {
        let started = Instant::now();
        let r = post(&proxy, "/v1/chat/completions", &chat(prompt, false), &[]).await;
        let took = started.elapsed();
        assert_eq!(r.status(), status, "{prompt}");
        assert!(took < Duration::from_millis(1500 + 300), "{prompt}: answered after {took:?}, deadline 1.5s");
        assert!(took >= Duration::from_millis(1200), "{prompt}: gave up before the deadline ({took:?})");
        if status == 504 {
            assert_eq!(header(&r, "x-should-retry"), "false");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "upstream_timeout");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_stream_is_continued_never_sent_again_from_the_start() {
    let (a, b, c) = three().await;
    let proxy = start_proxy(config(&a, &b, &c, "")).await;
    a.set_fault(Fault::CutStream);
    let r = post(&proxy, "/v1/chat/completions", &chat("cut after start", true), &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("the stream is continued by b and ends cleanly");
    let said: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(said, "echo: cut after start", "each character once: {text}");
    assert_eq!((a.calls(), b.calls()), (1, 1), "a is not asked again; b continues what the client has");
    // With rescue off, a started stream is neither retried nor failed over.
    let mut off = config(&a, &b, &c, "");
    off.resilience.resume_streams = false;
    let proxy = start_proxy(off).await;
    let r = post(&proxy, "/v1/chat/completions", &chat("cut again", true), &[]).await;
    assert!(r.bytes().await.is_err());
    assert_eq!((a.calls(), b.calls()), (2, 1));
    // Before the first byte it may be: a 503 on the stream request is retried, then b answers.
    a.set_fault(Fault::Status(503));
    let r = post(&proxy, "/v1/chat/completions", &chat("fails before start", true), &[]).await;
    assert_eq!(header(&r, "x-holdfast-provider"), "b");
    assert!(r.text().await.unwrap().contains("data: [DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_fails_over_to_an_anthropic_target_and_back() {
    let (a, b, c) = three().await;
    let routes = "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a:gpt-4o\", \"c:claude-haiku-4-5\"]\n\
                  [[routes]]\nmodel = \"claude-*\"\ntargets = [\"c\", \"b:gpt-4o-mini\"]\n";
    let proxy = start_proxy(config(&a, &b, &c, routes)).await;
    a.down().await;
    c.set_fault(Fault::None);
    // OpenAI client, Anthropic backup: non-streamed and streamed.
    let r = post(&proxy, "/v1/chat/completions", &chat("cross over", false), &[]).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "c".to_owned()));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: cross over");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(c.last_body().unwrap()["model"], "claude-haiku-4-5");
    let r = post(&proxy, "/v1/chat/completions", &chat("cross stream", true), &[]).await;
    let sse = r.text().await.unwrap();
    let text: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "echo: cross stream");
    assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");

    // Anthropic client, OpenAI backup.
    c.down().await;
    let messages =
        json!({"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "back again"}]});
    let r = http()
        .post(format!("{}/v1/messages", proxy.url))
        .header("x-api-key", "sk-ant")
        .header("anthropic-version", "2023-06-01")
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-provider")), (200, "b".to_owned()));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "echo: back again");
    assert_eq!(body["stop_reason"], "end_turn");

    // The translated answers were kept under the clients' requests.
    b.down().await;
    let r = post(&proxy, "/v1/chat/completions", &chat("cross over", false), &[]).await;
    assert_eq!(header(&r, "x-holdfast-cache"), "stale");
    assert_eq!(r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"], "echo: cross over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untranslatable_request_skips_the_cross_dialect_target() {
    let (a, b, c) = three().await;
    let routes = "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a\", \"c:claude-haiku-4-5\"]\n";
    let proxy = start_proxy(config(&a, &b, &c, routes)).await;
    a.down().await;
    let mut body = chat("two answers please", false);
    body["n"] = json!(2);
    let r = post(&proxy, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status(), 502);
    assert_eq!(c.calls(), 0, "an untranslatable request must not reach the other dialect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_a_half_open_probe_does_not_wedge_the_breaker() {
    let (a, b, c) = three().await;
    let mut cfg = config(&a, &b, &c, "");
    cfg.providers[0].retry.attempts = 1;
    cfg.providers[0].breaker.failures = 1;
    cfg.providers[0].breaker.cooldown = Duration::from_millis(300);
    let proxy = start_proxy(cfg).await;
    // One 503 opens a's model breaker; b answers meanwhile.
    a.set_fault(Fault::Status(503));
    let r = post(&proxy, "/v1/chat/completions", &chat("open it", false), &[]).await;
    assert_eq!(header(&r, "x-holdfast-provider"), "b");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The cooldown is over: the next request is the probe. a hangs and the client gives up.
    a.set_fault(Fault::Hang);
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let gone = impatient
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth("sk-test")
        .json(&chat("probe and leave", false))
        .send()
        .await;
    assert!(gone.is_err(), "the client was meant to time out during the probe");
    assert_eq!(a.calls(), 2, "the probe reached a");

    // a recovers. The abandoned probe must have released its slot, so a new probe goes to a
    // and closes the breaker (a leaked slot would send everything to b until restart).
    a.set_fault(Fault::None);
    let mut provider = String::new();
    for _ in 0..20 {
        let r = post(&proxy, "/v1/chat/completions", &chat("after the probe", false), &[]).await;
        provider = header(&r, "x-holdfast-provider");
        if provider == "a" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(provider, "a", "the breaker never let a probe through again");
    let health: Value = http().get(format!("{}/admin/health", proxy.url)).send().await.unwrap().json().await.unwrap();
    let breaker = health["breakers"].as_array().unwrap().iter().find(|b| b["key"] == "a/gpt-4o").unwrap().clone();
    assert_eq!(breaker["state"], "closed", "{health}");
}
