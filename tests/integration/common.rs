//! Shared helpers for the integration tests.

use std::path::Path;

use bytes::Bytes;
use holdfast::cache_key::address::{Address, Namespace};
use holdfast::cache_key::normalize::normalize;
use holdfast::secret::StoreSecret;
use holdfast::store::record::{Record, ResponseBody, StoredResponse, Usage};
use holdfast::store::{Store, StoreOptions};

pub const PASSPHRASE: &str = "integration test passphrase";

pub fn passphrase() -> StoreSecret {
    StoreSecret::passphrase(PASSPHRASE).unwrap()
}

pub fn create_options() -> StoreOptions {
    StoreOptions { create_if_missing: true, engine: test_engine(), ..StoreOptions::default() }
}

/// A fresh store in a temp dir (the real sled store, default Argon2 cost).
pub fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &passphrase(), create_options()).unwrap();
    (dir, store)
}

pub fn reopen(path: &Path) -> Store {
    Store::open(path, &passphrase(), StoreOptions::default()).unwrap()
}

/// A chat request whose content is `prompt`, with its address in the shared namespace.
pub fn chat_request(store: &Store, prompt: &str) -> (Address, holdfast::cache_key::normalize::NormalizedRequest) {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.2,
    });
    let request = normalize("/v1/chat/completions", body.to_string().as_bytes()).unwrap();
    (store.address(&Namespace::shared(), &request), request)
}

/// A complete (non-streamed) record answering `request` with `answer`.
pub fn record(request: holdfast::cache_key::normalize::NormalizedRequest, answer: &str) -> Record {
    let body = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
    });
    Record {
        request,
        namespace: None,
        response: StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: ResponseBody::Complete(Bytes::from(body.to_string())),
        },
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        created_ms: 1_700_000_000_000,
        upstream_latency_ms: 420,
        usage: Some(Usage { input_tokens: 12, output_tokens: 5 }),
    }
}

/// The answer text of a record made by `record`.
pub fn answer_of(record: &Record) -> String {
    let ResponseBody::Complete(body) = &record.response.body else { panic!("expected a complete body") };
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

/// Every regular file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir`, with its bytes.
pub fn read_tree(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// A proxy serving on 127.0.0.1:0 in front of a fake upstream, on a real store in a temp dir.
pub struct Proxy {
    pub url: String,
    pub state: holdfast::proxy::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Stops serving (letting in-flight requests finish) and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Configuration with an OpenAI-dialect and an Anthropic-dialect provider, both the fake. One
/// attempt per request and breakers that never open, so each test sees the store's behaviour
/// alone; the resilience tests set retries and breakers themselves.
pub fn config_for(upstream_base: &str) -> holdfast::config::Config {
    let text = format!(
        r#"
        [cache]
        mode = "fallback"
        {}"#,
        fake_providers(upstream_base)
    );
    holdfast::config::Config::parse(&text).unwrap()
}

/// The `[[providers]]` of [`config_for`] as TOML: both dialects on the fake at `upstream_base`,
/// one attempt each, breakers that never open.
pub fn fake_providers(upstream_base: &str) -> String {
    format!(
        r#"
        [[providers]]
        name = "fake-openai"
        api = "openai"
        base_url = "{upstream_base}"
        models = ["gpt-*", "text-*", "o*", "fake-*"]
        first_byte_timeout = "2s"
        timeout = "5s"
        retry = {{ attempts = 1 }}
        breaker = {{ failures = 1000000, min_requests = 1000000 }}
        [[providers]]
        name = "fake-anthropic"
        api = "anthropic"
        base_url = "{upstream_base}"
        models = ["claude-*"]
        first_byte_timeout = "2s"
        timeout = "5s"
        retry = {{ attempts = 1 }}
        breaker = {{ failures = 1000000, min_requests = 1000000 }}
        "#
    )
}

pub async fn start_proxy(config: holdfast::config::Config) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &passphrase(), create_options()).unwrap();
    start_proxy_with(config, store, dir).await
}

/// As `start_proxy`, over a store the test built (e.g. on a failing backend).
pub async fn start_proxy_with(config: holdfast::config::Config, store: Store, dir: tempfile::TempDir) -> Proxy {
    start_proxy_env(config, store, dir, |_| None).await
}

/// The key every `api_key_env` reads in [`start_proxy_keyed`].
pub const SERVER_KEY: &str = "sk-holdfast-server-key";

/// As `start_proxy`, with every provider's `api_key_env` set to [`SERVER_KEY`].
pub async fn start_proxy_keyed(config: holdfast::config::Config) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &passphrase(), create_options()).unwrap();
    start_proxy_env(config, store, dir, |_| Some(SERVER_KEY.to_owned())).await
}

