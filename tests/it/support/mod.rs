//! Shared test harness.
#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

use std::path::PathBuf;

pub mod browser;

/// The `gov` binary built for these tests.
pub fn gov_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gov"))
}
pub mod repo;
pub mod server;
