//! The admin listener: every admin command while `holdfast serve` holds the store, on its own
//! address (`[admin] listen`, loopback by default, optionally TLS or a Unix socket), never on
//! the proxy's port.
//!
//! `POST /admin/v1/execute`, authenticated by `Authorization: Bearer <HOLDFAST_ADMIN_TOKEN>`
//! (compared in constant time, checked before a byte of the body is read). The body is one
//! line of JSON — the `AdminRequest` — followed, for `cache import`, by the raw bundle, streamed
//! to a scratch file up to `admin.max_bundle_bytes`. The answer is NDJSON: `{"progress":[done,
//! total]}` lines while the command works, then `{"result": …}` or `{"error": …}`. A command that
//! writes a file (exports) names it in `{"output": {"id", "bytes"}}` just before the result; the
//! client fetches it raw from `GET /admin/v1/output/{id}`, once. Nothing is held in memory whole.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::Admin;
use super::auth::{Actor, token_matches};
use super::command::AdminRequest;
use crate::edge::server::{Listener, Peer, RateLimitedLog, ServerLimits};

/// Longest first line (the JSON command) of an execute body.
const MAX_COMMAND_LINE: usize = 64 * 1024;
/// Lines buffered between a running command and a slow client: progress waits, memory doesn't grow.
const LINE_DEPTH: usize = 64;
/// How long an export waits to be fetched before its scratch file is deleted.
const OUTPUT_TTL: Duration = Duration::from_secs(600);

/// What the admin listener's handlers share.
#[derive(Clone)]
pub struct AdminState(Arc<AdminInner>);

struct AdminInner {
    /// The commands, over the server's open store.
    admin: Arc<Admin>,
    /// `HOLDFAST_ADMIN_TOKEN`, refused at start-up when blank.
    token: Zeroizing<String>,
    /// Largest `cache import` upload.
    max_bundle_bytes: u64,
    /// Failed authentications, logged at most once a minute with a count: a token guesser
    /// must not be able to flood the log.
    failures: Mutex<RateLimitedLog>,
    /// Exports waiting to be fetched: id → scratch directory holding `output`, and when it was made.
    outputs: Mutex<HashMap<String, (tempfile::TempDir, Instant)>>,
    /// The browser dashboard at `/ui`, over the same commands.
    dashboard: Arc<super::ui::Dashboard>,
}

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminListenError {
    #[error("HOLDFAST_ADMIN_TOKEN is blank; set a real token (e.g. `openssl rand -hex 32`) or unset it")]
    BlankToken,
    #[error("admin.tls_cert / tls_key {path}: {reason}")]
    Tls { path: String, reason: String },
}

impl AdminState {
    pub fn new(admin: Arc<Admin>, token: Zeroizing<String>, max_bundle_bytes: u64) -> Result<Self, AdminListenError> {
        Self::with_dashboard(admin, token, max_bundle_bytes, None, false)
    }

    /// As `new`, with the dashboard's Now page showing the running proxy `live`; `tls` marks
    /// the dashboard's session cookie `Secure`.
    pub fn with_dashboard(
        admin: Arc<Admin>,
        token: Zeroizing<String>,
        max_bundle_bytes: u64,
        live: Option<crate::proxy::AppState>,
        tls: bool,
    ) -> Result<Self, AdminListenError> {
        if token.trim().is_empty() {
            return Err(AdminListenError::BlankToken);
        }
        let dashboard = Arc::new(super::ui::Dashboard::new(admin.clone(), token.clone(), live, tls));
        Ok(Self(Arc::new(AdminInner {
            admin,
            token,
            max_bundle_bytes,
            dashboard,
            failures: Mutex::new(RateLimitedLog::new(Duration::from_secs(60))),
            outputs: Mutex::new(HashMap::new()),
        })))
    }

    /// Deletes exports nobody fetched within `OUTPUT_TTL`; run on every admin call, so an
    /// abandoned export is gone at the next one.
    fn forget_stale_outputs(&self) {
        lock(&self.0.outputs).retain(|_, (_, made)| made.elapsed() < OUTPUT_TTL);
    }

    /// Who is calling, if the request carries the token; a failure is logged (rate-limited)
    /// and is `None` (answer with `unauthorized()`).
    fn caller(&self, request: &Request) -> Option<Actor> {
        let peer = request.extensions().get::<Peer>().cloned().unwrap_or_else(|| Peer("unknown".into()));
        self.authenticate(request.headers(), &peer)
    }

    fn authenticate(&self, headers: &HeaderMap, peer: &Peer) -> Option<Actor> {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if token_matches(&self.0.token, presented) {
            return Some(Actor::token(presented, &peer.0));
        }
        if let Some(suppressed) = lock(&self.0.failures).due() {
            tracing::warn!(peer = %peer.0, suppressed, "admin API call with a wrong or missing token");
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unauthorized() -> Response {
    refuse(StatusCode::UNAUTHORIZED, "wrong or missing admin token (Authorization: Bearer …)")
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], json!({"error": message}).to_string()).into_response()
}

/// The admin listener's routes, without a socket.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .merge(super::ui::router(state.0.dashboard.clone()))
        .route("/admin/v1/execute", post(execute))
        .route("/admin/v1/output/{id}", get(fetch_output))
        .route("/admin/v1/ping", get(ping))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .with_state(state)
}

/// Serves the admin API on `listener` (TLS with `tls`) until `shutdown` resolves.
pub async fn run(
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AdminState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::edge::server::serve(listener, tls, router(state), limits, shutdown).await
}

