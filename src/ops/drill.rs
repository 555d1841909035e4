//! `holdfast drill`: a self-contained outage drill for someone with no API keys and no network.
//!
//! It starts a simulated provider on loopback and the proxy on a temporary encrypted store,
//! sends traffic through (streamed and not, both dialects), takes the provider down and shows
//! the same requests answered from the store, checks that no stored file reveals a prompt,
//! then brings up a second simulated provider and shows new requests failing over to it.
//! Every step is checked, so the drill doubles as a smoke test (exit code 3 if one fails).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{AppState, run};
use crate::secret::{SecretKey, StoreSecret};
use crate::store::{Store, StoreOptions};

/// One checked step of the drill.
pub struct Step {
    /// What the step checks, as the report heads it.
    pub title: String,
    /// Whether every check in it held; one failed step fails the drill.
    pub ok: bool,
    /// One line per request or check, with timings.
    pub lines: Vec<String>,
}

/// What `holdfast drill` prints: each step, and how long the whole drill took.
pub struct DrillReport {
    /// The steps, in the order they ran.
    pub steps: Vec<Step>,
    /// Wall time of the whole drill, set-up included.
    pub total: Duration,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

impl fmt::Display for DrillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Holdfast outage drill")?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "\n{}. {} [{}]", i + 1, step.title, if step.ok { "ok" } else { "FAILED" })?;
            for line in &step.lines {
                writeln!(f, "   {line}")?;
            }
        }
        let passed = self.steps.iter().filter(|s| s.ok).count();
        writeln!(
            f,
            "\n{}: {passed} of {} steps passed in {:.1} s",
            if self.passed() { "drill passed" } else { "drill FAILED" },
            self.steps.len(),
            self.total.as_secs_f64()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("drill set-up failed: {0}")]
    Setup(String),
}

fn setup<E: fmt::Display>(e: E) -> DrillError {
    DrillError::Setup(e.to_string())
}

/// A simulated provider speaking both dialects, on its own loopback port until stopped.
struct Simulator {
    /// Ends its server (taken when stopped, so a second stop does nothing).
    stop: Option<oneshot::Sender<()>>,
    /// Its server's task, awaited on stop so its port is free again.
    task: tokio::task::JoinHandle<()>,
}

impl Simulator {
    async fn start(listener: TcpListener, name: &'static str) -> Self {
        let app = Router::new()
            .route("/v1/chat/completions", post(move |body: axum::body::Bytes| simulate(name, false, body)))
            .route("/v1/messages", post(move |body: axum::body::Bytes| simulate(name, true, body)));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self { stop: Some(tx), task }
    }

    /// Stops serving and closes the port: connections to it are refused from now on.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

async fn simulate(name: &'static str, anthropic: bool, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let model = request.get("model").and_then(Value::as_str).unwrap_or("simulated").to_owned();
    let answer = format!("[{name}] You asked: {prompt}");
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    // A little latency, like a real provider, so the report's timings mean something.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (content_type, body) = match (anthropic, stream) {
        (false, false) => (
            "application/json",
            json!({"id": "chatcmpl-sim", "object": "chat.completion", "created": 0,
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})
            .to_string(),
        ),
        (true, false) => (
            "application/json",
            json!({"id": "msg_sim", "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 5}})
            .to_string(),
        ),
        (false, true) => {
            let chunk = |delta: Value, finish: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            let mut s = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
            for word in answer.split_inclusive(' ') {
                s.push_str(&chunk(json!({"content": word}), Value::Null));
            }
            s.push_str(&chunk(json!({}), json!("stop")));
            s.push_str("data: [DONE]\n\n");
            ("text/event-stream", s)
        }
        (true, true) => {
            let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
            let mut s = event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_sim",
                "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 0}}}),
            );
            s.push_str(&event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for word in answer.split_inclusive(' ') {
                s.push_str(&event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": word}}),
                ));
            }
            s.push_str(&event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            s.push_str(&event(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}}),
            ));
            s.push_str(&event("message_stop", json!({"type": "message_stop"})));
            ("text/event-stream", s)
        }
    };
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A free loopback port: bound, read, released. The backup simulator binds it later; until then
/// connections to it are refused, exactly like a backup that is not up yet.
async fn reserve_port() -> Result<SocketAddr, DrillError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(setup)?;
    listener.local_addr().map_err(setup)
}

