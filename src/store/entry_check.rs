//! Which entries may change state: only signed ones, by a key in the role
//! the entry's kind needs.
//!
//! The index projects an entry only after [`EntryCheck::check`] accepted
//! it: a good signature by a key of `policies/allowed_signers` as `main`'s
//! tip has it (the working file when `main` has none), in the server or
//! watchdog role (the approver role for an `audit_recovered` entry, which
//! records the operator's own decision), a message that parses, a sequence
//! number one above its parent's and the empty tree. Anything else is
//! tampering ([`StoreError::Tampered`]): the caller stops writing and keeps
//! what it has as evidence.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::domain::audit::AuditEntry;
use crate::store::audit::{read_entry, ChainEntry};
use crate::store::git::{StoreError, EMPTY_TREE};
use crate::store::keys::{AllowedSigners, Prepared, Role, SignatureCheck, SignersError};

/// The event type of the entry `gov audit recover` appends, signed by the
/// operator's approver key.
pub const RECOVERY_EVENT: &str = "audit_recovered";

/// The roles that may sign an entry of `event_type`.
pub fn signer_roles(event_type: &str) -> &'static [Role] {
    if event_type == RECOVERY_EVENT {
        &[Role::Approver]
    } else {
        &[Role::Server, Role::Watchdog]
    }
}

/// Where the allowed signers come from: `main`'s tip, else the working file.
#[derive(Debug, Clone)]
pub struct SignersSource {
    pub main_ref: String,
    pub file: PathBuf,
}

/// Why the allowed signers cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadSignersError {
    #[error(transparent)]
    Signers(#[from] SignersError),
    #[error("no allowed signers: `policies/allowed_signers` is neither on `{main_ref}` nor in the working tree")]
    Missing { main_ref: String },
}

impl SignersSource {
    /// The allowed signers as `main`'s tip has them, else the working file.
    pub fn load(&self, repo: &Repository) -> Result<AllowedSigners, LoadSignersError> {
        let on_main = repo
            .refname_to_id(&self.main_ref)
            .ok()
            .and_then(|id| repo.find_commit(id).ok())
            .and_then(|c| c.tree().ok())
            .and_then(|t| t.get_path(Path::new("policies/allowed_signers")).ok())
            .and_then(|e| repo.find_blob(e.id()).ok())
            .map(|b| String::from_utf8_lossy(b.content()).into_owned());
        match on_main {
            Some(text) => Ok(AllowedSigners::parse(&self.file, &text)?),
            None if self.file.is_file() => Ok(AllowedSigners::load(&self.file)?),
            None => Err(LoadSignersError::Missing {
                main_ref: self.main_ref.clone(),
            }),
        }
    }

    fn main_tip(&self, repo: &Repository) -> Option<Oid> {
        repo.refname_to_id(&self.main_ref).ok()
    }
}

/// Checks one commit's signature against the allowed signers.
pub fn signature_status(
    repo: &Repository,
    signers: &AllowedSigners,
    commit: Oid,
) -> SignatureCheck {
    let checked = signature_statuses(repo, signers, &[commit]);
    checked
        .into_iter()
        .next()
        .unwrap_or(SignatureCheck::Missing)
}

/// Checks each of `commits`' signatures against the allowed signers, in
/// batches (see [`AllowedSigners::check_all`]); the verdicts in order.
pub fn signature_statuses(
    repo: &Repository,
    signers: &AllowedSigners,
    commits: &[Oid],
) -> Vec<SignatureCheck> {
    // The raw object, split here: libgit2's `git_commit_extract_signature`
    // scans the object for line ends as a C string, and an object read
    // from a batch's memory backend is not NUL-terminated, so the signed
    // data it gave could run on past the object's end.
    let odb = match repo.odb() {
        Ok(odb) => odb,
        Err(e) => {
            let bad = SignatureCheck::Bad(format!("cannot read the signature: {e}"));
            return vec![bad; commits.len()];
        }
    };
    let mut checks = Vec::with_capacity(commits.len());
    for part in commits.chunks(READ_CHUNK) {
        let prepared = part.iter().map(|commit| match odb.read(*commit) {
            Ok(object) if object.kind() == git2::ObjectType::Commit => {
                signature_prepared(signers, as_libgit2_reads(object.data()))
            }
            Ok(_) => Prepared::Done(SignatureCheck::Bad(
                "cannot read the signature: not a commit".into(),
            )),
            Err(e) => Prepared::Done(SignatureCheck::Bad(format!(
                "cannot read the signature: {e}"
            ))),
        });
        checks.extend(signers.check_all(prepared.collect()));
    }
    checks
}

