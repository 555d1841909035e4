//! The server's admin API: `POST /admin/v1/execute`, so every admin command works while
//! `holdfast serve` holds the store.
//!
//! Authenticated by `Authorization: Bearer <HOLDFAST_ADMIN_TOKEN>`, compared in constant
//! time; with no token configured the API is off. The request is `{"request": AdminRequest,
//! "input_base64": ...}`; the response is NDJSON: `{"progress":[done,total]}` lines while it
//! works, `{"output_base64": ...}` chunks for exports, then `{"result": ...}` or `{"error": ...}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Actor, Admin, AdminRequest};
use crate::proxy::AppState;

#[derive(Serialize, Deserialize)]
pub struct ExecuteBody {
    pub request: AdminRequest,
    /// The bundle for `cache import`.
    #[serde(default)]
    pub input_base64: Option<String>,
}

/// Chunk size of exported files in the response (base64 grows it by a third).
const OUTPUT_CHUNK: usize = 1 << 20;

/// Whether `presented` matches `expected`, in time independent of where they differ: both
/// are hashed and BLAKE3's `Hash` compares in constant time.
fn token_matches(expected: &str, presented: &str) -> bool {
    blake3::hash(expected.as_bytes()) == blake3::hash(presented.as_bytes())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], json!({"error": message}).to_string()).into_response()
}

pub async fn execute(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (Some(admin), Some(token)) = (state.admin.clone(), state.admin_token.as_deref()) else {
        return refuse(StatusCode::NOT_FOUND, "the admin API is off: start the server with HOLDFAST_ADMIN_TOKEN set");
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_matches(token, presented) {
        tracing::warn!(%peer, "admin API call with a wrong or missing token");
        return refuse(StatusCode::UNAUTHORIZED, "wrong or missing admin token (Authorization: Bearer …)");
    }
    let call: ExecuteBody = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("not an admin request: {e}")),
    };
    let actor = Actor::token(presented, &peer.ip().to_string());
    tracing::info!(actor = %actor.0, command = %call.request.describe(), "admin command");
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    tokio::task::spawn_blocking(move || run(&admin, call, &actor, &tx));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(format!("{value}\n")), rx))
    });
    ([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

/// Runs one command on a blocking thread, streaming progress and results as JSON values.
fn run(admin: &Arc<Admin>, call: ExecuteBody, actor: &Actor, tx: &mpsc::UnboundedSender<Value>) {
    let fail = |message: String| {
        let _ = tx.send(json!({"error": message}));
    };
    let scratch = match tempfile::Builder::new().prefix("holdfast-admin-").tempdir() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot create a scratch directory: {e}")),
    };
    let output = call.request.writes_output().then(|| scratch.path().join("output"));
    let input = match (&call.input_base64, call.request.reads_input()) {
        (Some(data), true) => {
            let path = scratch.path().join("input");
            let bytes = match base64::engine::general_purpose::STANDARD.decode(data) {
                Ok(b) => b,
                Err(e) => return fail(format!("input is not base64: {e}")),
            };
            if let Err(e) = std::fs::write(&path, bytes) {
                return fail(format!("cannot stage the input: {e}"));
            }
            Some(path)
        }
        (None, true) => return fail("this command needs an input file".into()),
        _ => None,
    };
    let progress = |done: u64, total: u64| {
        let _ = tx.send(json!({"progress": [done, total]}));
    };
    match admin.execute(&call.request, actor, &progress, output.as_deref(), input.as_deref()) {
        Ok(outcome) => {
            if let Some(path) = &output {
                match std::fs::read(path) {
                    Ok(bytes) => {
                        for chunk in bytes.chunks(OUTPUT_CHUNK) {
                            let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
                            let _ = tx.send(json!({"output_base64": encoded}));
                        }
                    }
                    Err(e) => return fail(format!("cannot read the export back: {e}")),
                }
            }
            let _ = tx.send(json!({"result": outcome.result, "verification_failed": outcome.verification_failed}));
        }
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::token_matches("s3cret-token", "s3cret-token"));
        assert!(!super::token_matches("s3cret-token", "s3cret-tokeN"));
        assert!(!super::token_matches("s3cret-token", ""));
    }
}
