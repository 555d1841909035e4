//! The cache key: what makes two requests the same question, and the address it is stored under.
//!
//! - [`normalize`]: a request's endpoint, body, keyed headers and query become canonical bytes;
//!   whether the request depends on provider-side state (`normalize::stateful`).
//! - [`address`]: keyed BLAKE3 of namespace and canonical request, the entry's address.

pub mod address;
pub mod normalize;
