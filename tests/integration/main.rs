//! Holdfast's integration tests: one binary, one module per area.

mod admin;
mod admin_plane;
mod cache_key;
mod classify;
mod cli;
mod common;
mod dashboard;
mod dashboard_browser;
mod edge;
mod fake_upstream;
mod flight;
mod fuzz;
mod keyring_binding;
mod local_model;
mod normalization;
mod otel;
mod passthrough;
mod proxy;
mod redis;
mod refresh;
mod rescue;
mod resilience;
mod sdk_compat;
mod store;
mod streams;
mod torture;
