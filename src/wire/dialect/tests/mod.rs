use bytes::Bytes;

use super::*;
use crate::wire::form;
use crate::wire::form::tests::{data, done, named};
use crate::wire::sse::{SseSplitter, parse_event};
use Dialect::{Anthropic, OpenAi};

mod garbage;
mod request;
mod response;
mod stream;
mod versions;

fn to_anthropic(body: Value) -> Value {
    request(OpenAi, Anthropic, &body, "claude-sonnet-4-5").unwrap()
}

fn to_openai(body: Value) -> Value {
    request(Anthropic, OpenAi, &body, "gpt-4o").unwrap()
}
