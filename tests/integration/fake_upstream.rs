//! A fake LLM provider for the integration tests: a real HTTP/1.1 server on 127.0.0.1 that speaks
//! the OpenAI and Anthropic dialects and can be scripted to fail.
//!
//! The contract (answer text, usage numbers, event sequences, fault behaviour) is
//! `specs/fake-upstream.md`; a Python SDK test relies on the same contract, so the shapes here
//! follow it literally rather than whatever would be convenient for the Rust tests.
//!
//! The accept loop and the per-connection HTTP driver are written by hand (hyper, not
//! `axum::serve`) because two faults need control below the HTTP layer: `down()` must close the
//! listening socket so connects are refused, and `ResetConnection` must kill the TCP connection
//! instead of producing any response.

// Every test uses a different subset of the knobs below; unused ones must not fail the build.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use base64::Engine as _;
use futures_util::Stream;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

mod answers;
use answers::*;

/// `created` / `created_at` of every answer, fixed so answers are byte-for-byte reproducible.
const CREATED: u64 = 1_700_000_000;
/// Streamed answers are cut into pieces of at most this many characters, one event each.
const PIECE_CHARS: usize = 5;
/// Pause between two streamed events, so each event leaves as its own chunk and a proxy that
/// buffers a whole stream before relaying it is observable.
const EVENT_GAP: Duration = Duration::from_millis(2);
/// A prompt containing this word is answered with a tool call instead of text.
const TOOL_TRIGGER: &str = "TOOL";
const TOOL_NAME: &str = "get_weather";
const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The body served under [`Fault::MalformedJson`]: the beginning of an object, cut off.
const MALFORMED_BODY: &str = r#"{"id": "broken", "#;

/// What the fake does with the requests that follow [`FakeUpstream::set_fault`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer with this status and a dialect-shaped error body (`retry-after: 1` on 429 and 503).
    Status(u16),
    /// Read the request and never answer; the connection stays open until the client gives up,
    /// or `down()` / drop ends it.
    Hang,
    /// Streams: send the first two events, then abort the connection. Other answers: send the
    /// headers (with the full `content-length`) and half the body, then abort.
    CutStream,
    /// Streams: send the first N events, then abort the connection (a provider dying mid-answer).
    CutAfter(usize),
    /// Streams: send the first N events, then fall silent with the connection open.
    StallAfter(usize),
    /// Streams: send the first N events, then close the body cleanly (no finish, no terminal).
    EndAfter(usize),
    /// Streams: send the first event at once (role chunk / `message_start`), the rest after
    /// this many milliseconds: headers come fast, the first token slowly.
    SlowFirstToken(u64),
    /// Streams: send every event but the terminal one (`[DONE]`, `message_stop`), then close
    /// the body cleanly.
    NoTerminal,
    /// Streams: event N (0-based) is replaced by one whose data is not JSON.
    MalformedEventAt(usize),
    /// A 400 saying the prompt does not fit the model's context, in the path's dialect
    /// (`context_length_exceeded`; Anthropic: "prompt is too long").
    ContextLength,
    /// A 400 for any request that ends with an assistant message (a prefill), in the path's
    /// dialect; other requests are answered normally.
    RejectPrefill,
    /// Answer normally, but as another model would: the text is `"said: " + prompt` instead of
    /// `"echo: " + prompt` (a restarted answer that does not repeat the first one).
    Paraphrase,
    /// Answer 200 `application/json` with a truncated JSON body.
    MalformedJson,
    /// Read the request, then reset the TCP connection (RST) without any response.
    ResetConnection,
}

/// Everything the handlers share with the test: the script and the observations.
struct State {
    fault: Fault,
    /// Requests left before `fault` reverts to `Fault::None` (`None`: never).
    fault_budget: Option<usize>,
    models: Vec<String>,
    calls: usize,
    calls_by_path: HashMap<String, usize>,
    last_headers: Option<HeaderMap>,
    last_body: Option<Value>,
}

type Shared = Arc<Mutex<State>>;

