//! The HTTP front end: OpenAI- and Anthropic-compatible endpoints, health, readiness and
//! metrics, and the start-up sequence of `holdfast serve`.
//!
//! - `request`: endpoint table, body limits, cache policy from headers.
//! - `exchange`: one request from arrival to answer (store, chain, fallback).
//! - `chain`: targets in order with retries, deadlines, breakers and translation.
//! - `relay`: live streams, relayed and recorded.
//! - `stored`: answers built from stored records, in either form.
//! - `models`: the merged `GET /v1/models`.
//! - `errors`: errors in the client's dialect.

mod chain;
mod errors;
mod exchange;
mod models;
mod relay;
mod request;
mod stored;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

pub use errors::ApiError;
pub use request::Endpoint;

use zeroize::Zeroizing;

use crate::address::{Address, Namespace};
use crate::admin::Admin;
use crate::config::{CacheScope, Config, ConfigSource};
use crate::metrics::Metrics;
use crate::normalize::{Dialect, NormalizedRequest};
use crate::resilience::breaker::Breakers;
use crate::secret::StoreSecret;
use crate::store::{Store, StoreOpenError, StoreOptions};
use crate::upstream::{UpstreamInitError, Upstreams, credential_for_namespace};

/// Everything a request handler needs, shared by all of them.
pub struct AppInner {
    pub config: Config,
    pub store: Arc<Store>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    pub breakers: Breakers,
    /// Admin commands over the store (`/admin/v1/execute`); `None` when the admin API is off.
    pub admin: Option<Arc<Admin>>,
    /// `HOLDFAST_ADMIN_TOKEN`; without it the admin API is off.
    pub admin_token: Option<Zeroizing<String>>,
}

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, store: Arc<Store>, upstreams: Upstreams) -> Self {
        Self::with_admin(config, store, upstreams, None, None)
    }

    /// As `new`, with the admin API on when both `admin` and `token` are given.
    pub fn with_admin(
        config: Config,
        store: Arc<Store>,
        upstreams: Upstreams,
        admin: Option<Arc<Admin>>,
        admin_token: Option<Zeroizing<String>>,
    ) -> Self {
        Self(Arc::new(AppInner {
            config,
            store,
            upstreams,
            metrics: Metrics::default(),
            breakers: Breakers::default(),
            admin,
            admin_token,
        }))
    }
}

impl AppInner {
    /// The tenant a request belongs to (its credential's namespace, or the shared one) and the
    /// address of `request` there. Keys come from the keyring on every call (an `Arc` clone):
    /// an import may adopt a new tenant key while the server runs.
    pub fn locate(&self, headers: &HeaderMap, request: &NormalizedRequest) -> (Namespace, Address) {
        let keys = self.store.keyring().snapshot();
        let namespace = match self.config.cache.scope {
            CacheScope::Shared => Namespace::shared(),
            CacheScope::Credential => keys.addresser().namespace_for_credential(credential_for_namespace(headers)),
        };
        let address = keys.addresser().address(&namespace, request);
        (namespace, address)
    }
}

/// The whole HTTP surface, without a socket (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        router = router.route(
            endpoint.path(),
            post(move |State(state): State<AppState>, uri: Uri, headers: HeaderMap, body: axum::body::Body| {
                exchange::handle(state, endpoint, uri, headers, body)
            }),
        );
    }
    router
        .route("/v1/models", get(models::list))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/health", get(health))
        .route("/admin/v1/execute", post(crate::admin::api::execute))
        .fallback(unsupported)
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Peer addresses feed the admin API's access trail.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Without TCP_NODELAY, a stream's small event writes meet the client's delayed ACK and
    // stall 40 ms each (measured: a replayed 32 KiB stream took 44 ms at p50).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(state): State<AppState>) -> Response {
    // A read of an address that cannot exist exercises the whole read path without side effects.
    // Not writable is not ready either: answers still flow, but nothing new is kept for the
    // next outage, which a load balancer or an operator must hear about.
    let store = state.store.clone();
    let checked = tokio::task::spawn_blocking(move || {
        store.get(&Address([0; 32])).map_err(|e| format!("store not readable: {e}"))?;
        store.writable().map_err(|e| format!("store not writable: {e}"))
    })
    .await;
    match checked {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store check failed: {e}\n")).into_response(),
    }
}

