//! Holdfast's integration tests: one binary, one module per area.

mod admin;
mod cli;
mod common;
mod fake_upstream;
mod normalization;
mod proxy;
mod resilience;
mod sdk_compat;
mod store;
mod torture;
