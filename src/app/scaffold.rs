//! The files `gov init` writes, embedded in the binary by `build.rs` from
//! the project's own top-level `gov.toml`, `policies/`, `agents/`,
//! `proposals/` and `audit/`.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/scaffold.rs"));

/// The `.gitignore` of a governance repository: local state stays local.
pub const GITIGNORE: &str = "# Local state: the index database, keys, tokens, run logs.\n.gov/\n";

/// Every path (relative to the repository) that `gov init` would create,
/// including the ones it generates.
pub fn planned_paths() -> Vec<String> {
    let mut paths: Vec<String> = SCAFFOLD.iter().map(|(p, _)| p.to_string()).collect();
    paths.push(".gitignore".into());
    paths.push(".git".into());
    paths.push(".gov".into());
    paths
}

/// The planned paths that already exist below `dir`, sorted.
pub fn collisions(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = planned_paths()
        .into_iter()
        .map(|p| dir.join(p))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    found.sort();
    found
}
