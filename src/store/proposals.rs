//! Proposals in Git.
//!
//! - Waiting for a person: branch `<prefix><id>` with one commit on top of
//!   main's tip adding the proposal's file, signed by the server key. The
//!   file is `proposals/YYYY/MM/<bucket>/<id>.toml` (the month it was
//!   submitted, and one of 256 buckets by the hash of its id), so no folder
//!   on main grows without bound; repositories written by earlier versions
//!   hold `proposals/YYYY/MM/<id>.toml` or `proposals/<id>.toml`, and all
//!   three are read.
//! - Auto-approved: nothing in Git but its signed audit entry, which holds
//!   the whole proposal and its decision. `main` moves only through review.
//! - Approved: a merge commit on main (parents: main's tip, the proposal
//!   commit; never a fast-forward), signed by the approver's key.
//! - Rejected or expired: the branch is renamed `gov/rejected/<id>` or
//!   `gov/expired/<id>`; its content is kept.
//!
//! Writers hold the chain lock (`Governance::transact`) and stage their ref
//! moves in the batch's [`Staged`] (read back through it by later writers
//! of the batch); the batch moves them all at once by compare-and-swap, so
//! a concurrent `git` command is detected, not overwritten.

use chrono::{DateTime, Utc};
use git2::{ObjectType, Oid, Repository};

use crate::domain::proposal::Proposal;
use crate::store::audit::signer_identity;
use crate::store::git::{
    commit_with_changes, record_synced, signature_at, signed_commit_of, synced_to, Checkout,
    ForCheckout, Staged, StoreError,
};
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

fn main_tip<'r>(
    repo: &'r Repository,
    staged: &Staged,
    main_ref: &str,
) -> Result<git2::Commit<'r>, StoreError> {
    Ok(repo.find_commit(main_tip_id(repo, staged, main_ref)?)?)
}

/// Main's tip as staged, without reading its commit.
fn main_tip_id(repo: &Repository, staged: &Staged, main_ref: &str) -> Result<Oid, StoreError> {
    Ok(staged
        .target(repo, main_ref)?
        .ok_or_else(|| git2::Error::from_str(&format!("`{main_ref}` does not exist")))?)
}

/// The tree of commit `id`. The last answer is kept for the process:
/// every pending proposal is filed on main's tip, and finding that commit
/// read it from its pack, inflated and parsed it for each one (libgit2's
/// object cache is off), 1.7% of the server's CPU under the submission
/// benchmark. A commit's id covers its tree, so the answer holds in any
/// repository that has the commit; that `id` is there was checked by
/// whoever read it off `main` (the policies in force are read from its
/// tree on the same path).
fn tree_of(repo: &Repository, id: Oid) -> Result<Oid, StoreError> {
    use std::sync::{Mutex, PoisonError};
    static LAST: Mutex<Option<(Oid, Oid)>> = Mutex::new(None);
    let known = *LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, tree)) = known.filter(|(commit, _)| *commit == id) {
        return Ok(tree);
    }
    let tree = repo.find_commit(id)?.tree_id();
    *LAST.lock().unwrap_or_else(PoisonError::into_inner) = Some((id, tree));
    Ok(tree)
}

/// Who can know a proposal branch's name before it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchName {
    /// Anyone: it holds an id the agent chose. It is looked for on disk.
    Chosen,
    /// Nobody: it holds an id this process drew at random. It is staged
    /// without a look on disk (one file read less under the writer lock);
    /// the flush still checks that it is absent, as for every ref it
    /// creates ([`Staged::create_unknown`]).
    Drawn,
}

/// A pending proposal's commit made before its batch opened
/// ([`made_ahead`]): its objects are held, written nowhere, until a writer
/// files the same proposal on the same base ([`write_pending`]).
#[derive(Debug)]
pub struct MadeAhead {
    base: Oid,
    proposal: Proposal,
    commit: Oid,
    objects: Staged,
}

/// Makes the commit that files `p` on top of `base` (main's tip of the
/// moment), outside any batch: its file, the trees above it and the signed
/// commit, held in memory. Writers of a batch stage one at a time, and
/// this was a quarter of a pending submission's turn.
pub fn made_ahead(
    repo: &Repository,
    signer: (&SigningKey, DateTime<Utc>),
    base: Oid,
    p: Proposal,
) -> Result<Box<MadeAhead>, StoreError> {
    let mut objects = Staged::held();
    let commit = pending_commit(repo, &mut objects, signer, base, &p)?;
    Ok(Box::new(MadeAhead {
        base,
        proposal: p,
        commit,
        objects,
    }))
}

/// Files a proposal that waits for a person on its own branch (staged),
/// on main's tip. Returns the commit. `made`, a commit made ahead, is
/// taken when it files this very proposal on main's tip as staged; else
/// the commit is made now.
pub fn write_pending(
    repo: &Repository,
    staged: &mut Staged,
    signer: (&SigningKey, DateTime<Utc>),
    main_ref: &str,
    (branch, name): (&str, BranchName),
    p: &Proposal,
    made: Option<Box<MadeAhead>>,
) -> Result<Oid, StoreError> {
    let base = main_tip_id(repo, staged, main_ref)?;
    let commit = match made {
        Some(m) if m.base == base && m.proposal == *p => {
            staged.adopt(repo, m.objects)?;
            m.commit
        }
        _ => pending_commit(repo, staged, signer, base, p)?,
    };
    let branch = full_ref(branch);
    match name {
        BranchName::Chosen => staged.set(repo, &branch, Some(commit), None)?,
        BranchName::Drawn => staged.create_unknown(&branch, commit)?,
    }
    Ok(commit)
}