/// A raw commit as libgit2 reads it: up to the first NUL byte.
fn as_libgit2_reads(data: &[u8]) -> &[u8] {
    &data[..data.iter().position(|b| *b == 0).unwrap_or(data.len())]
}

/// The signature of the raw commit `data`, read and matched to its signer
/// (see [`AllowedSigners::prepare`]).
fn signature_prepared(signers: &AllowedSigners, data: &[u8]) -> Prepared {
    match split_signature(data) {
        Ok(Some((sig, signed))) => match std::str::from_utf8(&sig) {
            Ok(s) => signers.prepare(s, &signed),
            Err(_) => Prepared::Done(SignatureCheck::Bad("signature is not text".into())),
        },
        Ok(None) => Prepared::Done(SignatureCheck::Missing),
        Err(Malformed) => Prepared::Done(SignatureCheck::Bad(
            "cannot read the signature: malformed header".into(),
        )),
    }
}

/// What the chain's checks need of one commit, off its header.
#[derive(Debug, Clone, Copy)]
pub struct ChainCommit {
    pub oid: Oid,
    /// Whether its tree is git's empty tree.
    pub empty_tree: bool,
    pub parent_count: usize,
    /// The role its committer identity claims (not proof).
    pub claimed: Option<Role>,
}

impl ChainCommit {
    /// The fields of raw commit `oid` (its `data` as libgit2 reads it), off
    /// its header as libgit2 parses one: the `tree` line, the `parent`
    /// lines, an `author` line, then the `committer` line (its e-mail
    /// between the line's last `<` and last `>`); with its first parent.
    fn of_raw(oid: Oid, data: &[u8]) -> Result<(ChainCommit, Option<Oid>), StoreError> {
        let bad = |what: &str| StoreError::BadEntry {
            commit: oid.to_string(),
            reason: format!("cannot read the commit: {what}"),
        };
        let id = |hex: &[u8]| {
            std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.len() == 40)
                .and_then(|h| Oid::from_str(h).ok())
        };
        let mut lines = data.split(|b| *b == b'\n');
        let tree = lines
            .next()
            .and_then(|l| l.strip_prefix(b"tree "))
            .filter(|hex| id(hex).is_some())
            .ok_or_else(|| bad("no tree line"))?;
        let mut parents = Vec::new();
        let mut line = lines.next();
        while let Some(parent) = line.and_then(|l| l.strip_prefix(b"parent ")) {
            parents.push(id(parent).ok_or_else(|| bad("a malformed parent line"))?);
            line = lines.next();
        }
        if !line.is_some_and(|l| l.starts_with(b"author ")) {
            return Err(bad("no author line"));
        }
        let committer = lines
            .next()
            .and_then(|l| l.strip_prefix(b"committer "))
            .ok_or_else(|| bad("no committer line"))?;
        let open = committer.iter().rposition(|b| *b == b'<');
        let close = committer.iter().rposition(|b| *b == b'>');
        let email = match (open, close) {
            (Some(o), Some(c)) if o < c => &committer[o + 1..c],
            _ => return Err(bad("a malformed committer")),
        };
        // Trimmed of what libgit2 takes for whitespace (with `\v`, which
        // Rust's ASCII trim keeps).
        let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
        let start = email.iter().position(|b| !space(b)).unwrap_or(email.len());
        let end = email
            .iter()
            .rposition(|b| !space(b))
            .map_or(start, |i| i + 1);
        let claimed = std::str::from_utf8(&email[start..end])
            .ok()
            .and_then(crate::store::audit::role_from_email);
        let commit = ChainCommit {
            oid,
            empty_tree: tree.eq_ignore_ascii_case(EMPTY_TREE.as_bytes()),
            parent_count: parents.len(),
            claimed,
        };
        Ok((commit, parents.first().copied()))
    }
}