/// A panicking test thread must not turn every later assertion into a poison error.
fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake provider. Dropping it stops the server and every connection it holds.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Shared,
    /// The accept loop; `None` while the fake is down. It owns the listener and (through a
    /// `JoinSet`) every connection task, so aborting it closes all of them.
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeUpstream {
    /// Binds 127.0.0.1 on a free port and serves on a task of the current tokio runtime.
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake upstream: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake upstream: local address");
        let shared = Arc::new(Mutex::new(State {
            fault: Fault::None,
            fault_budget: None,
            models: vec!["fake-gpt".to_owned()],
            calls: 0,
            calls_by_path: HashMap::new(),
            last_headers: None,
            last_body: None,
        }));
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FakeUpstream { addr, shared, server: Mutex::new(Some(server)) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without `/v1`: both SDK styles append their own paths.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies to every request that arrives from now on, until changed.
    pub fn set_fault(&self, fault: Fault) {
        let mut state = lock(&self.shared);
        state.fault = fault;
        state.fault_budget = None;
    }

    /// Applies `fault` to the next `requests` requests only, then answers normally again: a
    /// provider that recovers on its own.
    pub fn set_fault_for(&self, fault: Fault, requests: usize) {
        let mut state = lock(&self.shared);
        state.fault = fault;
        state.fault_budget = Some(requests);
    }

    /// The ids listed by `GET /v1/models` (default: `["fake-gpt"]`).
    pub fn set_models(&self, ids: &[&str]) {
        lock(&self.shared).models = ids.iter().map(|id| (*id).to_owned()).collect();
    }

    /// Requests received so far, faulted ones included (a request counts once its body is read).
    pub fn calls(&self) -> usize {
        lock(&self.shared).calls
    }

    /// Requests received so far whose path (without query) is exactly `path`.
    pub fn calls_to(&self, path: &str) -> usize {
        lock(&self.shared).calls_by_path.get(path).copied().unwrap_or(0)
    }

    /// Headers of the last request received; `HeaderMap` names are lower-case.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        lock(&self.shared).last_headers.clone()
    }

    /// Body of the last request received, if it was JSON.
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.shared).last_body.clone()
    }

    /// Stops listening: connects to the port are refused and open connections (hung requests
    /// included) are closed. Returns once the listening socket is closed.
    pub async fn down(&self) {
        let server = self.server.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(server) = server {
            server.abort();
            // Waiting for the aborted task guarantees its future, and with it the listener, is
            // dropped before we return; otherwise a connect could still be accepted.
            let _ = server.await;
        }
    }

    /// Listens again on the same port (a no-op if already up).
    pub async fn up(&self) {
        if self.server.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
            return;
        }
        // The port was ours a moment ago and tokio sets SO_REUSEADDR, so a bind failure can
        // only be a short-lived race (or another process took the port): retry for a while.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("fake upstream: cannot listen on {} again: {err}", self.addr),
            }
        };
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&self.shared)));
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            server.abort();
        }
    }
}

/// Accepts connections until aborted. Connection tasks live in a `JoinSet` owned by this future,
/// so aborting it also aborts them (and closes their sockets).
async fn accept_loop(listener: TcpListener, shared: Shared) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow for the whole test.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one keep-alive connection; ends it with a RST when a handler asks for a reset.
async fn serve_connection(stream: TcpStream, shared: Shared) {
    // Events are small writes; without NODELAY, Nagle + delayed ACK would batch them.
    let _ = stream.set_nodelay(true);
    // hyper takes ownership of the stream, but the reset needs SO_LINGER=0 on the socket when it
    // is closed: keep a duplicate descriptor of the same socket for that.
    let Ok(stream) = stream.into_std() else { return };
    let Ok(twin) = stream.try_clone() else { return };
    let Ok(stream) = TcpStream::from_std(stream) else { return };

    let reset = Arc::new(Notify::new());
    let service = {
        let reset = Arc::clone(&reset);
        service_fn(move |request| {
            let shared = Arc::clone(&shared);
            let reset = Arc::clone(&reset);
            async move { Ok::<_, Infallible>(handle(&shared, &reset, request).await) }
        })
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors here are the client going away or a CutStream abort: nothing to report.
        _ = connection => {}
        () = reset.notified() => {
            // Linger 0 makes the close below send RST instead of FIN. Both descriptors are
            // closed when this function returns (the connection future is dropped with the
            // `select!`), and the socket is only released by the last of them.
            if let Ok(twin) = TcpStream::from_std(twin) {
                let _ = twin.set_zero_linger();
            }
        }
    }
}

