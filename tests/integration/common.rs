//! Shared helpers for the integration tests.

use std::path::Path;

use bytes::Bytes;
use holdfast::address::{Address, Namespace};
use holdfast::normalize::normalize;
use holdfast::record::{Record, ResponseBody, StoredResponse, Usage};
use holdfast::secret::StoreSecret;
use holdfast::store::{Store, StoreOptions};

pub const PASSPHRASE: &str = "integration test passphrase";

pub fn passphrase() -> StoreSecret {
    StoreSecret::passphrase(PASSPHRASE).unwrap()
}

pub fn create_options() -> StoreOptions {
    StoreOptions {
        create_if_missing: true,
        ..StoreOptions::default()
    }
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
pub fn chat_request(
    store: &Store,
    prompt: &str,
) -> (Address, holdfast::normalize::NormalizedRequest) {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.2,
    });
    let request = normalize("/v1/chat/completions", body.to_string().as_bytes()).unwrap();
    (store.address(&Namespace::shared(), &request), request)
}

/// A complete (non-streamed) record answering `request` with `answer`.
pub fn record(request: holdfast::normalize::NormalizedRequest, answer: &str) -> Record {
    let body = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
    });
    Record {
        request,
        response: StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: ResponseBody::Complete(Bytes::from(body.to_string())),
        },
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        created_ms: 1_700_000_000_000,
        upstream_latency_ms: 420,
        usage: Some(Usage {
            input_tokens: 12,
            output_tokens: 5,
        }),
    }
}

/// The answer text of a record made by `record`.
pub fn answer_of(record: &Record) -> String {
    let ResponseBody::Complete(body) = &record.response.body else {
        panic!("expected a complete body")
    };
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every file under `dir`, with its bytes.
pub fn read_tree(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}
