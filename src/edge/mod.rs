//! Where a connection meets Holdfast, before any request is read as an LLM call.
//!
//! - [`server`]: the bounded, timed HTTP/1.1 connection loop under both listeners.
//! - [`hardening`]: core dumps off, the process not dumpable, the open-file limit raised.
//! - [`credential`]: the client's credential, by one rule for both dialects; client keys.

pub mod credential;
pub mod hardening;
pub mod server;
