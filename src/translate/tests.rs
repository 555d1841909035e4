use bytes::Bytes;

use super::*;
use crate::convert;
use crate::sse::{SseSplitter, parse_event};
use Dialect::{Anthropic, OpenAi};

mod garbage;
mod request;
mod response;
mod stream;

fn to_anthropic(body: Value) -> Value {
    request(OpenAi, Anthropic, &body, "claude-sonnet-4-5").unwrap()
}

fn to_openai(body: Value) -> Value {
    request(Anthropic, OpenAi, &body, "gpt-4o").unwrap()
}

fn data(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn named(event: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}
