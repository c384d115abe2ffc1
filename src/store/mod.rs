//! Adapters to the outside world: Git, SQLite, key files, the forge's API.
pub mod agents;
pub mod audit;
pub mod entry_check;
pub mod fault;
pub mod forge;
pub mod git;
pub mod index;
pub mod keys;
pub mod lock;
pub mod maintain;
pub mod policies;
pub mod projection;
pub mod proposals;
pub mod remote;
pub mod trust;
