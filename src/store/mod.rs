//! Adapters to the outside world: Git, SQLite, key files.
pub mod keys;
pub mod policies;