/// One commit of the chain as [`read_chain`] read it; its signature
/// checked (`S`: [`Prepared`] before its chunk's batch is checked).
#[derive(Debug)]
pub struct ReadCommit<S = SignatureCheck> {
    pub commit: ChainCommit,
    /// Its first parent, the commit before it on the chain.
    pub first_parent: Option<Oid>,
    /// The entry its message holds (its signer: the role the committer
    /// claims); `None` when the message is not a valid entry.
    pub entry: Option<ChainEntry>,
    /// Its signature checked against the allowed signers.
    pub signature: S,
}

impl<S> ReadCommit<S> {
    /// The same commit with `signature` instead, and the signature it had.
    fn with_signature<T>(self, signature: T) -> (ReadCommit<T>, S) {
        let read = ReadCommit {
            commit: self.commit,
            first_parent: self.first_parent,
            entry: self.entry,
            signature,
        };
        (read, self.signature)
    }
}

/// How many commits a reading thread takes at a time.
const READ_CHUNK: usize = 256;

/// Reads each of `commits` once more (one raw read: its signature, the
/// data it signs and its message), parses its entry and checks its
/// signature on every core, and hands the results to `each` on the calling
/// thread, in the order of `commits`. Each thread opens its own handle on
/// the repository at `git_dir` (a handle is not shared between threads)
/// and takes every n-th chunk; it stays at most two chunks ahead of
/// `each`, so memory does not grow with the chain. The first error
/// (reading, or from `each`) stops the pass.
pub fn read_chain<E: From<StoreError>>(
    git_dir: &Path,
    signers: &AllowedSigners,
    commits: &[Oid],
    mut each: impl FnMut(ReadCommit) -> Result<(), E>,
) -> Result<(), E> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 16);
    let chunks: Vec<&[Oid]> = commits.chunks(READ_CHUNK).collect();
    let stopped = || {
        StoreError::io(
            "read the chain in",
            git_dir,
            std::io::Error::other("a reading thread stopped"),
        )
    };
    std::thread::scope(|s| {
        let (receivers, handles): (Vec<_>, Vec<_>) = (0..threads)
            .map(|t| {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                let mine: Vec<&[Oid]> = chunks.iter().skip(t).step_by(threads).copied().collect();
                let handle = s.spawn(move || {
                    let repo = match Repository::open(git_dir) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::from(e)));
                            return;
                        }
                    };
                    let odb = match repo.odb() {
                        Ok(o) => o,
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::from(e)));
                            return;
                        }
                    };
                    for part in mine {
                        let read = read_part(&odb, signers, part);
                        let failed = read.is_err();
                        // The receiver is gone when the pass stopped early.
                        if tx.send(read).is_err() || failed {
                            return;
                        }
                    }
                });
                (rx, handle)
            })
            .unzip();
        let mut consume = || -> Result<(), E> {
            for i in 0..chunks.len() {
                let part = receivers[i % threads].recv().map_err(|_| stopped())??;
                for read in part {
                    each(read)?;
                }
            }
            Ok(())
        };
        let result = consume();
        // Threads blocked on a full channel stop once it is gone.
        drop(receivers);
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        match result {
            Ok(()) if panicked => Err(stopped().into()),
            other => other,
        }
    })
}

/// Reads `part` of the chain, and checks its signatures in one batch.
fn read_part(
    odb: &git2::Odb<'_>,
    signers: &AllowedSigners,
    part: &[Oid],
) -> Result<Vec<ReadCommit>, StoreError> {
    let mut reads = Vec::with_capacity(part.len());
    let mut prepared = Vec::with_capacity(part.len());
    for oid in part {
        let (read, signature) = read_commit(odb, signers, *oid)?.with_signature(());
        reads.push(read);
        prepared.push(signature);
    }
    let checks = signers.check_all(prepared);
    Ok(reads
        .into_iter()
        .zip(checks)
        .map(|(read, check)| read.with_signature(check).0)
        .collect())
}

