//! The Git remote: fetching it, pushing to it, and the check that makes a
//! merge made on a forge an approval.
//!
//! - [`fetch`] copies the remote's `main` and gov's branches into
//!   `refs/remotes/<remote>/…` (the usual remote-tracking refs; local
//!   branches are never touched by a fetch).
//! - [`push`] sends ref updates, none of them forced: libgit2 refuses a
//!   non-fast-forward update of the whole push, so callers only ask for
//!   fast-forwards, creations and deletions.
//! - [`forge_merge_problem`] says why a merge commit is not exactly the
//!   merge of a submitted proposal commit (`None` when it is). `gov sync`
//!   asks it before approving; `gov audit verify` asks it of every merge on
//!   `main` that no approver signed.

use git2::{Oid, Repository};

/// A ref update to push: `src` is the local ref (`None` deletes `dst` on
/// the remote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub src: Option<String>,
    pub dst: String,
}

impl RefUpdate {
    fn refspec(&self) -> String {
        format!("{}:{}", self.src.as_deref().unwrap_or(""), self.dst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "no remote `{0}` in the repository's git config; add it with `git remote add {0} URL`"
    )]
    NotConfigured(String),
    #[error("fetching from `{remote}`: {source}")]
    Fetch { remote: String, source: git2::Error },
    #[error("pushing to `{remote}`: {source}")]
    Push { remote: String, source: git2::Error },
    #[error("pushing to `{remote}`: the remote refused {}", .refused.join("; "))]
    Refused {
        remote: String,
        refused: Vec<String>,
    },
}

/// The remote-tracking name of `branch` fetched from `remote`.
pub fn tracking_ref(remote: &str, branch: &str) -> String {
    format!("refs/remotes/{remote}/{branch}")
}

fn find_remote<'r>(repo: &'r Repository, name: &str) -> Result<git2::Remote<'r>, RemoteError> {
    repo.find_remote(name)
        .map_err(|_| RemoteError::NotConfigured(name.to_string()))
}

/// Fetches `branches` (exact names) and every branch under `prefixes`
/// (e.g. `gov/proposal/`) into remote-tracking refs, pruning those the
/// remote no longer has.
pub fn fetch(
    repo: &Repository,
    remote: &str,
    branches: &[&str],
    prefixes: &[&str],
) -> Result<(), RemoteError> {
    let mut r = find_remote(repo, remote)?;
    let mut specs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:{}", tracking_ref(remote, b)))
        .collect();
    specs.extend(
        prefixes
            .iter()
            .map(|p| format!("+refs/heads/{p}*:{}*", tracking_ref(remote, p))),
    );
    let mut opts = git2::FetchOptions::new();
    opts.prune(git2::FetchPrune::On);
    opts.download_tags(git2::AutotagOption::None);
    r.fetch(&specs, Some(&mut opts), Some("gov sync: fetch"))
        .map_err(|source| RemoteError::Fetch {
            remote: remote.to_string(),
            source,
        })
}

/// Pushes `updates` (never forced). Every update the remote refuses is
/// named in the error.
pub fn push(repo: &Repository, remote: &str, updates: &[RefUpdate]) -> Result<(), RemoteError> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut r = find_remote(repo, remote)?;
    let specs: Vec<String> = updates.iter().map(RefUpdate::refspec).collect();
    let refused = std::cell::RefCell::new(Vec::new());
    {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.push_update_reference(|refname, status| {
            if let Some(why) = status {
                refused.borrow_mut().push(format!("`{refname}` ({why})"));
            }
            Ok(())
        });
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(callbacks);
        r.push(&specs, Some(&mut opts))
            .map_err(|source| RemoteError::Push {
                remote: remote.to_string(),
                source,
            })?;
    }
    let refused = refused.into_inner();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(RemoteError::Refused {
            remote: remote.to_string(),
            refused,
        })
    }
}

/// Whether moving a ref from `from` to `to` is a fast-forward (or no move).
pub fn is_fast_forward(repo: &Repository, from: Oid, to: Oid) -> Result<bool, git2::Error> {
    Ok(from == to || repo.graph_descendant_of(to, from)?)
}

/// Why `merge` is not exactly the merge of the submitted proposal commit
/// `submitted`, which adds `path` holding `content`; `None` when it is.
///
/// A forge merge of a proposal has two parents, `main` as it was and the
/// submitted commit itself (not a commit on top of it), and its tree is
/// the first parent's plus the proposal file, byte for byte as submitted:
/// nothing else changes, so nothing (a policy, an agent, another file) can
/// ride along with an approval.
pub fn forge_merge_problem(
    repo: &Repository,
    merge: Oid,
    submitted: Oid,
    path: &str,
    content: &[u8],
) -> Result<Option<String>, git2::Error> {
    let commit = repo.find_commit(merge)?;
    if commit.parent_count() != 2 {
        return Ok(Some(format!(
            "it has {} parents; a forge merge has two (main and the proposal commit)",
            commit.parent_count()
        )));
    }
    let merged = commit.parent_id(1)?;
    if merged != submitted {
        return Ok(Some(format!(
            "it merges commit {}, not the submitted proposal commit {}",
            short(&merged),
            short(&submitted)
        )));
    }
    let base = commit.parent(0)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&base), Some(&commit.tree()?), None)?;
    let want = Oid::hash_object(git2::ObjectType::Blob, content)?;
    let mut file_ok = false;
    let mut others: Vec<String> = Vec::new();
    for delta in diff.deltas() {
        let file = if delta.new_file().exists() {
            delta.new_file()
        } else {
            delta.old_file()
        };
        let name = file
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == path && delta.new_file().exists() && delta.new_file().id() == want {
            file_ok = true;
        } else if name != path {
            others.push(format!("`{name}`"));
        }
    }
    if !others.is_empty() {
        return Ok(Some(format!(
            "besides `{path}` it also changes {}",
            others.join(", ")
        )));
    }
    if !file_ok {
        return Ok(Some(format!(
            "`{path}` in the merge is not the proposal as submitted"
        )));
    }
    Ok(None)
}

fn short(oid: &Oid) -> String {
    let s = oid.to_string();
    s.get(..12).unwrap_or(&s).to_string()
}
