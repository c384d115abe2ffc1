//! Git helpers over git2: signed commits, compare-and-swap ref updates, and
//! making what was written durable.
//!
//! Every commit gov writes is signed in Rust in git's SSH signature format
//! (the `gpgsig` header), so stock `git verify-commit` reports a good
//! signature when `gpg.ssh.allowedSignersFile` names `policies/allowed_signers`.
//!
//! Refs are never force-updated over a value we did not read: [`cas_ref`]
//! fails with [`StoreError::RefMoved`] instead, so a concurrent writer's
//! commits are never silently dropped.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, FileMode, Oid, Repository, RepositoryInitOptions, Signature};

use crate::store::keys::{KeyError, SigningKey};

/// The id of git's empty tree; every audit commit carries it.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// What can go wrong in the Git and SQLite adapters.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("index database: {0}")]
    Index(#[from] rusqlite::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ref `{refname}` moved: expected {expected}, found {found}")]
    RefMoved {
        refname: String,
        expected: String,
        found: String,
    },
    #[error("audit commit {commit}: {reason}")]
    BadEntry { commit: String, reason: String },
}

impl StoreError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The id of the tree at `path` (a folder such as `policies`) in a commit,
/// if the commit has one there. Equal ids mean equal folder contents.
pub fn subtree_id(repo: &Repository, commit: Oid, path: &str) -> Option<Oid> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    Some(entry.id())
}

/// Creates a non-bare repository at `root` whose HEAD names `main_branch`.
pub fn init_repo(root: &Path, main_branch: &str) -> Result<Repository, StoreError> {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head(main_branch).mkpath(true);
    Ok(Repository::init_opts(root, &opts)?)
}

