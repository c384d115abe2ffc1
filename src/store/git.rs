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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{ErrorCode, ObjectType, Oid, Repository, RepositoryInitOptions, Signature};

use crate::store::keys::{KeyError, SigningKey};
use crate::store::memory_odb::MemoryObjects;

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
    /// An entry that could not be read back; nothing was written.
    #[error("refusing to write an entry: {0}")]
    InvalidEntry(#[from] crate::domain::audit::EntryError),
    /// The chain or the index was changed behind gov's back; see
    /// `store::trust`. Writes stop until the operator recovers.
    #[error("the audit chain was tampered with: {0}")]
    Tampered(String),
}

impl StoreError {
    /// Whether the disk (or the file system's quota) is full: a write can
    /// succeed again once space is freed.
    pub fn is_storage_full(&self) -> bool {
        const NO_SPACE: &str = "No space left on device";
        match self {
            StoreError::Io { source, .. } => {
                // Some wrappers (tempfile, naming its path) keep the kind
                // but not the raw code.
                source.raw_os_error() == Some(libc::ENOSPC)
                    || source.raw_os_error() == Some(libc::EDQUOT)
                    || matches!(
                        source.kind(),
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                    )
            }
            StoreError::Git(e) => e.message().contains(NO_SPACE),
            StoreError::Index(e) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
                    || e.to_string().contains(NO_SPACE)
            }
            StoreError::Key(_)
            | StoreError::RefMoved { .. }
            | StoreError::BadEntry { .. }
            | StoreError::InvalidEntry(_)
            | StoreError::Tampered(_) => false,
        }
    }

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

/// [`signed_commit_of`] outside a batch, from objects: a loose commit, for
/// tests and benchmarks that forge or prepare history.
#[cfg(any(test, feature = "testkit"))]
pub fn signed_commit(
    repo: &Repository,
    key: &SigningKey,
    author: &Signature<'_>,
    tree: &git2::Tree<'_>,
    parents: &[&git2::Commit<'_>],
    message: &str,
) -> Result<Oid, StoreError> {
    let parents: Vec<Oid> = parents.iter().map(|p| p.id()).collect();
    let mut loose = Staged::default();
    signed_commit_of(repo, &mut loose, key, author, tree.id(), &parents, message)
}

/// A commit's author or committer, `name <email>`, dated `at` in UTC:
/// the time comes from the app's clock. `Signature::now` asked the C
/// library for the local offset on every commit, which read
/// `/etc/localtime`'s metadata each time, a system call per commit on
/// the writer's path.
pub fn signature_at(
    name: &str,
    email: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Signature<'static>, StoreError> {
    Ok(Signature::new(
        name,
        email,
        &git2::Time::new(at.timestamp(), 0),
    )?)
}

/// Writes a commit signed with `key` (author and committer both
/// `author`) through `staged` and returns its id; refs are not touched.
/// The commit is composed here, byte for byte
/// as libgit2 composes it (a test compares them), so that nothing is read
/// back from the object database to write it (an audit entry's parent,
/// the empty tree): the chain's writers do this once per entry.
pub fn signed_commit_of(
    repo: &Repository,
    staged: &mut Staged,
    key: &SigningKey,
    author: &Signature<'_>,
    tree: Oid,
    parents: &[Oid],
    message: &str,
) -> Result<Oid, StoreError> {
    let commit = NewCommit {
        author,
        tree,
        parents,
        message,
    };
    commit_signed_by(repo, staged, key, Nonce::Standard, commit)
}

/// A commit to write: its author (and committer), tree, parents and
/// message.
pub struct NewCommit<'a> {
    pub author: &'a Signature<'a>,
    pub tree: Oid,
    pub parents: &'a [Oid],
    pub message: &'a str,
}

/// How a commit's signature gets its nonce (see `store::keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonce {
    /// Derived from the message, as RFC 8032 does.
    Standard,
    /// One made ahead, if the key has one ready: for a commit signed
    /// where it holds up others (an audit entry in a writer's turn).
    Ahead,
}

/// [`signed_commit_of`], its signature's nonce as `nonce` says.
pub fn commit_signed_by(
    repo: &Repository,
    staged: &mut Staged,
    key: &SigningKey,
    nonce: Nonce,
    commit: NewCommit<'_>,
) -> Result<Oid, StoreError> {
    use std::fmt::Write;
    let NewCommit {
        author,
        tree,
        parents,
        message,
    } = commit;
    let name = author
        .name()
        .ok_or_else(|| git2::Error::from_str("the author's name is not UTF-8"))?;
    let email = author
        .email()
        .ok_or_else(|| git2::Error::from_str("the author's email is not UTF-8"))?;
    let when = author.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 || when.sign() == '-' {
        '-'
    } else {
        '+'
    };
    let who = format!(
        "{name} <{email}> {} {sign}{:02}{:02}",
        when.seconds(),
        offset.abs() / 60,
        offset.abs() % 60
    );
    let mut header = String::with_capacity(256 + message.len());
    let _ = writeln!(header, "tree {tree}");
    for p in parents {
        let _ = writeln!(header, "parent {p}");
    }
    let _ = writeln!(header, "author {who}");
    let _ = writeln!(header, "committer {who}");
    let mut signed_part = header.clone();
    signed_part.push('\n');
    signed_part.push_str(message);
    let signature = match nonce {
        Nonce::Standard => key.sign_git(signed_part.as_bytes())?,
        Nonce::Ahead => key.sign_git_ahead(signed_part.as_bytes())?,
    };
    // The signature goes in a `gpgsig` header field, each of its lines
    // after the first indented by one space.
    let mut content = header;
    content.push_str("gpgsig ");
    content.push_str(&signature.replace('\n', "\n "));
    content.push('\n');
    content.push('\n');
    content.push_str(message);
    staged.write(repo, git2::ObjectType::Commit, content.as_bytes())
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
        sync_one(&dir)?;
    }
    Ok(())
}

/// Writes, through `staged` (which records each new object), the tree of
/// `base` (none: the empty tree) with `changes` put in (`None`: taken out)
/// and a commit of it on `parents`, signed with `key` (author and
/// committer both `author`). Returns the commit.
#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the commit; a struct would only rename them"
)]
pub fn commit_with_changes(
    repo: &Repository,
    staged: &mut Staged,
    key: &SigningKey,
    author: &Signature<'_>,
    base: Option<Oid>,
    parents: &[Oid],
    changes: &[(String, Option<Oid>)],
    message: &str,
) -> Result<Oid, StoreError> {
    let tree = crate::store::tree::with_files(repo, staged, base, changes)?;
    signed_commit_of(repo, staged, key, author, tree, parents, message)
}

/// Writes `files` (as new blobs) on top of `parent`'s tree, without
/// `deleted`, and a signed commit of it on `parent` through `staged`.
#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the commit; a struct would only rename them"
)]
fn files_commit(
    repo: &Repository,
    staged: &mut Staged,
    key: &SigningKey,
    author: &Signature<'_>,
    parent: Option<Oid>,
    files: &[(String, Vec<u8>)],
    deleted: &[String],
    message: &str,
) -> Result<Oid, StoreError> {
    let base = match parent {
        Some(p) => Some(repo.find_commit(p)?.tree_id()),
        None => None,
    };
    let mut changes = Vec::with_capacity(files.len() + deleted.len());
    for (path, data) in files {
        changes.push((
            path.clone(),
            Some(staged.write(repo, ObjectType::Blob, data)?),
        ));
    }
    changes.extend(deleted.iter().map(|path| (path.clone(), None)));
    let parents: Vec<Oid> = parent.into_iter().collect();
    commit_with_changes(repo, staged, key, author, base, &parents, &changes, message)
}

/// [`commit_files`] inside a batch, which may also delete files
/// (`deleted`): the objects and the move of `refname` (from `parent`, or
/// created) are staged and made durable by the batch's flush. The working
/// tree and the Git index are left alone.
#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the commit; a struct would only rename them"
)]
pub fn stage_commit_files(
    repo: &Repository,
    staged: &mut Staged,
    key: &SigningKey,
    author: &Signature<'_>,
    refname: &str,
    parent: Option<Oid>,
    files: &[(String, Vec<u8>)],
    deleted: &[String],
    message: &str,
) -> Result<Oid, StoreError> {
    let commit = files_commit(repo, staged, key, author, parent, files, deleted, message)?;
    let expected = staged.target(repo, refname)?.and(parent);
    staged.set(repo, refname, Some(commit), expected)?;
    Ok(commit)
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
    let mut written = Staged::default();
    let commit = files_commit(repo, &mut written, key, author, parent, files, &[], message)?;
    // A branch that exists must still be at `parent`; one that does not is
    // created (a new branch on top of `parent`).
    let expected = match repo.refname_to_id(refname) {
        Ok(_) => parent,
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let log = message.lines().next().unwrap_or("commit");
    cas_ref(repo, refname, commit, expected, log)?;
    make_durable(repo, &written.object_ids(), Some(refname))?;
    let head_target = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().map(str::to_string));
    if head_target.as_deref() == Some(refname) {
        let mut index = repo.index()?;
        index.read_tree(&repo.find_commit(commit)?.tree()?)?;
        index.write()?;
        // The Git index is the commit's: the checkout is up to it.
        record_synced(repo, refname, commit)?;
    }
    Ok(commit)
}

use crate::store::pack::Content;

/// A file a commit changed on a branch, to put into the branch's working
/// tree and Git index when it is checked out
/// (`store::proposals::sync_worktree`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The branch's ref (`refs/heads/main`).
    pub branch: String,
    pub path: String,
    /// The file's content after the change; `None`: the change deleted it.
    pub content: Option<Vec<u8>>,
    /// The file's blob before the change; `None`: the change added it.
    pub was: Option<Oid>,
}

