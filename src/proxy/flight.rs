//! Single-flight: identical requests in flight at the same time share one upstream call.
//!
//! The first request for an address (in one form: stream or JSON, with or without the usage
//! chunk) leads: it runs the chain as usual. Requests that arrive while it runs follow: they
//! wait for the leader's answer and then read it from the first byte, as it arrives, each at
//! its own pace. The leader's answer is drained by a task of its own, so neither the leader's
//! client nor any follower leaving stops the others.
//!
//! Bounded: a follower waits for the answer's start only until its own deadline (less the
//! stale reserve), then goes on alone, with that deadline spent, so it is served stale or
//! times out by itself. A leader whose chain fails (or serves a stale or error answer) ends
//! the flight before any answer: its followers then run as independent requests. Requests
//! that may not be stored (`no-store`, `cache.mode = "off"`) never coalesce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::answer::{Answer, CacheResult};
use super::request::Form;
use crate::cache_key::address::Address;

/// Which requests are identical: the same address, asked for in the same form.
type Key = (Address, bool, bool);

/// The flights in progress, one per key.
#[derive(Default)]
pub struct Flights {
    /// Flights whose leader has not finished its answer.
    inner: Mutex<HashMap<Key, Arc<Flight>>>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Flight>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads a new flight for `address` in `form`, or follows the one in progress.
    pub fn join(self: &Arc<Self>, address: Address, form: Form) -> Ticket {
        let key = (address, form.stream, form.include_usage);
        let mut map = self.lock();
        if let Some(flight) = map.get(&key) {
            return Ticket::Follow(Follower { flight: flight.clone() });
        }
        let flight = Arc::new(Flight::default());
        map.insert(key, flight.clone());
        Ticket::Lead(Leader { flights: self.clone(), key, flight, done: false })
    }

    /// Ends a flight for new joiners; those already in it keep reading.
    fn close(&self, key: &Key, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

pub enum Ticket {
    Lead(Leader),
    Follow(Follower),
}

/// The answer as it is shared, and a signal for each change.
#[derive(Default)]
struct Flight {
    /// What the leader's answer is so far.
    state: Mutex<Shared>,
    /// Bumped on every change to `state`; followers wait on it.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Shared {
    /// The answer's status and headers, once the leader has an answer to share.
    head: Option<(StatusCode, HeaderMap, String)>,
    /// The body so far, chunk by chunk.
    chunks: Vec<Bytes>,
    /// `Some(true)`: the body is whole; `Some(false)`: the flight failed (before the head, the
    /// followers go on alone; after it, their bodies end with an error).
    end: Option<bool>,
}

impl Flight {
    fn update(&self, change: impl FnOnce(&mut Shared)) {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn read<T>(&self, look: impl FnOnce(&Shared) -> T) -> T {
        look(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The request that makes the upstream call.
pub struct Leader {
    /// Where the flight is registered.
    flights: Arc<Flights>,
    /// Its key there.
    key: Key,
    /// The flight it feeds.
    flight: Arc<Flight>,
    /// Published (or failed) already; drop has nothing left to do.
    done: bool,
}

impl Leader {
    /// Shares `answer` with the followers if it is a live, successful answer, and returns the
    /// leader's own copy; otherwise ends the flight so the followers go on alone.
    pub fn publish(mut self, answer: Answer) -> Answer {
        self.done = true;
        let Answer { response, cache, provider } = answer;
        if !matches!(cache, CacheResult::Miss | CacheResult::Bypass) || !response.status().is_success() {
            self.fail();
            return Answer { response, cache, provider };
        }
        let (parts, body) = response.into_parts();
        self.flight.update(|s| s.head = Some((parts.status, parts.headers.clone(), provider.clone())));
        let (flights, key, flight) = (self.flights.clone(), self.key, self.flight.clone());
        tokio::spawn(async move {
            let mut body = body.into_data_stream();
            let whole = loop {
                match body.next().await {
                    Some(Ok(chunk)) => flight.update(|s| s.chunks.push(chunk)),
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            flight.update(|s| s.end = Some(whole));
            flights.close(&key, &flight);
        });
        let mut response = Response::from_parts(parts, stream_of(self.flight.clone()));
        response.headers_mut().remove("content-length");
        Answer { response, cache, provider }
    }

    /// The chain gave no answer to share (an error, a stale answer): followers go on alone.
    pub fn fail(&mut self) {
        self.done = true;
        self.flight.update(|s| s.end = Some(false));
        self.flights.close(&self.key, &self.flight);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // The leader's request was cancelled (its client left) before it had an answer.
        if !self.done {
            self.fail();
        }
    }
}

/// A request waiting for the leader's answer.
pub struct Follower {
    /// The flight it joined.
    flight: Arc<Flight>,
}

impl Follower {
    /// The leader's answer, marked `coalesced`; `None` when the follower must go on alone (the
    /// leader failed, or `until` came first).
    pub async fn follow(self, until: Instant) -> Option<Answer> {
        let mut changes = self.flight.changed.subscribe();
        let waited = tokio::time::timeout_at(until, async {
            loop {
                changes.borrow_and_update();
                let (head, failed) = self.flight.read(|s| (s.head.clone(), s.end == Some(false) && s.head.is_none()));
                if failed {
                    return None;
                }
                if let Some(head) = head {
                    return Some(head);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let (status, headers, provider) = waited.ok().flatten()?;
        let mut response = Response::new(stream_of(self.flight.clone()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response.headers_mut().remove("content-length");
        response.headers_mut().insert("x-holdfast-cache", HeaderValue::from_static("coalesced"));
        Some(Answer { response, cache: CacheResult::Coalesced, provider })
    }
}

/// The flight's body from its first byte, then live as the leader's answer arrives.
fn stream_of(flight: Arc<Flight>) -> Body {
    let changes = flight.changed.subscribe();
    let stream = futures_util::stream::unfold((flight, changes, 0_usize), |(flight, mut changes, next)| async move {
        // `usize::MAX` marks a stream that has reported its error.
        if next == usize::MAX {
            return None;
        }
        loop {
            changes.borrow_and_update();
            let (chunk, end) = flight.read(|s| (s.chunks.get(next).cloned(), s.end));
            match (chunk, end) {
                (Some(chunk), _) => return Some((Ok(chunk), (flight, changes, next + 1))),
                (None, Some(true)) => return None,
                (None, Some(false)) => {
                    let cut = std::io::Error::other("the shared upstream answer broke off");
                    return Some((Err(cut), (flight, changes, usize::MAX)));
                }
                (None, None) => {
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Body::from_stream(stream)
}
