//! The audit chain's cross-process writer lock.
//!
//! libgit2 fails a ref update at once when another process holds the ref's
//! lock file, and a forced update would lose the other writer's entries, so
//! every writer of the chain (server, watchdog, CLI) first takes an exclusive
//! advisory lock on `.git/gov-audit.lock`. The lock is released when the
//! [`ChainLock`] is dropped, or when the process dies.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::git::StoreError;

/// Proof that this process holds the chain's writer lock.
#[derive(Debug)]
pub struct ChainLock {
    file: File,
}

/// The lock file's name inside the `.git` directory.
pub const LOCK_FILE: &str = "gov-audit.lock";

/// The lock `gov sync` holds from its fetch to its last push, so that two
/// syncs (the watchdog's, the webhook's, a person's) never interleave.
pub const SYNC_LOCK_FILE: &str = "gov-sync.lock";

/// The lock held while approved files are put into the checkout and its
/// Git index (`store::proposals::sync_worktree`), outside the chain lock:
/// two gov processes doing it at once would each write the Git index as
/// they read it, and the second would drop the first one's files.
pub const WORKTREE_LOCK_FILE: &str = "gov-worktree.lock";

impl ChainLock {
    /// Blocks until the lock is ours.
    pub fn acquire(git_dir: &Path) -> Result<ChainLock, StoreError> {
        Self::acquire_named(git_dir, LOCK_FILE)
    }

    /// Blocks until the lock in `.git/<name>` is ours.
    pub fn acquire_named(git_dir: &Path, name: &str) -> Result<ChainLock, StoreError> {
        let path = git_dir.join(name);
        let file = open_lock_file(&path)?;
        lock_exclusive(&file).map_err(|e| StoreError::io("lock", &path, e))?;
        Ok(ChainLock { file })
    }

    /// The lock in `.git/<name>` if nobody holds it now (another open of
    /// it in this process counts as somebody); `None` otherwise, or if the
    /// file cannot be opened.
    pub fn try_acquire_named(git_dir: &Path, name: &str) -> Option<ChainLock> {
        let file = open_lock_file(&git_dir.join(name)).ok()?;
        file.try_lock().ok()?;
        Some(ChainLock { file })
    }
}

/// Opens a lock file (made if missing; its content is never read).
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))
}

fn lock_exclusive(file: &File) -> std::io::Result<()> {
    file.lock()
}

impl ChainLock {
    /// Removes the lock files of gov's own refs (`refs/heads/gov/**`,
    /// `refs/gov/**`) that a writer killed in the middle of a ref update
    /// left behind: every gov writer moves those refs only while it holds
    /// this lock, so while we hold it such a file is stale, and left in
    /// place it would fail every later write to its ref. Returns the files
    /// removed.
    pub fn remove_stale_ref_locks(&self, git_dir: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in ["refs/heads/gov", "refs/gov"] {
            remove_locks_under(&git_dir.join(dir), &mut removed);
        }
        removed
    }
}

impl ChainLock {
    /// Removes the lock files of refs and files that gov writes only while
    /// it holds this lock but that stock `git` writes too: `main`'s ref,
    /// `packed-refs` and the Git index (`index.lock`; gov writes that one
    /// under [`WORKTREE_LOCK_FILE`] instead, and it is left alone while
    /// that lock is held, by this process or another). One is removed only
    /// when it is stale: older than `before`, a time read before this lock
    /// was acquired (so no gov writer still runs with it), held open by no
    /// process, and no `git` process runs in this repository (a live `git
    /// commit` keeps `index.lock` while its editor is open). Returns the
    /// files removed. Costs one `stat` per file when there is nothing to
    /// remove.
    pub fn remove_stale_git_locks(
        &self,
        git_dir: &Path,
        workdir: Option<&Path>,
        main_ref: &str,
        before: std::time::SystemTime,
    ) -> Vec<PathBuf> {
        let candidates = [
            git_dir.join(format!("{main_ref}.lock")),
            git_dir.join("packed-refs.lock"),
            git_dir.join("index.lock"),
        ];
        let old: Vec<PathBuf> = candidates
            .into_iter()
            .filter(|p| {
                std::fs::symlink_metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before)
            })
            .collect();
        if old.is_empty() {
            return old;
        }
        // Held until the removal is done: no gov writer starts writing the
        // Git index meanwhile.
        let index_lock = git_dir.join("index.lock");
        let mut old = old;
        let _no_sync = match old.contains(&index_lock) {
            true => {
                let held = ChainLock::try_acquire_named(git_dir, WORKTREE_LOCK_FILE);
                if held.is_none() {
                    old.retain(|p| *p != index_lock);
                }
                held
            }
            false => None,
        };
        if old.is_empty() {
            return old;
        }
        let live = live_git_users(git_dir, workdir, &old);
        old.into_iter()
            .filter(|p| !live && std::fs::remove_file(p).is_ok())
            .collect()
    }
}