/// Files for checked-out branches ([`Checkout`]), and the commit the
/// branch they were taken up to is at once they are there: a sync that
/// puts every file records that commit
/// (`store::proposals::sync_worktree`), so that a later look for what a
/// killed process left out starts from there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForCheckout {
    pub files: Vec<Checkout>,
    /// The branch's ref and commit, after every file's change.
    pub tip: Option<(String, Oid)>,
    /// The branch's commit before the first file's change: the record
    /// moves to `tip` only from there, so that it never passes files
    /// another process has still to put there (`None`: from whatever it
    /// names, or none).
    pub from: Option<Oid>,
}

impl ForCheckout {
    /// Takes `later`'s files after these; its tip, if it has one.
    pub fn then(&mut self, later: ForCheckout) {
        if self.is_empty() {
            *self = later;
            return;
        }
        self.files.extend(later.files);
        if later.tip.is_some() {
            self.tip = later.tip;
        }
    }

    /// Whether there is nothing to do: no file, and no tip to record.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.tip.is_none()
    }
}

/// The file in the Git directory that names the commit gov last brought
/// the checkout up to: `<branch ref> <commit id>`. Written after the Git
/// index (never ahead of it), so a process killed in between leaves it
/// behind, which only makes the next look longer.
pub const SYNCED_FILE: &str = "gov-checkout";

/// Records that the checkout of `branch` holds every file of `tip` that
/// gov put there (see [`SYNCED_FILE`]); written whole, by a rename. The
/// record must never outlive a power cut that the Git index it speaks for
/// does not: the Git index, its name in the Git directory and the
/// record's own content are flushed to disk before the rename (on a file
/// system that does not keep renames in order, ext4 without a journal
/// for one, the rename could otherwise reach the disk first). The rename
/// itself is not flushed: lost, it leaves the older record, which only
/// makes the next look longer.
pub fn record_synced(repo: &Repository, branch: &str, tip: Oid) -> Result<(), StoreError> {
    let git_dir = repo.path();
    let file = git_dir.join(SYNCED_FILE);
    let fresh = git_dir.join(format!("{SYNCED_FILE}.new"));
    std::fs::write(&fresh, format!("{branch} {tip}\n"))
        .map_err(|e| StoreError::io("write", &fresh, e))?;
    let mut files = vec![fresh.clone()];
    let index = git_dir.join("index");
    if index.exists() {
        files.push(index);
    }
    sync_all_at_once(&files, &BTreeSet::from([git_dir.to_path_buf()]))?;
    std::fs::rename(&fresh, &file).map_err(|e| StoreError::io("write", &file, e))
}

/// The commit of `branch` the checkout was last brought up to, if
/// recorded (see [`SYNCED_FILE`]).
pub fn synced_to(repo: &Repository, branch: &str) -> Option<Oid> {
    let text = std::fs::read_to_string(repo.path().join(SYNCED_FILE)).ok()?;
    let (named, id) = text.trim_end().split_once(' ')?;
    (named == branch).then(|| Oid::from_str(id).ok()).flatten()
}

impl Checkout {
    /// A file the change added.
    pub fn added(branch: &str, path: &str, content: &[u8]) -> Checkout {
        Checkout {
            branch: branch.to_string(),
            path: path.to_string(),
            content: Some(content.to_vec()),
            was: None,
        }
    }
}

/// Objects a writer wrote into its batch's memory, to be encoded for the
/// batch's pack ahead of its flush ([`Staged::take_to_encode`]).
#[derive(Debug, Default)]
pub struct ToEncode(Vec<(Oid, Arc<Content>)>);

impl ToEncode {
    /// Hands the objects to this process's encoding thread, all at once
    /// ([`Content::encode_ahead`]): waking the thread is a system call and
    /// two context switches, so the combining writer hands over the
    /// objects of every turn it ran in one pass over the queue together.
    pub fn hand_over(self) {
        Content::encode_ahead(self.0);
    }
}

/// Where a [`Staged`]'s objects are written.
#[derive(Debug, Clone, Default)]
enum Sink {
    /// Through libgit2 (loose objects): outside a batch.
    #[default]
    Loose,
    /// Into a batch's handle's memory backend.
    Memory(Arc<MemoryObjects>),
    /// Nowhere: only kept, until a batch adopts them ([`Staged::held`]).
    Held,
}

/// What a batch of writes has staged and not yet made durable: the objects
/// it wrote (into its handle's memory; outside a batch, loose without
/// fsync) and the ref moves it decided on (not yet
/// applied). Writers read refs through it, so a later write of the same
/// batch sees an earlier one's moves; [`Staged::flush`] then writes the
/// objects as one pack, moves every ref in one transaction and flushes both.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    /// Where the objects written go.
    sink: Sink,
    /// Each object written, with its content when gov wrote it to memory
    /// (the flush packs it from there, without reading it back: a read
    /// through libgit2 hashes the object again to check it).
    objects: Vec<(Oid, Option<Arc<Content>>)>,
    /// Each ref touched: its value on disk when first touched, for the
    /// compare-and-swap at flush.
    base: BTreeMap<String, Option<Oid>>,
    /// Each ref touched: its staged value (`None`: deleted).
    now: BTreeMap<String, Option<Oid>>,
    /// Each ref read from disk in this batch, read once: a read is a file
    /// opened (and for an absent ref, `packed-refs` looked at), and a
    /// submission asked for `main` five times. A ref moved by someone else
    /// during the batch is still caught: the flush compares every ref it
    /// moves with the disk.
    disk: RefCell<BTreeMap<String, Option<Oid>>>,
    /// Files to put into a checked-out branch's working tree once the batch
    /// is durable.
    checkouts: Vec<Checkout>,
    /// The ref that records the batch (the audit chain): moved after every
    /// other ref, so an entry never exists without its Git change.
    record: Option<String>,
    /// Objects written to memory and not yet handed to the encoding
    /// thread ([`Staged::take_to_encode`]).
    to_encode: Vec<(Oid, Arc<Content>)>,
    /// Refs renamed ([`Staged::rename`]): the new name, then the old. A
    /// pair either of whose refs moved again is two plain moves at flush
    /// ([`Staged::plain_renames`] checks the pair against `base` and
    /// `now`).
    renames: BTreeMap<String, String>,
}

impl Staged {
    /// A batch that writes its objects into `memory`, the memory backend
    /// of the handle it is flushed through.
    pub fn in_memory(memory: Arc<MemoryObjects>) -> Staged {
        Staged {
            sink: Sink::Memory(memory),
            ..Staged::default()
        }
    }

    /// Objects made outside any batch (a pending proposal's commit, made
    /// ahead): kept in memory, written nowhere, until a batch takes them
    /// over ([`Staged::adopt`]). Nothing may be read back from it: the
    /// objects are in no repository.
    pub fn held() -> Staged {
        Staged {
            sink: Sink::Held,
            ..Staged::default()
        }
    }

