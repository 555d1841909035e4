//! Holdfast keeps products that call LLM APIs answering when their provider fails.
//!
//! Applications point their OpenAI or Anthropic SDK at Holdfast. It forwards each request,
//! keeps every good answer in an encrypted, content-addressed store, and serves the stored
//! answer when every upstream fails.
//!
//! # Layout
//! One folder per layer, in the order a request flows through them:
//! - [`edge`]: the bounded, timed connection loop under both listeners, process hardening, and
//!   the client's credential.
//! - [`proxy`]: the request chain: guard, parsing, cache modes, single-flight, the upstream
//!   attempts with retries, breakers and failover (`proxy::upstream`, `proxy::resilience`),
//!   relaying and rescuing streams, serving the stored answer, passthrough.
//! - [`cache_key`]: the request made canonical (`cache_key::normalize`) and hashed with a
//!   keyed BLAKE3 into the entry's address (`cache_key::address`).
//! - [`store`]: the sealed, content-addressed store: entries, the AES-256-GCM envelope, the
//!   keyring, the record codec, and the engines under the byte-level [`store::Backend`] trait
//!   (sled embedded, Redis / Valkey shared).
//! - [`wire`]: the formats an answer travels in: server-sent events, the stream ⇄ JSON *forms*,
//!   and the OpenAI ⇄ Anthropic *dialects*.
//! - [`telemetry`]: what the service says about itself: `/metrics`, recent rates, logs and
//!   OpenTelemetry spans.
//!
//! Around the request:
//! - [`config`]: the TOML configuration, its defaults and validation, one file per section.
//! - [`ops`]: what `main` runs: `serve`'s start-up, the drill, the admin commands, API and
//!   dashboard, the audit trail, export bundles.
//! - [`secret`], [`clock`]: unprintable zeroizing secrets and wall-clock time, used by every
//!   layer.

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
