//! Answers built from the store: the recorded bytes when the client asks for the form that
//! was recorded, a converted body when it asks for the other form.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::request::Endpoint;
use crate::convert::{self, ConvertError};
use crate::record::{Record, ResponseBody};

pub const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";
pub const JSON: &str = "application/json";

/// The body and content type to send for `record`, in the form the client asked for.
pub fn body_for(record: &Record, endpoint: Endpoint, wants_stream: bool) -> Result<(Body, String), ConvertError> {
    let kind = endpoint.stream_kind();
    match (&record.response.body, wants_stream, kind) {
        (ResponseBody::Stream(events), true, _) => {
            Ok((event_body(events.clone()), record.response.content_type.clone()))
        }
        (ResponseBody::Complete(json), false, _) => {
            Ok((Body::from(json.clone()), record.response.content_type.clone()))
        }
        (ResponseBody::Complete(json), true, Some(kind)) => {
            Ok((event_body(convert::json_to_stream(kind, json)?), EVENT_STREAM.to_owned()))
        }
        (ResponseBody::Stream(events), false, Some(kind)) => {
            Ok((Body::from(convert::stream_to_json(kind, events)?), JSON.to_owned()))
        }
        (_, _, None) => Err(ConvertError::Unsupported(format!("{} does not stream", endpoint.path()))),
    }
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