    /// Writes the objects `held` keeps ([`Staged::held`]) for this batch,
    /// as [`Staged::write`] would have; it must be one that writes to
    /// memory or through libgit2, not one that holds.
    pub fn adopt(&mut self, repo: &Repository, held: Staged) -> Result<(), StoreError> {
        if matches!(self.sink, Sink::Held) {
            return Err(git2::Error::from_str("held objects adopted by a holder").into());
        }
        for (oid, content) in held.objects {
            let Some(content) = content else {
                return Err(git2::Error::from_str("an object made ahead has no content").into());
            };
            let written = self.write(repo, content.kind(), content.data())?;
            if written != oid {
                return Err(git2::Error::from_str(&format!(
                    "an object made ahead as {oid} was written as {written}"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Writes an object for this batch and records it: straight into the
    /// batch's memory, else through libgit2 (or only kept, when held).
    pub fn write(
        &mut self,
        repo: &Repository,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<Oid, StoreError> {
        let written = match &self.sink {
            Sink::Memory(memory) => {
                let oid = memory.write(kind, data)?;
                let content = Arc::new(Content::new(kind, data.to_vec()));
                self.to_encode.push((oid, content.clone()));
                (oid, Some(content))
            }
            Sink::Held => {
                let oid = crate::store::memory_odb::object_id(kind, data)?;
                (oid, Some(Arc::new(Content::new(kind, data.to_vec()))))
            }
            Sink::Loose => (repo.odb()?.write(kind, data)?, None),
        };
        let oid = written.0;
        self.objects.push(written);
        Ok(oid)
    }

    /// The objects written since the last call, for this process's
    /// encoding thread ([`ToEncode::hand_over`]). Objects never handed over
    /// are encoded by the flush.
    pub fn take_to_encode(&mut self) -> ToEncode {
        ToEncode(std::mem::take(&mut self.to_encode))
    }

    /// The ids of the objects written.
    pub fn object_ids(&self) -> Vec<Oid> {
        self.objects.iter().map(|(oid, _)| *oid).collect()
    }

    /// Puts a file the batch changes on a branch into the working tree
    /// (and the Git index) once the batch is durable, if that branch is
    /// checked out then.
    pub fn checkout_after(&mut self, change: Checkout) {
        self.checkouts.push(change);
    }

    /// How many files [`Staged::checkout_after`] asked for so far.
    pub fn checkouts(&self) -> usize {
        self.checkouts.len()
    }

    /// Takes the files [`Staged::checkout_after`] asked for, with their
    /// branch's staged commit and the one it moved from: the caller puts
    /// them into the working tree once the batch is durable
    /// (`store::proposals::sync_worktree`); [`Staged::flush`] never does.
    pub fn take_checkouts(&mut self) -> ForCheckout {
        let files = std::mem::take(&mut self.checkouts);
        let branch = files.last().map(|c| c.branch.clone());
        let on = |values: &BTreeMap<String, Option<Oid>>| {
            values.get(branch.as_ref()?).copied().flatten()
        };
        ForCheckout {
            tip: branch.clone().zip(on(&self.now)),
            from: on(&self.base),
            files,
        }
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.now.is_empty()
    }

    /// The staged value of `refname` (`None`: absent), else its value on disk.
    pub fn target(&self, repo: &Repository, refname: &str) -> Result<Option<Oid>, StoreError> {
        if let Some(v) = self.now.get(refname) {
            return Ok(*v);
        }
        self.on_disk(repo, refname)
    }

    /// The value of `refname` on disk as this batch first read it.
    pub fn on_disk(&self, repo: &Repository, refname: &str) -> Result<Option<Oid>, StoreError> {
        if let Some(v) = self.base.get(refname) {
            return Ok(*v);
        }
        if let Some(v) = self.disk.borrow().get(refname) {
            return Ok(*v);
        }
        let v = read_ref(repo, refname)?;
        self.disk.borrow_mut().insert(refname.to_string(), v);
        Ok(v)
    }

    /// Stages `refname` to move to `new` (`None`: delete) if it is now at
    /// `expected` (`None`: absent), as seen through the batch; anything else
    /// is [`StoreError::RefMoved`].
    pub fn set(
        &mut self,
        repo: &Repository,
        refname: &str,
        new: Option<Oid>,
        expected: Option<Oid>,
    ) -> Result<(), StoreError> {
        let found = self.target(repo, refname)?;
        if found != expected {
            return Err(ref_moved(refname, expected, found));
        }
        if !self.base.contains_key(refname) {
            let first = self.on_disk(repo, refname)?;
            self.base.insert(refname.to_string(), first);
        }
        self.now.insert(refname.to_string(), new);
        Ok(())
    }

    /// Stages `from` renamed to `to`, which must be absent: `to` made at
    /// `from`'s value and `from` deleted. Returns that value, or `None`
    /// (nothing staged) when `from` is absent. When `from` is a loose ref
    /// the flush moves its file (see [`Staged::flush`]).
    pub fn rename(
        &mut self,
        repo: &Repository,
        from: &str,
        to: &str,
    ) -> Result<Option<Oid>, StoreError> {
        let Some(oid) = self.target(repo, from)? else {
            return Ok(None);
        };
        self.set(repo, to, Some(oid), None)?;
        self.set(repo, from, None, Some(oid))?;
        self.renames.insert(to.to_string(), from.to_string());
        Ok(Some(oid))
    }

    /// The renames still standing as staged, each as (new name, old name,
    /// value): `to` made from nothing and `from` deleted from that value.
    fn plain_renames(&self) -> impl Iterator<Item = (&str, &str, Oid)> + '_ {
        self.renames.iter().filter_map(|(to, from)| {
            let value = self.now.get(to).copied().flatten()?;
            let made = self.base.get(to) == Some(&None);
            let deleted =
                self.now.get(from) == Some(&None) && self.base.get(from) == Some(&Some(value));
            (made && deleted).then_some((to.as_str(), from.as_str(), value))
        })
    }

    /// Stages the creation of `refname`, at `new`, without reading the
    /// disk: for a ref whose name nobody else can know yet (a branch named
    /// by an id this process drew at random). The flush still checks, as
    /// for every ref it moves, that the ref does not exist on disk.
    pub fn create_unknown(&mut self, refname: &str, new: Oid) -> Result<(), StoreError> {
        if self.base.contains_key(refname) || self.now.contains_key(refname) {
            let found = self.now.get(refname).copied().flatten();
            return Err(ref_moved(refname, None, found));
        }
        self.base.insert(refname.to_string(), None);
        self.now.insert(refname.to_string(), Some(new));
        Ok(())
    }

    /// [`Staged::set`] for the ref that records the batch (the audit
    /// chain), which [`Staged::flush`] moves last.
    pub fn set_record(
        &mut self,
        repo: &Repository,
        refname: &str,
        new: Option<Oid>,
        expected: Option<Oid>,
    ) -> Result<(), StoreError> {
        self.set(repo, refname, new, expected)?;
        self.record = Some(refname.to_string());
        Ok(())
    }

    /// Makes the batch durable, in three steps each flushed before the
    /// next: its objects in one pack (with the new ref values, still in
    /// their lock files), then every other ref moved, then the record ref
    /// (the audit chain). Each ref is locked first and checked against the
    /// value it had when first staged: a concurrent `git` command is
    /// detected, never overwritten. A loose ref renamed
    /// ([`Staged::rename`]) is its file moved to the new name
    /// ([`RefMove`]): a rejection then writes and flushes no file of its
    /// own. No reflog is written: the chain records every move.
    pub fn flush(self, repo: &Repository) -> Result<(), StoreError> {
        let moves: Vec<(&String, &Option<Oid>)> = self
            .now
            .iter()
            .filter(|(name, new)| self.base.get(*name) != Some(*new))
            .collect();
        if moves.is_empty() {
            if !self.objects.is_empty() {
                write_batch_pack(repo, &self.objects, &[])?;
            }
            return Ok(());
        }
        let git_dir = repo.path();
        let is_record = |name: &str| self.record.as_deref() == Some(name);
        // Folders that a new ref creates must be flushed in their parent.
        let mut change_dirs = BTreeSet::new();
        let mut record_dirs = BTreeSet::new();
        for (name, _) in &moves {
            let dirs = match is_record(name) {
                true => &mut record_dirs,
                false => &mut change_dirs,
            };
            let mut dir = git_dir.join(name.as_str());
            while let Some(parent) = dir.parent().map(Path::to_path_buf) {
                dirs.insert(parent.clone());
                if parent.exists() || parent == git_dir {
                    break;
                }
                dir = parent;
            }
        }
        // Every lock taken before anything moves: a moved ref gets a lock
        // file of its own holding the new value (see `RefLock`), and so
        // does a deleted loose ref; a deleted ref that `packed-refs` also
        // holds is locked through libgit2, which rewrites that file.
        let deleted = moves.iter().filter(|(_, new)| new.is_none());
        let packed = PackedRefs::read(git_dir, deleted.map(|(name, _)| name.as_str()))?;
        // A rename of a loose ref (a decided proposal's branch) moves the
        // ref's file: no new file is written or flushed.
        let renames: Vec<(&str, &str)> = self
            .plain_renames()
            .filter(|(_, from, value)| !packed.holds(from) && loose_holds(git_dir, from, *value))
            .map(|(to, from, _)| (to, from))
            .collect();
        let in_rename = |name: &str| {
            renames
                .iter()
                .any(|(to, from)| *to == name || *from == name)
        };
        let mut moved_files = Vec::new();
        for (to, from) in &renames {
            moved_files.push(RefMove {
                from: RefLock::acquire(git_dir, from, None)?,
                to: RefLock::acquire(git_dir, to, None)?,
            });
        }
        let mut locks: Vec<(&String, RefLock)> = Vec::new();
        let mut removals = repo.transaction()?;
        for (name, new) in &moves {
            match new {
                _ if in_rename(name) => {}
                None if packed.holds(name) => lock_ref_patiently(&mut removals, name)?,
                _ => locks.push((name, RefLock::acquire(git_dir, name, **new)?)),
            }
        }
        for (name, new) in &moves {
            let expected = self.base.get(*name).copied().flatten();
            let found = read_ref(repo, name)?;
            if found != expected {
                return Err(ref_moved(name, expected, found));
            }
            if new.is_none() && packed.holds(name) {
                removals.remove(name)?;
            }
        }
        // Objects first, flushed together with the new ref values (still
        // in their lock files, which nothing reads): a crash after this
        // leaves unreachable objects, never a ref to a missing one.
        // A moved ref file is not flushed again: its content is as durable
        // as it was (gov flushed it when it made the branch), and the
        // rename is flushed with the folders below.
        let lock_files: Vec<PathBuf> = locks.iter().filter_map(|(_, l)| l.to_flush()).collect();
        if self.objects.is_empty() {
            sync_all_at_once(&lock_files, &BTreeSet::new())?;
        } else {
            write_batch_pack(repo, &self.objects, &lock_files)?;
        }
        // Then the Git changes, flushed before the record (the audit
        // chain) moves: a crash or a failure in between leaves Git changes
        // that no entry records, which the next writer repairs
        // (`app::orphans`), never an entry whose Git change is missing.
        for moved in moved_files {
            moved.commit()?;
        }
        let mut record_lock = None;
        for (name, lock) in locks {
            match is_record(name) {
                true => record_lock = Some(lock),
                false => lock.commit()?,
            }
        }
        removals.commit()?;
        for (name, new) in &moves {
            // A `git pack-refs` run meanwhile may have packed a ref deleted
            // here as a loose one (our lock kept it from pruning it).
            if new.is_none() && !packed.holds(name) && read_ref(repo, name)?.is_some() {
                repo.find_reference(name)?.delete()?;
            }
        }
        // Deleting a ref may remove its emptied folders: flush the nearest
        // folder still there instead.
        let existing = |dirs: BTreeSet<PathBuf>| -> BTreeSet<PathBuf> {
            dirs.into_iter()
                .filter_map(|d| d.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf))
                .collect()
        };
        let git_changes = moves.iter().any(|(name, _)| !is_record(name));
        if git_changes {
            sync_all_at_once(&[], &existing(change_dirs))?;
        }
        {
            use crate::store::fault::{fire, Fault};
            if (git_changes && fire(git_dir, Fault::AfterGitRefs))
                || fire(git_dir, Fault::BeforeAuditRef)
            {
                return Err(
                    git2::Error::from_str("injected fault: the audit ref was not moved").into(),
                );
            }
        }
        if let Some(lock) = record_lock {
            lock.commit()?;
        }
        sync_all_at_once(&[], &existing(record_dirs))?;
        Ok(())
    }
}

/// A ref being moved the way git moves a loose ref: its lock file
/// `<ref>.lock` is created (exclusively: a `git` command holding it makes
/// us wait a little, then fail), the new value is written into it, and
/// [`RefLock::commit`] renames it over the ref. The caller flushes the lock
/// file before the commit and the folder after it, so the ref on disk is
/// never empty or half-written, even after a power cut. A loose ref is
/// deleted under its lock the same way (the file removed, then the lock).
/// Dropped without a commit, the lock file is removed and the ref is
/// untouched. The lock file is a spare file when one is ready
/// (`store::spare`).
pub struct RefLock {
    git_dir: PathBuf,
    lock: PathBuf,
    target: PathBuf,
    /// The new value; `None` deletes the ref.
    value: Option<Oid>,
    committed: bool,
}

impl RefLock {
    /// Takes `refname`'s lock in `git_dir` and writes `value` into it (not
    /// yet flushed); `None` readies the ref's deletion.
    pub fn acquire(
        git_dir: &Path,
        refname: &str,
        value: Option<Oid>,
    ) -> Result<RefLock, StoreError> {
        use std::io::Write;
        let target = git_dir.join(refname);
        let lock = git_dir.join(format!("{refname}.lock"));
        // Written whole from the start of the file.
        let line = value.map(ref_line);
        let value_len = line.as_ref().map_or(0, |l| l.len() as u64);
        let mut tries = 0;
        let mut file = loop {
            // A lock that deletes or renames the ref is never written: its
            // file is taken as it is, not opened.
            let made = match value {
                Some(_) => crate::store::spare::create_new_for(git_dir, &lock, value_len).map(Some),
                None => crate::store::spare::claim(git_dir, &lock).map(|()| None),
            };
            match made {
                Ok(f) => break f,
                // A new ref in a folder not there yet: made once, then again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries == 0 => {
                    tries += 1;
                    if let Some(dir) = target.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| StoreError::io("create", dir, e))?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(git2::Error::new(
                        ErrorCode::Locked,
                        git2::ErrorClass::Reference,
                        format!(
                            "the ref `{refname}` is locked by another process (`{}` exists)",
                            lock.display()
                        ),
                    )
                    .into())
                }
                Err(e) => return Err(StoreError::io("lock", &lock, e)),
            }
        };
        let held = RefLock {
            git_dir: git_dir.to_path_buf(),
            lock,
            target,
            value,
            committed: false,
        };
        if let (Some(line), Some(file)) = (line, file.as_mut()) {
            file.write_all(line.as_bytes())
                .map_err(|e| StoreError::io("write", &held.lock, e))?;
        }
        Ok(held)
    }

    /// The lock file to flush before [`RefLock::commit`], when it holds a
    /// new value.
    pub fn to_flush(&self) -> Option<PathBuf> {
        self.value.map(|_| self.lock.clone())
    }

    /// Renames the lock file over the ref, or deletes the ref and then
    /// the lock. The file replaced or deleted goes to the spare pool
    /// (`store::spare`) when there is one.
    pub fn commit(mut self) -> Result<(), StoreError> {
        use crate::store::spare;
        match self.value {
            Some(_) => {
                let kept = spare::keep_replaced(&self.git_dir, &self.target);
                if let Err(e) = std::fs::rename(&self.lock, &self.target) {
                    if let Some(kept) = kept {
                        spare::forget(&self.git_dir, &kept);
                    }
                    return Err(StoreError::io("move the ref", &self.target, e));
                }
            }
            None => match spare::recycle(&self.git_dir, &self.target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::io("delete the ref", &self.target, e))
                }
                _ => {
                    let _ = spare::release_lock(&self.git_dir, &self.lock);
                }
            },
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        if !self.committed {
            let _ = crate::store::spare::release_lock(&self.git_dir, &self.lock);
        }
    }
}

/// A loose ref renamed by moving its file (`rename(2)`, refusing to
/// replace), both names locked as git locks them (lock files nobody
/// writes or reads, removed once done or dropped). Readers see the ref
/// under one name or the other, never both or neither.
struct RefMove {
    from: RefLock,
    to: RefLock,
}

impl RefMove {
    fn commit(self) -> Result<(), StoreError> {
        crate::store::spare::rename_no_replace(&self.from.target, &self.to.target)
            .map_err(|e| StoreError::io("rename the ref", &self.from.target, e))
        // Both locks are removed as they drop.
    }
}

/// A loose ref's content as git writes it: the hex id and a newline.
fn ref_line(value: Oid) -> String {
    format!("{value}\n")
}

/// Whether the loose file of `refname` holds exactly [`ref_line`] of
/// `value`: not a symbolic ref, nothing else, so that moving the file
/// moves that value.
fn loose_holds(git_dir: &Path, refname: &str, value: Oid) -> bool {
    use std::io::Read;
    let line = ref_line(value);
    let mut found = Vec::with_capacity(line.len() + 1);
    // One byte more than the line: a longer file is not it.
    File::open(git_dir.join(refname))
        .and_then(|f| f.take(line.len() as u64 + 1).read_to_end(&mut found))
        .is_ok_and(|_| found == line.as_bytes())
}

/// The names `packed-refs` holds, read once per flush that deletes a ref
/// (under the chain lock, which gov's own ref packing also takes).
struct PackedRefs(std::collections::HashSet<String>);

impl PackedRefs {
    /// Which of `names` `packed-refs` holds (the file is read only when
    /// there are names to look for). Only those are kept: the file lists
    /// every packed ref, thousands of pending proposals' branches.
    fn read<'n>(
        git_dir: &Path,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<PackedRefs, StoreError> {
        let wanted: BTreeSet<&str> = names.into_iter().collect();
        if wanted.is_empty() {
            return Ok(PackedRefs(Default::default()));
        }
        let path = git_dir.join("packed-refs");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PackedRefs(Default::default()))
            }
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        let found = (|| -> std::io::Result<std::collections::HashSet<String>> {
            match SortedPackedRefs::open(&file)? {
                // The file grows with every decided proposal's branch:
                // each name is looked up in a few small reads.
                Some(sorted) => wanted
                    .into_iter()
                    .map(|name| Ok(sorted.holds(name)?.then(|| name.to_string())))
                    .filter_map(Result::transpose)
                    .collect(),
                None => {
                    let text = std::io::read_to_string(&file)?;
                    Ok(packed_names(&text)
                        .filter(|name| wanted.contains(name))
                        .map(str::to_string)
                        .collect())
                }
            }
        })()
        .map_err(|e| StoreError::io("read", &path, e))?;
        Ok(PackedRefs(found))
    }