/// One commit of the chain read, its signature prepared.
fn read_commit(
    odb: &git2::Odb<'_>,
    signers: &AllowedSigners,
    oid: Oid,
) -> Result<ReadCommit<Prepared>, StoreError> {
    let object = odb.read(oid)?;
    if object.kind() != git2::ObjectType::Commit {
        return Err(StoreError::BadEntry {
            commit: oid.to_string(),
            reason: "the object is not a commit".into(),
        });
    }
    let data = as_libgit2_reads(object.data());
    let (commit, first_parent) = ChainCommit::of_raw(oid, data)?;
    let signature = signature_prepared(signers, data);
    let entry = std::str::from_utf8(commit_message(data))
        .ok()
        .and_then(|m| AuditEntry::from_commit_message(m).ok())
        .map(|entry| ChainEntry {
            commit: commit.oid,
            entry,
            signer: commit.claimed,
        });
    Ok(ReadCommit {
        commit,
        first_parent,
        entry,
        signature,
    })
}

/// The message of a raw commit, as libgit2 gives it: after the first empty
/// line, without leading newlines; empty without one.
fn commit_message(data: &[u8]) -> &[u8] {
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
        return &[];
    };
    let message = &data[end + 2..];
    let start = message
        .iter()
        .position(|b| *b != b'\n')
        .unwrap_or(message.len());
    &message[start..]
}

/// The `gpgsig` field of a raw commit and the data it signs (the commit
/// without that field), found as `git verify-commit` and libgit2's
/// `git_commit_extract_signature` find them: the first line that starts
/// with `gpgsig ` (its continuation lines start with a space, which is not
/// part of the value); every line before it except the last one of the
/// object is signed, and everything after it. `None`: not signed.
fn split_signature(data: &[u8]) -> Result<Option<Split>, Malformed> {
    const FIELD: &[u8] = b"gpgsig";
    let newline = |from: usize| {
        data[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| from + i)
    };
    let mut signed = Vec::with_capacity(data.len());
    let mut line = 0;
    // Like libgit2: a line is looked at only when more follows its newline.
    while let Some(nl) = newline(line).filter(|nl| nl + 1 < data.len()) {
        if !data[line..].starts_with(FIELD) {
            signed.extend_from_slice(&data[line..=nl]);
            line = nl + 1;
            continue;
        }
        let value = line + FIELD.len();
        if data.get(value) != Some(&b' ') {
            // `gpgsigX…`: not the field; go on from after its name.
            line = value;
            continue;
        }
        let mut eol = newline(value).ok_or(Malformed)?;
        let mut signature = data[value + 1..eol].to_vec();
        while data.get(eol + 1) == Some(&b' ') {
            signature.push(b'\n');
            let from = eol + 2;
            eol = newline(from).ok_or(Malformed)?;
            signature.extend_from_slice(&data[from..eol]);
        }
        signed.extend_from_slice(&data[eol + 1..]);
        return Ok(Some((signature, signed)));
    }
    Ok(None)
}

/// A commit's signature and the data it signs.
type Split = (Vec<u8>, Vec<u8>);

/// A `gpgsig` field without the end of its line.
struct Malformed;

/// The role a signature proves for an entry that needs one of `roles`:
/// the committer's `claimed` role when the signing key holds it, else the
/// first of `roles` the key holds; `None` when the signature is not good.
pub fn proved_signer(
    check: &SignatureCheck,
    roles: &[Role],
    claimed: Option<Role>,
) -> Option<Role> {
    let SignatureCheck::Good { roles: has, .. } = check else {
        return None;
    };
    match claimed {
        Some(r) if has.contains(&r) && roles.contains(&r) => Some(r),
        _ => has.iter().copied().find(|r| roles.contains(r)),
    }
}

/// Why a signature does not make a valid signer of `roles`; `None` if it
/// does.
pub fn signature_problem(check: &SignatureCheck, roles: &[Role]) -> Option<String> {
    match check {
        SignatureCheck::Good {
            principal,
            roles: has,
            ..
        } => {
            if has.iter().any(|r| roles.contains(r)) {
                None
            } else {
                let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Some(format!(
                    "signed by `{principal}`, which has no {} role",
                    wanted.join(" or ")
                ))
            }
        }
        SignatureCheck::Missing => Some("not signed".into()),
        SignatureCheck::Bad(why) => Some(format!("bad signature: {why}")),
    }
}

