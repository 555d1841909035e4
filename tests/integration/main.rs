//! Holdfast's integration tests: one binary, one module per area.

mod admin;
mod classify;
mod cli;
mod common;
mod fake_upstream;
mod flight;
mod normalization;
mod proxy;
mod resilience;
mod sdk_compat;
mod store;
mod streams;