/// [`write_pending`] on top of `base` instead of main's tip: a policy
/// change's proposal commit sits on the commit that holds the change, so
/// approving it merges both.
pub fn write_pending_on(
    repo: &Repository,
    staged: &mut Staged,
    signer: (&SigningKey, DateTime<Utc>),
    base: Oid,
    branch: &str,
    p: &Proposal,
) -> Result<Oid, StoreError> {
    let commit = pending_commit(repo, staged, signer, base, p)?;
    staged.set(repo, &full_ref(branch), Some(commit), None)?;
    Ok(commit)
}

/// Writes the commit that files `p` on top of `base` (its file, the trees
/// above it, the commit signed with the key and dated at the time of
/// `signer`) through `staged`; refs are not touched.
fn pending_commit(
    repo: &Repository,
    staged: &mut Staged,
    (key, at): (&SigningKey, DateTime<Utc>),
    base: Oid,
    p: &Proposal,
) -> Result<Oid, StoreError> {
    let base_tree = tree_of(repo, base)?;
    let path = p.file_path();
    let blob = staged.write(repo, ObjectType::Blob, p.to_file().as_bytes())?;
    let who = signer_identity(Role::Server, at)?;
    let message = format!(
        "proposal {}: {} by {}\n\nWaiting for a person. Approving merges this commit into main.\nPayload hash: {}\n",
        p.proposal_id, p.proposed.action_type, p.proposed.agent_id, p.payload_hash
    );
    let files = [(path, Some(blob))];
    commit_with_changes(
        repo,
        staged,
        key,
        &who,
        Some(base_tree),
        &[base],
        &files,
        &message,
    )
}

/// Where the submitted proposal commit holds `p`'s file: the current
/// layout, else one of older repositories (see `Proposal::file_paths`).
pub fn file_in_commit(
    repo: &Repository,
    commit: Oid,
    p: &Proposal,
) -> Result<Option<(String, Oid)>, StoreError> {
    let tree = repo.find_commit(commit)?.tree()?;
    for path in p.file_paths() {
        if let Ok(entry) = tree.get_path(std::path::Path::new(&path)) {
            return Ok(Some((path, entry.id())));
        }
    }
    Ok(None)
}

/// A proposal's file as its submitted commit holds it, checked: where it
/// is, its blob and its content. An approval merges exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filed {
    pub path: String,
    pub blob: Oid,
    pub content: Vec<u8>,
}

/// Checks that the proposal's branch still holds exactly what was
/// submitted: the file found there, or how it was tampered with.
pub fn check_untampered(
    repo: &Repository,
    staged: &Staged,
    branch: &str,
    submitted: Oid,
    p: &Proposal,
) -> Result<Result<Filed, Tamper>, StoreError> {
    let Some(found) = staged.target(repo, &full_ref(branch))? else {
        return Ok(Err(Tamper::Missing));
    };
    if found != submitted {
        return Ok(Err(Tamper::Moved {
            found: found.to_string(),
        }));
    }
    let Some((path, blob)) = file_in_commit(repo, found, p)? else {
        return Ok(Err(Tamper::FileChanged));
    };
    let content = p.to_file().into_bytes();
    if repo.find_blob(blob)?.content() != content {
        return Ok(Err(Tamper::FileChanged));
    }
    Ok(Ok(Filed {
        path,
        blob,
        content,
    }))
}

#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the merge; a struct would only rename them"
)]
/// Merges the submitted proposal commit into main, signed by the approver
/// and dated `at` (staged; once the batch is durable, the file is put into a checked-out
/// `main`'s working tree). `filed` is the proposal's file as
/// [`check_untampered`] found it in `submitted`. Returns the merge commit.
pub fn merge_approved(
    repo: &Repository,
    staged: &mut Staged,
    (approver_key, at): (&SigningKey, DateTime<Utc>),
    approver_name: &str,
    main_ref: &str,
    submitted: Oid,
    p: &Proposal,
    filed: Filed,
    note: Option<&str>,
) -> Result<Oid, StoreError> {
    let base = main_tip(repo, staged, main_ref)?;
    let proposal_commit = repo.find_commit(submitted)?;
    let Filed {
        path,
        blob,
        content,
    } = filed;
    let email = Role::Approver.principal(approver_name);
    let who = signature_at(approver_name, &email, at)?;
    let mut message = format!(
        "approve proposal {}: {} by {}\n\nApproved by {approver_name}.\n",
        p.proposal_id, p.proposed.action_type, p.proposed.agent_id
    );
    if let Some(n) = note.filter(|n| !n.is_empty()) {
        message.push_str(&format!("Note: {n}\n"));
    }
    // The proposal file, and whatever else the branch changed since it left
    // main (a policy change's files): approving merges exactly that.
    let changes = branch_changes(repo, &base, &proposal_commit)?;
    let mut files: Vec<(String, Option<Oid>)> = changes
        .iter()
        .map(|c| (c.path.clone(), c.new_id()))
        .collect();
    if !files.iter().any(|(p, _)| *p == path) {
        files.push((path.clone(), Some(blob)));
    }
    // The next approval composes on this merge's trees.
    let tree = crate::store::tree::with_files_kept(repo, staged, Some(base.tree_id()), &files)?;
    let parents = [base.id(), submitted];
    let commit = signed_commit_of(repo, staged, approver_key, &who, tree, &parents, &message)?;
    staged.set(repo, main_ref, Some(commit), Some(base.id()))?;
    // A checked-out `main` gets every file the merge changed, so that its
    // Git index does not hold the files as they were (a policy change
    // would show as staged the other way round, and the next `git commit`
    // would undo it).
    for change in changes.iter().filter(|c| c.path != path) {
        staged.checkout_after(checkout_of(repo, main_ref, change)?);
    }
    staged.checkout_after(Checkout::added(main_ref, &path, &content));
    Ok(commit)
}