/// One request the drill sent through the proxy, as the report describes it.
struct Exchange {
    /// The HTTP status the client got.
    status: u16,
    /// The cache result header: whether the store answered.
    cache: String,
    /// The provider header: who answered.
    provider: String,
    /// The attempts header: how many tries failover took.
    attempts: String,
    /// The answer's text, to check which simulator (or the store) wrote it.
    text: String,
    /// How long the client waited.
    elapsed: Duration,
}

/// The requests of the drill: (label, path, body). Prompts carry a marker the encryption check
/// looks for on disk.
fn requests(marker: &str) -> Vec<(&'static str, &'static str, Value)> {
    let chat = |stream: bool| {
        json!({"model": "gpt-drill", "stream": stream,
            "messages": [{"role": "user", "content": format!("What is our refund policy? {marker}")}]})
    };
    let messages = |stream: bool| {
        json!({"model": "claude-drill", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": format!("Summarise ticket 4711 {marker}")}]})
    };
    vec![
        ("OpenAI chat", "/v1/chat/completions", chat(false)),
        ("OpenAI chat, streamed", "/v1/chat/completions", chat(true)),
        ("Anthropic messages", "/v1/messages", messages(false)),
        ("Anthropic msgs, streamed", "/v1/messages", messages(true)),
    ]
}

async fn send(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Exchange {
    let started = Instant::now();
    let mut request = client.post(format!("{base}{path}")).json(body);
    request = if path == "/v1/messages" {
        request.header("x-api-key", "drill-key").header("anthropic-version", "2023-06-01")
    } else {
        request.bearer_auth("drill-key")
    };
    let header =
        |r: &reqwest::Response, n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    match request.send().await {
        Ok(r) => {
            let (status, cache, provider, attempts) = (
                r.status().as_u16(),
                header(&r, "x-holdfast-cache"),
                header(&r, "x-holdfast-provider"),
                header(&r, "x-holdfast-attempts"),
            );
            let raw = r.text().await.unwrap_or_default();
            Exchange { status, cache, provider, attempts, text: answer_text(&raw), elapsed: started.elapsed() }
        }
        Err(e) => Exchange {
            status: 0,
            cache: "-".into(),
            provider: "-".into(),
            attempts: "-".into(),
            text: format!("error: {e}"),
            elapsed: started.elapsed(),
        },
    }
}

/// The answer text of a JSON body or an SSE stream, in either dialect.
fn answer_text(raw: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        let text = v.pointer("/choices/0/message/content").and_then(Value::as_str);
        let text = text.or_else(|| v.pointer("/content/0/text").and_then(Value::as_str));
        return text.unwrap_or("").to_owned();
    }
    raw.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            let text = v.pointer("/choices/0/delta/content").and_then(Value::as_str);
            text.or_else(|| v.pointer("/delta/text").and_then(Value::as_str)).map(str::to_owned)
        })
        .collect()
}

fn describe(label: &str, e: &Exchange) -> String {
    format!(
        "{label:<24}  {}  cache={:<5}  provider={:<9}  attempts={:<2} {:>6.1} ms  \"{}\"",
        e.status,
        e.cache,
        e.provider,
        e.attempts,
        e.elapsed.as_secs_f64() * 1000.0,
        e.text.chars().take(40).collect::<String>()
    )
}

/// One `[[providers]]` table of the drill's config, with `settings` lines after the model.
fn provider_table(name: &str, api: &str, address: SocketAddr, model: &str, settings: &[&str]) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\napi = \"{api}\"\nbase_url = \"http://{address}\"\nmodels = [\"{model}\"]\n{}\n",
        settings.join("\n")
    )
}

