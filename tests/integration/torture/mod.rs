//! The storage torture suite: the real `holdfast` binary on real files, killed, corrupted and
//! starved of disk, checking that no answer a client fully received is ever lost silently.
//!
//! Bounded by default (a few seconds each); `HOLDFAST_SOAK=1` runs many more rounds.
//! `HOLDFAST_TEST_ENGINE=redb` (or `fjall`, with the build's matching `--features engine-…`)
//! runs the suite against another embedded engine; docs/storage.md has the results.
//!
//! - `kill`: SIGKILL under concurrent JSON and stream writers, then every acknowledged answer
//!   must be served from the store with the provider down.
//! - `corrupt`: flips, overwrites and truncations of every database file; `cache verify`
//!   must report every loss, and nothing may panic.
//! - `disk_full`: a tiny tmpfs fills up while serving; recording resumes without a restart.
//! - `engines`: a store opens only with the engine it was created with.

mod corrupt;
mod disk_full;
mod engines;
mod kill;
mod large_answer;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{PASSPHRASE, engine_config_line};

/// Whether the long version was asked for.
pub fn soak() -> bool {
    std::env::var("HOLDFAST_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `holdfast` with a clean environment, run in `dir`.
pub fn holdfast(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.current_dir(dir)
        .env_remove("HOLDFAST_KEY")
        .env_remove("HOLDFAST_CONFIG")
        .env_remove("HOLDFAST_SERVER")
        .env_remove("HOLDFAST_ADMIN_TOKEN")
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE);
    c
}

/// A configuration file in `dir` for a store at `store` in front of `upstream`.
pub fn write_config(dir: &Path, store: &Path, upstream: &str, extra_store: &str) -> PathBuf {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[log]
level = "info"
[store]
path = "{}"
{engine}{extra_store}
[cache]
mode = "fallback"
scope = "shared"
[[providers]]
name = "fake"
api = "openai"
base_url = "{upstream}"
models = ["*"]
first_byte_timeout = "2s"
timeout = "5s"
retry = {{ attempts = 1 }}
breaker = {{ failures = 1000000, min_requests = 1000000 }}
"#,
        store.display(),
        engine = engine_config_line(),
    );
    let path = dir.join("holdfast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `holdfast serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Everything it logged, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `holdfast --config <config> serve` and waits until it listens; `None` if it
    /// exited first (the log says why).
    pub fn start(dir: &Path, config: &Path) -> Result<Server, String> {
        let mut child = holdfast(dir)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Server { child, url, log });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!("serve exited with {status}:\n{}", log.lock().unwrap().join("\n")));
            }
            assert!(started.elapsed() < Duration::from_secs(30), "serve did not listen within 30 s");
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat request body for `prompt`.
pub fn chat(prompt: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

/// What one request through the proxy ended as.
pub struct Reply {
    pub status: u16,
    pub cache: String,
    pub body: Vec<u8>,
    /// The body was read to its end without a transport error.
    pub complete: bool,
}

pub async fn send(client: &reqwest::Client, url: &str, body: &Value) -> Option<Reply> {
    let response = client.post(format!("{url}/v1/chat/completions")).json(body).send().await.ok()?;
    let status = response.status().as_u16();
    let cache = response.headers().get("x-holdfast-cache").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (body, complete) = match response.bytes().await {
        Ok(b) => (b.to_vec(), true),
        Err(_) => (Vec::new(), false),
    };
    Some(Reply { status, cache, body, complete })
}

/// Whether a reply is an answer the client has fully received: a whole JSON completion, or a
/// stream through `[DONE]`.
pub fn fully_received(reply: &Reply, stream: bool) -> bool {
    if !reply.complete || reply.status != 200 {
        return false;
    }
    if stream {
        String::from_utf8_lossy(&reply.body).contains("data: [DONE]")
    } else {
        serde_json::from_slice::<Value>(&reply.body).is_ok_and(|v| v["choices"][0]["message"]["content"].is_string())
    }
}

/// Runs `holdfast --config <config> cache verify --json`: (exit code, JSON report or stderr).
pub fn verify(dir: &Path, config: &Path) -> (Option<i32>, String, String) {
    let out = holdfast(dir).arg("--config").arg(config).args(["cache", "verify", "--json"]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
pub use crate::common::files_under;

/// Copies the directory tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

/// Top-level directories of a store that hold a database (one per engine).
pub const DATABASE_DIRS: [&str; 3] = ["db", "redb", "fjall"];

/// Whether `relative` (a path inside a store) belongs to the database rather than the
/// marker, keyring or integrity record.
pub fn is_database(relative: &Path) -> bool {
    relative.components().next().is_some_and(|c| DATABASE_DIRS.iter().any(|d| c.as_os_str() == *d))
}
