//! Running and operating Holdfast: what `main` dispatches each command to.
//!
//! - [`cli`]: what each command does once `main` has parsed its arguments: admin commands on
//!   the store or through a server, prompts, printing, the error chain.
//! - [`serve`]: `holdfast serve`'s start-up: hardening, store, both listeners, warnings.
//! - [`admin`]: keys, audit and cache commands; the admin listener, its client, and the
//!   browser dashboard at `/ui` (`admin::ui`).
//! - [`audit`]: listing and searching stored prompts; the tamper-evident access trail.
//! - [`bundle`]: the encrypted export bundle that moves entries between stores.
//! - [`drill`]: `holdfast drill`, a self-contained outage drill and smoke test.

pub mod admin;
pub mod audit;
pub mod bundle;
pub mod cli;
pub mod drill;
pub mod serve;