/// Runs the whole drill. Set-up failures (no loopback, no temp dir) are errors; a failed check
/// is a failed step in the report.
pub async fn run_drill() -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("holdfast-drill-").tempdir().map_err(setup)?;
    let mut nonce = [0u8; 8];
    crate::secret::fill_random(&mut nonce);
    let marker = format!("drill-{:016x}", u64::from_le_bytes(nonce));
    let primary_listener = TcpListener::bind("127.0.0.1:0").await.map_err(setup)?;
    let primary_addr = primary_listener.local_addr().map_err(setup)?;
    let backup_addr = reserve_port().await?;
    // The primary fails fast and trips its breaker; the backup answers what it cannot.
    let quick_retry = r#"retry = { attempts = 2, backoff_base = "20ms" }"#;
    let config_text = [
        r#"listen = "127.0.0.1:0""#.to_owned(),
        provider_table(
            "primary",
            "openai",
            primary_addr,
            "gpt-*",
            &[quick_retry, r#"breaker = { failures = 2, cooldown = "60s" }"#],
        ),
        provider_table("primary-a", "anthropic", primary_addr, "claude-*", &[quick_retry]),
        provider_table("backup", "openai", backup_addr, "gpt-*", &["retry = { attempts = 1 }"]),
    ]
    .join("\n");
    let config = Config::parse(&config_text).map_err(setup)?;
    let store_path = dir.path().join("store");
    let secret = StoreSecret::RawKey(SecretKey::generate());
    let options = StoreOptions { create_if_missing: true, cache_bytes: 8 << 20, ..StoreOptions::default() };
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path, &secret, options))
        .await
        .map_err(setup)?
        .map_err(setup)?;
    let upstreams = Upstreams::new(&config.providers, |_| None).map_err(setup)?;
    let state = AppState::new(config, Arc::new(store), upstreams);
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(setup)?;
    let base = format!("http://{}", listener.local_addr().map_err(setup)?);
    let (stop_proxy, proxy_stopped) = oneshot::channel::<()>();
    let proxy_state = state.clone();
    let proxy = tokio::spawn(async move {
        let _ = run(listener, proxy_state, async {
            let _ = proxy_stopped.await;
        })
        .await;
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().map_err(setup)?;
    let requests = requests(&marker);
    let mut steps = Vec::new();

    // 1. Provider up: answers flow through and are recorded.
    let primary = Simulator::start(primary_listener, "primary").await;
    let mut live = Vec::new();
    let mut step = Step { title: "Provider up: requests answered live and recorded".into(), ok: true, lines: vec![] };
    for (label, path, body) in &requests {
        let e = send(&client, &base, path, body).await;
        step.ok &= e.status == 200 && e.cache == "miss" && !e.text.is_empty();
        step.lines.push(describe(label, &e));
        live.push(e.text);
    }
    steps.push(step);

    // 2. Provider down: the same requests come from the encrypted store.
    primary.stop().await;
    let mut step = Step {
        title: "Provider down: the same requests answered from the encrypted store".into(),
        ok: true,
        lines: vec![],
    };
    for ((label, path, body), expected) in requests.iter().zip(&live) {
        let e = send(&client, &base, path, body).await;
        step.ok &= e.status == 200 && e.cache == "stale" && &e.text == expected;
        step.lines.push(describe(label, &e));
    }
    steps.push(step);

    // 3. At rest: no file of the store contains a prompt.
    let mut step =
        Step { title: "Encrypted at rest: no stored file contains a prompt".into(), ok: true, lines: vec![] };
    state.store.flush().map_err(setup)?;
    let (files, leaks) = scan_for(dir.path(), marker.as_bytes());
    step.ok = files > 0 && leaks.is_empty();
    step.lines.push(format!("{files} files scanned for the prompts' marker; {} contain it", leaks.len()));
    for leak in leaks {
        step.lines.push(format!("LEAK: {leak}"));
    }
    steps.push(step);

    // 4. A backup comes up: new requests fail over to it; the dead primary is skipped.
    let backup_listener = TcpListener::bind(backup_addr).await.map_err(setup)?;
    let backup = Simulator::start(backup_listener, "backup").await;
    let mut step =
        Step { title: "Backup up: new requests fail over to the second provider".into(), ok: true, lines: vec![] };
    for i in 1..=3 {
        let body =
            json!({"model": "gpt-drill", "messages": [{"role": "user", "content": format!("New question {i}")}]});
        let e = send(&client, &base, "/v1/chat/completions", &body).await;
        step.ok &= e.status == 200 && e.provider == "backup" && e.text.starts_with("[backup]");
        step.lines.push(describe(&format!("new question {i}"), &e));
    }
    let breaker = state.breakers.statuses().into_iter().find(|b| b.key == "primary");
    let open = breaker.as_ref().is_some_and(|b| b.state == crate::proxy::resilience::breaker::State::Open);
    step.ok &= open;
    step.lines.push(format!(
        "primary's circuit breaker: {} (requests skip it without a connection attempt)",
        breaker.map_or("none", |b| b.state.as_str())
    ));
    steps.push(step);

    backup.stop().await;
    let _ = stop_proxy.send(());
    let _ = proxy.await;
    Ok(DrillReport { steps, total: started.elapsed() })
}

/// Counts files under `dir` and lists those containing `needle`.
fn scan_for(dir: &std::path::Path, needle: &[u8]) -> (usize, Vec<String>) {
    let (mut files, mut leaks) = (0, Vec::new());
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    leaks.push(path.display().to_string());
                }
            }
        }
    }
    (files, leaks)
}