async fn start_proxy_env(
    config: holdfast::config::Config,
    store: Store,
    dir: tempfile::TempDir,
    env: impl Fn(&str) -> Option<String>,
) -> Proxy {
    let upstreams = holdfast::proxy::upstream::Upstreams::new(&config.providers, env).unwrap();
    let state = holdfast::proxy::AppState::new(config, std::sync::Arc::new(store), upstreams);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve_state = state.clone();
    let task = tokio::spawn(async move {
        holdfast::proxy::run(listener, serve_state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Proxy { url, state, shutdown: Some(tx), task: Some(task), _dir: dir }
}

/// A client that never retries on its own, so tests see exactly what the proxy answered.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build().unwrap()
}

/// The admin listener for `admin` on 127.0.0.1:0 with `token`; returns its URL.
pub async fn start_admin(admin: std::sync::Arc<holdfast::ops::admin::Admin>, token: &str) -> String {
    let state =
        holdfast::ops::admin::api::AdminState::new(admin, zeroize::Zeroizing::new(token.to_owned()), 1 << 30).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(holdfast::ops::admin::api::run(
        holdfast::edge::server::Listener::Tcp(listener),
        None,
        state,
        holdfast::edge::server::ServerLimits::default(),
        std::future::pending(),
    ));
    url
}

/// A running `holdfast serve` child and the proxy and admin URLs it logged; killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub proxy: String,
    pub admin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `holdfast serve` in `dir` with `config` as its holdfast.toml, its store at `store`
/// and `token` as the admin token; returns once it has logged both listeners. The token must
/// never appear in what it logs.
pub fn serve_with_admin(dir: &Path, store: &Path, config: &str, token: &str) -> Served {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    std::fs::write(dir.join("holdfast.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .current_dir(dir)
        .arg("serve")
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE)
        .env("HOLDFAST_STORE_PATH", store)
        .env("HOLDFAST_ADMIN_TOKEN", token)
        .env_remove("HOLDFAST_ADMIN_LISTEN")
        .env_remove("HOLDFAST_LISTEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut proxy, mut admin) = (None, None);
    let started = std::time::Instant::now();
    while proxy.is_none() || admin.is_none() {
        let line = lines.next().expect("server exited before listening").unwrap();
        assert!(!line.contains(token), "the admin token reached the log: {line}");
        if let Some(rest) = line.split("admin API on ").nth(1) {
            admin = Some(rest.split(": ").next().unwrap().to_owned());
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            proxy = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "no listening lines");
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    let token = token.to_owned();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            assert!(!line.contains(&token), "the admin token reached the log: {line}");
        }
    });
    Served { child, proxy: proxy.unwrap(), admin: admin.unwrap() }
}

/// A self-signed leaf certificate for `localhost` and 127.0.0.1 and its key, made with openssl
/// in `dir`: `(cert.pem, key.pem)`.
pub fn self_signed_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // webpki refuses a CA certificate as a server's own: make it a leaf.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make a test certificate");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}

/// The embedded engine the tests create stores with: `HOLDFAST_TEST_ENGINE` (sled, redb,
/// fjall), or the default. An engine this build lacks fails loudly rather than testing sled
/// under another name.
pub fn test_engine() -> Option<holdfast::store::Engine> {
    let name = std::env::var("HOLDFAST_TEST_ENGINE").ok().filter(|n| !n.is_empty())?;
    let engine = holdfast::store::Engine::from_name(&name)
        .unwrap_or_else(|| panic!("HOLDFAST_TEST_ENGINE={name}: not an engine (sled, redb, fjall)"));
    assert!(
        engine.is_built(),
        "HOLDFAST_TEST_ENGINE={name}: this test build lacks it; run with --features {}",
        engine.feature().unwrap_or_default()
    );
    Some(engine)
}

/// The `[store]` line that selects `test_engine()` in a configuration file ("" for the default).
pub fn engine_config_line() -> String {
    test_engine().map(|e| format!("engine = \"{e}\"\n")).unwrap_or_default()
}

/// Runs the holdfast binary in `cwd` on the store at `store`, unlocked by `pass`, with no
/// server, key or config from the caller's environment; `env` is set last.
pub fn holdfast_with(
    cwd: &Path,
    store: &Path,
    pass: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.current_dir(cwd)
        .args(args)
        .env("HOLDFAST_PASSPHRASE", pass)
        .env("HOLDFAST_STORE_PATH", store)
        .env_remove("HOLDFAST_KEY")
        .env_remove("HOLDFAST_SERVER")
        .env_remove("HOLDFAST_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The JSON a successful `--json` command printed; fails the test with its output otherwise.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}
