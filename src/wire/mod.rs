//! The wire formats an answer travels in, and the conversions between them.
//!
//! - [`sse`]: server-sent events: splitting a stream, parsing events, recognising its end.
//! - [`form`]: the same answer in its other *form*: a stream as one JSON body, a JSON body as a
//!   stream.
//! - [`dialect`]: the same request or answer in the other *dialect*: OpenAI chat completions ⇄
//!   Anthropic messages, for failover across providers.

pub mod dialect;
pub mod form;
pub mod sse;
