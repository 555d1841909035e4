//! `holdfast serve`: the start-up sequence. Hardens the process, opens the store, binds the
//! proxy listener and (with `HOLDFAST_ADMIN_TOKEN`) the admin listener apart from it, warns
//! about risky setups, serves both until SIGTERM or Ctrl-C, then flushes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::config::{AdminListen, Config, ConfigSource};
use crate::edge::credential::ClientKeys;
use crate::edge::server::{Listener, ServerLimits, connection_cap};
use crate::ops::admin::Admin;
use crate::ops::admin::api::{AdminListenError, AdminState};
use crate::proxy::upstream::{UpstreamInitError, Upstreams};
use crate::proxy::{self, AppState};
use crate::secret::{SecretEnv, StoreSecret};
use crate::store::{Store, StoreOpenError, StoreOptions};

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
    #[error("cannot listen for the admin API on {addr}: {source} (set `[admin] listen` or HOLDFAST_ADMIN_LISTEN)")]
    AdminListen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Admin(#[from] AdminListenError),
    #[error("clients.keys_env names {var}, which is not set or holds no key; export the client keys in it")]
    MissingClientKeys { var: String },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `holdfast serve`: opens (or creates) the store, binds, serves until SIGTERM or Ctrl-C.
///
/// `secrets` holds the admin token, the providers' `api_key_env` keys and `[clients] keys_env`,
/// read once by the binary and removed from the environment: a rotated key needs a restart.
pub async fn serve(
    config: Config,
    source: ConfigSource,
    secret: StoreSecret,
    secrets: SecretEnv,
) -> Result<(), ServeError> {
    let hardening = crate::edge::hardening::apply();
    hardening.log();
    let options = StoreOptions {
        create_if_missing: true,
        retention: config.store.retention,
        max_bytes: config.store.max_size,
        cache_bytes: config.store.cache_memory,
        durability: config.store.durability.to_store(),
        ..StoreOptions::default()
    };
    let existed = config.store.path.join("HOLDFAST").exists();
    // Argon2id takes tens of milliseconds by design (and Redis is a network round trip); keep
    // both off the async workers.
    let store_config = config.clone();
    let store = tokio::task::spawn_blocking(move || open_configured(&store_config, &secret, options))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let store = Arc::new(store);
    if store.is_shared() {
        check_shared_store(&config, &store);
    }
    let client_keys = match &config.clients.keys_env {
        Some(var) => {
            let keys = ClientKeys::parse(&Zeroizing::new(secrets.get(var).unwrap_or_default()));
            if !keys.enabled() {
                return Err(ServeError::MissingClientKeys { var: var.clone() });
            }
            keys
        }
        None => ClientKeys::default(),
    };
    let mut upstreams = Upstreams::new(&config.providers, |name| secrets.get(name))?;
    if client_keys.enabled() {
        upstreams.stop_forwarding_client_keys();
    }
    let addr = config.listen.clone();
    let listener =
        TcpListener::bind(&addr).await.map_err(|source| ServeError::Listen { addr: addr.clone(), source })?;
    let local = listener.local_addr()?;
    let stats = store.stats();
    tracing::info!(
        config = %source,
        store = %store.location(),
        created = !existed && !store.is_shared(),
        entries = stats.entries,
        mode = config.cache.mode.as_str(),
        "holdfast listening on http://{local} — OpenAI SDKs: base_url=\"http://{local}/v1\"; Anthropic SDKs: base_url=\"http://{local}\""
    );
    for p in &upstreams.providers {
        tracing::info!(provider = p.name(), base_url = %p.config.base_url, models = ?p.config.models, "provider");
    }
    let admin_token = secrets.get(ADMIN_TOKEN_VAR).map(Zeroizing::new);
    for warning in risky_setup(&config, local, &upstreams, &client_keys, admin_token.is_some()) {
        tracing::warn!("{warning}");
    }
    let mut limits = ServerLimits::from_config(&config.limits);
    limits.max_connections = connection_cap(config.limits.max_connections, hardening.open_files);
    if limits.max_connections < config.limits.max_connections {
        tracing::warn!(
            configured = config.limits.max_connections,
            effective = limits.max_connections,
            open_files = ?hardening.open_files,
            "limits.max_connections lowered to fit the open-file limit (raise LimitNOFILE)"
        );
    }
    // Redis expires and evicts by itself (native TTL, maxmemory): no purger or evictor there.
    if config.store.retention.is_some() && !store.is_shared() {
        spawn_purger(store.clone());
    }
    spawn_served_writer(store.clone());
    if config.store.max_size.is_some() && !store.is_shared() {
        spawn_evictor(store.clone());
    }
    if store.is_shared() {
        spawn_keyring_refresher(store.clone());
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let state = AppState::with_client_keys(config, store.clone(), upstreams, client_keys);
    let traces = state.traces.clone();
    let admin = start_admin(&state, admin_token, &limits, stopped(stop_rx.clone())).await?;
    proxy::run_with_limits(listener, state, limits, stopped(stop_rx)).await?;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    // The last batch of spans; the exporter's own timeout bounds the wait.
    let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    tracing::info!("shut down; flushing the store");
    store.flush().map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    Ok(())
}

/// Opens the store `config` names: the embedded one at `store.path`, or the shared one in
/// Redis. Blocking (Argon2id, and for Redis the network): call it off the async workers.
pub fn open_configured(config: &Config, secret: &StoreSecret, options: StoreOptions) -> Result<Store, StoreOpenError> {
    let options = StoreOptions { engine: config.store.engine, ..options };
    match config.store.redis_target(shared_ttl(config)) {
        Some(target) => Store::open_redis(&target, secret, options),
        None => Store::open(&config.store.path, secret, options),
    }
}

/// Creates the store `config` names (`holdfast init`); refuses if one exists.
pub fn create_configured(
    config: &Config,
    secret: &StoreSecret,
    options: StoreOptions,
) -> Result<Store, StoreOpenError> {
    let options = StoreOptions { engine: config.store.engine, ..options };
    match config.store.redis_target(shared_ttl(config)) {
        Some(target) => Store::create_redis(&target, secret, options),
        None => Store::create(&config.store.path, secret, options),
    }
}

/// The Redis TTL of an entry without a retention deadline: as long as it can still be served,
/// i.e. the fresh window or `stale_if_error`, whichever is longer. Without `stale_if_error` a
/// stored answer is served at any age, so it gets no TTL (Redis then evicts only under
/// `maxmemory` with a `volatile-*` policy never, with `allkeys-*` anything).
pub fn shared_ttl(config: &Config) -> Option<Duration> {
    config.cache.stale_if_error.map(|stale| stale.max(config.cache.ttl))
}

/// Start-up checks of a shared store: Redis's eviction policy and settings Redis does instead.
fn check_shared_store(config: &Config, store: &Store) {
    match store.eviction_policy() {
        Some(policy) if policy.starts_with("volatile-") || policy == "noeviction" => {
            tracing::info!(policy, "Redis maxmemory-policy keeps what has no TTL");
        }
        Some(policy) => tracing::warn!(
            policy,
            "Redis maxmemory-policy is {policy}: under memory pressure Redis may evict the keyring or a stored \
             answer Holdfast still wants. Use volatile-lru or volatile-ttl on an instance of its own (see \
             docs/deployment.md)"
        ),
        None => tracing::info!("could not read Redis's maxmemory-policy (CONFIG GET refused); see docs/deployment.md"),
    }
    if config.store.max_size.is_some() {
        tracing::warn!("store.max_size is not applied to a Redis store: set maxmemory in Redis instead");
    }
    if config.store.retention.is_none() && shared_ttl(config).is_none() {
        tracing::info!(
            "stored answers in Redis get no TTL (no store.retention or cache.stale_if_error): they stay until deleted"
        );
    }
}

/// Picks up key rotations made by other replicas or admin commands, every two seconds.
fn spawn_keyring_refresher(store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.keyring().refresh()).await {
                Ok(Ok(true)) => tracing::info!(
                    active_key = store.keyring().snapshot().active_id(),
                    "picked up a keyring change from the shared store"
                ),
                // An unreachable Redis is logged by the store, once per interval.
                Ok(Err(crate::store::keyring::KeyringError::Unavailable { .. })) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not re-read the shared keyring"),
                _ => {}
            }
        }
    });
}

