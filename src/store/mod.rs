//! Adapters to the outside world: Git, SQLite, key files, the forge's API.
pub(crate) mod agents;
pub mod audit;
pub(crate) mod entry_check;
pub mod fault;
pub(crate) mod forge;
pub mod git;
pub mod index;
pub mod keys;
pub(crate) mod lock;
pub mod maintain;
pub(crate) mod object_cache;
pub(crate) mod pack;
pub mod policies;
pub mod projection;
pub(crate) mod proposals;
pub(crate) mod remote;
pub(crate) mod trust;
