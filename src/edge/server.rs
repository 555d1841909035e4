//! The HTTP/1.1 server loop under both listeners (proxy and admin): bounded and timed.
//!
//! `axum::serve` keeps every connection for as long as the peer likes. Here each connection
//! is held to limits a public network needs: a cap on open connections (more get a 503 with
//! `Retry-After` and are closed), a deadline for a complete request head (slowloris), an idle
//! limit for keep-alive connections with no request in flight, an idle limit while a request
//! body arrives, and a shutdown that waits at most `shutdown_timeout` for in-flight requests
//! before it cuts them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::config::LimitsConfig;

/// Largest read buffer a connection keeps (hyper's minimum is 8 KiB): enough for any request
/// head a client sends in practice (Node's default limit is 16 KiB, nginx's 4 × 8 KiB), which
/// must fit in it whole. Held by every open connection, so it is most of what 2,000 slow
/// uploads cost: 64 KiB took RSS past 200 MB there (docs/security.md).
const READ_BUFFER_CAP: usize = 16 * 1024;

/// Who is on the other end of a connection, for logs and the access trail: `ip:port`, or
/// `unix` for a Unix-socket peer. Handlers read it as an `Extension<Peer>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub String);

/// The limits one listener enforces; see `[limits]` in docs/configuration.md.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Longest wait for a complete request head, on a new or a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Longest silence while a request body is arriving.
    pub body_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
}

impl ServerLimits {
    pub fn from_config(limits: &LimitsConfig) -> Self {
        Self {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            body_read_timeout: limits.body_read_timeout,
            max_connections: limits.max_connections,
            shutdown_timeout: limits.shutdown_timeout,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self::from_config(&LimitsConfig::default())
    }
}

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    /// A Unix socket, and its path (removed again at shutdown).
    Unix(UnixListener, PathBuf),
}

