//! The CLI's side of the admin listener: runs a command on a server (`--server URL`) and turns
//! the NDJSON answer back into an `Outcome`, calling `progress` as lines arrive. Inputs are
//! streamed up and exports streamed down, so bundle size never meets memory.
//!
//! `URL` is `http://host:port`, `https://host:port` (a private CA in `HOLDFAST_SERVER_CA`), or
//! `unix:/path/to/admin.sock`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::command::{AdminRequest, Outcome, Progress};
use super::export::create_new;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the server at {url}: {reason} (is `holdfast serve` running there, with HOLDFAST_ADMIN_TOKEN?)"
    )]
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

/// Runs `request` on the admin API at `server` (the CLI's `--server`): uploads `input` after
/// the command line, downloads an export into a new file at `output`, reports progress.
pub async fn execute_remote(
    server: &str,
    token: &str,
    request: &AdminRequest,
    input: Option<&Path>,
    output: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Outcome, ClientError> {
    let server = &Server::parse(server)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Failed(e.to_string()))?;
    line.push(b'\n');
    let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(line)) });
    let body = match input {
        Some(path) => {
            // The server refuses a wrong token before reading the body, which cuts an upload
            // short; asking first turns that into a clear answer.
            drop(server.send(reqwest::Method::GET, "/admin/v1/ping", token, Body::empty()).await?);
            let file = tokio::fs::File::open(path).await.map_err(file_error(path))?;
            Body::from_stream(head.chain(super::api::file_chunks(file)))
        }
        None => Body::from_stream(head),
    };
    let mut stream = server.send(reqwest::Method::POST, "/admin/v1/execute", token, body).await?;
    let mut buffer = Vec::new();
    let mut fetched = None;
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk.map_err(|reason| server.unreachable(reason))?);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).map_err(|e| ClientError::Failed(e.to_string()))?;
            if let Some(pair) = value.get("progress").and_then(Value::as_array) {
                let at = |i: usize| pair.get(i).and_then(Value::as_u64).unwrap_or(0);
                progress(at(0), at(1));
            } else if let Some(id) = value.pointer("/output/id").and_then(Value::as_str) {
                if let Some(path) = output {
                    download(server, token, id, path).await?;
                    fetched = Some(path.to_owned());
                }
            } else if let Some(message) = value.get("error").and_then(Value::as_str) {
                return Err(ClientError::Failed(message.to_owned()));
            } else if let Some(result) = value.get("result") {
                let verification_failed = value.get("verification_failed").and_then(Value::as_bool).unwrap_or(false);
                let mut result = result.clone();
                if let (Some(path), Some(fields)) = (fetched, result.as_object_mut()) {
                    // The server wrote to a scratch file; what the operator has is `--out`.
                    fields.insert("path".into(), Value::String(path.display().to_string()));
                }
                return Ok(Outcome { result, verification_failed });
            }
        }
    }
    Err(ClientError::Truncated)
}

/// Streams an export from the server into a new file at `path`, synced before it counts.
async fn download(server: &Server, token: &str, id: &str, path: &Path) -> Result<(), ClientError> {
    // Never overwrites: an existing file is an error, and only a file made here is removed.
    let file = std::io::BufWriter::new(create_new(path).map_err(file_error(path))?);
    let written = write_download(server, token, id, path, file).await;
    if written.is_err() {
        // A failed export must not leave a half file that blocks the retry.
        let _ = std::fs::remove_file(path);
    }
    written
}

async fn write_download(
    server: &Server,
    token: &str,
    id: &str,
    path: &Path,
    mut file: std::io::BufWriter<std::fs::File>,
) -> Result<(), ClientError> {
    let mut stream = server.send(reqwest::Method::GET, &format!("/admin/v1/output/{id}"), token, Body::empty()).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.map_err(|reason| server.unreachable(reason))?).map_err(file_error(path))?;
    }
    file.flush().map_err(file_error(path))?;
    file.get_ref().sync_all().map_err(file_error(path))
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Where the admin listener is.
enum Server {
    Http(String),
    Unix(PathBuf),
}

impl Server {
    fn parse(text: &str) -> Result<Self, ClientError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(Self::Http(text.trim_end_matches('/').to_owned()));
        }
        Err(ClientError::Failed(format!(
            "--server {text}: use http://host:port, https://host:port or unix:/path/to/admin.sock"
        )))
    }

    fn label(&self) -> String {
        match self {
            Self::Http(url) => url.clone(),
            Self::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable { url: self.label(), reason }
    }

    /// Sends one request; a non-2xx answer becomes `Refused` with the server's message.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<ByteStream, ClientError> {
        let (status, stream): (u16, ByteStream) = match self {
            Self::Http(base) => {
                let response = http_client()?
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(token)
                    .body(reqwest::Body::wrap_stream(body.into_data_stream()))
                    .send()
                    .await
                    .map_err(|e| self.unreachable(causes(&e)))?;
                let status = response.status().as_u16();
                (status, Box::pin(response.bytes_stream().map(|c| c.map_err(|e| e.to_string()))))
            }
            Self::Unix(socket) => {
                let stream =
                    tokio::net::UnixStream::connect(socket).await.map_err(|e| self.unreachable(e.to_string()))?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|e| self.unreachable(e.to_string()))?;
                tokio::spawn(connection);
                let request = axum::http::Request::builder()
                    .method(method.as_str())
                    .uri(path)
                    .header("host", "holdfast-admin")
                    .header("authorization", format!("Bearer {token}"))
                    .body(body)
                    .map_err(|e| ClientError::Failed(e.to_string()))?;
                let response = sender.send_request(request).await.map_err(|e| self.unreachable(e.to_string()))?;
                let status = response.status().as_u16();
                let data = Body::new(response.into_body()).into_data_stream();
                (status, Box::pin(data.map(|c| c.map_err(|e| e.to_string()))))
            }
        };
        if (200..300).contains(&status) {
            return Ok(stream);
        }
        let text = collect_text(stream).await;
        let json = serde_json::from_str::<Value>(&text).ok();
        let error = json.as_ref().and_then(|v| v.get("error"));
        let message = match (error.and_then(Value::as_str), error.and_then(|e| e.get("message"))) {
            (Some(message), _) => message.to_owned(),
            // An error in a provider dialect: this is the proxy's port, not the admin listener.
            (None, Some(_)) => format!(
                "{} is not an admin listener (HTTP {status}); the admin API listens on [admin] listen, \
                 127.0.0.1:8788 by default",
                self.label()
            ),
            (None, None) => text,
        };
        Err(ClientError::Refused(message))
    }
}

/// An error and its causes, so "error sending request" says why (refused, bad certificate).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

async fn collect_text(mut stream: ByteStream) -> String {
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 64 * 1024 {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The HTTP client, trusting `HOLDFAST_SERVER_CA` (a PEM file) besides the system's roots, for
/// admin listeners with a certificate from a private CA.
fn http_client() -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = std::env::var_os("HOLDFAST_SERVER_CA").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path).map_err(file_error(&path))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ClientError::Failed(format!("HOLDFAST_SERVER_CA {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| ClientError::Failed(format!("cannot build the HTTP client: {e}")))
}
