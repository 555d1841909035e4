//! The dashboard in a real browser: the system's headless Chromium, driven by
//! `playwright-core` (tests/browser/dashboard.mjs), against the real `holdfast serve` in front
//! of the fake provider. Screenshots of every page land in `target/browser-artifacts/`.
//! `.ci/run` installs Chromium and the npm package; elsewhere the test skips loudly.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::FakeUpstream;

const TOKEN: &str = "browser-test-admin-token-5d1c";
const CANARY: &str = "canary lighthouse 42 question about keeping products answering";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Node, Chromium and `playwright-core`, or why the test cannot run.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let node = std::env::var_os("HOLDFAST_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let node_ok = Command::new(&node).arg("--version").output().is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is not installed".into());
    }
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.is_file() {
        return Err(format!("{} is missing (apt-get install chromium)", chromium.display()));
    }
    if !browser_dir().join("node_modules/playwright-core/package.json").is_file() {
        return Err("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    Ok((node, chromium))
}

fn serve(dir: &Path, upstream: &str) -> Served {
    let config = format!(
        r#"
        listen = "127.0.0.1:0"
        [cache]
        mode = "fallback"
        [admin]
        listen = "127.0.0.1:0"
        [[providers]]
        name = "fake-openai"
        api = "openai"
        base_url = "{upstream}"
        models = ["gpt-*"]
        first_byte_timeout = "2s"
        timeout = "5s"
        retry = {{ attempts = 1 }}
        breaker = {{ failures = 2, cooldown = "10m" }}
        "#
    );
    serve_with_admin(dir, &dir.join("store"), &config, TOKEN)
}

async fn ask(proxy: &str, prompt: &str, stream: bool) -> String {
    let response = http()
        .post(format!("{proxy}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    let cache = response.headers().get("x-holdfast-cache").map(|v| v.to_str().unwrap().to_owned());
    response.bytes().await.unwrap();
    cache.unwrap_or_default()
}

/// One admin command over the bearer API, as `holdfast --server` sends it.
async fn admin_command(admin: &str, command: Value) -> Value {
    let text = http()
        .post(format!("{admin}/admin/v1/execute"))
        .bearer_auth(TOKEN)
        .body(format!("{command}\n"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_watches_a_breaker_open_finds_a_prompt_and_rotates_a_key_in_chromium() {
    let (node, chromium) = match tools() {
        Ok(found) => found,
        Err(missing) => {
            assert!(std::env::var_os("CI").is_none(), "CI must provide the browser test's tools: {missing}");
            eprintln!("SKIPPED the dashboard browser test: {missing}; .ci/run installs them");
            return;
        }
    };
    let upstream = FakeUpstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let served = serve(work.path(), &upstream.base_url());
    assert_eq!(ask(&served.proxy, CANARY, false).await, "miss");
    assert_eq!(ask(&served.proxy, "a streamed question about breakers", true).await, "miss");
    assert_eq!(ask(&served.proxy, "a third, ordinary question", false).await, "miss");

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let mut script = Command::new(node)
        .current_dir(browser_dir())
        .arg("dashboard.mjs")
        .env("HOLDFAST_UI_URL", &served.admin)
        .env("HOLDFAST_ADMIN_TOKEN", TOKEN)
        .env("HOLDFAST_CANARY", CANARY)
        .env("HOLDFAST_ARTIFACTS", &artifacts)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to_script = script.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        eprintln!("browser: {line}");
        if line == "STEP kill-provider" {
            upstream.down().await;
            // Two failures open the breaker (failures = 2); the stored answer keeps coming.
            for _ in 0..3 {
                assert_eq!(ask(&served.proxy, CANARY, false).await, "stale");
            }
            writeln!(to_script, "GO").unwrap();
        }
        output.push(line);
    }
    let status = script.wait().unwrap();
    let output = output.join("\n");
    assert!(status.success() && output.contains("ALL CHECKS PASSED"), "the browser script failed:\n{output}");
    for check in [
        "OK a wrong token shows no dashboard",
        "OK without a session every endpoint is 401",
        "OK the session cookie is HttpOnly, SameSite=Strict, Path=/ui",
        "OK the Now page shows fake-openai open after the provider was killed",
        "OK the server refused the cross-site form POST: {\"error\":\"refused: the request came from another site\"}",
        "OK a cross-site POST purged nothing",
        "OK the entry shows the stored answer",
        "OK the trail lists the dashboard's view of the canary entry",
        "OK rotation with re-encryption finished: key #2 is active",
        "OK the purge waits for the word purge to be typed",
        "OK after confirming, the purged entry is gone from the list",
    ] {
        assert!(output.contains(check), "missing `{check}`:\n{output}");
    }
    for page in ["login", "now", "now-dark", "audit", "entry", "trail", "keys", "entry-stream", "now-mobile"] {
        let file = artifacts.join(format!("{page}.png"));
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(bytes > 5_000, "screenshot {} is missing or empty", file.display());
    }

    // What the browser did, as the server's own record tells it.
    let trail = admin_command(&served.admin, json!({"command": "audit-trail", "verify": true})).await;
    assert_eq!(trail["first_broken"], Value::Null, "{trail}");
    let entries = trail["entries"].as_array().unwrap();
    let shown = entries
        .iter()
        .find(|e| e["command"].as_str().unwrap().starts_with("audit show "))
        .unwrap_or_else(|| panic!("no audit show in the trail: {trail}"));
    assert!(shown["actor"].as_str().unwrap().ends_with("via dashboard"), "{shown}");
    assert!(entries.iter().all(|e| e["command"] != "cache purge --all"), "the cross-site purge ran: {trail}");
    let purged = entries.iter().filter(|e| e["command"].as_str().unwrap().starts_with("cache purge --address "));
    assert_eq!(purged.filter(|e| e["outcome"] == "ok").count(), 1, "one confirmed purge: {trail}");
    let keys = admin_command(&served.admin, json!({"command": "keys-list"})).await;
    let records: Vec<(u64, u64)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_u64().unwrap(), k["records"].as_u64().unwrap()))
        .collect();
    assert_eq!(records, [(1, 0), (2, 2)], "rotated and re-encrypted, one entry purged since: {keys}");
}