/// Records the request, then applies the fault or answers.
async fn handle(shared: &Mutex<State>, reset: &Notify, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await.unwrap_or_default();
    let mut parsed: Option<Value> = serde_json::from_slice(&bytes).ok();

    let (fault, models) = {
        let mut state = lock(shared);
        state.calls += 1;
        *state.calls_by_path.entry(path.clone()).or_default() += 1;
        state.last_headers = Some(parts.headers.clone());
        state.last_body = parsed.clone();
        let fault = state.fault;
        if let Some(left) = state.fault_budget.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                state.fault = Fault::None;
                state.fault_budget = None;
            }
        }
        (fault, state.models.clone())
    };

    let anthropic = path.starts_with("/v1/messages");
    let mut delivery = Delivery::Whole;
    match fault {
        Fault::None => {}
        Fault::CutStream => delivery = Delivery::CutAfter(2),
        Fault::CutAfter(n) => delivery = Delivery::CutAfter(n),
        Fault::StallAfter(n) => delivery = Delivery::StallAfter(n),
        Fault::EndAfter(n) => delivery = Delivery::EndAfter(n),
        Fault::SlowFirstToken(ms) => delivery = Delivery::SlowFirst(Duration::from_millis(ms)),
        Fault::NoTerminal => delivery = Delivery::NoTerminal,
        Fault::MalformedEventAt(n) => delivery = Delivery::MalformedAt(n),
        Fault::Hang => return pending().await,
        Fault::ResetConnection => {
            reset.notify_one();
            return pending().await;
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!("fake upstream: scripted status {code}");
            return error_reply(status, anthropic, &message).into_response(Delivery::Whole);
        }
        Fault::ContextLength => return context_length_reply(anthropic).into_response(Delivery::Whole),
        Fault::RejectPrefill if parsed.as_ref().is_some_and(ends_with_prefill) => {
            return prefill_rejection(anthropic).into_response(Delivery::Whole);
        }
        Fault::RejectPrefill => {}
        Fault::Paraphrase => {
            if let Some(request) = parsed.as_mut() {
                paraphrased(request);
            }
        }
        Fault::MalformedJson => {
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(MALFORMED_BODY))
                .expect("static response parts are valid");
        }
    }
    route(&parts.method, &path, parsed, &models).into_response(delivery)
}

/// Marks the request so that `Answer::new` answers `"said: " + prompt`.
fn paraphrased(request: &mut Value) {
    if let Some(object) = request.as_object_mut() {
        object.insert("x_fake_paraphrase".into(), Value::Bool(true));
    }
}

/// Whether the request's last message is the assistant's (a prefill to continue).
fn ends_with_prefill(request: &Value) -> bool {
    let last = request.get("messages").and_then(Value::as_array).and_then(|m| m.last());
    last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("assistant")
}

fn context_length_reply(anthropic: bool) -> Reply {
    let body = if anthropic {
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
    } else {
        json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
    };
    Reply::Json(StatusCode::BAD_REQUEST, body)
}

fn prefill_rejection(anthropic: bool) -> Reply {
    let message =
        "This model does not support assistant message prefill. The conversation must end with a user message.";
    let body = if anthropic {
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
    } else {
        json!({"error": {"message": message, "type": "invalid_request_error", "param": "messages", "code": "invalid_prefill"}})
    };
    Reply::Json(StatusCode::BAD_REQUEST, body)
}

/// How a reply goes on the wire: whole, or with one of the scripted stream faults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Whole,
    /// The first N events (streams) or half the body (JSON), then an abort.
    CutAfter(usize),
    /// The first N events, then silence with the connection open.
    StallAfter(usize),
    /// The first N events, then a clean end.
    EndAfter(usize),
    /// The first event, then this pause, then the rest.
    SlowFirst(Duration),
    /// Every event but the last (the terminal one), then a clean end.
    NoTerminal,
    /// Event N's data replaced by text that is not JSON.
    MalformedAt(usize),
}

