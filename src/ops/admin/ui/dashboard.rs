//! What every dashboard handler shares: the [`Dashboard`] state, the caller check, running a
//! command as the caller, and the [`Refusal`] a handler answers with when it cannot.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::session::{self, Caller, LoginThrottle, Sessions};
use crate::edge::server::RateLimitedLog;
use crate::ops::admin::Admin;
use crate::ops::admin::command::{AdminError, AdminRequest};
use crate::proxy::AppState;
use crate::telemetry::rates::OutageClock;

/// Largest JSON body a dashboard request may send (a login, a purge selector).
const MAX_BODY: usize = 16 * 1024;
/// How often the outage clock looks at the breakers.
const OUTAGE_SAMPLE: Duration = Duration::from_secs(1);

/// Everything the dashboard's handlers share.
pub struct Dashboard {
    /// The commands, over the server's store: the same ones the CLI and the API run.
    pub(super) admin: Arc<Admin>,
    /// `HOLDFAST_ADMIN_TOKEN`, which a login must present.
    pub(super) token: Zeroizing<String>,
    /// The running proxy's breakers and counters; `None` for an admin listener without one.
    pub(super) live: Option<Arc<Live>>,
    /// The logged-in browsers, by the hash of their cookie.
    pub(super) sessions: Mutex<Sessions>,
    /// Failed logins per address: past a few a minute, logins from there are refused.
    pub(super) throttle: Mutex<LoginThrottle>,
    /// Failed logins, logged at most once a minute with a count.
    pub(super) failures: Mutex<RateLimitedLog>,
    /// Mark the cookie `Secure` (the listener speaks TLS).
    pub(super) secure_cookies: bool,
}

/// The proxy as the Now page sees it.
pub(super) struct Live {
    /// The running proxy: its providers, breakers and metrics.
    pub(super) proxy: AppState,
    /// When the current outage began, so the page can say how much of it the store answered.
    pub(super) outage: OutageClock,
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
    pub(super) fn caller(&self, headers: &HeaderMap, changes_state: bool) -> Result<Caller, Refusal> {
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
    pub(super) async fn execute(&self, caller: &Caller, request: AdminRequest) -> Result<Value, Refusal> {
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
    pub(super) fn observe(&self) -> Vec<crate::proxy::resilience::breaker::BreakerStatus> {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], json!({"error": message}).to_string()).into_response()
}

/// Why a dashboard request was not answered: a status and a message for the page.
pub(super) struct Refusal {
    /// The HTTP status: 401 and 403 send the page back to its login, 400 is the operator's to fix.
    status: StatusCode,
    /// A sentence the page shows as it is.
    message: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

pub(super) fn json_response(value: &Value) -> Response {
    ([("content-type", "application/json")], value.to_string()).into_response()
}

/// The body as JSON of type `T`, at most `MAX_BODY` bytes.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large or unreadable"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("not the expected JSON: {e}")))
}

/// Sets `key` in a command's JSON result (always an object).
pub(super) fn set(value: &mut Value, key: &str, to: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_owned(), to);
    }
}
