//! A policy folder on disk (`policies/` of a working tree, or any folder
//! `--dir` names), loaded for `gov policy check`, `test` and `eval`: the
//! edges read policy folders through here, never through the store.

use std::path::Path;

use crate::domain::policy::PolicySet;
use crate::store::policies;
pub use crate::store::policies::{PolicyStoreError, POLICIES_DIR};

/// The policy set in `dir`, versioned by its contents.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyStoreError> {
    policies::load_dir(dir, &policies::disk_version(dir))
}
