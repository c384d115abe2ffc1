//! What libgit2 keeps in memory across the process: its object cache,
//! which gov turns off, and its mappings of pack files, which gov bounds.
//!
//! **The object cache.** Each repository handle keeps the commits and
//! small trees it has read (up to 256 MiB over the whole process, evicting
//! only past that). gov reads a chain commit once per pass (the writer
//! reads back the commits it has just written, `verify` walks the whole
//! chain), so the cache only grew: a long-running server's resident memory
//! rose with every write, and `gov audit verify` held the chain it had
//! already checked. The trees gov does read again and again (`main`'s,
//! under every proposal filed) it keeps itself, in a bounded table
//! (`store::tree`).
//!
//! **The pack mappings.** libgit2 reads a pack through windows it maps,
//! by default up to 1 GiB each and up to 8 GiB in all, and unmaps a window
//! only once that total is passed. Every page read through a window stays
//! in the process's resident memory, and the kernel maps the pages around
//! each one read (64 KiB) with it. So a walk down a long history, which
//! reads a commit here and a tree there, left most of the pack resident:
//! a server started on 169,000 entries with 11,000 approvals on `main`
//! (740 MiB of packs) had 367 MiB of mapped files resident after its
//! start-up walks, and `gov audit verify` peaked at 860 MiB. With windows
//! of [`WINDOW_BYTES`] and at most [`MAPPED_BYTES`] mapped, the least
//! recently used unmapped as new ones open, the same server had 52 MiB of
//! mapped files resident (its binary and the packs' indexes included) and
//! `verify` peaked at 130 MiB, neither slower (docs/BENCHMARKS.md, the
//! twentieth round). The pages stay in the kernel's page cache, so
//! reading a window again costs a mapping, not a disk read.
//!
//! Windows of 8 MiB, 32 MiB in all, were then the largest part of the
//! server's peak: after a background merge into one pack of 352 MB (a
//! copy of 78,002 entries), a walk through it left up to 17 MiB of pack
//! pages resident, and the high-water mark reached 68-76 MiB. Windows of
//! 2 MiB, 8 MiB in all, held it to 58-60 MiB, with no change in CPU per
//! write, `verify`'s speed or start-up (docs/BENCHMARKS.md, the
//! twenty-fourth round).

use std::sync::Once;

/// The most of a pack libgit2 maps at once for one read window.
pub const WINDOW_BYTES: usize = 2 << 20;

/// The most of all packs libgit2 keeps mapped before it unmaps the least
/// recently used windows. A soft limit: a window being read is not
/// unmapped.
pub const MAPPED_BYTES: usize = 8 << 20;

/// Turns libgit2's object cache off and bounds its pack mappings, for
/// the whole process. Call it at start-up, before any thread uses
/// libgit2; later calls do nothing.
pub fn limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        git2::opts::enable_caching(false);
        bound_pack_mappings();
    });
}

#[allow(
    unsafe_code,
    reason = "git2 marks libgit2's global window settings unsafe: they are \
              written without synchronisation"
)]
fn bound_pack_mappings() {
    // SAFETY: the two settings are plain globals libgit2 reads when it
    // opens a window. `limit` runs once, at start-up, before any thread
    // uses libgit2 (its callers say so), so nothing reads them while they
    // are written. An error (an unknown option) leaves libgit2's defaults.
    unsafe {
        if let Err(e) = git2::opts::set_mwindow_size(WINDOW_BYTES) {
            tracing::warn!(error = %e, "libgit2's pack window size left as it was");
        }
        if let Err(e) = git2::opts::set_mwindow_mapped_limit(MAPPED_BYTES) {
            tracing::warn!(error = %e, "libgit2's limit on mapped packs left as it was");
        }
    }
}