    fn holds(&self, refname: &str) -> bool {
        self.0.contains(refname)
    }
}

/// A `packed-refs` file whose header says its refs are sorted (git and
/// libgit2 write it so, and so does gov): a ref is looked up by a binary
/// search over the file's lines, a few small reads instead of reading
/// the whole file.
struct SortedPackedRefs<'f> {
    file: &'f File,
    len: u64,
    /// The last stretch read from the file ([`Self::CHUNK`] bytes around
    /// the place asked for) and where it starts: a step of the search
    /// reads the end of one line and the next line whole, and the last
    /// steps stay within one stretch, so most reads are served from it
    /// (a lookup in a file of 1 MiB took about 50 reads of the disk
    /// cache, each a system call).
    chunk: std::cell::RefCell<(u64, Vec<u8>)>,
}

impl<'f> SortedPackedRefs<'f> {
    /// Bytes read at a time; a range this small is searched line by line.
    const WINDOW: u64 = 512;
    /// Bytes read from the file at once, centred on the place asked for.
    const CHUNK: u64 = 4096;

    /// `None` when the file does not say it is sorted.
    fn open(file: &'f File) -> std::io::Result<Option<Self>> {
        let len = file.metadata()?.len();
        let this = SortedPackedRefs {
            file,
            len,
            chunk: Default::default(),
        };
        let head = this.read(0, Self::WINDOW)?;
        let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let sorted = first.starts_with(b"# pack-refs with:")
            && first.split(|b| *b == b' ').any(|t| t == b"sorted");
        Ok(sorted.then_some(this))
    }