/// The variable that holds the admin token; the admin listener runs only when it is set.
pub const ADMIN_TOKEN_VAR: &str = "HOLDFAST_ADMIN_TOKEN";

/// Binds and spawns the admin listener when `HOLDFAST_ADMIN_TOKEN` is set.
async fn start_admin(
    proxy: &AppState,
    token: Option<Zeroizing<String>>,
    limits: &ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, ServeError> {
    let Some(token) = token else {
        tracing::info!("admin API off (set HOLDFAST_ADMIN_TOKEN to run admin commands against this server)");
        return Ok(None);
    };
    let config = &proxy.config;
    let admin = Admin::open(proxy.store.clone())
        .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?
        .with_refresher(crate::ops::admin::Refresher::new(proxy.clone(), tokio::runtime::Handle::current()));
    let tls = match (&config.admin.tls_cert, &config.admin.tls_key) {
        (Some(cert), Some(key)) => Some(crate::ops::admin::api::tls_acceptor(cert, key)?),
        _ => None,
    };
    // The dashboard's Now page shows this proxy's breakers and counters.
    let state = AdminState::with_dashboard(
        Arc::new(admin),
        token,
        config.admin.max_bundle_bytes,
        Some(proxy.clone()),
        tls.is_some(),
    )?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listen_error = |source| ServeError::AdminListen { addr: config.admin.listen.clone(), source };
    let (listener, url) = match config.admin.parsed_listen() {
        Some(AdminListen::Unix(path)) => {
            remove_stale_socket(&path);
            let listener = tokio::net::UnixListener::bind(&path).map_err(listen_error)?;
            let url = format!("unix:{}", path.display());
            (Listener::Unix(listener, path), url)
        }
        Some(AdminListen::Tcp(addr)) => {
            let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
            let url = format!("{scheme}://{}", listener.local_addr()?);
            (Listener::Tcp(listener), url)
        }
        None => return Err(listen_error(std::io::Error::other("not an address or socket path"))),
    };
    tracing::info!("admin API on {url}: `holdfast --server {url} …` with HOLDFAST_ADMIN_TOKEN");
    match url.strip_prefix("unix:") {
        Some(socket) => tracing::info!("dashboard at /ui on {socket}: reach it through `ssh -L 8788:{socket} host`"),
        None => tracing::info!("dashboard on {url}/ui: log in with HOLDFAST_ADMIN_TOKEN"),
    }
    Ok(Some(tokio::spawn(crate::ops::admin::api::run(listener, tls, state, limits.clone(), shutdown))))
}

/// A socket file left by a process that is gone would block the bind; a live one is kept
/// (the bind then fails and says so).
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt as _;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Set-ups that expose more than the operator may mean to, as start-up warnings.
pub fn risky_setup(
    config: &Config,
    proxy: SocketAddr,
    upstreams: &Upstreams,
    keys: &ClientKeys,
    admin_on: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !proxy.ip().is_loopback() && upstreams.uses_operator_keys() && !keys.enabled() {
        warnings.push(format!(
            "listen = {proxy} is reachable from other hosts and providers send your own api_key_env keys: \
             anyone who can reach it can spend them. Set [clients] keys_env to require client keys, or listen on loopback"
        ));
    }
    if let Some(AdminListen::Tcp(admin)) = config.admin.parsed_listen()
        && !admin.ip().is_loopback()
        && !config.admin.tls()
        && admin_on
    {
        warnings.push(format!(
            "the admin API listens on {admin}, off loopback, without TLS: the admin token and new passphrases \
             would cross the network in the clear. Set [admin] tls_cert and tls_key, or listen on loopback"
        ));
    }
    warnings
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
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
