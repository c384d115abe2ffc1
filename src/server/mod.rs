//! The HTTP API and the dashboard, bound to 127.0.0.1 only.

pub mod dashboard;