/// Checks chain entries before they are projected. Keeps the allowed
/// signers of the `main` tip it last saw, reloading them when `main` moves.
#[derive(Debug)]
pub struct EntryCheck {
    source: SignersSource,
    cached: Option<(Option<Oid>, AllowedSigners)>,
}

impl EntryCheck {
    pub fn new(source: SignersSource) -> Self {
        EntryCheck {
            source,
            cached: None,
        }
    }

    fn signers(&mut self, repo: &Repository) -> Result<&AllowedSigners, StoreError> {
        let tip = self.source.main_tip(repo);
        if self.cached.as_ref().is_none_or(|(seen, _)| *seen != tip) {
            // Fail closed: without signers nothing can be checked, so
            // nothing is projected.
            let signers = self.source.load(repo).map_err(|e| StoreError::BadEntry {
                commit: "-".into(),
                reason: format!("cannot check signatures: {e}"),
            })?;
            self.cached = Some((tip, signers));
        }
        match &self.cached {
            Some((_, s)) => Ok(s),
            None => Err(StoreError::BadEntry {
                commit: "-".into(),
                reason: "cannot check signatures".into(),
            }),
        }
    }

    /// Reads the entry of commit `oid`, which must follow entry
    /// `after` (its sequence number and commit; `None` for the first), and
    /// checks it. Its signer is the role its signature proves.
    pub fn check(
        &mut self,
        repo: &Repository,
        oid: Oid,
        after: Option<(u64, Oid)>,
    ) -> Result<ChainEntry, StoreError> {
        let commit = repo.find_commit(oid)?;
        let tampered = |why: String| {
            StoreError::Tampered(format!("commit {}: {why}", short(&oid.to_string())))
        };
        let mut entry = read_entry(&commit).map_err(|e| tampered(e.to_string()))?;
        let seq = entry.entry.seq;
        let tampered = |why: String| {
            StoreError::Tampered(format!(
                "entry #{seq} (commit {}): {why}",
                short(&oid.to_string())
            ))
        };
        let expected_parent = after.map(|(_, c)| c);
        let parents: Vec<Oid> = commit.parent_ids().collect();
        if parents != expected_parent.into_iter().collect::<Vec<_>>() {
            return Err(tampered("it does not follow the previous entry".into()));
        }
        if seq != after.map_or(1, |(s, _)| s + 1) {
            return Err(tampered(format!(
                "its sequence number does not follow #{}",
                after.map_or(0, |(s, _)| s)
            )));
        }
        if commit.tree_id().to_string() != EMPTY_TREE {
            return Err(tampered("the commit carries files".into()));
        }
        let roles = signer_roles(entry.entry.entry.event_type());
        let check = signature_status(repo, self.signers(repo)?, oid);
        if let Some(why) = signature_problem(&check, roles) {
            return Err(tampered(why));
        }
        if matches!(check, SignatureCheck::Good { .. }) {
            entry.signer = proved_signer(&check, roles, entry.signer);
        }
        Ok(entry)
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What libgit2 finds, for comparison: `Ok(None)` when it says the
    /// commit is not signed.
    fn libgit2_split(repo: &Repository, oid: Oid) -> Result<Option<Split>, ()> {
        match repo.extract_signature(&oid, Some("gpgsig")) {
            Ok((sig, data)) => Ok(Some((sig.to_vec(), data.to_vec()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Writes `text` into `repo` as a commit object, as it is.
    fn write_raw_commit(repo: &Repository, text: &str) -> Result<Oid, git2::Error> {
        repo.odb()?.write(git2::ObjectType::Commit, text.as_bytes())
    }

    /// A commit's header up to its committer line.
    const HEAD: &str = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@x> 1 +0000\ncommitter a <a@x> 1 +0000\n";

    #[test]
    fn the_signature_is_split_off_as_libgit2_does() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        let head = HEAD;
        let cases = [
            format!("{head}gpgsig -----BEGIN-----\n abc\n \n -----END-----\n\nmessage\n"),
            format!("{head}gpgsig one line\nencoding UTF-8\n\nmessage\n"),
            format!("{head}gpgsigx not the field\ngpgsig sig\n\nmessage\n"),
            format!("{head}\ngpgsig in the message\nmore\n"),
            format!("{head}\nno signature at all\n"),
            format!("{head}gpgsig cut short"),
            format!("{head}gpgsig sig\n continued"),
            format!("{head}gpgsig first\ngpgsig second\n\nm\n"),
            format!("{head}gpgsig\n\nm\n"),
        ];
        for case in &cases {
            let oid = write_raw_commit(&repo, case)?;
            let ours = split_signature(case.as_bytes()).map_err(|Malformed| ());
            assert_eq!(ours, libgit2_split(&repo, oid), "for {case:?}");
        }
        Ok(())
    }

    #[test]
    fn the_message_is_read_as_libgit2_reads_it() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        for body in ["\nm\n", "\n\n\nm\n\nn", "", "\n", "x y\n\nm"] {
            let case = format!("{HEAD}{body}");
            let oid = write_raw_commit(&repo, &case)?;
            let commit = repo.find_commit(oid)?;
            assert_eq!(
                commit_message(case.as_bytes()),
                commit.message_bytes(),
                "for {case:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_header_is_read_as_libgit2_reads_it() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        let tree = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
        let other = "tree 1111111111111111111111111111111111111111\n";
        let p1 = "parent 2222222222222222222222222222222222222222\n";
        let p2 = "parent 3333333333333333333333333333333333333333\n";
        let author = "author a <a@x> 1 +0000\n";
        let cases = [
            format!("{tree}{author}committer s <server@server.gov> 1 +0000\n\nm\n"),
            format!("{tree}{p1}{author}committer w <watchdog@watchdog.gov> 1 +0000\n\nm\n"),
            format!(
                "{other}{p1}{p2}{author}committer a <a <approver@approver.gov> > 1 +0000\n\nm\n"
            ),
            format!("{tree}{p1}{author}committer x <nobody@example.org> 1 +0000\ngpgsig s\n\nm\n"),
            format!("{tree}{p1}{author}committer x < server@server.gov > 1 +0000\n\nm\n"),
            format!("{tree}{p1}{author}committer x <\x0b\x0cwatchdog@watchdog.gov\t\x0b> 1 +0000\n\nm\n"),
            format!("{tree}{p1}{author}committer x <\u{a0}server@server.gov> 1 +0000\n\nm\n"),
            format!(
                "{}{p1}{author}committer s <server@server.gov> 1 +0000\n\nm\n",
                tree.to_uppercase().replacen("TREE", "tree", 1)
            ),
        ];
        for case in &cases {
            let oid = write_raw_commit(&repo, case)?;
            let commit = repo.find_commit(oid)?;
            let (ours, first) =
                ChainCommit::of_raw(oid, case.as_bytes()).map_err(|e| e.to_string())?;
            assert_eq!(ours.oid, oid);
            assert_eq!(
                ours.empty_tree,
                commit.tree_id().to_string() == EMPTY_TREE,
                "{case:?}"
            );
            assert_eq!(ours.parent_count, commit.parent_count(), "{case:?}");
            assert_eq!(first, commit.parent_ids().next(), "{case:?}");
            let claimed = commit
                .committer()
                .email()
                .and_then(crate::store::audit::role_from_email);
            assert_eq!(ours.claimed, claimed, "{case:?}");
        }
        // What libgit2 does not read as a commit is not read either.
        for broken in [
            format!("{author}{tree}\nm\n"),
            format!("{tree}parent 12\n{author}committer a <a@x> 1 +0000\n\nm\n"),
            format!("{tree}committer a <a@x> 1 +0000\n\nm\n"),
            format!("{tree}{author}committer a a@x> 1 +0000\n\nm\n"),
        ] {
            let oid = write_raw_commit(&repo, &broken)?;
            assert!(repo.find_commit(oid).is_err(), "libgit2 reads {broken:?}");
            assert!(
                ChainCommit::of_raw(oid, broken.as_bytes()).is_err(),
                "{broken:?}"
            );
        }
        Ok(())
    }
}
