//! Holdfast's integration tests: one binary, one module per area.

mod common;
mod normalization;
mod store;
