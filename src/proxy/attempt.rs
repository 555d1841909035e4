//! What one attempt on one target needs before it is sent: admission past the target's
//! breakers, and the path and body in the target's dialect. Shared by the chain of targets and
//! by the mid-stream rescue, which asks the next target itself.

use bytes::Bytes;
use serde_json::Value;

use super::AppInner;
use super::request::{Endpoint, ParsedRequest};
use crate::cache_key::normalize::Dialect;
use crate::proxy::resilience::breaker::Transition;
use crate::proxy::resilience::verdict::AttemptPermits;
use crate::proxy::upstream::Provider;
use crate::wire::dialect;
use crate::wire::sse::StreamKind;

pub(super) fn log_transition(t: Option<Transition>) {
    if let Some(t) = t {
        tracing::warn!(breaker = %t.key, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
    }
}

/// The permits of one attempt on `provider` for `model`: its provider-wide and its model
/// breaker must both let it through. `None` when either is open.
pub(super) fn admit(state: &AppInner, provider: &Provider, model: &str) -> Option<AttemptPermits> {
    let config = &provider.config.breaker;
    let (provider_permit, t1) = state.breakers.admit(provider.name(), config);
    log_transition(t1);
    let Some(provider_permit) = provider_permit else {
        tracing::debug!(provider = %provider.name(), "circuit open; skipping without a connection attempt");
        return None;
    };
    let (model_permit, t2) = state.breakers.admit(&format!("{}/{model}", provider.name()), config);
    log_transition(t2);
    let model_permit = model_permit?;
    Some(AttemptPermits { provider: provider_permit, model: model_permit })
}

/// The stream dialect a chat target of `dialect` answers in (cross-dialect failover is chat only).
pub(super) fn stream_kind_of(dialect: Dialect) -> StreamKind {
    match dialect {
        Dialect::OpenAi => StreamKind::ChatCompletions,
        Dialect::Anthropic => StreamKind::Messages,
    }
}

/// The API path a target of `target` dialect is asked on.
pub(super) fn target_path(endpoint: Endpoint, target: Dialect, query: Option<&str>) -> String {
    let path = match (endpoint.dialect() == target, endpoint) {
        (true, _) => endpoint.path(),
        (false, Endpoint::ChatCompletions) => Endpoint::Messages.path(),
        (false, _) => Endpoint::ChatCompletions.path(),
    };
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// The body to send to a target: the client's bytes untouched when nothing changes, else the
/// JSON with the target's model, translated for a target of the other dialect (following the
/// rules of the `anthropic_version` an Anthropic target will be sent).
pub(super) fn prepare_body(
    endpoint: Endpoint,
    target: Dialect,
    parsed: &ParsedRequest,
    model: &str,
    anthropic_version: &str,
) -> Result<Bytes, String> {
    let client = endpoint.dialect();
    if client == target {
        // OpenAI reports usage in a stream only when asked. Holdfast always asks, so the entry
        // has it (a JSON answer assembled from it then carries `usage`, as the API's would); the
        // relay and replays show the chunk only to clients that asked themselves.
        let ask_usage = parsed.wants_stream
            && !parsed.include_usage
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        if model == parsed.model && !ask_usage {
            return Ok(parsed.raw.clone());
        }
        let mut json = parsed.json().clone();
        // Normalization refused every body that is not a JSON object.
        if let Some(object) = json.as_object_mut() {
            object.insert("model".into(), Value::String(model.to_owned()));
        }
        if ask_usage && let Some(object) = json.as_object_mut() {
            let options = object.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        return serde_json::to_vec(&json).map(Bytes::from).map_err(|e| e.to_string());
    }
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages) {
        return Err(format!("{} has no counterpart in the other dialect", endpoint.path()));
    }
    let json = dialect::request_for_version(client, target, parsed.json(), model, anthropic_version)
        .map_err(|e| e.to_string())?;
    serde_json::to_vec(&json).map(Bytes::from).map_err(|e| e.to_string())
}