/// How a paced body ends after its last chunk.
#[derive(Clone, Copy)]
enum End {
    Clean,
    Abort,
    Stall,
}

/// An answer before it is put on the wire, so that `CutStream` can cut any of them.
enum Reply {
    Json(StatusCode, Value),
    /// Pre-rendered server-sent events (`data: ...\n\n` or `event: ...\ndata: ...\n\n`).
    Events(Vec<String>),
}

impl Reply {
    fn into_response(self, delivery: Delivery) -> Response<Body> {
        match self {
            Reply::Json(status, value) => {
                let bytes = Bytes::from(value.to_string());
                let length = bytes.len();
                let mut builder = Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, length);
                if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                    builder = builder.header(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                let body = if matches!(delivery, Delivery::CutAfter(_)) {
                    // The announced length stays the full one, so the client knows the body is short.
                    Body::from_stream(paced(vec![bytes.slice(..length / 2)], End::Abort, EVENT_GAP))
                } else {
                    Body::from(bytes)
                };
                builder.body(body).expect("response parts are valid")
            }
            Reply::Events(mut events) => {
                let (mut end, mut first_gap) = (End::Clean, EVENT_GAP);
                match delivery {
                    Delivery::Whole => {}
                    Delivery::CutAfter(n) => {
                        events.truncate(n);
                        end = End::Abort;
                    }
                    Delivery::StallAfter(n) => {
                        events.truncate(n);
                        end = End::Stall;
                    }
                    Delivery::EndAfter(n) => events.truncate(n),
                    Delivery::SlowFirst(pause) => first_gap = pause,
                    Delivery::NoTerminal => {
                        events.pop();
                    }
                    Delivery::MalformedAt(n) => {
                        if let Some(event) = events.get_mut(n) {
                            *event = "data: {\"broken\n\n".to_owned();
                        }
                    }
                }
                let chunks: Vec<Bytes> = events.into_iter().map(Bytes::from).collect();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Body::from_stream(paced(chunks, end, first_gap)))
                    .expect("static response parts are valid")
            }
        }
    }
}

/// Yields each chunk separately with a pause in between (`first_gap` after the first), then
/// ends: cleanly, with a body error (hyper drops the connection without the terminating chunk,
/// which the client sees as a broken body), or never (the connection stays open, silent).
fn paced(chunks: Vec<Bytes>, end: End, first_gap: Duration) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold((chunks.into_iter(), 0_usize, Some(end)), move |(mut chunks, sent, end)| async move {
        match sent {
            0 => {}
            1 => tokio::time::sleep(first_gap).await,
            _ => tokio::time::sleep(EVENT_GAP).await,
        }
        match (chunks.next(), end) {
            (Some(chunk), _) => Some((Ok(chunk), (chunks, sent + 1, end))),
            (None, Some(End::Abort)) => {
                Some((Err(io::Error::other("fake upstream: stream cut")), (chunks, sent + 1, None)))
            }
            (None, Some(End::Stall)) => pending().await,
            (None, _) => None,
        }
    })
}

fn route(method: &Method, path: &str, body: Option<Value>, models: &[String]) -> Reply {
    type Endpoint = fn(&Value) -> Reply;
    let endpoint: Endpoint = match (method, path) {
        (&Method::GET, "/v1/models") => return list_models(models),
        (&Method::POST, "/v1/chat/completions") => chat_completions,
        (&Method::POST, "/v1/completions") => completions,
        (&Method::POST, "/v1/embeddings") => embeddings,
        (&Method::POST, "/v1/responses") => responses,
        (&Method::POST, "/v1/messages") => messages,
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens,
        _ => {
            let message = format!("Unknown request URL: {method} {path}.");
            return error_reply(StatusCode::NOT_FOUND, false, &message);
        }
    };
    match body {
        Some(body) if body.is_object() => endpoint(&body),
        _ => {
            error_reply(StatusCode::BAD_REQUEST, path.starts_with("/v1/messages"), "request body is not a JSON object")
        }
    }
}
