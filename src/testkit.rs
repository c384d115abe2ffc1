//! Test support: the few store internals that the integration tests
//! (`tests/it`) and the benchmarks (`examples/`) must reach and that no use
//! case in [`crate::app`] offers, because no user does these things: commit
//! a fixture signed by a chosen key, forge or read back a raw chain entry,
//! arm a fault point, count the files under `.git`, load a policy set from a
//! commit, query the projection at a chosen time.
//!
//! Compiled only with the `testkit` feature, which only the dev build turns
//! on (`gov` is its own dev-dependency in Cargo.toml): `cargo build` and the
//! installed binary have none of it, and [`crate::store`] stays private to
//! the crate. Everything else the tests need goes through `app/`.
//! tests/it/layers.rs checks that this is the only door.

/// Signing keys and the `allowed_signers` file, to sign fixtures as an
/// operator, the server, or a stranger would.
pub mod keys {
    pub use crate::store::keys::{AllowedSigners, SigningKey};
}

/// Signed commits and compare-and-swap ref updates, to build fixtures
/// and chains the way the store writes them.
pub mod git {
    pub use crate::store::git::{cas_ref, commit_files, empty_tree, signed_commit};
}

/// The audit chain read raw: tamper tests and the impact benchmark.
pub mod audit {
    pub use crate::store::audit::{entries_from, read_entry};
}

/// Fault points a test arms to fail a write at a chosen moment.
pub mod fault {
    pub use crate::store::fault::Fault;
    #[cfg(debug_assertions)]
    pub use crate::store::fault::{arm, is_armed};
}

/// The index file opened directly, as a rebuild leaves it.
pub mod index {
    pub use crate::store::index::{Index, SCHEMA_VERSION};
}

/// What maintenance measures: bytes and files under a folder.
pub mod maintain {
    pub use crate::store::maintain::{dir_bytes, file_count, merge_due, LongLane};
}

/// A policy set loaded from any commit (not only `main`).
pub mod policies {
    pub use crate::store::policies::load_commit;
}

/// The projection's queries at a time the test chooses.
pub mod projection {
    pub use crate::store::projection::open_runs;
}
