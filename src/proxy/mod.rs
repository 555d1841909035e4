//! The request chain behind the OpenAI- and Anthropic-compatible endpoints, with health,
//! readiness and `/metrics`. A request flows down this list:
//!
//! - `guard`: one credential, client keys, the in-flight cap, before any handler.
//! - `request`: endpoint table, bounded body, the form asked for, cache policy from headers.
//! - `exchange`: one request from arrival to answer (store, chain, fallback).
//! - `flight`: single-flight, one upstream call for identical requests in flight together.
//! - `chain`: targets in order with retries, deadlines, breakers and translation.
//! - `attempt`: one target's admission past its breakers, and its path and body.
//! - [`upstream`]: routing a model to its targets, the upstream request, failure classes.
//! - [`resilience`]: backoff with jitter, circuit breakers, how an attempt's outcome counts.
//! - `reader`: one upstream stream, event by event, with its end told apart from a cut.
//! - `relay`: live streams, relayed to the client and captured for the store.
//! - `rescue`: a stream that breaks mid-answer continued on the next target.
//! - `answer`: the exchange a request carries, `x-holdfast-cache`, response headers, storing.
//! - `by_id`: the second entry a Responses answer is kept under, for `GET /v1/responses/{id}`.
//! - `replay`: a stored answer in the form the client asked for.
//! - `models`: the merged `GET /v1/models`.
//! - `passthrough`: every other path under `/v1/`, streamed to a provider, never stored.
//! - `reask`: a stored request asked again through the same exchange (`cache refresh`).
//! - `errors`: errors in the client's dialect.

mod answer;
mod attempt;
mod by_id;
mod chain;
mod errors;
mod exchange;
mod flight;
mod guard;
mod models;
mod passthrough;
mod reader;
mod reask;
mod relay;
mod replay;
mod request;
mod rescue;
pub mod resilience;
pub mod upstream;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

pub use errors::ApiError;
pub use reask::{Reasked, reask};
pub use request::Endpoint;

use tokio::sync::Semaphore;

use crate::cache_key::address::{Address, Namespace};
use crate::cache_key::normalize::NormalizedRequest;
use crate::config::{CacheScope, Config};
use crate::edge::credential::ClientKeys;
use crate::edge::credential::credential_for_namespace;
use crate::edge::server::{Listener, ServerLimits};
use crate::proxy::resilience::breaker::{BreakerStatus, Breakers};
use crate::proxy::upstream::{Provider, Upstreams};
use crate::store::Store;
use crate::telemetry::Traces;
use crate::telemetry::metrics::Metrics;

/// Everything a request handler needs, shared by all of them.
pub struct AppInner {
    /// The validated configuration the server started with: modes, limits, routes' settings.
    pub config: Config,
    /// The sealed store every answer is kept in and served from (embedded or shared).
    pub store: Arc<Store>,
    /// The providers with their HTTP clients and credentials, and the model routes over them.
    pub upstreams: Upstreams,
    /// The counters and histograms behind `/metrics` and the dashboard.
    pub metrics: Metrics,
    /// One circuit breaker per provider and per provider/model, shared by every request.
    pub breakers: Breakers,
    /// Client keys this proxy accepts (`[clients] keys_env`); empty: any client may call.
    pub client_keys: ClientKeys,
    /// Places for requests being answered (`limits.max_in_flight`); one is held per request
    /// until its body's last byte, and a request that finds none is shed with a 503.
    pub in_flight: Arc<Semaphore>,
    /// Bytes of request bodies being received (`limits.max_body_buffer`).
    pub bodies: request::BodyBudget,
    /// Identical requests in flight, sharing one upstream call.
    pub flights: Arc<flight::Flights>,
    /// OpenTelemetry traces (`[telemetry]`); off unless an endpoint is configured.
    pub traces: Traces,
}

impl AppInner {
    /// Each provider with the state of its provider-wide breaker (`closed` until it has one),
    /// for `/admin/health` and the dashboard.
    pub fn providers_with_breakers<'a>(
        &'a self,
        breakers: &'a [BreakerStatus],
    ) -> impl Iterator<Item = (&'a Provider, &'static str)> + 'a {
        self.upstreams
            .providers
            .iter()
            .map(|p| (p, breakers.iter().find(|b| b.key == p.name()).map_or("closed", |b| b.state.as_str())))
    }
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
        Self::with_client_keys(config, store, upstreams, ClientKeys::default())
    }

    /// As `new`, accepting only clients that present one of `client_keys`.
    pub fn with_client_keys(config: Config, store: Arc<Store>, upstreams: Upstreams, client_keys: ClientKeys) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.limits.max_in_flight.min(Semaphore::MAX_PERMITS)));
        let bodies = request::BodyBudget::new(config.limits.max_body_buffer);
        let traces = Traces::from_config(&config.telemetry);
        Self(Arc::new(AppInner {
            config,
            store,
            upstreams,
            metrics: Metrics::default(),
            breakers: Breakers::default(),
            client_keys,
            in_flight,
            bodies,
            flights: Arc::default(),
            traces,
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

/// The whole HTTP surface, without a socket (tests drive it with `oneshot`). Every API route
/// (and the fallback) passes the guard; health, readiness and metrics do not, so probes and
/// scrapes work when the proxy is full or requires client keys.
pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for endpoint in Endpoint::ALL {
        api = api.route(
            endpoint.path(),
            post(move |State(state): State<AppState>, uri: Uri, headers: HeaderMap, body: axum::body::Body| {
                exchange::handle(state, endpoint, uri, headers, body)
            })
            // Other methods on these paths (e.g. GET /v1/chat/completions, the stored list)
            // are the provider's to answer.
            .fallback(passthrough::handle),
        );
    }
    let api = api
        .route("/v1/models", get(models::list).fallback(passthrough::handle))
        // Every other path under /v1/ is passed through; anything else is refused there.
        .fallback(passthrough::handle)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/health", get(health))
        .merge(api)
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, within `[limits]`; then lets in-flight
/// requests finish for at most `limits.shutdown_timeout`.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ServerLimits::from_config(&state.config.limits);
    run_with_limits(listener, state, limits, shutdown).await
}

/// As `run`, with limits worked out by the caller (`serve` fits them to the open-file limit).
pub async fn run_with_limits(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::edge::server::serve(Listener::Tcp(listener), None, router(state), limits, shutdown).await
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
        .providers_with_breakers(&breakers)
        .map(|(p, state)| json!({"name": p.name(), "api": p.config.api, "base_url": p.config.base_url, "breaker": state}))
        .collect();
    let body = json!({"status": "ok", "providers": providers, "breakers": breakers, "store": state.store.stats()});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.store.stats());
    text.push_str(&resilience::breaker::render_metrics(&state.breakers.statuses()));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
