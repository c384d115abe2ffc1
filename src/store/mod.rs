//! Adapters to the outside world: Git, SQLite, key files, the forge's API.
pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod entry_check;
pub(crate) mod fault;
pub(crate) mod forge;
pub(crate) mod git;
pub(crate) mod index;
pub(crate) mod keys;
pub(crate) mod lock;
pub(crate) mod maintain;
pub(crate) mod object_cache;
pub(crate) mod pack;
pub(crate) mod policies;
pub(crate) mod projection;
pub(crate) mod proposals;
pub(crate) mod remote;
pub(crate) mod trust;