/// A stream the server can speak HTTP over: TCP, a Unix socket, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Listener {
    async fn accept(&self) -> io::Result<(Box<dyn Io>, Peer, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                // Without TCP_NODELAY, a stream's small event writes meet the client's delayed
                // ACK and stall 40 ms each (measured: a replayed 32 KiB stream took 44 ms at p50).
                let _ = tcp.set_nodelay(true);
                Ok((Box::new(tcp), Peer(addr.to_string()), Some(addr)))
            }
            Self::Unix(l, _) => {
                let (unix, _) = l.accept().await?;
                Ok((Box::new(unix), Peer("unix".to_owned()), None))
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish for at most `limits.shutdown_timeout`, and cuts what is left.
pub async fn serve(
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut accept_errors = RateLimitedLog::new(Duration::from_secs(10));
    let mut refused = RateLimitedLog::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (io, peer, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: out of file descriptors. Back off instead of spinning;
                // connections already open go on being served.
                if let Some(suppressed) = accept_errors.due() {
                    tracing::error!(error = %e, suppressed, "cannot accept connections (open-file limit?)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(suppressed) = refused.due() {
                tracing::warn!(
                    limit = limits.max_connections,
                    suppressed,
                    "connection limit reached; refusing with 503"
                );
            }
            tasks.spawn(refuse(io));
            continue;
        };
        let connection = Connection { app: app.clone(), limits: limits.clone(), peer, addr, stop: stop_rx.clone() };
        let tls = tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection.run(io).await,
                Some(acceptor) => {
                    match tokio::time::timeout(connection.limits.header_read_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => connection.run(Box::new(stream)).await,
                        Ok(Err(e)) => tracing::debug!(peer = %connection.peer.0, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(peer = %connection.peer.0, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // A Unix socket left behind would make the next start think another server is there.
    let _ = listener_cleanup(&listener);
    let _ = stop_tx.send(true);
    let open = tasks.len();
    let drained =
        tokio::time::timeout(limits.shutdown_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            of = open,
            waited_secs = limits.shutdown_timeout.as_secs(),
            "shutdown timeout reached; cutting the connections still open"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

fn listener_cleanup(listener: &Listener) -> io::Result<()> {
    match listener {
        Listener::Tcp(_) => Ok(()),
        Listener::Unix(_, path) => std::fs::remove_file(path),
    }
}

/// The answer to a connection over the limit: one neutral JSON error that both dialects' SDKs
/// read (`error.message`, `error.type`), then close.
async fn refuse(mut io: Box<dyn Io>) {
    const BODY: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"holdfast: too many open connections; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    /// The router the listener serves: the proxy's or the admin API's.
    app: Router,
    /// Header, idle and body timeouts and sizes of this listener.
    limits: ServerLimits,
    /// Who connected (`ip:port` or `unix`), for handlers, logs and the access trail.
    peer: Peer,
    /// The TCP peer, for handlers that take `ConnectInfo<SocketAddr>`.
    addr: Option<SocketAddr>,
    /// Turns true when the server shuts down.
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, io: Box<dyn Io>) {
        let activity = Arc::new(Activity::new());
        let service = {
            let (app, peer, addr, activity) = (self.app.clone(), self.peer.clone(), self.addr, activity.clone());
            let body_timeout = self.limits.body_read_timeout;
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(|body| Body::new(IdleTimeoutBody::new(body, body_timeout)));
                request.extensions_mut().insert(peer.clone());
                if let Some(addr) = addr {
                    request.extensions_mut().insert(ConnectInfo(addr));
                }
                let in_flight = activity.begin();
                let app = app.clone();
                async move {
                    let response = app.oneshot(request).await.unwrap_or_else(|never: Infallible| match never {});
                    Ok::<_, Infallible>(response.map(|body| hold(body, in_flight)))
                }
            })
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(self.limits.header_read_timeout);
        // hyper grows a connection's read buffer to 400 KiB by default and keeps it: thousands of
        // slow uploads would hold that each. Bodies are copied out as they arrive (read_body).
        http.max_buf_size(READ_BUFFER_CAP);
        let connection = http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.limits.idle_timeout));
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer.0, error = %e, "connection ended with an error");
                    }
                    return;
                }
                changed = self.stop.changed(), if !closing => {
                    // A closed channel means the server is gone: close as for a shutdown.
                    let _ = changed;
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = tick.tick(), if !closing => {
                    if activity.idle_for() >= self.limits.idle_timeout {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended, for the idle limit.
struct Activity {
    /// When the connection was accepted; `last_ms` counts from it.
    started: Instant,
    /// Requests being answered now: while any is, the connection is not idle.
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the connection last had a request end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { started: Instant::now(), in_flight: AtomicUsize::new(0), last_ms: AtomicU64::new(0) }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Zero while a request is in flight; otherwise the time since the last one ended.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Held by a response body until its last byte went out (or it was dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `body`, holding `held` (a permit, an in-flight mark) until the body is done or dropped.
pub fn hold<T: Send + Unpin + 'static>(body: Body, held: T) -> Body {
    Body::new(Holding { inner: body, _held: held })
}

struct Holding<T> {
    /// The body, passed through unchanged.
    inner: Body,
    /// Released when the body is done or dropped.
    _held: T,
}

impl<T: Send + Unpin + 'static> HttpBody for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when the client sends nothing for `timeout` while the handler
/// waits for more: a stalled upload must not hold its buffers and connection forever.
struct IdleTimeoutBody {
    /// The client's body as hyper reads it.
    inner: Incoming,
    /// The longest silence allowed while the handler waits (`idle_timeout`).
    timeout: Duration,
    /// Armed while the handler waits for the next frame; reset when one arrives.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimeoutBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self { inner, timeout, sleep: None }
    }
}

/// The error a stalled request body ends with; request readers report it as a timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?} (limits.body_read_timeout)")]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// The timeout somewhere in `error`'s chain of causes, if that is why a body read failed.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(timeout) = e.downcast_ref::<Self>() {
                return Some(timeout);
            }
            current = e.source();
        }
        None
    }
}

impl HttpBody for IdleTimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Logs an event at most once per interval, with the count of those it kept quiet.
pub struct RateLimitedLog {
    /// At most one line per interval.
    interval: Duration,
    /// When the last line was written.
    last: Option<Instant>,
    /// Events kept quiet since then, reported on the next line.
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: None, suppressed: 0 }
    }

    /// `Some(suppressed since the last log)` when this occurrence should be logged.
    pub fn due(&mut self) -> Option<u64> {
        match self.last {
            Some(at) if at.elapsed() < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The connection cap that fits the open-file limit: each client connection may need an
/// upstream one too, and the store and logs need a few of their own.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let fit = usize::try_from(limit.saturating_sub(256) / 2).unwrap_or(usize::MAX).max(16);
            configured.min(fit)
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_counts_what_it_kept_quiet() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.due(), Some(2));
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(connection_cap(20_000, Some(1024)), 384);
        assert_eq!(connection_cap(20_000, Some(1_048_576)), 20_000);
        assert_eq!(connection_cap(100, None), 100);
        assert_eq!(connection_cap(20_000, Some(10)), 16);
    }
}
