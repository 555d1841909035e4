//! The JSON behind the dashboard's pages. Everything that touches stored data is an
//! [`AdminRequest`] run through [`Admin::execute`](crate::ops::admin::Admin::execute), so the
//! access trail records it as it records the CLI.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::dashboard::{Dashboard, Refusal, json_response, read_json, set};
use super::exposition;
use crate::ops::admin::{AdminRequest, PurgeSelector};
use crate::ops::audit::AuditFilter;
use crate::store::record::ResponseBody;

/// Rows one listing sends; the count says how many matched.
const MAX_ROWS: usize = 1000;
/// Trail entries the Trail page shows (newest first); verification covers all of them.
const MAX_TRAIL_ROWS: usize = 500;
/// Stream events shown for one entry.
const MAX_EVENTS: usize = 2000;

/// What a view handler returns: its JSON (or NDJSON) response, or the refusal to send instead.
type ViewResult = Result<Response, Refusal>;

/// `GET /ui/api/now`: breakers, request rates, the outage share, the store, upstream latency.
pub async fn now(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> ViewResult {
    d.caller(&headers, false)?;
    let stats = d.admin.store.stats();
    let Some(live) = &d.live else {
        return Ok(json_response(&json!({"live": false, "store": stats})));
    };
    let breakers = live.observe();
    let proxy = &live.proxy;
    let providers: Vec<Value> = proxy
        .providers_with_breakers(&breakers)
        .map(|(p, state)| {
            json!({"name": p.name(), "api": p.config.api, "base_url": p.config.base_url,
                   "models": p.config.models, "breaker": state})
        })
        .collect();
    let readout = exposition::read(&proxy.metrics.render(&stats));
    Ok(json_response(&json!({
        "live": true,
        "providers": providers,
        "breakers": breakers,
        "failures": readout.failures,
        "latency": readout.latency,
        "hour": proxy.metrics.recent.window(crate::telemetry::rates::HISTORY_SECS, 10),
        "minute": proxy.metrics.recent.window(60, 1),
        "outage": live.outage.share(&proxy.metrics.recent),
        "store": stats,
    })))
}

/// The query string as a map, percent-decoded (`+` is a space, as forms send it).
fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /ui/api/audit?model=&provider=&tenant=&since=&until=&q=`: `audit list`, or with `q`
/// `audit search`, narrowed by the filters. Written to the trail like the CLI's.
pub async fn audit(State(d): State<Arc<Dashboard>>, uri: Uri, headers: HeaderMap) -> ViewResult {
    let caller = d.caller(&headers, false)?;
    let q = query(&uri);
    let text = |name: &str| q.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let millis = |name: &str| -> Result<Option<u64>, Refusal> {
        text(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, format!("{name}: not a time in milliseconds")))
            })
            .transpose()
    };
    let filter = AuditFilter {
        since_ms: millis("since")?,
        until_ms: millis("until")?,
        model: text("model"),
        provider: text("provider"),
        tenant: text("tenant"),
    };
    let searched = text("q");
    let request = match &searched {
        Some(words) => AdminRequest::AuditSearch { text: words.clone(), filter },
        None => AdminRequest::AuditList { filter },
    };
    let mut result = d.execute(&caller, request).await?;
    if let Some(rows) = result.get_mut("entries").and_then(Value::as_array_mut) {
        rows.truncate(MAX_ROWS);
    }
    set(&mut result, "searched", json!(searched.is_some()));
    set(&mut result, "shown_at_most", json!(MAX_ROWS));
    Ok(json_response(&result))
}

/// `GET /ui/api/entry/{address}`: `audit show`, plus a streamed answer's events as stored.
pub async fn entry(
    State(d): State<Arc<Dashboard>>,
    UrlPath(address): UrlPath<String>,
    headers: HeaderMap,
) -> ViewResult {
    let caller = d.caller(&headers, false)?;
    let mut detail = d.execute(&caller, AdminRequest::AuditShow { address: address.clone() }).await?;
    if detail.get("streamed") == Some(&json!(true)) {
        // The same entry the trailed `audit show` above just opened; its events are part of that view.
        let store = d.admin.store.clone();
        let events = tokio::task::spawn_blocking(move || {
            let parsed: crate::cache_key::address::Address = address.parse().ok()?;
            match store.get(&parsed).ok()??.record.response.body {
                ResponseBody::Stream(events) => Some(
                    events.iter().take(MAX_EVENTS).map(|e| String::from_utf8_lossy(e).into_owned()).collect::<Vec<_>>(),
                ),
                ResponseBody::Complete(_) => None,
            }
        })
        .await
        .ok()
        .flatten();
        set(&mut detail, "events", json!(events));
    }
    Ok(json_response(&detail))
}

#[derive(serde::Deserialize)]
struct PurgeForm {
    /// As `cache purge --address`; blank means unset.
    address: Option<String>,
    /// As `cache purge --model`; blank means unset.
    model: Option<String>,
    /// As `cache purge --older-than`, in seconds.
    older_than_secs: Option<u64>,
    /// As `cache purge --all`.
    #[serde(default)]
    all: bool,
    /// Must be the word `purge`: the page asks the operator to type it.
    confirm: String,
}

/// `POST /ui/api/purge`: `cache purge`, once the operator typed `purge` to confirm.
pub async fn purge(State(d): State<Arc<Dashboard>>, request: Request) -> ViewResult {
    let (parts, body) = request.into_parts();
    let caller = d.caller(&parts.headers, true)?;
    let form: PurgeForm = read_json(body).await?;
    if form.confirm != "purge" {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "not confirmed: type purge to delete these entries"));
    }
    let selector = PurgeSelector {
        older_than_ms: form.older_than_secs.map(|s| s.saturating_mul(1000)),
        model: form.model.filter(|m| !m.trim().is_empty()),
        address: form.address.filter(|a| !a.trim().is_empty()),
        all: form.all,
    };
    Ok(json_response(&d.execute(&caller, AdminRequest::CachePurge { selector }).await?))
}

/// `GET /ui/api/trail`: `audit trail --verify`, newest entries first.
pub async fn trail(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> ViewResult {
    let caller = d.caller(&headers, false)?;
    let mut result = d.execute(&caller, AdminRequest::AuditTrail { verify: true }).await?;
    let mut total = 0;
    if let Some(entries) = result.get_mut("entries").and_then(Value::as_array_mut) {
        total = entries.len();
        entries.reverse();
        entries.truncate(MAX_TRAIL_ROWS);
    }
    set(&mut result, "total", json!(total));
    Ok(json_response(&result))
}

/// `GET /ui/api/keys`: `keys list`.
pub async fn keys(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> ViewResult {
    let caller = d.caller(&headers, false)?;
    Ok(json_response(&d.execute(&caller, AdminRequest::KeysList).await?))
}

#[derive(serde::Deserialize)]
struct RotateForm {
    /// As `keys rotate --reencrypt`.
    #[serde(default)]
    reencrypt: bool,
}

/// `POST /ui/api/keys/rotate {"reencrypt": bool}`: NDJSON, `{"progress":[done,total]}` lines
/// while entries are re-sealed, then `{"result": …}` or `{"error": …}`.
pub async fn rotate(State(d): State<Arc<Dashboard>>, request: Request) -> ViewResult {
    let (parts, body) = request.into_parts();
    let caller = d.caller(&parts.headers, true)?;
    let form: RotateForm = read_json(body).await?;
    let call = AdminRequest::KeysRotate { reencrypt: form.reencrypt };
    tracing::info!(actor = %caller.actor.0, command = %call.describe(), "dashboard command");
    let (tx, rx) = mpsc::channel::<Value>(64);
    let admin = d.admin.clone();
    tokio::task::spawn_blocking(move || {
        // A closed page does not stop a rotation half-way: it finishes, unheard.
        let send = |value: Value| {
            let _ = tx.blocking_send(value);
        };
        let progress = |done: u64, total: u64| send(json!({"progress": [done, total]}));
        match admin.execute(&call, &caller.actor, &progress, None, None) {
            Ok(outcome) => send(json!({"result": outcome.result})),
            Err(e) => send(json!({"error": e.to_string()})),
        }
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(format!("{value}\n")), rx))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

#[derive(serde::Deserialize)]
struct RetireForm {
    /// The key to destroy.
    id: u32,
}

/// `POST /ui/api/keys/retire {"id": n}`: `keys retire`, which destroys the key (the store refuses
/// the active key and any key entries are still sealed under).
pub async fn retire(State(d): State<Arc<Dashboard>>, request: Request) -> ViewResult {
    let (parts, body) = request.into_parts();
    let caller = d.caller(&parts.headers, true)?;
    let form: RetireForm = read_json(body).await?;
    Ok(json_response(&d.execute(&caller, AdminRequest::KeysRetire { id: form.id }).await?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_decode_like_forms() {
        let uri: axum::http::Uri = "/ui/api/audit?q=canary+prompt%21&model=gpt-*&bad=%zz&empty=".parse().unwrap();
        let q = super::query(&uri);
        assert_eq!(q["q"], "canary prompt!");
        assert_eq!(q["model"], "gpt-*");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["empty"], "");
    }
}