    /// The bytes `[from, from + n)`, fewer at the end of the file.
    fn read(&self, from: u64, n: u64) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let end = from.saturating_add(n).min(self.len);
        if from >= end {
            return Ok(Vec::new());
        }
        let held = |(at, bytes): &(u64, Vec<u8>)| {
            let i = usize::try_from(from.checked_sub(*at)?).ok()?;
            let j = usize::try_from(end - at).ok()?;
            bytes.get(i..j).map(<[u8]>::to_vec)
        };
        if let Some(bytes) = held(&self.chunk.borrow()) {
            return Ok(bytes);
        }
        let at = from.saturating_sub(Self::CHUNK / 2);
        let to = end.max(at.saturating_add(Self::CHUNK)).min(self.len);
        let mut chunk = vec![0u8; (to - at) as usize];
        self.file.read_exact_at(&mut chunk, at)?;
        let read = (at, chunk);
        let bytes = held(&read).ok_or_else(|| std::io::Error::other("a read past its stretch"))?;
        *self.chunk.borrow_mut() = read;
        Ok(bytes)
    }

    /// Where the first newline at or after `from` is; `None` if there is
    /// none before the end of the file.
    fn newline_from(&self, from: u64) -> std::io::Result<Option<u64>> {
        let mut pos = from;
        loop {
            let chunk = self.read(pos, Self::WINDOW)?;
            if chunk.is_empty() {
                return Ok(None);
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => return Ok(Some(pos + i as u64)),
                None => pos += chunk.len() as u64,
            }
        }
    }

    /// The first ref line (not the header, not a `^` peeled line) that
    /// starts at or after `at`, as its start and its ref name; `None` if
    /// there is none.
    fn ref_line_from(&self, at: u64) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        // A line starts at 0 or just after a newline.
        let mut start = match at {
            0 => 0,
            _ => match self.newline_from(at - 1)? {
                Some(newline) => newline + 1,
                None => return Ok(None),
            },
        };
        while start < self.len {
            let end = self.newline_from(start)?.unwrap_or(self.len);
            let line = self.read(start, end - start)?;
            if !line.starts_with(b"#") && !line.starts_with(b"^") {
                if let Some(i) = line.iter().position(|b| *b == b' ') {
                    return Ok(Some((start, line[i + 1..].to_vec())));
                }
            }
            start = end + 1;
        }
        Ok(None)
    }

    /// Whether the file holds a ref named `name`.
    fn holds(&self, name: &str) -> std::io::Result<bool> {
        let name = name.as_bytes();
        // The line naming it, if any, starts in [lo, hi).
        let (mut lo, mut hi) = (0u64, self.len);
        while hi - lo > Self::WINDOW {
            let mid = lo + (hi - lo) / 2;
            match self.ref_line_from(mid)? {
                Some((start, found)) if start < hi => match found.as_slice().cmp(name) {
                    std::cmp::Ordering::Equal => return Ok(true),
                    std::cmp::Ordering::Less => lo = start + 1,
                    std::cmp::Ordering::Greater => hi = start,
                },
                _ => hi = mid,
            }
        }
        let mut at = lo;
        while let Some((start, found)) = self.ref_line_from(at)? {
            if start >= hi || found.as_slice() > name {
                return Ok(false);
            }
            if found == name {
                return Ok(true);
            }
            at = start + 1;
        }
        Ok(false)
    }
}

/// The full names of the branches `refs/heads/<prefix>…`, loose or
/// packed. The loose ones are read off their folder, not opened one by one
/// as libgit2's listing does: a backlog of pending proposals is thousands
/// of files, and opening each was most of a server's start-up. A name may
/// be that of a ref a writer is replacing or deleting right now.
pub fn branch_names(repo: &Repository, prefix: &str) -> Result<BTreeSet<String>, StoreError> {
    let git_dir = repo.path();
    let full = format!("refs/heads/{prefix}");
    // The folder the names start in (`refs/heads/gov/proposal` for
    // `gov/proposal/`); a prefix may end inside a name.
    let folder = &full[..full.rfind('/').unwrap_or(full.len())];
    let mut names: BTreeSet<String> = loose_ref_names_under(git_dir, folder, &[])
        .map_err(|e| StoreError::io("list", &git_dir.join(folder), e))?
        .into_iter()
        .filter(|name| name.starts_with(&full))
        .collect();
    let text = packed_refs_text(git_dir)?;
    names.extend(
        packed_names(&text)
            .filter(|name| name.starts_with(&full))
            .map(str::to_string),
    );
    Ok(names)
}

/// The text of `packed-refs`; empty when there is none.
fn packed_refs_text(git_dir: &Path) -> Result<String, StoreError> {
    let path = git_dir.join("packed-refs");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(StoreError::io("read", &path, e)),
    }
}

/// The ref names `packed-refs` text holds: its lines are `<id> <refname>`;
/// `#` and `^<peeled id>` lines name none.
fn packed_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .filter_map(|l| l.split_once(' ').map(|(_, name)| name))
}

/// The names of the loose refs in `folder` of `git_dir` (such as `refs`)
/// and below, lock files aside, not looking into the folders
/// `skip_prefixes` name (such as `refs/heads/gov/proposal/`). A missing
/// `folder` holds none; one that cannot be read is an error, a folder below
/// it that cannot be read is left out.
pub(crate) fn loose_ref_names_under(
    git_dir: &Path,
    folder: &str,
    skip_prefixes: &[&str],
) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![git_dir.join(folder)];
    let mut top = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if top && e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {
                top = false;
                continue;
            }
        };
        top = false;
        for e in entries.flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            let Some(name) = path
                .strip_prefix(git_dir)
                .ok()
                .map(|rel| rel.to_string_lossy().into_owned())
            else {
                continue;
            };
            if kind.is_dir() {
                let folder = format!("{name}/");
                if !skip_prefixes.iter().any(|p| folder.starts_with(p)) {
                    stack.push(path);
                }
                continue;
            }
            if name.ends_with(".lock") || skip_prefixes.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            out.push(name);
        }
    }
    Ok(out)
}

/// Locks a ref for a transaction, waiting a little while someone else (a
/// maintenance pass packing refs, a `git` command) holds its lock.
fn lock_ref_patiently(tx: &mut git2::Transaction<'_>, refname: &str) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match tx.lock_ref(refname) {
            Err(e) if e.code() == ErrorCode::Locked && tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return Ok(other?),
        }
    }
}

fn read_ref(repo: &Repository, refname: &str) -> Result<Option<Oid>, StoreError> {
    match repo.refname_to_id(refname) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn ref_moved(refname: &str, expected: Option<Oid>, found: Option<Oid>) -> StoreError {
    let show = |o: Option<Oid>| o.map_or_else(|| "nothing".into(), |o| o.to_string());
    StoreError::RefMoved {
        refname: refname.to_string(),
        expected: show(expected),
        found: show(found),
    }
}

/// The settings a batch's repository handle reads on top of the
/// repository's own (a file in the Git directory; git itself never reads
/// it):
/// - no reflog for the refs a batch moves: a reflog is one more file per
///   new proposal branch and one more write per batch, and the audit chain
///   already records every move;
/// - no delta search in a batch's pack: the pack is small and short-lived
///   (maintenance repacks it with deltas); the search cost more CPU than
///   anything else in a write. libgit2 1.9 reads its big-file threshold
///   (objects above it are never deltified) from `pack.deltaCacheSize`,
///   git from `core.bigFileThreshold`: both are set.
const BATCH_CONFIG: &str =
    "# gov: read by gov's writers on top of the repository's config; git never reads it
[core]
\tlogAllRefUpdates = false
\tbigFileThreshold = 1
[pack]
\tdeltaCacheSize = 1
";

/// The file that holds [`BATCH_CONFIG`], in the Git directory.
const BATCH_CONFIG_FILE: &str = "gov-batch.config";

/// Makes `repo` (a handle opened for one batch) read [`BATCH_CONFIG`],
/// writing its file first if it is missing or different (atomically, from
/// a file of this thread's own: a concurrent writer, in this process or
/// another, writes the same bytes).
pub fn configure_for_batches(repo: &Repository) -> Result<(), StoreError> {
    let path = repo.path().join(BATCH_CONFIG_FILE);
    let current = || std::fs::read(&path).ok();
    if current().as_deref() != Some(BATCH_CONFIG.as_bytes()) {
        let tmp = repo.path().join(format!(
            "{BATCH_CONFIG_FILE}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, BATCH_CONFIG).map_err(|e| StoreError::io("write", &tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            if current().as_deref() != Some(BATCH_CONFIG.as_bytes()) {
                return Err(StoreError::io("write", &path, e));
            }
        }
    }
    repo.config()?
        .add_file(&path, git2::ConfigLevel::App, true)?;
    Ok(())
}

/// The folder that holds a repository's packs.
pub fn pack_dir(repo: &Repository) -> PathBuf {
    repo.path().join("objects").join("pack")
}

/// Writes `objects` (which must be in the object database) as one new pack
/// with its index (written by gov itself, without deltas: see
/// `store::pack`), flushes both (and `also_flush`, at the same time) and
/// the folder, then removes the loose copies (now redundant). Returns the
/// pack's path.
pub fn write_pack(
    repo: &Repository,
    objects: &[Oid],
    also_flush: &[PathBuf],
) -> Result<PathBuf, StoreError> {
    let pack = crate::store::pack::write_objects(repo, &pack_dir(repo), objects, also_flush)?;
    remove_loose(repo, objects);
    Ok(pack)
}

/// [`write_pack`] for a batch: its objects were written to memory (the
/// batch handle's mempack backend), so there are no loose copies to remove
/// (trying cost a failed `unlink` per object). An object that was loose
/// already stays so, redundant, until maintenance packs loose objects.
fn write_batch_pack(
    repo: &Repository,
    objects: &[(Oid, Option<Arc<Content>>)],
    also_flush: &[PathBuf],
) -> Result<PathBuf, StoreError> {
    let objects = objects.iter().map(|(oid, c)| (*oid, c.as_deref()));
    crate::store::pack::write_objects_with(repo, &pack_dir(repo), objects, also_flush)
}

/// [`write_pack`] through libgit2's pack builder, which searches for deltas
/// unless the handle's configuration says not to (see
/// [`configure_for_batches`]): for `gov maintain` by hand, which trades
/// time for a smaller repository.
pub fn write_pack_with_deltas(repo: &Repository, objects: &[Oid]) -> Result<PathBuf, StoreError> {
    let mut pb = repo.packbuilder()?;
    // Every core searches for deltas.
    pb.set_threads(0);
    for oid in objects {
        pb.insert_object(*oid, None)?;
    }
    let dir = pack_dir(repo);
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
    pb.write(&dir, 0o444)?;
    let name = pb
        .name()
        .ok_or_else(|| git2::Error::from_str("the pack builder named no pack"))?
        .to_string();
    let pack = dir.join(format!("pack-{name}.pack"));
    let idx = dir.join(format!("pack-{name}.idx"));
    sync_all_at_once(&[pack.clone(), idx], &BTreeSet::from([dir]))?;
    remove_loose(repo, objects);
    Ok(pack)
}

/// Removes the loose files of objects that a durable pack now holds. Best
/// effort: a copy left behind is only redundant.
pub fn remove_loose(repo: &Repository, objects: &[Oid]) {
    let objects_dir = repo.path().join("objects");
    for oid in objects {
        let hex = oid.to_string();
        let _ = std::fs::remove_file(objects_dir.join(&hex[..2]).join(&hex[2..]));
    }
}

/// Flushes files and folders, all in parallel, and returns once every one
/// is on disk: concurrent fsyncs share the file system's journal commits,
/// so a batch costs about one flush instead of one per file. Nothing may
/// depend on one of them being durable before the others: a caller that
/// needs an order (objects before the refs that name them) calls this once
/// per step.
pub fn sync_all_at_once(files: &[PathBuf], dirs: &BTreeSet<PathBuf>) -> Result<(), StoreError> {
    let paths: Vec<&Path> = files
        .iter()
        .map(PathBuf::as_path)
        .chain(dirs.iter().map(PathBuf::as_path))
        .collect();
    let Some((first, rest)) = paths.split_first() else {
        return Ok(());
    };
    // The others go to the flushing threads; the calling thread takes the
    // first itself, then waits once for all of theirs.
    let done = std::sync::Arc::new(flushers::Countdown::new(rest.len()));
    flushers::flush(rest.iter().map(|p| p.to_path_buf()), &done);
    let mine = sync_one(first);
    mine.and(done.wait())
}

/// Flushes one file or folder to disk.
fn sync_one(path: &Path) -> Result<(), StoreError> {
    let f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("sync", path, e))
}

