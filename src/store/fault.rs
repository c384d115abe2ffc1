//! Faults injected by tests, in debug builds only: release builds compile
//! none of this and [`fire`] is always `false`.
//!
//! The failures the repair paths exist for (a batch whose Git refs moved
//! but whose audit entries did not, a writer killed in between) cannot be
//! produced from outside a process at a chosen moment. So the batch flush
//! asks [`fire`] at that moment, and a test arms it for one repository:
//! in-process with [`arm`], or for a `gov` process with
//! `GOV_FAULT=<name>` in its environment, where the fault kills the
//! process (as SIGKILL would) instead of failing the write.

use std::path::Path;

/// A point where a test may make a write fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A batch's flush that moves refs other than the audit chain: after
    /// they moved and before the audit ref does.
    AfterGitRefs,
    /// Any batch's flush, just before the audit ref moves: the batch's
    /// objects and other refs are written, its entries are not.
    BeforeAuditRef,
    /// Reading a batch's entries back from its memory, as undoing a failed
    /// writer's index rows does (`store::audit::entries_since`): the read
    /// fails.
    ReadBatchBack,
    /// A batch's flush, once its Git refs and entries are durable: the
    /// commit of its index rows fails.
    IndexCommit,
    /// Putting a durable batch's files into the checkout
    /// (`store::proposals::sync_worktree`): the sync fails before it
    /// touches anything (a process dies there with `GOV_FAULT`).
    BeforeCheckout,
}

impl Fault {
    /// The name `GOV_FAULT` takes.
    #[cfg_attr(
        not(debug_assertions),
        allow(dead_code, reason = "only debug builds read GOV_FAULT")
    )]
    pub fn name(self) -> &'static str {
        match self {
            Fault::AfterGitRefs => "after-git-refs",
            Fault::BeforeAuditRef => "before-audit-ref",
            Fault::ReadBatchBack => "read-batch-back",
            Fault::IndexCommit => "index-commit",
            Fault::BeforeCheckout => "before-checkout",
        }
    }
}

/// How a repository is named in [`ARMED`]: its Git directory, canonical
/// when it can be.
#[cfg(debug_assertions)]
fn armed_key(git_dir: &Path) -> std::path::PathBuf {
    git_dir
        .canonicalize()
        .unwrap_or_else(|_| git_dir.to_path_buf())
}

#[cfg(debug_assertions)]
static ARMED: std::sync::Mutex<Vec<(std::path::PathBuf, Fault)>> =
    std::sync::Mutex::new(Vec::new());

/// Makes the next write of the repository whose Git directory is `git_dir`
/// fail at `fault` (once), in this process. Only tests arm faults: it is
/// compiled for unit tests and for `gov::testkit`.
#[cfg(all(debug_assertions, any(test, feature = "testkit")))]
pub fn arm(git_dir: &Path, fault: Fault) {
    let dir = armed_key(git_dir);
    if let Ok(mut armed) = ARMED.lock() {
        armed.push((dir, fault));
    }
}

/// Whether `fault` is armed for the repository whose Git directory is
/// `git_dir` and not yet fired.
#[cfg(all(debug_assertions, any(test, feature = "testkit")))]
pub fn is_armed(git_dir: &Path, fault: Fault) -> bool {
    let dir = armed_key(git_dir);
    ARMED
        .lock()
        .map(|armed| armed.iter().any(|(d, f)| *d == dir && *f == fault))
        .unwrap_or(false)
}

/// Whether the write in progress must fail here: armed for this repository
/// (consumed), or named by `GOV_FAULT`, which kills the process at once.
#[cfg(debug_assertions)]
pub fn fire(git_dir: &Path, fault: Fault) -> bool {
    if std::env::var("GOV_FAULT").ok().as_deref() == Some(fault.name()) {
        // A death, not an error: nothing after this point runs.
        std::process::abort();
    }
    let dir = armed_key(git_dir);
    let Ok(mut armed) = ARMED.lock() else {
        return false;
    };
    match armed.iter().position(|(d, f)| *d == dir && *f == fault) {
        Some(i) => {
            armed.remove(i);
            true
        }
        None => false,
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fire(_git_dir: &Path, _fault: Fault) -> bool {
    false
}
