//! Holdfast's integration tests: one binary, one module per area.

mod admin;
mod admin_plane;
mod cache_key;
mod classify;
mod cli;
mod common;
mod edge;
mod fake_upstream;
mod flight;
mod fuzz;
mod normalization;
mod passthrough;
mod proxy;
mod redis;
mod resilience;
mod sdk_compat;
mod store;
mod streams;
mod torture;
