//! The official Python `openai` and `anthropic` SDKs, unmodified, against the proxy: first live
//! (through to the fake upstream), then with the upstream down (everything from the store).
//! `.ci/run` installs the SDKs into `.ci/venv`; tests/sdk/README.md explains.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use crate::fake_upstream::FakeUpstream;

/// The interpreter with the SDKs installed: `HOLDFAST_SDK_PYTHON`, else `.ci/venv`.
pub fn sdk_python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HOLDFAST_SDK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    venv.is_file().then_some(venv)
}

pub fn run_phase(python: &PathBuf, url: &str, phase: &str) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/compat.py");
    let out = Command::new(python)
        .arg(script)
        .env("HOLDFAST_URL", url)
        .env("HOLDFAST_PHASE", phase)
        .output()
        .expect("run the SDK compatibility script");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_unmodified() {
    let Some(python) = sdk_python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide the SDK venv (.ci/run creates .ci/venv)");
        eprintln!("SKIPPED official_python_sdks_work_unmodified: no SDK venv; run .ci/run once to create .ci/venv");
        return;
    };
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let url = proxy.url.clone();
    let (py, u) = (python.clone(), url.clone());
    let (ok, output) = tokio::task::spawn_blocking(move || run_phase(&py, &u, "live")).await.unwrap();
    assert!(ok, "SDKs failed against the live proxy:\n{output}");
    assert!(output.contains(" 0 failed") && !output.contains("\n0 passed"), "{output}");
    upstream.down().await;
    let (ok, output) = tokio::task::spawn_blocking(move || run_phase(&python, &url, "replay")).await.unwrap();
    assert!(ok, "SDKs failed when served from the store:\n{output}");
    assert!(output.contains(" 0 failed"), "{output}");
}
