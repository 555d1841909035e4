//! `GET /v1/models`: the model lists of every provider of the client's dialect, merged; the
//! last good list (kept in the store like any answer) when every provider fails.
//!
//! The query is forwarded, so Anthropic's pagination (`limit`, `after_id`, `before_id`) works:
//! one provider's page comes back as that provider sent it (`has_more` included); pages of
//! several are merged and cut to `limit`. The query and the keyed headers are in the key, so
//! each page is its own entry. `GET /v1/models/{id}` is passed through (`passthrough.rs`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::AppState;
use super::errors::ApiError;
use super::replay;
use super::request::CachePolicy;
use crate::cache_key::address::Address;
use crate::cache_key::normalize::{
    Dialect, NORMALIZATION_VERSION, NormalizedRequest, canonical_headers, canonical_query,
};
use crate::config::CacheMode;
use crate::store::now_ms;
use crate::store::record::{Record, ResponseBody, StoredResponse};

const PATH: &str = "/v1/models";

pub async fn list(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    // Both SDKs call GET /v1/models; only Anthropic's sends `anthropic-version`.
    let dialect = if headers.contains_key("anthropic-version") { Dialect::Anthropic } else { Dialect::OpenAi };
    match answer(&state, &headers, uri.query(), dialect).await {
        Ok((response, result)) => {
            state.metrics.count_request(PATH, "-", result);
            response
        }
        Err(e) => {
            state.metrics.count_request(PATH, "-", "error");
            e.into_dialect_response(dialect)
        }
    }
}

/// One page of models, as stored and as answered.
struct Page {
    /// The models, in the providers' order.
    data: Vec<Value>,
    /// Anthropic's `has_more`: another page follows.
    has_more: bool,
}

impl Page {
    fn from_json(body: &Value) -> Option<Self> {
        let data = body.get("data")?.as_array()?.clone();
        Some(Self { data, has_more: body.get("has_more").and_then(Value::as_bool).unwrap_or(false) })
    }

    fn add(&mut self, item: Value) {
        if !self.data.iter().any(|d| d.get("id") == item.get("id")) {
            self.data.push(item);
        }
    }
}

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    dialect: Dialect,
) -> Result<(Response, &'static str), ApiError> {
    let policy = CachePolicy::from_request(headers, &state.config.cache, &state.config.resilience)?;
    // The two dialects' lists differ in shape, so each has its own entry.
    let tag: &'static [u8] = match dialect {
        Dialect::OpenAi => b"{\"dialect\":\"openai\"}",
        Dialect::Anthropic => b"{\"dialect\":\"anthropic\"}",
    };
    let request = NormalizedRequest {
        endpoint: PATH.to_owned(),
        canonical: Bytes::from_static(tag),
        headers: canonical_headers(headers),
        query: canonical_query(query),
        version: NORMALIZATION_VERSION,
    };
    let (namespace, address) = state.locate(headers, &request);
    // Store reads and writes run off the async workers: they may wait on the disk.
    let stored_page = || async {
        let store = state.store.clone();
        let entry = tokio::task::spawn_blocking(move || store.get(&address)).await.ok()?.ok()??;
        let ResponseBody::Complete(body) = &entry.record.response.body else {
            return None;
        };
        Page::from_json(&serde_json::from_slice::<Value>(body).ok()?)
    };
    if policy.mode == CacheMode::Replay {
        let page = stored_page().await.ok_or(ApiError::NotRecorded { address: address.to_hex() })?;
        return Ok((respond(dialect, page, "hit", &address), "hit"));
    }

    let path = match query {
        Some(q) if !q.is_empty() => format!("{PATH}?{q}"),
        _ => PATH.to_owned(),
    };
    let providers: Vec<_> = state.upstreams.of_dialect(dialect).collect();
    let fetches = providers.iter().map(|p| {
        let path = &path;
        async move {
            let response = p.send(reqwest::Method::GET, path, headers, None, false).await.ok()?;
            Page::from_json(&serde_json::from_slice(&response.bytes().await.ok()?).ok()?)
        }
    });
    let results = futures_util::future::join_all(fetches).await;
    let any_failed = results.iter().any(Option::is_none);
    let mut pages = results.into_iter().flatten();
    let mut page = pages.next().unwrap_or(Page { data: Vec::new(), has_more: false });
    for other in pages {
        page.has_more |= other.has_more;
        other.data.into_iter().for_each(|item| page.add(item));
    }
    if page.data.is_empty() && any_failed {
        if policy.may_serve_stale()
            && let Some(stored) = stored_page().await
        {
            return Ok((respond(dialect, stored, "stale", &address), "stale"));
        }
        return Err(ApiError::UpstreamUnavailable { provider: "all".into(), reason: "model lists unavailable".into() });
    }
    if any_failed {
        // Some providers are down: keep showing the models they had.
        if let Some(stored) = stored_page().await {
            stored.data.into_iter().for_each(|item| page.add(item));
        }
    }
    // Merged pages of several providers must still honour the page size the client asked for.
    if let Some(limit) = limit_of(query)
        && page.data.len() > limit
    {
        page.data.truncate(limit);
        page.has_more = true;
    }
    if !any_failed && policy.may_store() {
        let record = Record {
            request,
            namespace: namespace.hash(),
            response: StoredResponse {
                status: 200,
                content_type: replay::JSON.into(),
                body: ResponseBody::Complete(Bytes::from(
                    serde_json::json!({"object": "list", "data": page.data, "has_more": page.has_more}).to_string(),
                )),
            },
            provider: "merged".into(),
            model: String::new(),
            created_ms: now_ms(),
            upstream_latency_ms: 0,
            usage: None,
        };
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.put(&address, &record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                state.metrics.count_store_error();
                tracing::warn!(error = %e, "could not keep the model list");
            }
            Err(e) => {
                state.metrics.count_store_error();
                tracing::warn!(error = %e, "model list store task failed");
            }
        }
    }
    Ok((respond(dialect, page, "miss", &address), "miss"))
}

/// Anthropic's `limit` query parameter.
fn limit_of(query: Option<&str>) -> Option<usize> {
    query?.split('&').find_map(|pair| pair.strip_prefix("limit=")?.parse().ok())
}

fn respond(dialect: Dialect, page: Page, cache: &str, address: &Address) -> Response {
    let Page { data, has_more } = page;
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({"object": "list", "data": data}),
        Dialect::Anthropic => {
            let id = |i: Option<&Value>| i.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
            let (first, last) = (id(data.first()), id(data.last()));
            serde_json::json!({"data": data, "has_more": has_more, "first_id": first, "last_id": last})
        }
    };
    let mut response = replay::response(200, Body::from(body.to_string()), replay::JSON);
    let headers = response.headers_mut();
    for (name, value) in [("x-holdfast-cache", cache.to_owned()), ("x-holdfast-key", address.to_hex())] {
        if let Ok(v) = value.parse() {
            headers.insert(name, v);
        }
    }
    response
}
