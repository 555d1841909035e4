//! Dashboard sessions: the cookie a login sets, the CSRF token every action carries, the
//! same-origin check, and the brake on failed logins.
//!
//! The session id is 32 random bytes in an HttpOnly, SameSite=Strict cookie scoped to `/ui`;
//! the server keeps only its BLAKE3 hash, so the table holds nothing a cookie could be rebuilt
//! from. Each session has its own CSRF token, handed to the page's script (never in a cookie)
//! and required in `x-csrf-token` on every state-changing request, which must also come from
//! the dashboard's own origin (`Sec-Fetch-Site`, `Origin`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::ops::admin::auth::{Actor, token_matches};

/// The session cookie's name.
pub const COOKIE: &str = "holdfast_ui";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long is gone.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// And none outlives this, used or not.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; a login past this ends the least recently used one.
const MAX_SESSIONS: usize = 32;
/// Failed logins from one address within `FAILURE_WINDOW` before further tries are refused.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered; past this the oldest are forgotten.
const MAX_TRACKED_PEERS: usize = 1024;

/// One logged-in browser.
struct Session {
    /// Who the access trail names for what this session views or changes.
    actor: Actor,
    /// The token its requests must echo in `x-csrf-token`.
    csrf: String,
    /// For `LIFETIME`.
    created: Instant,
    /// For `IDLE`.
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.created) >= LIFETIME || now.duration_since(self.last_seen) >= IDLE
    }
}

/// What a request's session cookie gives its handler.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the trail names for what this request views or changes.
    pub actor: Actor,
    /// The session's CSRF token, which a state-changing request must echo.
    pub csrf: String,
}

/// The server side of every session, keyed by the hash of its id.
#[derive(Default)]
pub struct Sessions {
    /// Live sessions by the BLAKE3 hash of their cookie value (never the value itself).
    live: HashMap<[u8; 32], Session>,
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let mut raw = [0u8; 32];
    crate::secret::fill_random(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn id_hash(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

impl Sessions {
    /// Starts a session for `actor`; returns its cookie value and CSRF token.
    pub fn create(&mut self, actor: Actor) -> (String, String) {
        let now = Instant::now();
        self.live.retain(|_, s| !s.expired(now));
        while self.live.len() >= MAX_SESSIONS {
            let Some(oldest) = self.live.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) else { break };
            self.live.remove(&oldest);
        }
        let (id, csrf) = (random_hex(), random_hex());
        self.live.insert(id_hash(&id), Session { actor, csrf: csrf.clone(), created: now, last_seen: now });
        (id, csrf)
    }

    /// The session a cookie value names, if it is still valid; marks it used.
    pub fn find(&mut self, id: &str) -> Option<Caller> {
        let now = Instant::now();
        let key = id_hash(id);
        let session = self.live.get_mut(&key)?;
        if session.expired(now) {
            self.live.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Caller { actor: session.actor.clone(), csrf: session.csrf.clone() })
    }

    pub fn end(&mut self, id: &str) {
        self.live.remove(&id_hash(id));
    }
}

/// The session id in the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session. `Secure` when the listener speaks TLS (over plain HTTP on
/// loopback or an SSH tunnel a Secure cookie would not be sent back).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// Whether the request comes from the dashboard's own page. Browsers send `Sec-Fetch-Site`
/// and (on every POST) `Origin`; a state-changing request must carry at least one and both
/// must say same-origin. A read may also be a typed-in address (`none`).
pub fn check_origin(headers: &HeaderMap, changes_state: bool) -> Result<(), &'static str> {
    // A header sent twice is not something a browser does; take it as an attempt to confuse.
    let header = |name: &str| -> Result<Option<&str>, &'static str> {
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| v.to_str().map(str::trim).map_err(|_| "refused: unreadable header"));
        if values.next().is_some() {
            return Err("refused: a fetch header was sent twice");
        }
        first.transpose()
    };
    let fetch_site = header("sec-fetch-site")?;
    match fetch_site {
        None | Some("same-origin") => {}
        Some("none") if !changes_state => {}
        Some(_) => return Err("refused: the request came from another site"),
    }
    let origin = header("origin")?;
    if let Some(origin) = origin {
        let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        let host = header("host")?;
        if authority.is_none() || host.is_none() || authority != host {
            return Err("refused: the request's Origin is not this dashboard");
        }
    }
    if changes_state && fetch_site.is_none() && origin.is_none() {
        return Err("refused: a dashboard action must come from the dashboard page (no Origin or Sec-Fetch-Site)");
    }
    Ok(())
}