/// Providers and circuit breakers as JSON, for dashboards and on-call humans.
async fn health(State(state): State<AppState>) -> Response {
    let breakers = state.breakers.statuses();
    let providers: Vec<_> = state
        .upstreams
        .providers
        .iter()
        .map(|p| {
            let state = breakers.iter().find(|b| b.key == p.name()).map_or("closed", |b| b.state.as_str());
            json!({"name": p.name(), "api": p.config.api, "base_url": p.config.base_url, "breaker": state})
        })
        .collect();
    let body = json!({"status": "ok", "providers": providers, "breakers": breakers, "store": state.store.stats()});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.store.stats());
    text.push_str(&crate::metrics::render_breakers(&state.breakers.statuses()));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn unsupported(uri: Uri) -> Response {
    let dialect = Dialect::of_endpoint(uri.path());
    ApiError::UnsupportedPath(uri.path().to_owned()).into_dialect_response(dialect)
}

/// Why `holdfast serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreOpenError),
    #[error(transparent)]
    Upstream(#[from] UpstreamInitError),
    #[error(
        "cannot listen on {addr}: {source} (is another holdfast or service on that port? set `listen` or HOLDFAST_LISTEN)"
    )]
    Listen { addr: String, source: std::io::Error },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `holdfast serve`: opens (or creates) the store, binds, serves until SIGTERM or Ctrl-C.
pub async fn serve(config: Config, source: ConfigSource, secret: StoreSecret) -> Result<(), ServeError> {
    let options = StoreOptions {
        create_if_missing: true,
        retention: config.store.retention,
        max_bytes: config.store.max_size,
        cache_bytes: config.store.cache_memory,
        durability: config.store.durability.to_store(),
        ..StoreOptions::default()
    };
    let path = config.store.path.clone();
    let existed = path.join("HOLDFAST").exists();
    // Argon2id takes tens of milliseconds by design; keep it off the async workers.
    let store = tokio::task::spawn_blocking(move || Store::open(&path, &secret, options))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let store = Arc::new(store);
    let upstreams = Upstreams::new(&config.providers, |name| std::env::var(name).ok())?;
    let addr = config.listen.clone();
    let listener =
        TcpListener::bind(&addr).await.map_err(|source| ServeError::Listen { addr: addr.clone(), source })?;
    let local = listener.local_addr()?;
    let stats = store.stats();
    tracing::info!(
        config = %source,
        store = %store.path().display(),
        created = !existed,
        entries = stats.entries,
        mode = config.cache.mode.as_str(),
        "holdfast listening on http://{local} — OpenAI SDKs: base_url=\"http://{local}/v1\"; Anthropic SDKs: base_url=\"http://{local}\""
    );
    for p in &upstreams.providers {
        tracing::info!(provider = p.name(), base_url = %p.config.base_url, models = ?p.config.models, "provider");
    }
    if config.store.retention.is_some() {
        spawn_purger(store.clone());
    }
    spawn_served_writer(store.clone());
    if config.store.max_size.is_some() {
        spawn_evictor(store.clone());
    }
    let admin_token = std::env::var("HOLDFAST_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).map(Zeroizing::new);
    let admin = match &admin_token {
        Some(_) => {
            tracing::info!("admin API on: `holdfast --server http://{local} …` with HOLDFAST_ADMIN_TOKEN");
            Some(Arc::new(
                Admin::open(store.clone()).map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?,
            ))
        }
        None => {
            tracing::info!("admin API off (set HOLDFAST_ADMIN_TOKEN to run admin commands against this server)");
            None
        }
    };
    let state = AppState::with_admin(config, store.clone(), upstreams, admin, admin_token);
    run(listener, state, shutdown_signal()).await?;
    tracing::info!("shut down; flushing the store");
    store.flush().map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    Ok(())
}

/// Writes the served counts noted by hits, once a second, off the async workers.
fn spawn_served_writer(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let store = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush_served()).await {
                tracing::warn!(error = %e, "could not write served counts");
            }
        }
    });
}

/// Evicts down to the size budget whenever a write signals it went over (and once at start),
/// off the request path and the async workers.
fn spawn_evictor(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if !first {
                store.eviction_wanted().await;
            }
            first = false;
            if !store.over_budget() {
                continue;
            }
            let worker = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || worker.evict_to_budget()).await {
                tracing::error!(error = %e, "evicting to the size budget failed");
            }
        }
    });
}

/// Deletes expired entries hourly, off the async workers.
fn spawn_purger(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.purge_expired()).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "purged expired entries"),
                Ok(Err(e)) => tracing::error!(error = %e, "purging expired entries failed"),
                _ => {}
            }
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
