//! Holdfast keeps products that call LLM APIs answering when their provider fails.
//!
//! Applications point their OpenAI or Anthropic SDK at Holdfast. It forwards each request,
//! keeps every good answer in an encrypted, content-addressed store, and serves the stored
//! answer when every upstream fails.
//!
//! # Layout
//! One folder per layer, in the order a request flows through them (each folder's own `//!`
//! lists its files the same way):
//! - [`edge`]: connections: the bounded, timed HTTP/1.1 loop, process hardening, the credential.
//! - [`proxy`]: the request chain: guard, cache modes, single-flight, upstreams, breakers, relay.
//! - [`cache_key`]: the request made canonical and hashed with keyed BLAKE3 into an address.
//! - [`store`]: the sealed store: entries, envelope, keyring, codec, engines (sled, Redis, …).
//! - [`wire`]: the formats an answer travels in: SSE, its two forms, the two API dialects.
//! - [`telemetry`]: what the service says about itself: `/metrics`, rates, logs, OTel spans.
//!
//! Around the request:
//! - [`config`]: the TOML configuration, its defaults and validation, one file per section.
//! - [`ops`]: what `main` runs: serve, drill, admin commands and dashboard, audit, bundles.
//! - [`secret`], [`clock`]: unprintable zeroizing secrets and wall-clock time, for every layer.

// No input may panic the server: nothing outside tests unwraps, expects, panics, indexes or
// slices (clippy.toml lets tests). Where an index is proven in bounds and `.get()` would read
// worse, the smallest item allows it with a one-line proof.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod cache_key;
pub mod clock;
pub mod config;
pub mod edge;
pub mod ops;
pub mod proxy;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod wire;
