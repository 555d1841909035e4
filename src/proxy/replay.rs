//! Replaying a stored answer: the recorded bytes when the client asks for the form that was
//! recorded, the answer converted to the other form when it asks for that one.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::request::{Endpoint, Form};
use crate::store::record::{Record, ResponseBody};
use crate::wire::form::{self, ConvertError};
use crate::wire::sse::{self, StreamKind};

pub const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";
pub const JSON: &str = "application/json";

/// The body and content type to send for `record`, in the form the client asked for. A
/// replayed OpenAI stream carries the usage chunk exactly when the request asked for it, as
/// the API's does: SDK loops that read `chunk.choices[0]` break on a chunk without choices.
pub fn body_for(record: &Record, endpoint: Endpoint, form: Form) -> Result<(Body, String), ConvertError> {
    let kind = endpoint.stream_kind();
    let follow = |events: Vec<Bytes>| match kind {
        // Only the OpenAI completion dialects have a usage-only chunk (`sse::is_usage_only`).
        Some(kind @ (StreamKind::ChatCompletions | StreamKind::Completions)) if !form.include_usage => events
            .into_iter()
            .filter(|e| !may_be_usage_only(e) || !sse::is_usage_only(kind, &sse::parse_event(e)))
            .collect(),
        _ => events,
    };
    match (&record.response.body, form.stream, kind) {
        (ResponseBody::Stream(events), true, _) => {
            Ok((event_body(follow(events.clone())), record.response.content_type.clone()))
        }
        (ResponseBody::Complete(json), false, _) => {
            Ok((Body::from(json.clone()), record.response.content_type.clone()))
        }
        (ResponseBody::Complete(json), true, Some(kind)) => {
            Ok((event_body(follow(form::json_to_stream(kind, json)?)), EVENT_STREAM.to_owned()))
        }
        (ResponseBody::Stream(events), false, Some(kind)) => {
            Ok((Body::from(form::stream_to_json(kind, events)?), JSON.to_owned()))
        }
        (_, _, None) => Err(ConvertError::Unsupported(format!("{} does not stream", endpoint.path()))),
    }
}

/// Whether an event could be OpenAI's usage-only chunk: that one has an empty `choices` array,
/// so an event without `[` … `]` holding only whitespace cannot be it. Parsing every event of
/// every replay to find the one usage chunk halved the 32 KiB streamed-hit throughput; a
/// byte-by-byte scan for the brackets still took 27% of that hit's CPU (perf), so the
/// brackets are found with `memchr` (SIMD) instead.
fn may_be_usage_only(event: &[u8]) -> bool {
    memchr::memchr_iter(b'[', event).any(|open| {
        let after = event.get(open + 1..).unwrap_or_default();
        after.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) == Some(&b']')
    })
}

/// One chunk per event, so a replayed stream arrives event by event like the original.
pub fn event_body(events: Vec<Bytes>) -> Body {
    Body::from_stream(futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>)))
}

pub fn response(status: u16, body: Body, content_type: &str) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::may_be_usage_only;

    #[test]
    fn only_events_with_an_empty_array_are_parsed_for_usage() {
        assert!(may_be_usage_only(br#"data: {"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(may_be_usage_only(b"data: {\"choices\": [ \n ], \"usage\": null}"));
        assert!(!may_be_usage_only(br#"data: {"choices":[{"delta":{"content":"[x]"}}],"usage":null}"#));
        assert!(!may_be_usage_only(b"data: [DONE]"));
    }
}
