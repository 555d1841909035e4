//! A stored Responses answer is also kept under `GET /v1/responses/{id}` of its own id, in the
//! same tenant's namespace, so that lookup can be answered from the store in an outage. This is
//! that second entry's request and record; storing writes it, passthrough reads it.

use bytes::Bytes;
use serde_json::Value;

use super::replay;
use crate::cache_key::normalize::{NORMALIZATION_VERSION, NormalizedRequest};
use crate::store::record::{Record, ResponseBody, StoredResponse};

/// The id of `/v1/responses/{id}` (not its sub-paths, nor `/v1/responses/compact`).
pub(super) fn response_id(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/responses/").filter(|id| id.starts_with("resp") && !id.contains('/'))
}

/// The request a Responses answer is kept under for `GET /v1/responses/{id}`.
pub(super) fn by_id_request(id: &str) -> NormalizedRequest {
    NormalizedRequest {
        endpoint: format!("/v1/responses/{id}"),
        canonical: Bytes::from_static(b"{}"),
        headers: Vec::new(),
        query: String::new(),
        version: NORMALIZATION_VERSION,
    }
}

/// For a stored Responses answer (`json`, already assembled), the record that answers
/// `GET /v1/responses/{id}` in the same namespace; `None` for any other answer.
pub fn response_by_id(record: &Record, json: &Value) -> Option<Record> {
    if record.request.endpoint != "/v1/responses" || json.get("object").and_then(Value::as_str) != Some("response") {
        return None;
    }
    let id =
        json.get("id").and_then(Value::as_str).filter(|id| response_id(&format!("/v1/responses/{id}")).is_some())?;
    let body = Bytes::from(serde_json::to_vec(json).ok()?);
    Some(Record {
        request: by_id_request(id),
        response: StoredResponse { status: 200, content_type: replay::JSON.into(), body: ResponseBody::Complete(body) },
        ..record.clone()
    })
}
