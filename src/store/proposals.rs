//! Proposals in Git.
//!
//! - Waiting for a person: branch `<prefix><id>` with one commit on top of
//!   main's tip adding `proposals/<id>.toml`, signed by the server key.
//! - Auto-approved: one commit on main adding the file (CAS on main).
//! - Approved: a merge commit on main (parents: main's tip, the proposal
//!   commit; never a fast-forward), signed by the approver's key.
//! - Rejected or expired: the branch is renamed `gov/rejected/<id>` or
//!   `gov/expired/<id>`; its content is kept.
//!
//! Callers hold the chain lock (`Governance::transact`), so no two gov
//! writers move these refs at once; refs are still moved by compare-and-swap
//! so that a concurrent `git` command is detected, not overwritten.

use git2::{FileMode, Oid, Repository, Signature};

use crate::domain::proposal::Proposal;
use crate::store::audit::signer_identity;
use crate::store::git::{cas_ref, make_durable, signed_commit, StoreError};
use crate::store::keys::{Role, SigningKey};

/// Where a refused approval found the proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The branch is gone.
    Missing,
    /// The branch points at another commit than the one submitted.
    Moved { found: String },
    /// The commit does not hold the file as submitted.
    FileChanged,
}

fn full_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the commit; a struct would only rename them"
)]
/// Writes the blob, the tree (base plus the proposal file) and a signed
/// commit. Returns the commit and every new object id.
fn commit_with_file(
    repo: &Repository,
    key: &SigningKey,
    author: &Signature<'_>,
    base: &git2::Commit<'_>,
    extra_parent: Option<&git2::Commit<'_>>,
    path: &str,
    blob: Oid,
    message: &str,
) -> Result<(Oid, Vec<Oid>), StoreError> {
    commit_with_files(
        repo,
        key,
        author,
        base,
        extra_parent,
        &[(path.to_string(), blob)],
        message,
    )
}

/// [`commit_with_file`] for several files.
fn commit_with_files(
    repo: &Repository,
    key: &SigningKey,
    author: &Signature<'_>,
    base: &git2::Commit<'_>,
    extra_parent: Option<&git2::Commit<'_>>,
    files: &[(String, Oid)],
    message: &str,
) -> Result<(Oid, Vec<Oid>), StoreError> {
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, blob) in files {
        update.upsert(path.as_str(), *blob, FileMode::Blob);
    }
    let tree_id = update.create_updated(repo, &base.tree()?)?;
    let tree = repo.find_tree(tree_id)?;
    let mut parents: Vec<&git2::Commit<'_>> = vec![base];
    parents.extend(extra_parent);
    let commit = signed_commit(repo, key, author, &tree, &parents, message)?;
    let mut objects: Vec<Oid> = files.iter().map(|(_, b)| *b).collect();
    objects.extend([commit, tree_id]);
    // Every folder on the way to a file is a new tree too.
    for (path, _) in files {
        let mut dir = std::path::Path::new(path).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(entry) = tree.get_path(d) {
                objects.push(entry.id());
            }
            dir = d.parent();
        }
    }
    // The `proposals/` subtree is new too.
    if let Ok(entry) = tree.get_path(std::path::Path::new("proposals")) {
        objects.push(entry.id());
    }
    Ok((commit, objects))
}

fn main_tip<'r>(repo: &'r Repository, main_ref: &str) -> Result<git2::Commit<'r>, StoreError> {
    Ok(repo.find_commit(repo.refname_to_id(main_ref)?)?)
}

/// Files a proposal that waits for a person on its own branch. Returns the
/// commit.
pub fn write_pending(
    repo: &Repository,
    key: &SigningKey,
    main_ref: &str,
    branch: &str,
    p: &Proposal,
) -> Result<Oid, StoreError> {
    let base = main_tip(repo, main_ref)?.id();
    write_pending_on(repo, key, base, branch, p)
}

