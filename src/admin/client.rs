//! The CLI's side of the admin API: runs a command on a server (`--server URL`) and turns the
//! NDJSON answer back into an `Outcome`, calling `progress` as lines arrive.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::Value;

use super::api::ExecuteBody;
use super::{AdminRequest, Outcome, Progress, create_new};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason} (is `holdfast serve` running there?)")]
    Unreachable { url: String, reason: String },
    #[error("server refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("the server's answer ended without a result (connection lost?)")]
    Truncated,
}

/// Turns an I/O error on `path` into a `ClientError` naming the file.
fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.display().to_string();
    move |source| ClientError::File { path, source }
}

pub async fn execute_remote(
    server: &str,
    token: &str,
    request: &AdminRequest,
    input: Option<&Path>,
    output: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Outcome, ClientError> {
    let input_base64 = match input {
        Some(path) => {
            Some(base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).map_err(file_error(path))?))
        }
        None => None,
    };
    let mut out_file = match output {
        Some(path) => Some(std::io::BufWriter::new(create_new(path).map_err(file_error(path))?)),
        None => None,
    };
    let outcome = receive(server, token, request, input_base64, &mut out_file, output, progress).await;
    if let (Err(_), Some(path)) = (&outcome, output) {
        // A failed export must not leave a half file that blocks the retry.
        drop(out_file);
        let _ = std::fs::remove_file(path);
    }
    outcome
}

async fn receive(
    server: &str,
    token: &str,
    request: &AdminRequest,
    input_base64: Option<String>,
    out_file: &mut Option<std::io::BufWriter<std::fs::File>>,
    output: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Outcome, ClientError> {
    let url = format!("{}/admin/v1/execute", server.trim_end_matches('/'));
    let body = ExecuteBody { request: request.clone(), input_base64 };
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })?;
    if !response.status().is_success() {
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(ClientError::Refused(message));
    }
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).map_err(|e| ClientError::Failed(e.to_string()))?;
            if let Some([done, total]) = value["progress"].as_array().map(|a| [a[0].as_u64(), a[1].as_u64()]) {
                progress(done.unwrap_or(0), total.unwrap_or(0));
            } else if let Some(data) = value["output_base64"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| ClientError::Failed(e.to_string()))?;
                if let (Some(file), Some(path)) = (out_file.as_mut(), output) {
                    file.write_all(&bytes).map_err(file_error(path))?;
                }
            } else if let Some(message) = value["error"].as_str() {
                return Err(ClientError::Failed(message.to_owned()));
            } else if let Some(result) = value.get("result") {
                if let (Some(mut file), Some(path)) = (out_file.take(), output) {
                    file.flush().map_err(file_error(path))?;
                    file.get_ref().sync_all().map_err(file_error(path))?;
                }
                let verification_failed = value["verification_failed"].as_bool().unwrap_or(false);
                let mut result = result.clone();
                if let Some(path) = output {
                    // The server wrote to a scratch file; what the operator has is `--out`.
                    result["path"] = Value::String(path.display().to_string());
                }
                return Ok(Outcome { result, verification_failed });
            }
        }
    }
    Err(ClientError::Truncated)
}
