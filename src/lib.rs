//! Holdfast keeps products that call LLM APIs answering when their provider fails.
//!
//! Applications point their OpenAI or Anthropic SDK at Holdfast. It forwards each request,
//! keeps every good answer in an encrypted, content-addressed store, and serves the stored
//! answer when every upstream fails.
//!
//! # Layout
//! In the order a request flows through them:
//! - [`serve`]: `holdfast serve`'s start-up: hardening, store, both listeners, warnings.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`hardening`]: core dumps off, process not dumpable, open-file limit raised.
//! - [`server`]: the bounded, timed HTTP/1.1 connection loop under both listeners.
//! - [`credential`]: the client's credential by one rule; client keys (`[clients]`).
//! - [`proxy`]: the HTTP front end (guard, endpoints, cache modes, single-flight, relay,
//!   fallback, passthrough).
//! - [`resilience`]: backoff with jitter and circuit breakers, used by the proxy's chain.
//! - [`upstream`]: routing a model to its targets, upstream requests, failure classes.
//! - [`translate`]: OpenAI chat ⇄ Anthropic messages, for failover across dialects.
//! - [`sse`]: server-sent events: splitting, parsing, terminal events.
//! - [`convert`]: a streamed answer as JSON and a JSON answer as a stream.
//! - [`normalize`]: a request's endpoint, body, keyed headers and query become canonical;
//!   whether it depends on provider-side state (`normalize::stateful`).
//! - [`address`]: keyed BLAKE3 of namespace + canonical request = the entry's address.
//! - [`store`]: the store API (get, put, delete, scan, stats) over a narrow byte-level
//!   [`store::Backend`] trait; sled is the embedded backend, Redis / Valkey the shared one.
//! - [`record`]: what an entry holds (request, response, provider, usage) and its plaintext
//!   bookkeeping.
//! - [`crypto`]: the AES-256-GCM envelope around every stored value.
//! - [`keyring`]: data keys and the address key, wrapped by an Argon2id- or raw-key-derived KEK.
//! - [`codec`]: the binary encoding (bincode 2) of records and keyrings, in one place.
//! - [`secret`]: zeroizing, unprintable wrappers for key material and passphrases.
//! - [`metrics`], [`telemetry`]: Prometheus text for `/metrics`; logging set-up and
//!   OpenTelemetry traces (a span per request, attempt and store operation).
//! - [`clock`]: wall-clock milliseconds, shared by the store and the keyring.
//! - [`drill`]: `holdfast drill`, a self-contained outage drill and smoke test.
//!
//! Operating the store, shared by the CLI and the server's admin API:
//! - [`admin`]: keys, audit and cache commands; the admin listener, its client, and the
//!   browser dashboard at `/ui` (`admin::ui`).
//! - [`audit`]: listing and searching stored prompts; the tamper-evident access trail.
//! - [`bundle`]: the encrypted export bundle that moves entries between replicas.

// No input may panic the server: nothing outside tests unwraps, expects, panics, indexes or
// slices (clippy.toml lets tests). Where an index is proven in bounds and `.get()` would read
// worse, the smallest item allows it with a one-line proof.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod address;
pub mod admin;
pub mod audit;
pub mod bundle;
pub mod clock;
pub mod codec;
pub mod config;
pub mod convert;
pub mod credential;
pub mod crypto;
pub mod drill;
mod durable;
pub mod hardening;
pub mod keyring;
pub mod metrics;
pub mod normalize;
pub mod proxy;
pub mod record;
pub mod resilience;
pub mod secret;
pub mod serve;
pub mod server;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod translate;
pub mod upstream;