/// [`write_pending`] on top of `base` instead of main's tip: a policy
/// change's proposal commit sits on the commit that holds the change, so
/// approving it merges both.
pub fn write_pending_on(
    repo: &Repository,
    key: &SigningKey,
    base: Oid,
    branch: &str,
    p: &Proposal,
) -> Result<Oid, StoreError> {
    let base = repo.find_commit(base)?;
    let path = Proposal::file_path(&p.proposal_id);
    let blob = repo.blob(p.to_file().as_bytes())?;
    let who = signer_identity(Role::Server)?;
    let message = format!(
        "proposal {}: {} by {}\n\nWaiting for a person. Approving merges this commit into main.\nPayload hash: {}\n",
        p.proposal_id, p.action_type, p.agent_id, p.payload_hash
    );
    let (commit, objects) = commit_with_file(repo, key, &who, &base, None, &path, blob, &message)?;
    make_durable(repo, &objects, None)?;
    let refname = full_ref(branch);
    cas_ref(repo, &refname, commit, None, "gov: proposal filed")?;
    make_durable(repo, &[], Some(&refname))?;
    Ok(commit)
}

/// Lands an auto-approved proposal on main. Returns the commit.
pub fn write_auto(
    repo: &Repository,
    key: &SigningKey,
    main_ref: &str,
    p: &Proposal,
) -> Result<Oid, StoreError> {
    let base = main_tip(repo, main_ref)?;
    let path = Proposal::file_path(&p.proposal_id);
    let text = p.to_file();
    let blob = repo.blob(text.as_bytes())?;
    let who = signer_identity(Role::Server)?;
    let message = format!(
        "proposal {}: {} by {} (auto-approved)\n\nPolicies: {}\nPayload hash: {}\n",
        p.proposal_id,
        p.action_type,
        p.agent_id,
        p.policies
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        p.payload_hash
    );
    let (commit, objects) = commit_with_file(repo, key, &who, &base, None, &path, blob, &message)?;
    land_on_main(
        repo,
        main_ref,
        &base,
        commit,
        &objects,
        "gov: auto-approved proposal",
    )?;
    sync_worktree(repo, main_ref, &path, text.as_bytes());
    Ok(commit)
}

/// Makes a new commit on top of `base` durable, then moves main to it by
/// compare-and-swap (never forced) and makes the ref durable too.
fn land_on_main(
    repo: &Repository,
    main_ref: &str,
    base: &git2::Commit<'_>,
    commit: Oid,
    objects: &[Oid],
    log_message: &str,
) -> Result<(), StoreError> {
    make_durable(repo, objects, None)?;
    cas_ref(repo, main_ref, commit, Some(base.id()), log_message)?;
    make_durable(repo, &[], Some(main_ref))
}

/// Checks that the proposal's branch still holds exactly what was submitted.
pub fn check_untampered(
    repo: &Repository,
    branch: &str,
    submitted: Oid,
    p: &Proposal,
) -> Result<Option<Tamper>, StoreError> {
    let found = match repo.refname_to_id(&full_ref(branch)) {
        Ok(o) => o,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Some(Tamper::Missing)),
        Err(e) => return Err(e.into()),
    };
    if found != submitted {
        return Ok(Some(Tamper::Moved {
            found: found.to_string(),
        }));
    }
    let tree = repo.find_commit(found)?.tree()?;
    let entry = match tree.get_path(std::path::Path::new(&Proposal::file_path(&p.proposal_id))) {
        Ok(e) => e,
        Err(_) => return Ok(Some(Tamper::FileChanged)),
    };
    let blob = repo.find_blob(entry.id())?;
    if blob.content() != p.to_file().as_bytes() {
        return Ok(Some(Tamper::FileChanged));
    }
    Ok(None)
}