/// The files a branch added, changed or deleted since it left main (its
/// merge base with `main`), with their blobs (`None`: deleted). A file
/// that main also changed since is a conflict: the approval is refused
/// rather than one side lost.
fn branch_changes(
    repo: &Repository,
    main: &git2::Commit<'_>,
    branch: &git2::Commit<'_>,
) -> Result<Vec<crate::store::tree::FileChange>, StoreError> {
    let fork = repo.find_commit(super::fork::fork_point(repo, main.id(), branch.id())?)?;
    let fork_tree = fork.tree()?;
    let changes = crate::store::tree::changed_files(repo, Some(&fork_tree), Some(&branch.tree()?))?;
    let mut out = Vec::new();
    for change in changes {
        let path = change.path.as_str();
        let at = |t: Oid| -> Result<Option<Oid>, StoreError> {
            Ok(crate::store::tree::entry_at(repo, t, path)?.map(|(id, _)| id))
        };
        if at(main.tree_id())? != at(fork_tree.id())? {
            return Err(git2::Error::from_str(&format!(
                "`{path}` changed on main since the proposal was filed: file it again"
            ))
            .into());
        }
        out.push(change);
    }
    Ok(out)
}

/// What a checked-out `branch_ref` gets when the branch moves from `old`
/// to `new`: every file that differs, as [`checkout_of`] makes it.
pub fn checkouts_between(
    repo: &Repository,
    branch_ref: &str,
    old: Oid,
    new: Oid,
) -> Result<Vec<Checkout>, StoreError> {
    let (old, new) = (
        repo.find_commit(old)?.tree()?,
        repo.find_commit(new)?.tree()?,
    );
    crate::store::tree::changed_files(repo, Some(&old), Some(&new))?
        .iter()
        .map(|change| checkout_of(repo, branch_ref, change))
        .collect()
}

/// A changed file as a checked-out `branch_ref` gets it: its new content
/// read from its blob (a file that became something else than a file
/// counts as deleted).
fn checkout_of(
    repo: &Repository,
    branch_ref: &str,
    change: &crate::store::tree::FileChange,
) -> Result<Checkout, StoreError> {
    let content = match file_blob(change.new) {
        Some(id) => Some(repo.find_blob(id)?.content().to_vec()),
        None => None,
    };
    Ok(Checkout {
        branch: branch_ref.to_string(),
        path: change.path.clone(),
        content,
        was: file_blob(change.old),
    })
}

/// The blob of one side of a [`crate::store::tree::FileChange`] if it is
/// a file's (not a folder's, a link's or a submodule's).
fn file_blob(side: Option<(Oid, i32)>) -> Option<Oid> {
    side.filter(|(_, mode)| mode & 0o170000 == 0o100000)
        .map(|(id, _)| id)
}

/// Renames a proposal branch (keeping its content), e.g. to
/// `gov/rejected/<id>` (staged). A branch that is already gone is not an
/// error.
pub fn rename_branch(
    repo: &Repository,
    staged: &mut Staged,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    let (from, to) = (full_ref(from), full_ref(to));
    staged.rename(repo, &from, &to).map(|_| ())
}

/// When a branch is checked out, puts the files approvals added to it
/// into the working tree and the Git index too, so that `git status`
/// stays clean. Only approvals do this. The Git index holds every file of
/// the checkout and is read and written whole, so its cost grows with
/// `main`: the server's writers call this outside the writer lock, several
/// batches' files at once (`app::governance`). A file that cannot be
/// written is logged and left out (the commit is what counts); an error
/// means the Git index itself could not be read or written (a `git`
/// command holds its lock, say) and no file reached it: the caller tries
/// again later, or leaves it to the next server's start
/// ([`missing_from_checkout`]). Once every file of the checked-out branch
/// is there, the branch's tip is recorded as the commit the checkout was
/// brought up to (see [`crate::store::git::SYNCED_FILE`]), if the record
/// names the commit the files' changes start from: one left behind
/// (another process's files not there yet, a commit the operator made)
/// stays behind, which only makes the next server's look longer.
pub fn sync_worktree(repo: &Repository, to: &ForCheckout) -> Result<(), StoreError> {
    let Some(workdir) = repo.workdir() else {
        return Ok(());
    };
    let Some(head) = head_branch(repo) else {
        return Ok(());
    };
    {
        use crate::store::fault::{fire, Fault};
        if fire(repo.path(), Fault::BeforeCheckout) {
            return Err(
                git2::Error::from_str("injected fault: the checkout was not synced").into(),
            );
        }
    }
    let files: Vec<&Checkout> = to.files.iter().filter(|c| c.branch == head).collect();
    let mut all_there = true;
    if !files.is_empty() {
        // A `git` command writing the Git index: its lock would fail the
        // write below, after every file was written for nothing.
        let lock = repo.path().join("index.lock");
        if lock.exists() {
            return Err(StoreError::io(
                "lock",
                &lock,
                std::io::Error::new(std::io::ErrorKind::WouldBlock, "a git command holds it"),
            ));
        }
        // A handle kept from an earlier call keeps its Git index loaded:
        // read again only if someone (stock `git`) wrote the file since.
        let mut index = repo.index()?;
        index.read(false)?;
        let mut added = false;
        for c in files {
            match put_into_checkout(workdir, repo, &mut index, c) {
                Ok(()) => added = true,
                Err(e) => {
                    all_there = false;
                    tracing::warn!(path = c.path, error = %e, "an approved file was not put into the checkout")
                }
            }
        }
        if added {
            index.write()?;
        }
    }
    match &to.tip {
        Some((branch, tip))
            if *branch == head
                && all_there
                && to
                    .from
                    .is_none_or(|from| synced_to(repo, branch) == Some(from)) =>
        {
            record_synced(repo, branch, *tip)
        }
        _ => Ok(()),
    }
}

/// The branch `HEAD` names (`refs/heads/...`), if it names one.
fn head_branch(repo: &Repository) -> Option<String> {
    repo.find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().map(str::to_string))
}

