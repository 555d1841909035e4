//! The dashboard at `/ui` on the admin listener: what is failing, what the store is saving,
//! what was asked and answered, who looked — for the people running an outage.
//!
//! Served by the binary itself: the page, its stylesheet and its scripts are compiled in
//! (`assets/`, plain files, no build step), so it works on an air-gapped host. Logging in
//! posts the admin token once (checked like the API checks it, in constant time); the answer
//! is a session cookie. Every JSON endpoint runs the same
//! [`Admin`](crate::ops::admin::Admin) commands as the CLI, so each view of stored prompts is
//! written to the access trail exactly as `holdfast audit show` would write it.
//!
//! The scripts: `app.js` (helpers, login, routing, the confirmation dialog; loaded first),
//! then one a page group: `now.js`, `audit.js` (audit list, entry, trail), `keys.js`.
//!
//! - `dashboard`: the state every handler shares, the caller check, the refusal type.
//! - `session`: cookie, CSRF token, same-origin check, failed-login brake.
//! - `views`: the JSON endpoints behind the pages.
//! - `rates`: the last hour of requests per second by cache result (fed by `Metrics`).
//! - `exposition`: the latency histogram and failures, read back from `/metrics` text.

mod dashboard;
pub mod exposition;
mod session;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use zeroize::Zeroizing;

pub use dashboard::Dashboard;
use dashboard::{Refusal, json_response, lock, read_json, refuse};

use super::auth::{Actor, token_matches};
use crate::edge::server::Peer;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const NOW_JS: &str = include_str!("assets/now.js");
const AUDIT_JS: &str = include_str!("assets/audit.js");
const KEYS_JS: &str = include_str!("assets/keys.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

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
        "now.js" => (NOW_JS, "text/javascript; charset=utf-8"),
        "audit.js" => (AUDIT_JS, "text/javascript; charset=utf-8"),
        "keys.js" => (KEYS_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return refuse(StatusCode::NOT_FOUND, "no such dashboard asset"),
    };
    ([("content-type", kind)], body).into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    /// The admin token, as typed; wiped when dropped.
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
    if !token_matches(&d.token, presented) {
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