/// The threads [`sync_all_at_once`] hands files to. They are kept between
/// calls: starting ten and joining them cost about 0.4 ms on this machine,
/// as much as the flushes they ran. There are as many as the most files
/// one call flushed at once (at most [`flushers::MAX`]); they wait for
/// work and live as long as the process. Each file handed over wakes one
/// idle thread, and the caller is woken once, when the last is done: a
/// context switch costs about 10 µs on this machine, and a queue behind a
/// lock woke a second thread per file (the lock handed on) and the caller
/// once per file (docs/BENCHMARKS.md, the forty-fourth round).
mod flushers {
    use std::collections::VecDeque;
    use std::path::PathBuf;
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

    use super::StoreError;

    /// At most this many flushing threads; more files wait their turn.
    pub const MAX: usize = 16;

    /// The outcome of a call's files: how many are still being flushed,
    /// and the first failure.
    pub struct Countdown {
        state: Mutex<(usize, Result<(), StoreError>)>,
        zero: Condvar,
    }

    impl Countdown {
        pub fn new(files: usize) -> Countdown {
            Countdown {
                state: Mutex::new((files, Ok(()))),
                zero: Condvar::new(),
            }
        }

        fn state(&self) -> MutexGuard<'_, (usize, Result<(), StoreError>)> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// One file flushed (or not); wakes the caller after the last.
        fn done(&self, outcome: Result<(), StoreError>) {
            let mut state = self.state();
            state.0 -= 1;
            if let (Ok(()), Err(e)) = (&state.1, outcome) {
                state.1 = Err(e);
            }
            if state.0 == 0 {
                self.zero.notify_one();
            }
        }

        /// Waits until every file is done: the first failure, if any.
        pub fn wait(&self) -> Result<(), StoreError> {
            let mut state = self.state();
            while state.0 > 0 {
                state = self.zero.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::replace(&mut state.1, Ok(()))
        }
    }

    type Job = (PathBuf, Arc<Countdown>);

    #[derive(Default)]
    struct Queue {
        jobs: VecDeque<Job>,
        threads: usize,
        /// Threads waiting for a job.
        idle: usize,
    }

    #[derive(Default)]
    struct Pool {
        queue: Mutex<Queue>,
        work: Condvar,
    }

    fn pool() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::default)
    }

    fn queue(pool: &Pool) -> MutexGuard<'_, Queue> {
        pool.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes `paths` on the flushing threads, each outcome counted down
    /// in `done`; in the calling thread if none can be started.
    pub fn flush(paths: impl Iterator<Item = PathBuf>, done: &Arc<Countdown>) {
        let pool = pool();
        let mut q = queue(pool);
        q.jobs.extend(paths.map(|p| (p, done.clone())));
        // The idle threads take the first jobs; new threads (up to MAX) the
        // others.
        let most = MAX.min(q.threads + q.jobs.len().saturating_sub(q.idle));
        while q.threads < most && start_thread(pool) {
            q.threads += 1;
        }
        if q.threads == 0 {
            let jobs = std::mem::take(&mut q.jobs);
            drop(q);
            for (path, done) in jobs {
                done.done(super::sync_one(&path));
            }
            return;
        }
        let wake = q.jobs.len().min(q.idle);
        drop(q);
        for _ in 0..wake {
            pool.work.notify_one();
        }
    }

    /// Starts one more flushing thread; whether it started.
    fn start_thread(pool: &'static Pool) -> bool {
        std::thread::Builder::new()
            .name("gov-flush".into())
            .spawn(move || loop {
                let mut q = queue(pool);
                let (path, done) = loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    q.idle += 1;
                    q = pool.work.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle -= 1;
                };
                drop(q);
                // A panic (none is expected) fails this file instead of
                // leaving its caller waiting for it for ever.
                let outcome =
                    std::panic::catch_unwind(|| super::sync_one(&path)).unwrap_or_else(|_| {
                        Err(StoreError::io(
                            "sync",
                            &path,
                            std::io::Error::other("the flushing thread panicked"),
                        ))
                    });
                done.done(outcome);
            })
            .is_ok()
    }
}