/// Whether a process may be using the repository's Git files right now: a
/// `git` process whose working folder or command line is in it, or any
/// process that has one of `files` open. What cannot be read (another
/// user's process) counts as a user.
fn live_git_users(git_dir: &Path, workdir: Option<&Path>, files: &[PathBuf]) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let roots: Vec<PathBuf> = [Some(git_dir), workdir]
        .into_iter()
        .flatten()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))
        .collect();
    let files: Vec<PathBuf> = files
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let me = std::process::id().to_string();
    for entry in procs.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "git" || comm.starts_with("git-") {
            let cwd = match std::fs::read_link(dir.join("cwd")) {
                Ok(cwd) => cwd,
                // It ended meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return true,
            };
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if roots
                .iter()
                .any(|r| cwd.starts_with(r) || cmdline.contains(&*r.to_string_lossy()))
            {
                return true;
            }
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|t| files.contains(&t)) {
                    return true;
                }
            }
        }
    }
    false
}

fn remove_locks_under(dir: &Path, removed: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_lock = path.extension().is_some_and(|x| x == "lock");
        match e.file_type() {
            Ok(t) if t.is_dir() => remove_locks_under(&path, removed),
            Ok(t) if t.is_file() && is_lock && std::fs::remove_file(&path).is_ok() => {
                removed.push(path)
            }
            _ => {}
        }
    }
}

/// The lock every process that opened the repository for writing (a
/// server, a watchdog, a CLI command) holds shared for as long as it has it
/// open; `gov audit recover` takes it exclusively, so it never runs under
/// a live writer. The kernel drops it when a holder dies: nothing stale.
pub const OPEN_LOCK_FILE: &str = "gov-open.lock";

/// Proof that this process has the repository open for writing (shared) or
/// that nobody else has (exclusive).
#[derive(Debug)]
pub struct OpenLock {
    file: File,
}

impl OpenLock {
    fn open(git_dir: &Path) -> Result<File, StoreError> {
        open_lock_file(&git_dir.join(OPEN_LOCK_FILE))
    }

    /// Takes the lock shared, waiting while a recovery holds it.
    pub fn shared(git_dir: &Path) -> Result<OpenLock, StoreError> {
        let file = Self::open(git_dir)?;
        file.lock_shared()
            .map_err(|e| StoreError::io("lock", &git_dir.join(OPEN_LOCK_FILE), e))?;
        Ok(OpenLock { file })
    }

    /// Takes the lock exclusively if nobody holds it; `None` if some
    /// process has the repository open.
    pub fn exclusive_now(git_dir: &Path) -> Result<Option<OpenLock>, StoreError> {
        let file = Self::open(git_dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(OpenLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StoreError::io("lock", &git_dir.join(OPEN_LOCK_FILE), e))
            }
        }
    }
}

impl Drop for OpenLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

impl Drop for ChainLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // hand-over explicit.
        #[allow(clippy::incompatible_msrv, reason = "see lock_exclusive")]
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gov writes the Git index outside the chain lock, under the
    /// checkout's lock: its `index.lock` is not taken for a stale one
    /// meanwhile, even by a writer of the same process.
    #[test]
    fn the_git_index_lock_is_left_alone_while_a_writer_syncs_the_checkout(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let git_dir = dir.path().join(".git");
        std::fs::create_dir_all(&git_dir)?;
        let index_lock = git_dir.join("index.lock");
        std::fs::write(&index_lock, b"half written")?;
        let before = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        let chain = ChainLock::acquire(&git_dir)?;
        let syncing = ChainLock::acquire_named(&git_dir, WORKTREE_LOCK_FILE)?;
        let removed = chain.remove_stale_git_locks(&git_dir, None, "refs/heads/main", before);
        assert!(removed.is_empty(), "{removed:?}");
        assert!(index_lock.exists());
        drop(syncing);
        let removed = chain.remove_stale_git_locks(&git_dir, None, "refs/heads/main", before);
        assert_eq!(removed, std::slice::from_ref(&index_lock));
        assert!(!index_lock.exists());
        Ok(())
    }
}
