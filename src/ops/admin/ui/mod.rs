//! The dashboard at `/ui` on the admin listener: what is failing, what the store is saving,
//! what was asked and answered, who looked — for the people running an outage.
//!
//! Served by the binary itself: the page, its stylesheet and its script are compiled in
//! (`assets/`, plain files, no build step), so it works on an air-gapped host. Logging in
//! posts the admin token once (checked like the API checks it, in constant time); the answer
//! is a session cookie. Every JSON endpoint runs the same [`Admin`] commands as the CLI, so
//! each view of stored prompts is written to the access trail exactly as `holdfast audit
//! show` would write it.
//!
//! - `session`: cookie, CSRF token, same-origin check, failed-login brake.
//! - `views`: the JSON endpoints behind the pages.
//! - `rates`: the last hour of requests per second by cache result (fed by `Metrics`).
//! - `exposition`: the latency histogram and failures, read back from `/metrics` text.

pub mod exposition;
mod session;
mod views;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{Actor, Admin, AdminError, AdminRequest};
use crate::edge::server::{Peer, RateLimitedLog};
use crate::proxy::AppState;
use crate::telemetry::rates::OutageClock;
use session::{Caller, LoginThrottle, Sessions};

/// Largest JSON body a dashboard request may send (a login, a purge selector).
const MAX_BODY: usize = 16 * 1024;
/// How often the outage clock looks at the breakers.
const OUTAGE_SAMPLE: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// Everything the dashboard's handlers share.
pub struct Dashboard {
    /// The commands, over the server's store: the same ones the CLI and the API run.
    admin: Arc<Admin>,
    /// `HOLDFAST_ADMIN_TOKEN`, which a login must present.
    token: Zeroizing<String>,
    /// The running proxy's breakers and counters; `None` for an admin listener without one.
    live: Option<Arc<Live>>,
    sessions: Mutex<Sessions>,
    throttle: Mutex<LoginThrottle>,
    /// Failed logins, logged at most once a minute with a count.
    failures: Mutex<RateLimitedLog>,
    /// Mark the cookie `Secure` (the listener speaks TLS).
    secure_cookies: bool,
}

/// The proxy as the Now page sees it.
struct Live {
    proxy: AppState,
    outage: OutageClock,
}

impl Dashboard {
    /// The dashboard over `admin`; with `live`, the Now page shows that proxy. Call inside a
    /// tokio runtime: a task watches the breakers to know when an outage began.
    pub fn new(admin: Arc<Admin>, token: Zeroizing<String>, live: Option<AppState>, secure_cookies: bool) -> Self {
        let live = live.map(|proxy| Arc::new(Live { proxy, outage: OutageClock::default() }));
        if let (Some(live), Ok(runtime)) = (&live, tokio::runtime::Handle::try_current()) {
            runtime.spawn(watch_outage(Arc::downgrade(live)));
        }
        Self {
            admin,
            token,
            live,
            sessions: Mutex::default(),
            throttle: Mutex::default(),
            failures: Mutex::new(RateLimitedLog::new(Duration::from_secs(60))),
            secure_cookies,
        }
    }

    /// The logged-in caller, or the refusal to send. Checked before a byte of the body is
    /// read; `changes_state` also demands the CSRF token.
    fn caller(&self, headers: &HeaderMap, changes_state: bool) -> Result<Caller, Refusal> {
        session::check_origin(headers, changes_state).map_err(|m| Refusal::new(StatusCode::FORBIDDEN, m))?;
        let not_logged_in = || Refusal::new(StatusCode::UNAUTHORIZED, "not logged in (or the session expired)");
        let id = session::cookie_value(headers).ok_or_else(not_logged_in)?;
        let caller = lock(&self.sessions).find(&id).ok_or_else(not_logged_in)?;
        if changes_state && !session::csrf_ok(headers, &caller) {
            return Err(Refusal::new(StatusCode::FORBIDDEN, "missing or wrong CSRF token; reload the dashboard"));
        }
        Ok(caller)
    }

    /// Runs one admin command off the async workers, as `caller`.
    async fn execute(&self, caller: &Caller, request: AdminRequest) -> Result<Value, Refusal> {
        tracing::info!(actor = %caller.actor.0, command = %request.describe(), "dashboard command");
        let (admin, actor) = (self.admin.clone(), caller.actor.clone());
        let ran = tokio::task::spawn_blocking(move || admin.execute(&request, &actor, &|_, _| {}, None, None)).await;
        match ran {
            Ok(Ok(outcome)) => Ok(outcome.result),
            Ok(Err(e)) => Err(Refusal::from(&e)),
            Err(e) => Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the command did not finish: {e}"))),
        }
    }
}

/// Re-reads the breakers every second so the outage share starts when the first one opens,
/// whether or not anyone is looking at the dashboard then.
async fn watch_outage(live: Weak<Live>) {
    let mut tick = tokio::time::interval(OUTAGE_SAMPLE);
    loop {
        tick.tick().await;
        let Some(live) = live.upgrade() else { return };
        live.observe();
    }
}

