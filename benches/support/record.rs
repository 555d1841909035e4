//! The record a store benchmark writes: a complete (non-streamed) answer.

use bytes::Bytes;
use holdfast::cache_key::normalize::NormalizedRequest;
use holdfast::store::record::{Record, ResponseBody, StoredResponse};

/// A complete JSON answer `body` to `request`, with the fewest bytes of bookkeeping a record
/// can have (one-letter provider and model, zero times); a benchmark that wants realistic
/// ones sets them over it.
pub fn answered(request: NormalizedRequest, body: Bytes) -> Record {
    Record {
        request,
        namespace: None,
        response: StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: ResponseBody::Complete(body),
        },
        provider: "p".into(),
        model: "m".into(),
        created_ms: 0,
        upstream_latency_ms: 0,
        usage: None,
    }
}