/// A TLS acceptor from PEM files.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, AdminListenError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err =
        |path: &std::path::Path, reason: String| AdminListenError::Tls { path: path.display().to_string(), reason };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).and_then(Iterator::collect).map_err(|e| tls_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls_err(cert, "no certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| tls_err(cert, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn execute(State(state): State<AdminState>, request: Request) -> Response {
    let Some(actor) = state.caller(&request) else {
        return unauthorized();
    };
    state.forget_stale_outputs();
    let mut body = request.into_body().into_data_stream();
    let (command, rest) = match read_command_line(&mut body).await {
        Ok(parts) => parts,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    let call: AdminRequest = match serde_json::from_slice(&command) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("not an admin request: {e}")),
    };
    let scratch = match tempfile::Builder::new().prefix("holdfast-admin-").tempdir() {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot create a scratch directory: {e}")),
    };
    let input = if call.reads_input() {
        let path = scratch.path().join("input");
        if let Err((status, message)) = receive_input(&path, rest, body, state.0.max_bundle_bytes).await {
            return refuse(status, &message);
        }
        Some(path)
    } else {
        None
    };
    tracing::info!(actor = %actor.0, command = %call.describe(), "admin command");
    let (tx, rx) = mpsc::channel::<Value>(LINE_DEPTH);
    tokio::task::spawn_blocking(move || run_command(&state, call, &actor, scratch, input, &tx));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(format!("{value}\n")), rx))
    });
    ([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

type DataStream = axum::body::BodyDataStream;

/// The body's first line (the command) and whatever followed it in the same chunk.
async fn read_command_line(body: &mut DataStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut head = Vec::new();
    loop {
        if let Some(end) = head.iter().position(|b| *b == b'\n') {
            let rest = head.split_off(end + 1);
            head.truncate(end);
            return Ok((head, rest));
        }
        if head.len() > MAX_COMMAND_LINE {
            return Err(format!("the command line is longer than {MAX_COMMAND_LINE} bytes"));
        }
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(format!("cannot read the request: {e}")),
            // A command without input may end without its newline.
            None => return Ok((head, Vec::new())),
        }
    }
}

/// Streams the rest of the body to `path`, refusing past `limit` bytes.
async fn receive_input(
    path: &std::path::Path,
    first: Vec<u8>,
    mut body: DataStream,
    limit: u64,
) -> Result<(), (StatusCode, String)> {
    let internal = |e: std::io::Error| (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot stage the input: {e}"));
    let too_large =
        || (StatusCode::PAYLOAD_TOO_LARGE, format!("the input is larger than admin.max_bundle_bytes ({limit} bytes)"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(internal)?);
    let mut written = first.len() as u64;
    if written > limit {
        return Err(too_large());
    }
    file.write_all(&first).map_err(internal)?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("cannot read the input: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(too_large());
        }
        // Small writes into a buffered file: blocking, but bounded and brief.
        file.write_all(&chunk).map_err(internal)?;
    }
    if written == 0 {
        return Err((StatusCode::BAD_REQUEST, "this command needs an input file after the command line".into()));
    }
    file.flush().map_err(internal)
}

/// Runs one command on a blocking thread, streaming progress and results as JSON values.
fn run_command(
    state: &AdminState,
    call: AdminRequest,
    actor: &Actor,
    scratch: tempfile::TempDir,
    input: Option<PathBuf>,
    tx: &mpsc::Sender<Value>,
) {
    let send = |value: Value| {
        // The client left: the command still finishes (it may be changing the store), unheard.
        let _ = tx.blocking_send(value);
    };
    let output = call.writes_output().then(|| scratch.path().join("output"));
    let progress = |done: u64, total: u64| send(json!({"progress": [done, total]}));
    match state.0.admin.execute(&call, actor, &progress, output.as_deref(), input.as_deref()) {
        Ok(outcome) => {
            if let Some(path) = &output {
                let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let mut raw = [0u8; 16];
                crate::secret::fill_random(&mut raw);
                let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                state.forget_stale_outputs();
                lock(&state.0.outputs).insert(id.clone(), (scratch, Instant::now()));
                send(json!({"output": {"id": id, "bytes": bytes}}));
            }
            send(json!({"result": outcome.result, "verification_failed": outcome.verification_failed}));
        }
        Err(e) => send(json!({"error": e.to_string()})),
    }
}

/// A token check and nothing else: the client asks before it streams an upload, so a wrong
/// token is a clear 401 rather than a connection cut mid-upload.
async fn ping(State(state): State<AdminState>, request: Request) -> Response {
    match state.caller(&request) {
        Some(_) => (StatusCode::OK, [("content-type", "application/json")], r#"{"ok":true}"#).into_response(),
        None => unauthorized(),
    }
}

/// An export, raw, once; its scratch file goes when the download ends.
async fn fetch_output(State(state): State<AdminState>, UrlPath(id): UrlPath<String>, request: Request) -> Response {
    if state.caller(&request).is_none() {
        return unauthorized();
    }
    state.forget_stale_outputs();
    let Some((scratch, _)) = lock(&state.0.outputs).remove(&id) else {
        return refuse(StatusCode::NOT_FOUND, "no such output (already fetched, or expired)");
    };
    let file = match tokio::fs::File::open(scratch.path().join("output")).await {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read the export back: {e}")),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let chunks = file_chunks(file);
    let body = crate::edge::server::hold(Body::from_stream(chunks), scratch);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/octet-stream"));
    if let Some(len) = length {
        response.headers_mut().insert("content-length", axum::http::HeaderValue::from(len));
    }
    response
}

/// A file as a stream of 64 KiB chunks, ending after the first read error.
pub(super) fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt as _;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
