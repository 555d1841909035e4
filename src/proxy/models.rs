//! `GET /v1/models`: the model lists of every provider of the client's dialect, merged; the
//! last good list (kept in the store like any answer) when every provider fails.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::AppState;
use super::errors::ApiError;
use super::request::CachePolicy;
use super::stored;
use crate::address::Address;
use crate::config::CacheMode;
use crate::normalize::{Dialect, NormalizedRequest};
use crate::record::{Record, ResponseBody, StoredResponse};
use crate::store::now_ms;

const PATH: &str = "/v1/models";

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Both SDKs call GET /v1/models; only Anthropic's sends `anthropic-version`.
    let dialect = if headers.contains_key("anthropic-version") { Dialect::Anthropic } else { Dialect::OpenAi };
    match answer(&state, &headers, dialect).await {
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

async fn answer(state: &AppState, headers: &HeaderMap, dialect: Dialect) -> Result<(Response, &'static str), ApiError> {
    let policy = CachePolicy::from_request(headers, &state.config.cache, &state.config.resilience)?;
    // The two dialects' lists differ in shape, so each has its own entry.
    let tag: &'static [u8] = match dialect {
        Dialect::OpenAi => b"{\"dialect\":\"openai\"}",
        Dialect::Anthropic => b"{\"dialect\":\"anthropic\"}",
    };
    let request = NormalizedRequest { endpoint: PATH.to_owned(), canonical: Bytes::from_static(tag) };
    let (namespace, address) = state.locate(headers, &request);
    // Store reads and writes run off the async workers: they may wait on the disk.
    let stored_list = || async {
        let store = state.store.clone();
        let entry = tokio::task::spawn_blocking(move || store.get(&address)).await.ok()?.ok()??;
        let ResponseBody::Complete(body) = &entry.record.response.body else {
            return None;
        };
        serde_json::from_slice::<Value>(body).ok()?.get("data")?.as_array().cloned()
    };
    if policy.mode == CacheMode::Replay {
        let data = stored_list().await.ok_or(ApiError::NotRecorded { address: address.to_hex() })?;
        return Ok((respond(dialect, data, "hit", &address), "hit"));
    }

    let providers: Vec<_> = state.upstreams.of_dialect(dialect).collect();
    let fetches = providers.iter().map(|p| async move {
        let response = p.send(reqwest::Method::GET, PATH, headers, None, false).await.ok()?;
        let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        body.get("data")?.as_array().cloned()
    });
    let results = futures_util::future::join_all(fetches).await;
    let any_failed = results.iter().any(Option::is_none);
    let mut data: Vec<Value> = Vec::new();
    for item in results.into_iter().flatten().flatten() {
        if !data.iter().any(|d| d.get("id") == item.get("id")) {
            data.push(item);
        }
    }
    if data.is_empty() && any_failed {
        if policy.may_serve_stale()
            && let Some(list) = stored_list().await
        {
            return Ok((respond(dialect, list, "stale", &address), "stale"));
        }
        return Err(ApiError::UpstreamUnavailable { provider: "all".into(), reason: "model lists unavailable".into() });
    }
    if any_failed {
        // Some providers are down: keep showing the models they had.
        for item in stored_list().await.unwrap_or_default() {
            if !data.iter().any(|d| d.get("id") == item.get("id")) {
                data.push(item);
            }
        }
    } else if policy.may_store() {
        let record = Record {
            request,
            namespace: namespace.hash(),
            response: StoredResponse {
                status: 200,
                content_type: stored::JSON.into(),
                body: ResponseBody::Complete(Bytes::from(
                    serde_json::json!({"object": "list", "data": data}).to_string(),
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
    Ok((respond(dialect, data, "miss", &address), "miss"))
}

fn respond(dialect: Dialect, data: Vec<Value>, cache: &str, address: &Address) -> Response {
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({"object": "list", "data": data}),
        Dialect::Anthropic => {
            let id = |i: Option<&Value>| i.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
            serde_json::json!({"data": data, "has_more": false, "first_id": id(data.first()), "last_id": id(data.last())})
        }
    };
    let mut response = stored::response(200, Body::from(body.to_string()), stored::JSON);
    let headers = response.headers_mut();
    for (name, value) in [("x-holdfast-cache", cache.to_owned()), ("x-holdfast-key", address.to_hex())] {
        if let Ok(v) = value.parse() {
            headers.insert(name, v);
        }
    }
    response
}