/// Writes a commit signed with `key` (author and committer both `author`)
/// and returns its id. Refs are not touched.
pub fn signed_commit(
    repo: &Repository,
    key: &SigningKey,
    author: &Signature<'_>,
    tree: &git2::Tree<'_>,
    parents: &[&git2::Commit<'_>],
    message: &str,
) -> Result<Oid, StoreError> {
    let buf = repo.commit_create_buffer(author, author, message, tree, parents)?;
    let content = buf
        .as_str()
        .ok_or_else(|| git2::Error::from_str("commit buffer is not UTF-8"))?;
    let signature = key.sign_git(content.as_bytes())?;
    Ok(repo.commit_signed(content, &signature, Some("gpgsig"))?)
}

/// Points `refname` at `new` if it currently points at `expected_old`
/// (`None`: only if it does not exist yet). Anything else is
/// [`StoreError::RefMoved`]; the ref is never forced.
pub fn cas_ref(
    repo: &Repository,
    refname: &str,
    new: Oid,
    expected_old: Option<Oid>,
    log_msg: &str,
) -> Result<(), StoreError> {
    let result = match expected_old {
        Some(old) => repo.reference_matching(refname, new, true, old, log_msg),
        None => repo.reference(refname, new, false, log_msg),
    };
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::Modified | ErrorCode::Exists | ErrorCode::NotFound
            ) =>
        {
            let found = repo
                .refname_to_id(refname)
                .map(|o| o.to_string())
                .unwrap_or_else(|_| "nothing".into());
            Err(StoreError::RefMoved {
                refname: refname.to_string(),
                expected: expected_old.map_or_else(|| "nothing".into(), |o| o.to_string()),
                found,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Flushes written loose objects and a ref to disk: each object file, each
/// directory they live in, the ref file and its directory.
///
/// libgit2 writes loose objects and refs through temporary files and renames
/// without fsync unless told to; git2 does not expose that option, so we
/// fsync the results ourselves. An object already held in a pack has no
/// loose file and needs nothing.
pub fn make_durable(
    repo: &Repository,
    objects: &[Oid],
    refname: Option<&str>,
) -> Result<(), StoreError> {
    let objects_dir = repo.path().join("objects");
    let mut dirs = BTreeSet::new();
    for oid in objects {
        let hex = oid.to_string();
        let dir = objects_dir.join(&hex[..2]);
        let path = dir.join(&hex[2..]);
        match File::open(&path) {
            Ok(f) => f.sync_all().map_err(|e| StoreError::io("sync", &path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("open", &path, e)),
        }
        dirs.insert(dir);
    }
    if !dirs.is_empty() {
        // A shard directory may have been created by this write.
        dirs.insert(objects_dir);
    }
    if let Some(name) = refname {
        let path = repo.path().join(name);
        // A packed ref has no loose file; libgit2 writes updates loose.
        if let Ok(f) = File::open(&path) {
            f.sync_all().map_err(|e| StoreError::io("sync", &path, e))?;
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
    }
    for dir in dirs {
        sync_dir(&dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(|e| StoreError::io("open", dir, e))?;
    f.sync_all().map_err(|e| StoreError::io("sync", dir, e))
}

/// Commits `files` (repository path -> content) on top of `parent`'s tree
/// (or an empty tree), signed, moves `refname` from `parent` to the new
/// commit (or creates it, if it does not exist yet), and makes it durable. If `refname` is what HEAD points at, the
/// Git index is rewritten to match, so that `git status` is clean once the
/// same files are in the working tree.
pub fn commit_files(
    repo: &Repository,
    key: &SigningKey,
    author: &Signature<'_>,
    refname: &str,
    parent: Option<Oid>,
    files: &[(String, Vec<u8>)],
    message: &str,
) -> Result<Oid, StoreError> {
    let parent_commit = parent.map(|p| repo.find_commit(p)).transpose()?;
    let base = match &parent_commit {
        Some(c) => c.tree()?,
        None => repo.find_tree(empty_tree(repo)?)?,
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    let mut written = Vec::with_capacity(files.len() + 2);
    for (path, data) in files {
        let blob = repo.blob(data)?;
        written.push(blob);
        update.upsert(path.as_str(), blob, FileMode::Blob);
    }
    let tree_id = update.create_updated(repo, &base)?;
    let tree = repo.find_tree(tree_id)?;
    written.extend(subtree_ids(repo, &tree)?);
    let parents: Vec<&git2::Commit<'_>> = parent_commit.iter().collect();
    let commit = signed_commit(repo, key, author, &tree, &parents, message)?;
    written.push(commit);
    // A branch that exists must still be at `parent`; one that does not is
    // created (a new branch on top of `parent`).
    let expected = match repo.refname_to_id(refname) {
        Ok(_) => parent,
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let log = message.lines().next().unwrap_or("commit");
    cas_ref(repo, refname, commit, expected, log)?;
    make_durable(repo, &written, Some(refname))?;
    let head_target = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().map(str::to_string));
    if head_target.as_deref() == Some(refname) {
        let mut index = repo.index()?;
        index.read_tree(&tree)?;
        index.write()?;
    }
    Ok(commit)
}

/// The empty tree, written if this repository does not have it yet.
pub fn empty_tree(repo: &Repository) -> Result<Oid, StoreError> {
    let id = repo.treebuilder(None)?.write()?;
    Ok(id)
}

/// The Git directories of the repository at `root`: its `.git` (a folder,
/// or for a worktree the folder its `.git` file names) and the common
/// directory it shares with other worktrees. Empty when `root` is not in a
/// Git repository. The runner keeps agents out of all of them.
pub fn git_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.join(".git")];
    if let Ok(repo) = Repository::open(root) {
        dirs.push(repo.path().to_path_buf());
        dirs.push(repo.commondir().to_path_buf());
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Every tree id under (and including) `tree`, to make new ones durable.
fn subtree_ids(repo: &Repository, tree: &git2::Tree<'_>) -> Result<Vec<Oid>, StoreError> {
    let mut out = vec![tree.id()];
    for entry in tree.iter() {
        if entry.kind() == Some(git2::ObjectType::Tree) {
            let sub = repo.find_tree(entry.id())?;
            out.extend(subtree_ids(repo, &sub)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_refuses_a_moved_ref() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = init_repo(dir.path(), "main")?;
        let key = SigningKey::generate("t")?;
        let who = Signature::now("t", "t@gov")?;
        let files = vec![("a.txt".to_string(), b"a\n".to_vec())];
        let c1 = commit_files(&repo, &key, &who, "refs/heads/main", None, &files, "one")?;
        let files2 = vec![("d/b.txt".to_string(), b"b\n".to_vec())];
        let c2 = commit_files(
            &repo,
            &key,
            &who,
            "refs/heads/main",
            Some(c1),
            &files2,
            "two",
        )?;
        // A stale writer that still thinks the tip is c1 must fail.
        let err = cas_ref(&repo, "refs/heads/main", c1, Some(c1), "stale");
        assert!(matches!(err, Err(StoreError::RefMoved { .. })), "{err:?}");
        assert_eq!(repo.refname_to_id("refs/heads/main")?, c2);
        let err = cas_ref(&repo, "refs/heads/main", c1, None, "create");
        assert!(matches!(err, Err(StoreError::RefMoved { .. })), "{err:?}");
        let tree = repo.find_commit(c2)?.tree()?;
        assert!(tree.get_path(Path::new("a.txt")).is_ok());
        assert!(tree.get_path(Path::new("d/b.txt")).is_ok());
        Ok(())
    }
}