impl Live {
    /// Updates the outage clock from the breakers; returns their statuses.
    fn observe(&self) -> Vec<crate::proxy::resilience::breaker::BreakerStatus> {
        use crate::proxy::resilience::breaker::State;
        let statuses = self.proxy.breakers.statuses();
        // How long each breaker has been open: its cooldown less what is left of it (a
        // half-open one has waited at least the whole cooldown).
        let open_for = statuses
            .iter()
            .filter(|s| s.state != State::Closed)
            .map(|s| {
                let provider = s.key.split('/').next().unwrap_or(&s.key);
                let cooldown = self
                    .proxy
                    .config
                    .providers
                    .iter()
                    .find(|p| p.name == provider)
                    .map_or(Duration::ZERO, |p| p.breaker.cooldown);
                let left = Duration::try_from_secs_f64(s.retry_in_secs.unwrap_or(0.0)).unwrap_or_default();
                cooldown.saturating_sub(left)
            })
            .max();
        self.outage.observe(&self.proxy.metrics.recent, open_for);
        statuses
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], json!({"error": message}).to_string()).into_response()
}

/// Why a dashboard request was not answered: a status and a message for the page.
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<&AdminError> for Refusal {
    fn from(e: &AdminError) -> Self {
        let status = match e {
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.status, &self.message)
    }
}

fn json_response(value: &Value) -> Response {
    ([("content-type", "application/json")], value.to_string()).into_response()
}

/// The body as JSON of type `T`, at most `MAX_BODY` bytes.
async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large or unreadable"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("not the expected JSON: {e}")))
}

/// Sets `key` in a command's JSON result (always an object).
fn set(value: &mut Value, key: &str, to: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_owned(), to);
    }
}

/// The dashboard's routes, all under `/ui`.
pub fn router<S: Clone + Send + Sync + 'static>(dashboard: Arc<Dashboard>) -> Router<S> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/api/login", post(login))
        .route("/ui/api/logout", post(logout))
        .route("/ui/api/session", get(session_info))
        .route("/ui/api/now", get(views::now))
        .route("/ui/api/audit", get(views::audit))
        .route("/ui/api/entry/{address}", get(views::entry))
        .route("/ui/api/purge", post(views::purge))
        .route("/ui/api/trail", get(views::trail))
        .route("/ui/api/keys", get(views::keys))
        .route("/ui/api/keys/rotate", post(views::rotate))
        .route("/ui/api/keys/retire", post(views::retire))
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(dashboard)
}

/// Headers on every dashboard response: only our own script and styles run, the page cannot
/// be framed, nothing is cached or sent on as a referrer.
async fn guard_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(h, "cache-control", "no-store");
    response
}

async fn index() -> Response {
    ([("content-type", "text/html; charset=utf-8")], INDEX_HTML).into_response()
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return refuse(StatusCode::NOT_FOUND, "no such dashboard asset"),
    };
    ([("content-type", kind)], body).into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    token: Zeroizing<String>,
}

/// `POST /ui/api/login {"token": …}`: a session cookie and the page's CSRF token.
async fn login(State(d): State<Arc<Dashboard>>, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    session::check_origin(&parts.headers, true).map_err(|m| Refusal::new(StatusCode::FORBIDDEN, m))?;
    let peer = parts.extensions.get::<Peer>().map_or_else(|| "unknown".to_owned(), |p| p.0.clone());
    let address = session::peer_address(&peer);
    if let Err(wait) = lock(&d.throttle).check(&address) {
        let mut response =
            refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed logins from this address; wait a minute");
        response.headers_mut().insert("retry-after", HeaderValue::from(wait.as_secs()));
        return Ok(response);
    }
    let login: Login = read_json(body).await?;
    let presented = login.token.trim();
    if !super::api::token_matches(&d.token, presented) {
        lock(&d.throttle).failed(&address);
        if let Some(suppressed) = lock(&d.failures).due() {
            tracing::warn!(peer = %peer, suppressed, "dashboard login with a wrong admin token");
        }
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "wrong admin token"));
    }
    lock(&d.throttle).succeeded(&address);
    if let Some(old) = session::cookie_value(&parts.headers) {
        lock(&d.sessions).end(&old);
    }
    let actor = Actor(format!("{} via dashboard", Actor::token(presented, &peer).0));
    tracing::info!(actor = %actor.0, "dashboard login");
    let (id, csrf) = lock(&d.sessions).create(actor.clone());
    let mut response = json_response(&json!({"csrf": csrf, "actor": actor.0, "live": d.live.is_some()}));
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&id, d.secure_cookies)) {
        response.headers_mut().insert("set-cookie", cookie);
    }
    Ok(response)
}

/// `POST /ui/api/logout`: ends the session and deletes the cookie.
async fn logout(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Response, Refusal> {
    d.caller(&headers, true)?;
    if let Some(id) = session::cookie_value(&headers) {
        lock(&d.sessions).end(&id);
    }
    let mut response = json_response(&json!({"logged_out": true}));
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(d.secure_cookies)) {
        response.headers_mut().insert("set-cookie", cookie);
    }
    Ok(response)
}

/// `GET /ui/api/session`: whether the cookie is still good, and the CSRF token after a reload.
async fn session_info(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Response, Refusal> {
    let caller = d.caller(&headers, false)?;
    Ok(json_response(&json!({"csrf": caller.csrf, "actor": caller.actor.0, "live": d.live.is_some()})))
}