/// Whether the request echoes the session's CSRF token, compared in constant time.
pub fn csrf_ok(headers: &HeaderMap, caller: &Caller) -> bool {
    let mut values = headers.get_all(CSRF_HEADER).iter();
    let presented = values.next().and_then(|v| v.to_str().ok()).unwrap_or("");
    values.next().is_none() && !presented.is_empty() && token_matches(&caller.csrf, presented)
}

/// Failed logins per client address, so a token cannot be guessed at speed.
#[derive(Default)]
pub struct LoginThrottle {
    /// By client address, the times of its failed logins within the window, oldest first.
    failures: HashMap<String, VecDeque<Instant>>,
}

impl LoginThrottle {
    /// `Err(wait)` while `peer` has used up its failures for the window.
    pub fn check(&mut self, peer: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Some(times) = self.failures.get_mut(peer) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= MAX_FAILURES => {
                Err(FAILURE_WINDOW.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, peer: &str) {
        let now = Instant::now();
        if self.failures.len() >= MAX_TRACKED_PEERS && !self.failures.contains_key(peer) {
            self.failures.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < FAILURE_WINDOW));
            if self.failures.len() >= MAX_TRACKED_PEERS {
                self.failures.clear();
            }
        }
        self.failures.entry(peer.to_owned()).or_default().push_back(now);
    }

    pub fn succeeded(&mut self, peer: &str) {
        self.failures.remove(peer);
    }
}

/// The address part of a peer (`127.0.0.1:41872` → `127.0.0.1`): a client's port changes with
/// every connection, its address does not.
pub fn peer_address(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>().map_or_else(|_| peer.to_owned(), |a| a.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_cross_site_or_originless_action_is_refused() {
        let same = headers(&[("host", "localhost:8788"), ("origin", "http://localhost:8788")]);
        assert!(check_origin(&same, true).is_ok());
        let fetch = headers(&[("host", "localhost:8788"), ("sec-fetch-site", "same-origin")]);
        assert!(check_origin(&fetch, true).is_ok());
        for bad in [
            headers(&[("host", "localhost:8788"), ("origin", "http://evil.example")]),
            headers(&[("host", "localhost:8788"), ("origin", "null")]),
            headers(&[("host", "localhost:8788"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "localhost:8788"), ("sec-fetch-site", "same-site")]),
            headers(&[("host", "localhost:8788")]),
        ] {
            assert!(check_origin(&bad, true).is_err(), "{bad:?}");
        }
        let typed = headers(&[("host", "localhost:8788"), ("sec-fetch-site", "none")]);
        assert!(check_origin(&typed, false).is_ok() && check_origin(&typed, true).is_err());
    }

    #[test]
    fn sessions_are_found_by_cookie_and_ended() {
        let mut sessions = Sessions::default();
        let (id, csrf) = sessions.create(Actor("someone".into()));
        let caller = sessions.find(&id).unwrap();
        assert_eq!(caller.csrf, csrf);
        assert!(sessions.find(&csrf).is_none(), "the CSRF token is not a session id");
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn logins_past_the_failure_budget_wait() {
        let mut t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert!(t.check("10.0.0.1").is_ok());
            t.failed("10.0.0.1");
        }
        assert!(t.check("10.0.0.1").is_err());
        assert!(t.check("10.0.0.2").is_ok(), "another address is not held up");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped() {
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"));
        assert!(!c.contains("Secure") && set_cookie("abc", true).ends_with("; Secure"));
        assert_eq!(cookie_value(&headers(&[("cookie", "a=1; holdfast_ui=abc ; b=2")])).as_deref(), Some("abc"));
    }
}