/// What the working tree holds where a file goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum There {
    Nothing,
    /// A file, by its blob.
    File(Oid),
    /// A folder, a link, or a file in the way of a folder.
    Other,
}

impl There {
    fn look(file: &std::path::Path) -> Result<There, StoreError> {
        Ok(match std::fs::symlink_metadata(file) {
            Ok(m) if m.is_file() => There::File(Oid::hash_file(ObjectType::Blob, file)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => There::Nothing,
            _ => There::Other,
        })
    }
}

/// Puts one changed file into the working tree and its entry into the
/// Git index (not written), as a checkout of the new commit would have
/// it. What the working tree holds there is replaced only if it is what
/// the commit changed (or nothing): a file already as the commit has it
/// is only indexed, and the operator's own edits are kept, showing in
/// `git status` as changes to the new version.
fn put_into_checkout(
    workdir: &std::path::Path,
    repo: &Repository,
    index: &mut git2::Index,
    c: &Checkout,
) -> Result<(), StoreError> {
    let file = workdir.join(&c.path);
    let there = There::look(&file)?;
    let replaceable = there == There::Nothing || c.was.is_some_and(|was| there == There::File(was));
    let Some(content) = &c.content else {
        if replaceable && there != There::Nothing {
            std::fs::remove_file(&file).map_err(|e| StoreError::io("remove", &file, e))?;
        }
        return match index.remove_path(std::path::Path::new(&c.path)) {
            Err(e) if e.code() != git2::ErrorCode::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    };
    let new = Oid::hash_object(ObjectType::Blob, content)?;
    let meta = if there == There::File(new) {
        std::fs::metadata(&file).map_err(|e| StoreError::io("read", &file, e))?
    } else if replaceable {
        write_file(repo, &file, content).map_err(|e| StoreError::io("write", &file, e))?
    } else {
        // Stat data no file has: git compares the content and shows the
        // operator's edits.
        index.add(&unstatted_entry(&c.path, new, content.len()))?;
        return Ok(());
    };
    index.add(&index_entry(&c.path, new, &meta)?)?;
    Ok(())
}

/// A Git index entry for `path` with stat data no file has (times and
/// inode zero): git never takes the file for unchanged without reading
/// it.
fn unstatted_entry(path: &str, id: Oid, size: usize) -> git2::IndexEntry {
    let never = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: never,
        mtime: never,
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: size as u32,
        id,
        // Stage 0; libgit2 sets the name's length.
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// Writes `content` into `file` (its folders made as needed), dated back
/// (see [`backdate`]); the file's metadata.
fn write_file(
    repo: &Repository,
    file: &std::path::Path,
    content: &[u8],
) -> std::io::Result<std::fs::Metadata> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A new file is a spare one renamed into place (see `store::spare`);
    // one already there is rewritten.
    let mut f = match crate::store::spare::create_new(repo.path(), file) {
        Ok(f) => f,
        Err(_) => std::fs::File::create(file)?,
    };
    std::io::Write::write_all(&mut f, content)?;
    backdate(&f)?;
    f.metadata()
}

/// What [`missing_from_checkout`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// The changes of `main` the checkout lacks, for [`sync_worktree`];
    /// with `main`'s tip, which the sync records.
    pub files: ForCheckout,
    /// Those of `files` the working tree has something else at (the
    /// operator's, kept as it is).
    pub left: Vec<String>,
}

/// The changes of a checked-out `main` that the checkout's Git index
/// lacks because gov did not put them there. A server puts an approval's
/// files there a moment after its answer (`app::governance`), and a
/// process killed in between leaves them out: `git status` then shows an
/// approved proposal's file as deleted, or an approved policy change as
/// staged the other way round, and the next `git commit` would undo them
/// on `main`.
///
/// It looks at the files that differ between the commit gov last brought
/// the checkout up to ([`crate::store::git::SYNCED_FILE`]) and `main` (without that record,
/// at `main`'s `proposals/`): one whose Git index entry is still the old
/// one is left out; one indexed as `main` has it, or as something else
/// (the operator's own staging), is left alone. Only when `HEAD` names
/// `main_ref`, and never while the Git index holds a conflict (a merge
/// under way). A left-out file the working tree holds with other content
/// than before or after is the operator's: listed in `left` too (the
/// sync keeps it and indexes `main`'s). Its cost is that of the files
/// that changed since the record (none, after a clean stop); without the
/// record, about 1.6 µs a file of `main`'s `proposals/`
/// (docs/BENCHMARKS.md, the forty-second round).
pub fn missing_from_checkout(repo: &Repository, main_ref: &str) -> Result<Missing, StoreError> {
    let mut found = Missing::default();
    let Some(workdir) = repo.workdir() else {
        return Ok(found);
    };
    if head_branch(repo).as_deref() != Some(main_ref) {
        return Ok(found);
    }
    let Ok(main) = repo.refname_to_id(main_ref) else {
        return Ok(found);
    };
    let synced = synced_to(repo, main_ref);
    if synced == Some(main) {
        return Ok(found);
    }
    let mut index = repo.index()?;
    index.read(false)?;
    if index.has_conflicts() {
        return Ok(found);
    }
    let tree = repo.find_commit(main)?.tree()?;
    let changes = match synced.and_then(|c| repo.find_commit(c).ok()) {
        Some(synced) => {
            crate::store::tree::changed_files(repo, Some(&synced.tree()?), Some(&tree))?
        }
        None => proposals_files(repo, &tree)?,
    };
    for change in changes {
        let (was, new) = (file_blob(change.old), file_blob(change.new));
        let indexed = index
            .get_path(std::path::Path::new(&change.path), 0)
            .map(|e| e.id);
        // As `main` has it, or the operator's own staging: not gov's to
        // touch.
        if indexed == new || indexed != was {
            continue;
        }
        // Anything but the file before, after or nothing at all is the
        // operator's: kept, and shown by `git status` as changed.
        let there = There::look(&workdir.join(&change.path))?;
        let theirs = there != There::Nothing
            && [was, new]
                .iter()
                .flatten()
                .all(|id| there != There::File(*id));
        if theirs {
            found.left.push(change.path.clone());
        }
        found
            .files
            .files
            .push(checkout_of(repo, main_ref, &change)?);
    }
    found.files.tip = Some((main_ref.to_string(), main));
    found.files.from = synced;
    Ok(found)
}

/// Every file of `tree`'s `proposals/`, as added.
fn proposals_files(
    repo: &Repository,
    tree: &git2::Tree<'_>,
) -> Result<Vec<crate::store::tree::FileChange>, StoreError> {
    let mut files = Vec::new();
    let Some(proposals) = tree.get_name(PROPOSALS_DIR) else {
        return Ok(files);
    };
    let proposals = proposals.to_object(repo)?.peel_to_tree()?;
    proposals.walk(git2::TreeWalkMode::PreOrder, |folder, e| {
        if e.kind() == Some(ObjectType::Blob) {
            files.push(crate::store::tree::FileChange {
                path: format!("{PROPOSALS_DIR}/{folder}{}", e.name().unwrap_or_default()),
                old: None,
                new: Some((e.id(), e.filemode())),
            });
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(files)
}

/// The folder of `main` approved proposals' files are in.
const PROPOSALS_DIR: &str = "proposals";

/// Sets a file just written to have been modified a second earlier, so that
/// the Git index written next is newer than it and its entry is not
/// "racily clean". File times are coarse (a few milliseconds), so the
/// files of one sync were as new as the index written after them, and
/// every later write of the index had libgit2 diff them against the
/// working tree again (`truncate_racily_clean`): as much CPU as writing
/// the index itself. Any later change to the file gives it a newer time,
/// and the recorded entry no longer matches, as git expects.
fn backdate(file: &std::fs::File) -> std::io::Result<()> {
    // From the time the file system gave the write: the clock is read in
    // one place only (`app::clock`), and this is the file system's.
    let written = file.metadata()?.modified()?;
    let second_before = written - std::time::Duration::from_secs(1);
    file.set_times(std::fs::FileTimes::new().set_modified(second_before))
}

/// The Git index entry of a file just written with `content`, from what
/// is known: its blob id hashed from `content`, and its stat data. What
/// `add_path` would make, without reading the file back, hashing it
/// through the attribute and filter machinery (it loads `.gitattributes`
/// from every folder up the path), or statting it again: that was half
/// of putting an approval's file into the checkout. The mode follows the
/// file's execute bit, as git's does.
fn index_entry(
    path: &str,
    id: Oid,
    meta: &std::fs::Metadata,
) -> Result<git2::IndexEntry, git2::Error> {
    use std::os::unix::fs::MetadataExt;
    // The index keeps 32 bits of each of these, as git does.
    let time = |s: i64, ns: i64| git2::IndexTime::new(s as i32, ns as u32);
    let mode = if meta.mode() & 0o111 != 0 {
        0o100755
    } else {
        0o100644
    };
    Ok(git2::IndexEntry {
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        mode,
        uid: meta.uid(),
        gid: meta.gid(),
        file_size: meta.len() as u32,
        id,
        // Stage 0; libgit2 sets the name's length.
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::git::{commit_files, init_repo};
    use git2::Signature;

    /// The time the tests' commits are made at.
    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default()
    }

    fn sample() -> Result<Proposal, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "proposal_id": "p-1", "agent_id": "noop", "wave": 1,
            "submitted_at": "2026-11-25T08:00:00Z", "action_type": "publish_content",
            "payload": {}, "payload_hash": "h", "expected_outcome": "a post",
            "expected_cost_tokens": 0, "expected_cost_dollars": 0.0, "reversible": true,
            "requires_approval": true, "expires_at": "2026-11-26T08:00:00Z",
            "rationale": "", "links": [], "status": "pending", "decision": null,
            "decided_by": null, "decided_at": null, "decision_final": false,
        }))
    }

    /// A repository whose `main` holds one commit, with the key that
    /// signed it and its author.
    #[allow(
        clippy::type_complexity,
        reason = "a fixture's parts, each named where it is taken apart"
    )]
    fn with_main() -> Result<
        (
            tempfile::TempDir,
            Repository,
            SigningKey,
            Signature<'static>,
            Oid,
        ),
        Box<dyn std::error::Error>,
    > {
        let dir = tempfile::tempdir()?;
        let repo = init_repo(dir.path(), "main")?;
        let key = SigningKey::generate("t")?;
        let who = Signature::now("t", "t@gov")?;
        let files = [("a".to_string(), b"a".to_vec())];
        let base = commit_files(&repo, &key, &who, "refs/heads/main", None, &files, "one")?;
        Ok((dir, repo, key, who, base))
    }

    /// Stock `git ARGS…` run in `dir`.
    fn git_in(dir: &std::path::Path, args: &[&str]) -> std::io::Result<std::process::Output> {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
    }

    /// A file put into the checkout gets the index entry stock git would
    /// make for it: its blob, its mode, and stat data that `git
    /// diff-files` (which compares them and reads nothing) finds equal to
    /// the file's. So `git status` is clean without a refresh.
    #[test]
    fn a_file_put_into_the_checkout_is_indexed_as_git_indexes_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, repo, key, who, base) = with_main()?;
        repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
        let path = "proposals/2026/11/1d/p-1.toml";
        let content = b"approved = true\n".to_vec();
        let files = [(path.to_string(), content.clone())];
        let main = "refs/heads/main";
        commit_files(&repo, &key, &who, main, Some(base), &files, "two")?;
        let git = |args: &[&str]| git_in(dir.path(), args);
        let two = repo.refname_to_id(main)?;
        let to = ForCheckout {
            files: vec![Checkout::added(main, path, &content)],
            tip: Some((main.to_string(), two)),
            from: None,
        };
        // `commit_files` wrote the Git index as the commit's tree, and
        // recorded the checkout as up to it; so does a sync.
        assert_eq!(synced_to(&repo, main), Some(two));
        std::fs::remove_file(repo.path().join(crate::store::git::SYNCED_FILE))?;
        sync_worktree(&repo, &to)?;
        assert_eq!(synced_to(&repo, main), Some(two));
        let blob = Oid::hash_object(ObjectType::Blob, b"approved = true\n")?;
        let listed = git(&["ls-files", "--stage", path])?;
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout),
            format!("100644 {blob} 0\t{path}\n")
        );
        let stat = git(&["diff-files", "--quiet"])?;
        assert!(
            stat.status.success(),
            "the stat data differ from the file's"
        );
        let status = git(&["status", "--porcelain"])?;
        assert_eq!(String::from_utf8_lossy(&status.stdout), "");
        // Older than the index written after it: not "racily clean", so
        // the next write of the index does not look at it again.
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified());
        assert!(modified(&dir.path().join(path))? < modified(&repo.path().join("index"))?);
        Ok(())
    }

    /// Only a checked-out `main` is looked at, and not while a merge is
    /// under way (the Git index holds a conflict); a file there with
    /// other content is the operator's.
    #[test]
    fn files_are_missing_only_from_a_checked_out_main_outside_a_merge(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, repo, key, who, base) = with_main()?;
        repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
        let path = "proposals/2026/11/1d/p-1.toml";
        let files = [(path.to_string(), b"approved = true\n".to_vec())];
        let main = "refs/heads/main";
        // Committed with another branch checked out: the checkout's Git
        // index is left as it was, as a killed server leaves it.
        repo.reference("refs/heads/other", base, false, "test")?;
        repo.set_head("refs/heads/other")?;
        commit_files(&repo, &key, &who, main, Some(base), &files, "two")?;
        let file = dir.path().join(path);
        assert_eq!(missing_from_checkout(&repo, main)?, Missing::default());
        repo.set_head(main)?;
        let mut index = repo.index()?;
        let blob = repo.blob(b"a")?;
        let conflict = |stage: u16| git2::IndexEntry {
            flags: stage << 12,
            ..unstatted_entry("a", blob, 1)
        };
        for stage in 1..=3 {
            index.add(&conflict(stage))?;
        }
        assert!(index.has_conflicts());
        index.write()?;
        assert_eq!(missing_from_checkout(&repo, main)?, Missing::default());
        assert!(!file.exists());

        index.conflict_remove(std::path::Path::new("a"))?;
        assert!(!index.has_conflicts());
        index.write()?;
        let found = missing_from_checkout(&repo, main)?;
        let expected = ForCheckout {
            files: vec![Checkout::added(main, path, b"approved = true\n")],
            tip: Some((main.to_string(), repo.refname_to_id(main)?)),
            from: Some(base),
        };
        assert_eq!(found.files, expected);
        assert!(found.left.is_empty());
        // The same file already there: still `main`'s to index.
        std::fs::create_dir_all(file.parent().ok_or("no folder")?)?;
        std::fs::write(&file, b"approved = true\n")?;
        let found = missing_from_checkout(&repo, main)?;
        assert_eq!(found.files, expected);
        assert!(found.left.is_empty());
        std::fs::write(&file, "mine\n")?;
        let found = missing_from_checkout(&repo, main)?;
        assert_eq!(
            (found.files, found.left),
            (expected.clone(), vec![path.to_string()])
        );
        // Without the record of the commit the checkout was up to (as the
        // first commit left it), every file of `main`'s `proposals/`.
        let record = repo.path().join(crate::store::git::SYNCED_FILE);
        assert_eq!(synced_to(&repo, main), Some(base));
        std::fs::remove_file(record)?;
        let found = missing_from_checkout(&repo, main)?;
        let expected = ForCheckout {
            from: None,
            ..expected
        };
        assert_eq!(
            (found.files, found.left),
            (expected, vec![path.to_string()])
        );
        Ok(())
    }

    /// A repository with `main` checked out at a commit of `names`, each
    /// holding "NAME 1"; with that commit's tree and id.
    fn main_of_files(
        names: &[&str],
    ) -> Result<(tempfile::TempDir, Repository, Oid, Oid), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = init_repo(dir.path(), "main")?;
        let who = Signature::now("t", "t@gov")?;
        let tree = {
            let mut tb = repo.treebuilder(None)?;
            for name in names {
                tb.insert(name, repo.blob(format!("{name} 1\n").as_bytes())?, 0o100644)?;
            }
            tb.write()?
        };
        let base = repo.commit(
            Some("refs/heads/main"),
            &who,
            &who,
            "one",
            &repo.find_tree(tree)?,
            &[],
        )?;
        repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
        Ok((dir, repo, tree, base))
    }

    /// Commits onto `main` at `base` (without touching the checkout, as
    /// gov's commits are made) `changed` as "NAME 2" and `removed` gone.
    fn commit_without_checkout(
        repo: &Repository,
        base: Oid,
        changed: &[&str],
        removed: &[&str],
    ) -> Result<Oid, Box<dyn std::error::Error>> {
        let who = Signature::now("t", "t@gov")?;
        let base = repo.find_commit(base)?;
        let mut tb = repo.treebuilder(Some(&base.tree()?))?;
        for name in changed {
            tb.insert(name, repo.blob(format!("{name} 2\n").as_bytes())?, 0o100644)?;
        }
        for name in removed {
            tb.remove(name)?;
        }
        let tree = repo.find_tree(tb.write()?)?;
        Ok(repo.commit(Some("refs/heads/main"), &who, &who, "two", &tree, &[&base])?)
    }

    /// With the commit gov last brought the checkout up to recorded, the
    /// look covers every file changed since (a policy change's, not only
    /// proposals'): what the Git index still holds as before is left out,
    /// what the operator staged is theirs. Once synced, nothing is.
    #[test]
    fn a_checkout_is_caught_up_from_the_commit_it_was_last_brought_up_to(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, repo, _, base) = main_of_files(&["policy", "staged", "gone"])?;
        let main = "refs/heads/main";
        let up_to = |from: Option<Oid>, tip: Oid| ForCheckout {
            files: Vec::new(),
            tip: Some((main.to_string(), tip)),
            from,
        };
        sync_worktree(&repo, &up_to(None, base))?;
        assert_eq!(synced_to(&repo, main), Some(base));
        assert_eq!(missing_from_checkout(&repo, main)?, Missing::default());
        // Approved without the checkout taking it (a killed server).
        let two = commit_without_checkout(&repo, base, &["policy", "staged", "added"], &["gone"])?;
        let git = |args: &[&str]| -> Result<String, Box<dyn std::error::Error>> {
            Ok(String::from_utf8(git_in(dir.path(), args)?.stdout)?)
        };
        std::fs::write(dir.path().join("staged"), "staged by me\n")?;
        git(&["add", "staged"])?;

        let found = missing_from_checkout(&repo, main)?;
        let names: Vec<&str> = found.files.files.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(names, ["added", "gone", "policy"]);
        assert_eq!(found.files.tip, Some((main.to_string(), two)));
        assert_eq!(found.files.from, Some(base));
        assert!(found.left.is_empty());
        // A sync whose changes start elsewhere (another process's, whose
        // files from `base` on are not there yet) leaves the record.
        sync_worktree(&repo, &up_to(Some(two), two))?;
        assert_eq!(synced_to(&repo, main), Some(base));
        sync_worktree(&repo, &found.files)?;
        assert_eq!(git(&["status", "--porcelain"])?, "M  staged\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("policy"))?,
            "policy 2\n"
        );
        assert!(!dir.path().join("gone").exists());
        assert_eq!(synced_to(&repo, main), Some(two));
        assert_eq!(missing_from_checkout(&repo, main)?, Missing::default());
        Ok(())
    }

    /// A checked-out `main` gets what a commit changed (a policy change's
    /// files, not only the proposal's): a file as it was is replaced, one
    /// the working tree already has as the commit does is only indexed,
    /// a deleted one goes; the operator's own edits stay and show as
    /// changes, never as the commit undone in the Git index.
    #[test]
    fn a_checkout_gets_a_commit_s_changes_and_keeps_the_operator_s_edits(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let main = "refs/heads/main";
        let names = ["old", "already", "mine", "gone", "gone-mine"];
        let (dir, repo, base_tree, base) = main_of_files(&names)?;
        let base_tree = repo.find_tree(base_tree)?;
        commit_without_checkout(&repo, base, &names[..3], &names[3..])?;
        let file = |name: &str| dir.path().join(name);
        std::fs::write(file("already"), "already 2\n")?;
        std::fs::write(file("mine"), "my edits\n")?;
        std::fs::write(file("gone-mine"), "my edits\n")?;

        let changes: Vec<Checkout> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Checkout {
                branch: main.to_string(),
                path: name.to_string(),
                content: (i < 3).then(|| format!("{name} 2\n").into_bytes()),
                was: base_tree.get_name(name).map(|e| e.id()),
            })
            .collect();
        let changes = ForCheckout {
            files: changes,
            ..ForCheckout::default()
        };
        sync_worktree(&repo, &changes)?;
        let status = git_in(dir.path(), &["status", "--porcelain"])?;
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            " M mine\n?? gone-mine\n"
        );
        assert_eq!(std::fs::read_to_string(file("old"))?, "old 2\n");
        assert_eq!(std::fs::read_to_string(file("mine"))?, "my edits\n");
        assert!(!file("gone").exists());
        assert_eq!(std::fs::read_to_string(file("gone-mine"))?, "my edits\n");
        Ok(())
    }

    /// A proposal filed at the flat or the unbucketed monthly path by an
    /// older gov is still checked and merged at that path; a new one goes
    /// into its bucket of its month.
    #[test]
    fn older_layouts_are_read_and_new_files_go_to_a_bucket_of_their_month(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, repo, key, who, base) = with_main()?;
        let main_ref = "refs/heads/main";
        let p = sample()?;
        assert_eq!(p.file_path(), "proposals/2026/11/1d/p-1.toml");
        let monthly = vec![(p.monthly_file_path(), p.to_file().into_bytes())];
        let filed_monthly = commit_files(
            &repo,
            &key,
            &who,
            "refs/heads/monthly",
            Some(base),
            &monthly,
            "monthly",
        )?;
        assert_eq!(
            file_in_commit(&repo, filed_monthly, &p)?.map(|(path, _)| path),
            Some("proposals/2026/11/p-1.toml".to_string())
        );
        assert_eq!(
            check_untampered(&repo, &Staged::default(), "monthly", filed_monthly, &p)?
                .map(|f| f.path),
            Ok("proposals/2026/11/p-1.toml".to_string())
        );
        let old = vec![(Proposal::legacy_file_path("p-1"), p.to_file().into_bytes())];
        let legacy = commit_files(&repo, &key, &who, "refs/heads/old", Some(base), &old, "old")?;
        let staged = Staged::default();
        let found = check_untampered(&repo, &staged, "old", legacy, &p)?;
        let Ok(filed) = found else {
            return Err(format!("the legacy file is not found untampered: {found:?}").into());
        };
        assert_eq!(filed.path, "proposals/p-1.toml");
        assert_eq!(filed.content, p.to_file().into_bytes());
        let mut staged = Staged::default();
        let merge = merge_approved(
            &repo,
            &mut staged,
            (&key, at()),
            "op",
            main_ref,
            legacy,
            &p,
            filed,
            None,
        )?;
        staged.flush(&repo)?;
        assert_eq!(repo.refname_to_id(main_ref)?, merge);
        let tree = repo.find_commit(merge)?.tree()?;
        assert!(tree
            .get_path(std::path::Path::new("proposals/p-1.toml"))
            .is_ok());

        let mut staged = Staged::default();
        let filed = write_pending(
            &repo,
            &mut staged,
            (&key, at()),
            main_ref,
            ("gov/proposal/p-1", BranchName::Chosen),
            &p,
            None,
        )?;
        assert_eq!(
            staged.target(&repo, "refs/heads/gov/proposal/p-1")?,
            Some(filed),
            "the batch sees its own staged branch"
        );
        assert!(
            repo.find_reference("refs/heads/gov/proposal/p-1").is_err(),
            "not moved before the flush"
        );
        staged.flush(&repo)?;
        assert_eq!(
            file_in_commit(&repo, filed, &p)?.map(|(path, _)| path),
            Some("proposals/2026/11/1d/p-1.toml".to_string())
        );
        assert_eq!(repo.refname_to_id("refs/heads/gov/proposal/p-1")?, filed);
        Ok(())
    }

    /// A proposal's branch whose name nobody else can know is staged
    /// without a look on disk; if it exists after all, the flush fails and
    /// the branch is left as it was.
    #[test]
    fn a_branch_staged_unseen_is_still_checked_by_the_flush(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, repo, key, _, base) = with_main()?;
        let main_ref = "refs/heads/main";
        let p = sample()?;
        let branch = "gov/proposal/p-1";

        let mut staged = Staged::default();
        let filed = write_pending(
            &repo,
            &mut staged,
            (&key, at()),
            main_ref,
            (branch, BranchName::Drawn),
            &p,
            None,
        )?;
        assert_eq!(staged.target(&repo, &full_ref(branch))?, Some(filed));
        assert!(
            write_pending(
                &repo,
                &mut staged,
                (&key, at()),
                main_ref,
                (branch, BranchName::Drawn),
                &p,
                None,
            )
            .is_err(),
            "staged twice in one batch"
        );
        staged.flush(&repo)?;
        assert_eq!(repo.refname_to_id(&full_ref(branch))?, filed);
        assert_eq!(
            check_untampered(&repo, &Staged::default(), branch, filed, &p)?.map(|f| f.path),
            Ok(p.file_path())
        );

        let mut q = p.clone();
        q.proposal_id = "p-2".into();
        repo.reference(
            "refs/heads/gov/proposal/p-2",
            base,
            false,
            "made by someone",
        )?;
        let mut staged = Staged::default();
        let drawn = ("gov/proposal/p-2", BranchName::Drawn);
        write_pending(&repo, &mut staged, (&key, at()), main_ref, drawn, &q, None)?;
        assert!(matches!(
            staged.flush(&repo),
            Err(StoreError::RefMoved { .. })
        ));
        assert_eq!(repo.refname_to_id("refs/heads/gov/proposal/p-2")?, base);
        Ok(())
    }

    /// A pending commit made ahead of the batch is the one filed when it
    /// files the same proposal on main's tip as staged; made for another
    /// proposal or on a tip main has left, it is made again in the batch.
    #[test]
    fn a_commit_made_ahead_is_filed_only_for_its_proposal_and_tip(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, repo, key, who, base) = with_main()?;
        let main_ref = "refs/heads/main";
        let signer = (&key, at());
        let p = sample()?;
        let made = made_ahead(&repo, signer, base, p.clone())?;
        let ahead = made.commit;
        assert!(
            repo.find_commit(ahead).is_err(),
            "nothing written before a batch takes it"
        );
        let mut staged = Staged::default();
        let chosen = ("gov/proposal/p-1", BranchName::Chosen);
        let filed = write_pending(&repo, &mut staged, signer, main_ref, chosen, &p, Some(made))?;
        assert_eq!(filed, ahead);
        staged.flush(&repo)?;
        assert_eq!(repo.refname_to_id("refs/heads/gov/proposal/p-1")?, ahead);
        assert_eq!(repo.find_commit(ahead)?.parent_id(0)?, base);
        // Dated at the time it was given, in UTC: no look at the local zone.
        let when = repo.find_commit(ahead)?.committer().when();
        assert_eq!(
            (when.seconds(), when.offset_minutes()),
            (at().timestamp(), 0)
        );
        assert_eq!(
            check_untampered(&repo, &Staged::default(), "gov/proposal/p-1", ahead, &p)?
                .map(|f| f.path),
            Ok(p.file_path())
        );

        // Another proposal than the one made ahead.
        let mut q = p.clone();
        q.proposal_id = "p-2".into();
        let made = made_ahead(&repo, signer, base, p.clone())?;
        let mut staged = Staged::default();
        let drawn = ("gov/proposal/p-2", BranchName::Drawn);
        let filed = write_pending(&repo, &mut staged, signer, main_ref, drawn, &q, Some(made))?;
        staged.flush(&repo)?;
        assert!(file_in_commit(&repo, filed, &q)?.is_some());
        assert!(file_in_commit(&repo, filed, &p)?.is_none());

        // Main moved after the commit was made.
        let mut r = p.clone();
        r.proposal_id = "p-3".into();
        let made = made_ahead(&repo, signer, base, r.clone())?;
        let moved = commit_files(
            &repo,
            &key,
            &who,
            main_ref,
            Some(base),
            &[("README".into(), b"moved".to_vec())],
            "main moves",
        )?;
        let mut staged = Staged::default();
        let drawn = ("gov/proposal/p-3", BranchName::Drawn);
        let filed = write_pending(&repo, &mut staged, signer, main_ref, drawn, &r, Some(made))?;
        staged.flush(&repo)?;
        assert_eq!(repo.find_commit(filed)?.parent_id(0)?, moved);
        Ok(())
    }
}