/// The empty tree, written if this repository does not have it yet (for
/// benchmarks that prepare history; the chain's writers stage it).
#[cfg(any(test, feature = "testkit"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Looked up by binary search, a sorted `packed-refs` holds exactly the
    /// names a full read finds, whatever the file's size and lines.
    #[test]
    fn a_sorted_packed_refs_is_searched_as_it_is_read() -> TestResult {
        let dir = tempfile::tempdir()?;
        for count in [0usize, 1, 2, 3, 10, 3_000] {
            let mut names: Vec<String> = (0..count)
                .map(|i| match i % 7 {
                    0 => format!("refs/heads/gov/proposal/{i:05}-{}", "x".repeat(i % 13)),
                    1 => format!("refs/tags/v{i}"),
                    // Longer than what the search reads at a time, and
                    // than what it keeps.
                    2 if i < 50 => {
                        format!("refs/heads/long/{}{i}", "y".repeat(1_500 + i % 2 * 4_000))
                    }
                    _ => format!("refs/heads/gov/rejected/{i:05}"),
                })
                .collect();
            names.sort();
            let mut text = String::from("# pack-refs with: peeled fully-peeled sorted \n");
            for (i, name) in names.iter().enumerate() {
                text.push_str(&format!("{:040x} {name}\n", i + 1));
                if name.starts_with("refs/tags/") {
                    text.push_str(&format!("^{:040x}\n", i + 7));
                }
            }
            let path = dir.path().join(format!("packed-refs-{count}"));
            std::fs::write(&path, &text)?;
            let file = File::open(&path)?;
            let sorted = SortedPackedRefs::open(&file)?.ok_or("not taken as sorted")?;
            let mut absent = vec![
                "refs/a".to_string(),
                "refs/zzz".to_string(),
                "refs/heads/gov/proposal/".to_string(),
                String::new(),
            ];
            for name in names.iter().step_by(17) {
                absent.push(format!("{name}0"));
                absent.push(name[..name.len() - 1].to_string());
            }
            let held: BTreeSet<&str> = packed_names(&text).collect();
            for name in &names {
                assert!(sorted.holds(name)?, "{count} refs: {name} not found");
            }
            for name in absent.iter().filter(|n| !held.contains(n.as_str())) {
                assert!(!sorted.holds(name)?, "{count} refs: {name} found");
            }
        }
        // A file that does not say it is sorted is read whole.
        let path = dir.path().join("packed-refs-unsorted");
        std::fs::write(
            &path,
            format!(
                "# pack-refs with: peeled \n{:040x} refs/b\n{:040x} refs/a\n",
                1, 2
            ),
        )?;
        assert!(SortedPackedRefs::open(&File::open(&path)?)?.is_none());
        std::fs::rename(&path, dir.path().join("packed-refs"))?;
        let packed = PackedRefs::read(dir.path(), ["refs/a", "refs/c"])?;
        assert!(packed.holds("refs/a") && !packed.holds("refs/c"));
        Ok(())
    }

    type Fixture = (
        tempfile::TempDir,
        Repository,
        SigningKey,
        Signature<'static>,
        Oid,
    );
    type Files = Vec<(String, Vec<u8>)>;
    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    #[test]
    fn flushes_more_files_than_threads_and_names_one_that_fails() -> TestResult {
        let dir = tempfile::tempdir()?;
        let files: Vec<PathBuf> = (0..flushers::MAX + 4)
            .map(|i| dir.path().join(format!("f{i}")))
            .collect();
        for f in &files {
            std::fs::write(f, b"x")?;
        }
        let dirs = BTreeSet::from([dir.path().to_path_buf()]);
        sync_all_at_once(&files, &dirs)?;
        // Again, with the threads already there, and one file missing.
        let missing = dir.path().join("missing");
        let mut with_missing = files.clone();
        with_missing.insert(3, missing.clone());
        let err = sync_all_at_once(&with_missing, &dirs)
            .err()
            .ok_or("no error")?;
        assert_eq!(
            err.to_string(),
            format!(
                "cannot open `{}`: No such file or directory (os error 2)",
                missing.display()
            )
        );
        Ok(())
    }

    #[test]
    fn callers_flushing_at_the_same_time_each_get_all_their_outcomes() -> TestResult {
        use std::sync::mpsc::{channel, Sender};
        type Outcome = Result<(), String>;
        // `rounds` calls of five files (and every third round a sixth that
        // is missing: that caller, and only it, hears of it), on a thread
        // of its own; its outcome goes to `done`. Waited for with a bound:
        // a flushing thread nobody wakes fails the test instead of hanging
        // it.
        fn caller(root: PathBuf, name: String, rounds: usize, done: Sender<Outcome>) {
            std::thread::spawn(move || {
                let dirs = BTreeSet::from([root.clone()]);
                let outcome = (0..rounds).try_for_each(|round| {
                    let files: Vec<PathBuf> = (0..5)
                        .map(|i| root.join(format!("{name}-{round}-{i}")))
                        .collect();
                    for f in &files {
                        std::fs::write(f, b"x").map_err(|e| e.to_string())?;
                    }
                    sync_all_at_once(&files, &dirs).map_err(|e| e.to_string())?;
                    if round % 3 == 0 {
                        let gone = root.join(format!("{name}-{round}-gone"));
                        let with_gone: Vec<PathBuf> =
                            files.iter().cloned().chain([gone.clone()]).collect();
                        let err = sync_all_at_once(&with_gone, &dirs)
                            .err()
                            .ok_or("no error for a missing file")?;
                        if !err.to_string().contains(&gone.display().to_string()) {
                            return Err(format!("another file's error: {err}"));
                        }
                    }
                    Ok(())
                });
                let _ = done.send(outcome);
            });
        }
        let dir = tempfile::tempdir()?;
        let wait = |rx: &std::sync::mpsc::Receiver<Outcome>, n: usize| -> TestResult {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            for _ in 0..n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                rx.recv_timeout(left)
                    .map_err(|_| "a caller's flushes never ended")??;
            }
            Ok(())
        };
        let (tx, rx) = channel();
        for c in 0..6 {
            caller(dir.path().to_path_buf(), format!("c{c}"), 20, tx.clone());
        }
        wait(&rx, 6)?;
        // Then a lone caller, once every flushing thread waits for work:
        // the idle threads are woken for its files.
        std::thread::sleep(std::time::Duration::from_millis(200));
        caller(dir.path().to_path_buf(), "lone".into(), 1, tx);
        wait(&rx, 1)
    }

    #[test]
    fn a_commit_composed_here_is_the_one_libgit2_composes() -> TestResult {
        let ((_dir, repo, key, _who, first), _) = repo_with_main()?;
        let tree = repo.find_commit(first)?.tree()?;
        let parent = repo.find_commit(first)?;
        for (offset, message) in [(0, "one line"), (-330, "two\n\nparagraphs\n"), (120, "")] {
            let when = git2::Time::new(1_764_000_000, offset);
            let who = Signature::new("gov server", "server@gov", &when)?;
            let buf = repo.commit_create_buffer(&who, &who, message, &tree, &[&parent])?;
            let content = buf.as_str().ok_or("not UTF-8")?;
            let signature = key.sign_git(content.as_bytes())?;
            let theirs = repo.commit_signed(content, &signature, Some("gpgsig"))?;
            // Written loose (outside a batch) and into a batch's memory.
            let mut loose = Staged::default();
            let ours =
                signed_commit_of(&repo, &mut loose, &key, &who, tree.id(), &[first], message)?;
            assert_eq!(ours, theirs, "offset {offset}, message {message:?}");
            let mut batch = Staged::in_memory(Arc::new(MemoryObjects::attach(&repo)?));
            let ours =
                signed_commit_of(&repo, &mut batch, &key, &who, tree.id(), &[first], message)?;
            assert_eq!(
                ours, theirs,
                "in memory: offset {offset}, message {message:?}"
            );
        }
        // A root commit (no parent) too.
        let who = Signature::new("gov server", "server@gov", &git2::Time::new(1, 0))?;
        let buf = repo.commit_create_buffer(&who, &who, "root", &tree, &[])?;
        let content = buf.as_str().ok_or("not UTF-8")?;
        let theirs =
            repo.commit_signed(content, &key.sign_git(content.as_bytes())?, Some("gpgsig"))?;
        let mut loose = Staged::default();
        assert_eq!(
            signed_commit_of(&repo, &mut loose, &key, &who, tree.id(), &[], "root")?,
            theirs
        );
        Ok(())
    }

    #[test]
    fn a_batch_writes_its_objects_to_memory_and_its_flush_packs_them() -> TestResult {
        let ((dir, repo, ..), _) = repo_with_main()?;
        let mut staged = Staged::in_memory(Arc::new(MemoryObjects::attach(&repo)?));
        let data = b"written by a batch\n";
        let oid = staged.write(&repo, ObjectType::Blob, data)?;
        assert_eq!(oid, Oid::hash_object(ObjectType::Blob, data)?);
        // Read back through the handle, from memory: no loose file.
        assert_eq!(repo.find_blob(oid)?.content(), data);
        let hex = oid.to_string();
        let loose = repo.path().join("objects").join(&hex[..2]).join(&hex[2..]);
        assert!(!loose.exists(), "{} was written", loose.display());
        // Another handle sees it only once the batch is flushed (a pack).
        assert!(Repository::open(dir.path())?.find_blob(oid).is_err());
        staged.flush(&repo)?;
        assert_eq!(
            Repository::open(dir.path())?.find_blob(oid)?.content(),
            data
        );
        assert!(!loose.exists());
        Ok(())
    }

    /// A repository whose `main` has one signed commit (of `a.txt`).
    fn repo_with_main() -> TestResult<(Fixture, Files)> {
        let dir = tempfile::tempdir()?;
        let repo = init_repo(dir.path(), "main")?;
        let key = SigningKey::generate("t")?;
        let who = Signature::now("t", "t@gov")?;
        let files = vec![("a.txt".to_string(), b"a\n".to_vec())];
        let c1 = commit_files(&repo, &key, &who, "refs/heads/main", None, &files, "one")?;
        Ok(((dir, repo, key, who, c1), files))
    }

    #[test]
    fn a_flush_writes_no_reflog_and_a_batch_handle_packs_without_deltas(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let ((dir, repo, _, _, c1), _) = repo_with_main()?;
        // A flush writes no reflog (the chain records every move), from a
        // plain handle ...
        let mut staged = Staged::default();
        staged.set(&repo, "refs/heads/gov/plain", Some(c1), None)?;
        staged.flush(&repo)?;
        assert_eq!(repo.refname_to_id("refs/heads/gov/plain")?, c1);
        assert!(!repo.path().join("logs/refs/heads/gov/plain").exists());
        // ... or a batch's handle, twice (the second time the settings
        // file is already there).
        for name in ["refs/heads/gov/one", "refs/heads/gov/two"] {
            let batch = Repository::open(dir.path())?;
            configure_for_batches(&batch)?;
            let mut staged = Staged::default();
            staged.set(&batch, name, Some(c1), None)?;
            staged.flush(&batch)?;
            assert_eq!(batch.refname_to_id(name)?, c1);
            assert!(!batch.path().join("logs").join(name).exists(), "{name}");
        }
        // The repository's own settings are untouched: git reads none of it.
        let own = Repository::open(dir.path())?.config()?.snapshot()?;
        assert!(own.get_i64("pack.deltaCacheSize").is_err());
        let batch = Repository::open(dir.path())?;
        configure_for_batches(&batch)?;
        let cfg = batch.config()?.snapshot()?;
        assert!(!cfg.get_bool("core.logAllRefUpdates")?);
        assert_eq!(cfg.get_i64("pack.deltaCacheSize")?, 1);
        Ok(())
    }

    #[test]
    fn a_ref_locked_by_someone_else_is_left_alone() -> TestResult {
        let ((_dir, repo, _, _, c1), _) = repo_with_main()?;
        // A `git` command holds the branch's lock.
        let lock = repo.path().join("refs/heads/gov/held.lock");
        std::fs::create_dir_all(repo.path().join("refs/heads/gov"))?;
        std::fs::write(&lock, b"")?;
        let mut staged = Staged::default();
        staged.set(&repo, "refs/heads/gov/held", Some(c1), None)?;
        staged.set(&repo, "refs/heads/gov/free", Some(c1), None)?;
        let err = staged
            .flush(&repo)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`refs/heads/gov/held` is locked by another process"),
            "{err}"
        );
        // Nothing moved, its lock is still there, and ours are gone.
        assert!(lock.exists());
        assert!(repo.refname_to_id("refs/heads/gov/held").is_err());
        assert!(repo.refname_to_id("refs/heads/gov/free").is_err());
        assert!(!repo.path().join("refs/heads/gov/free.lock").exists());
        // Once it is released the same flush goes through, and the ref
        // file is what git writes.
        std::fs::remove_file(&lock)?;
        let mut staged = Staged::default();
        staged.set(&repo, "refs/heads/gov/held", Some(c1), None)?;
        staged.flush(&repo)?;
        let written = std::fs::read_to_string(repo.path().join("refs/heads/gov/held"))?;
        assert_eq!(written, format!("{c1}\n"));
        Ok(())
    }

    /// Stock git packs every ref, keeping the loose files.
    fn git_pack_refs(dir: &Path) -> TestResult {
        let packed = std::process::Command::new("git")
            .args(["pack-refs", "--all", "--no-prune"])
            .current_dir(dir)
            .status()?;
        assert!(packed.success());
        Ok(())
    }

    #[test]
    fn loose_and_packed_refs_are_deleted() -> Result<(), Box<dyn std::error::Error>> {
        let ((dir, repo, _, _, c1), _) = repo_with_main()?;
        let mut staged = Staged::default();
        for name in ["refs/heads/gov/p/one", "refs/heads/gov/p/two"] {
            staged.set(&repo, name, Some(c1), None)?;
        }
        staged.flush(&repo)?;
        // Stock git packs both; `one` keeps its loose file too, `two` is
        // packed only; `three`, made afterwards, is loose only.
        git_pack_refs(dir.path())?;
        std::fs::remove_file(repo.path().join("refs/heads/gov/p/two"))?;
        let mut staged = Staged::default();
        staged.set(&repo, "refs/heads/gov/p/three", Some(c1), None)?;
        staged.flush(&repo)?;
        let names = [
            "refs/heads/gov/p/one",
            "refs/heads/gov/p/two",
            "refs/heads/gov/p/three",
        ];
        let mut staged = Staged::default();
        for name in names {
            staged.set(&repo, name, None, Some(c1))?;
        }
        staged.set(&repo, "refs/heads/gov/r/one", Some(c1), None)?;
        staged.flush(&repo)?;
        for name in names {
            assert!(repo.refname_to_id(name).is_err(), "{name}");
            assert!(!repo.path().join(name).exists(), "{name}");
            assert!(!repo.path().join(format!("{name}.lock")).exists());
        }
        assert_eq!(repo.refname_to_id("refs/heads/gov/r/one")?, c1);
        let listed = std::process::Command::new("git")
            .args(["for-each-ref", "--format=%(refname)", "refs/heads/gov/"])
            .current_dir(dir.path())
            .output()?;
        assert_eq!(String::from_utf8(listed.stdout)?, "refs/heads/gov/r/one\n");
        Ok(())
    }

    /// A rename of a loose ref moves its file: the new name is the same
    /// file (same inode), no lock file is left, and stock git sees the ref
    /// under the new name only.
    #[test]
    fn a_loose_ref_renamed_is_its_file_moved() -> TestResult {
        use std::os::unix::fs::MetadataExt;
        let ((dir, repo, _, _, c1), _) = repo_with_main()?;
        let (from, to) = ("refs/heads/gov/proposal/p1", "refs/heads/gov/rejected/p1");
        let mut staged = Staged::default();
        staged.set(&repo, from, Some(c1), None)?;
        staged.flush(&repo)?;
        let inode = std::fs::metadata(repo.path().join(from))?.ino();
        let mut staged = Staged::default();
        assert_eq!(staged.rename(&repo, from, to)?, Some(c1));
        // Read through the batch: moved already.
        assert_eq!(staged.target(&repo, to)?, Some(c1));
        assert_eq!(staged.target(&repo, from)?, None);
        staged.flush(&repo)?;
        assert_eq!(std::fs::metadata(repo.path().join(to))?.ino(), inode);
        assert!(!repo.path().join(from).exists());
        for name in [from, to] {
            assert!(!repo.path().join(format!("{name}.lock")).exists(), "{name}");
        }
        let listed = std::process::Command::new("git")
            .args([
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads/gov/",
            ])
            .current_dir(dir.path())
            .output()?;
        assert_eq!(String::from_utf8(listed.stdout)?, format!("{to} {c1}\n"));
        // Absent: nothing staged.
        let mut staged = Staged::default();
        assert_eq!(
            staged.rename(&repo, from, "refs/heads/gov/rejected/x")?,
            None
        );
        assert!(staged.is_empty());
        Ok(())
    }

    /// A rename the flush cannot do by moving a file (the ref packed, the
    /// file not as git writes it, the pair moved again in the batch) is
    /// done as a new ref and a deletion, with the same outcome.
    #[test]
    fn a_rename_that_cannot_move_a_file_still_renames() -> TestResult {
        use std::os::unix::fs::MetadataExt;
        let ((dir, repo, _, _, c1), _) = repo_with_main()?;
        let names = [
            "refs/heads/gov/proposal/packed",
            "refs/heads/gov/proposal/odd",
        ];
        let mut staged = Staged::default();
        for name in names {
            staged.set(&repo, name, Some(c1), None)?;
        }
        staged.flush(&repo)?;
        // `packed` is packed only; `odd` has no newline (git reads it).
        git_pack_refs(dir.path())?;
        std::fs::remove_file(repo.path().join(names[0]))?;
        std::fs::write(repo.path().join(names[1]), c1.to_string())?;
        let inode = std::fs::metadata(repo.path().join(names[1]))?.ino();
        let mut staged = Staged::default();
        for name in names {
            let to = name.replace("/proposal/", "/rejected/");
            assert_eq!(staged.rename(&repo, name, &to)?, Some(c1));
        }
        staged.flush(&repo)?;
        for name in names {
            let to = name.replace("/proposal/", "/rejected/");
            assert!(repo.refname_to_id(name).is_err(), "{name}");
            assert_eq!(repo.refname_to_id(&to)?, c1);
            assert_eq!(
                std::fs::read_to_string(repo.path().join(&to))?,
                format!("{c1}\n")
            );
        }
        let odd = repo.path().join("refs/heads/gov/rejected/odd");
        assert_ne!(std::fs::metadata(odd)?.ino(), inode);
        // Renamed, then the new name moved on in the same batch: two plain
        // moves.
        let (from, to) = (
            "refs/heads/gov/proposal/again",
            "refs/heads/gov/rejected/again",
        );
        let mut staged = Staged::default();
        staged.set(&repo, from, Some(c1), None)?;
        staged.flush(&repo)?;
        let mut staged = Staged::default();
        staged.rename(&repo, from, to)?;
        staged.set(&repo, to, None, Some(c1))?;
        staged.flush(&repo)?;
        assert!(repo.refname_to_id(from).is_err());
        assert!(repo.refname_to_id(to).is_err());
        Ok(())
    }

    #[test]
    fn branch_names_are_those_git_lists() -> TestResult {
        let ((dir, repo, _, _, c1), _) = repo_with_main()?;
        for name in [
            "gov/proposal/a",
            "gov/proposal/b",
            "gov/proposals-x",
            "gov/other/c",
        ] {
            repo.reference(&format!("refs/heads/{name}"), c1, false, "")?;
        }
        // `a` packed only, `b` packed and loose; then a loose one, one in a
        // folder below, and a lock file a writer left.
        git_pack_refs(dir.path())?;
        std::fs::remove_file(repo.path().join("refs/heads/gov/proposal/a"))?;
        repo.reference("refs/heads/gov/proposal/d", c1, false, "")?;
        repo.reference("refs/heads/gov/proposal/sub/e", c1, false, "")?;
        std::fs::write(repo.path().join("refs/heads/gov/proposal/f.lock"), "")?;
        // What libgit2's listing (which opens each loose ref) gives.
        let listed = |prefix: &str| -> TestResult<Vec<String>> {
            let mut names = Vec::new();
            for name in repo
                .references_glob(&format!("refs/heads/{prefix}*"))?
                .names()
            {
                names.push(name?.to_string());
            }
            names.sort();
            Ok(names)
        };
        let names = |prefix: &str| -> TestResult<Vec<String>> {
            Ok(branch_names(&repo, prefix)?.into_iter().collect())
        };
        assert_eq!(
            names("gov/proposal/")?,
            [
                "refs/heads/gov/proposal/a",
                "refs/heads/gov/proposal/b",
                "refs/heads/gov/proposal/d",
                "refs/heads/gov/proposal/sub/e",
            ]
        );
        assert_eq!(names("gov/proposal/")?, listed("gov/proposal/")?);
        // A prefix that ends inside a name.
        assert_eq!(
            names("gov/proposal")?,
            [
                "refs/heads/gov/proposal/a",
                "refs/heads/gov/proposal/b",
                "refs/heads/gov/proposal/d",
                "refs/heads/gov/proposal/sub/e",
                "refs/heads/gov/proposals-x",
            ]
        );
        assert_eq!(names("gov/proposal")?, listed("gov/proposal")?);
        assert!(names("gov/none/")?.is_empty());
        Ok(())
    }

    #[test]
    fn cas_refuses_a_moved_ref() -> Result<(), Box<dyn std::error::Error>> {
        let ((_dir, repo, key, who, c1), _) = repo_with_main()?;
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

    #[test]
    fn a_batch_reads_a_ref_once_and_its_flush_still_catches_a_move() -> TestResult {
        let ((dir, repo, key, who, c1), _) = repo_with_main()?;
        let mut staged = Staged::default();
        assert_eq!(staged.target(&repo, "refs/heads/main")?, Some(c1));
        // `git` moves main behind the batch's back.
        let other = Repository::open(dir.path())?;
        let files = vec![("b.txt".to_string(), b"b\n".to_vec())];
        let c2 = commit_files(
            &other,
            &key,
            &who,
            "refs/heads/main",
            Some(c1),
            &files,
            "two",
        )?;
        // The batch keeps what it read (one moment for all its writers)...
        assert_eq!(staged.target(&repo, "refs/heads/main")?, Some(c1));
        assert_eq!(staged.on_disk(&repo, "refs/heads/main")?, Some(c1));
        let tree = repo.find_commit(c1)?.tree_id();
        let c3 = signed_commit_of(&repo, &mut staged, &key, &who, tree, &[c1], "three")?;
        staged.set(&repo, "refs/heads/main", Some(c3), Some(c1))?;
        // ...and its flush compares with the disk: the move is kept.
        let err = staged
            .flush(&repo)
            .err()
            .ok_or("the flush overwrote a move")?;
        assert!(matches!(err, StoreError::RefMoved { .. }), "{err:?}");
        assert_eq!(repo.refname_to_id("refs/heads/main")?, c2);
        Ok(())
    }
}