/// Merges the submitted proposal commit into main, signed by the approver.
/// Returns the merge commit.
pub fn merge_approved(
    repo: &Repository,
    approver_key: &SigningKey,
    approver_name: &str,
    main_ref: &str,
    submitted: Oid,
    p: &Proposal,
    note: Option<&str>,
) -> Result<Oid, StoreError> {
    let base = main_tip(repo, main_ref)?;
    let proposal_commit = repo.find_commit(submitted)?;
    let path = Proposal::file_path(&p.proposal_id);
    let entry = proposal_commit
        .tree()?
        .get_path(std::path::Path::new(&path))?;
    let email = Role::Approver.principal(approver_name);
    let who = Signature::now(approver_name, &email)?;
    let mut message = format!(
        "approve proposal {}: {} by {}\n\nApproved by {approver_name}.\n",
        p.proposal_id, p.action_type, p.agent_id
    );
    if let Some(n) = note.filter(|n| !n.is_empty()) {
        message.push_str(&format!("Note: {n}\n"));
    }
    // The proposal file, and whatever else the branch changed since it left
    // main (a policy change's files): approving merges exactly that.
    let mut files = branch_changes(repo, &base, &proposal_commit)?;
    if !files.iter().any(|(p, _)| *p == path) {
        files.push((path.clone(), entry.id()));
    }
    let (commit, objects) = commit_with_files(
        repo,
        approver_key,
        &who,
        &base,
        Some(&proposal_commit),
        &files,
        &message,
    )?;
    land_on_main(
        repo,
        main_ref,
        &base,
        commit,
        &objects,
        "gov: approval merge",
    )?;
    if let Ok(blob) = repo.find_blob(entry.id()) {
        sync_worktree(repo, main_ref, &path, blob.content());
    }
    Ok(commit)
}

/// The files a branch added or changed since it left main (its merge base
/// with `main`), with their blobs. A file that main also changed since is
/// a conflict: the approval is refused rather than one side lost.
fn branch_changes(
    repo: &Repository,
    main: &git2::Commit<'_>,
    branch: &git2::Commit<'_>,
) -> Result<Vec<(String, Oid)>, StoreError> {
    let fork = repo.find_commit(repo.merge_base(main.id(), branch.id())?)?;
    let (fork_tree, main_tree) = (fork.tree()?, main.tree()?);
    let diff = repo.diff_tree_to_tree(Some(&fork_tree), Some(&branch.tree()?), None)?;
    let mut out = Vec::new();
    for d in diff.deltas() {
        let Some(path) = d.new_file().path().and_then(|p| p.to_str()) else {
            continue;
        };
        match d.status() {
            git2::Delta::Added | git2::Delta::Modified => {}
            other => {
                return Err(git2::Error::from_str(&format!(
                    "the branch {} `{path}`: only added and changed files can be approved",
                    format!("{other:?}").to_lowercase()
                ))
                .into())
            }
        }
        let at = |t: &git2::Tree<'_>| t.get_path(std::path::Path::new(path)).ok().map(|e| e.id());
        if at(&main_tree) != at(&fork_tree) {
            return Err(git2::Error::from_str(&format!(
                "`{path}` changed on main since the proposal was filed: file it again"
            ))
            .into());
        }
        out.push((path.to_string(), d.new_file().id()));
    }
    Ok(out)
}

/// Renames a proposal branch (keeping its content), e.g. to
/// `gov/rejected/<id>`. A branch that is already gone is not an error.
pub fn rename_branch(repo: &Repository, from: &str, to: &str) -> Result<(), StoreError> {
    match repo.find_reference(&full_ref(from)) {
        Ok(mut r) => {
            r.rename(&full_ref(to), false, "gov: proposal decided")?;
            make_durable(repo, &[], Some(&full_ref(to)))?;
            Ok(())
        }
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// When main is checked out, puts the new proposal file into the working
/// tree and the Git index too, so that `git status` stays clean. Best
/// effort: the commit on main is what counts.
pub fn sync_worktree(repo: &Repository, main_ref: &str, path: &str, content: &[u8]) {
    let Some(workdir) = repo.workdir() else {
        return;
    };
    let head = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().map(str::to_string));
    if head.as_deref() != Some(main_ref) {
        return;
    }
    let file = workdir.join(path);
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if std::fs::write(&file, content).is_err() {
        return;
    }
    if let Ok(mut index) = repo.index() {
        if index.add_path(std::path::Path::new(path)).is_ok() {
            let _ = index.write();
        }
    }
}
