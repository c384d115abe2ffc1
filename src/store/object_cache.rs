//! libgit2's object cache, which gov turns off.
//!
//! Each repository handle keeps the commits and small trees it has read
//! (up to 256 MiB over the whole process, evicting only past that). gov
//! reads a chain commit once per pass (the writer reads back the commits
//! it has just written, `verify` walks the whole chain), so the cache only
//! grew: a long-running server's resident memory rose with every write,
//! and `gov audit verify` held the chain it had already checked.

/// Turns libgit2's object cache off for this process. Call it once at
/// start-up, before any repository is opened.
pub fn disable() {
    git2::opts::enable_caching(false);
}
