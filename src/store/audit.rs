//! The audit chain: one signed commit per entry on the audit ref.
//!
//! Each commit's parent is the previous entry, its message is
//! [`AuditEntry::commit_message`], and its tree is git's empty tree, so an
//! append costs the same at the 100,000th entry as at the first. The
//! committer names the signer's role (`gov server <server@gov>`); the
//! signature is what proves it, and `gov audit verify` checks that.
//!
//! Writers hold the [`ChainLock`]; [`stage`] gives each entry the next
//! sequence number and a non-decreasing timestamp and writes one signed
//! commit per entry; the batch's [`Staged::flush`] then writes them as one
//! pack, moves the ref once by compare-and-swap and flushes it all to disk.
//! [`append`] is both steps for one call.

use chrono::{DateTime, SubsecRound, Utc};
use git2::{Commit, Oid, Repository, Signature};

use crate::domain::audit::{AuditEntry, NewEntry, MESSAGE_PREFIX};
use crate::store::git::{commit_signed_by, signature_at, NewCommit, Nonce, Staged, StoreError};
use crate::store::keys::{Role, SigningKey};
use crate::store::lock::ChainLock;

/// An entry together with the commit that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEntry {
    pub commit: Oid,
    pub entry: AuditEntry,
    /// The role the committer identity claims (not proof: see `verify`).
    pub signer: Option<Role>,
}

/// Where the chain ends, all the next entry needs of it: the last entry's
/// commit (its parent), sequence number and time. A batch keeps this, not
/// the entry (whose payload and decision would be copied for nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainTip {
    pub commit: Oid,
    pub seq: u64,
    pub ts: DateTime<Utc>,
}

impl ChainEntry {
    /// The chain's tip, if this is its last entry.
    pub fn as_tip(&self) -> ChainTip {
        ChainTip {
            commit: self.commit,
            seq: self.entry.seq,
            ts: self.entry.ts.0,
        }
    }
}

/// The committer identity for entries signed in `role`, dated `at` (see
/// [`signature_at`]).
pub fn signer_identity(role: Role, at: DateTime<Utc>) -> Result<Signature<'static>, StoreError> {
    signature_at(
        &format!("gov {}", role.as_str()),
        &format!("{}@gov", role.as_str()),
        at,
    )
}

/// The role a committer identity written by [`signer_identity`] names.
pub fn role_from_email(email: &str) -> Option<Role> {
    match email {
        "server@gov" => Some(Role::Server),
        "watchdog@gov" => Some(Role::Watchdog),
        "approver@gov" => Some(Role::Approver),
        _ => None,
    }
}

/// The sequence number in a message's first line (`gov audit #N …`),
/// without parsing the JSON.
pub fn seq_of_message(message: &str) -> Option<u64> {
    let rest = message.strip_prefix(MESSAGE_PREFIX)?.strip_prefix(" #")?;
    let digits = rest.split(' ').next()?;
    digits.parse().ok()
}

/// Reads the entry a commit carries.
pub fn read_entry(commit: &Commit<'_>) -> Result<ChainEntry, StoreError> {
    let bad = |reason: String| StoreError::BadEntry {
        commit: commit.id().to_string(),
        reason,
    };
    let message = commit
        .message()
        .ok_or_else(|| bad("message is not UTF-8".into()))?;
    let entry = AuditEntry::from_commit_message(message).map_err(|e| bad(e.to_string()))?;
    Ok(ChainEntry {
        commit: commit.id(),
        entry,
        signer: commit.committer().email().and_then(role_from_email),
    })
}

/// The entries of the chain from just after `base` up to `tip`, oldest
/// first, read back through `repo`: a batch's own entries, which its
/// handle's memory holds before the flush (`base` the tip the batch opened
/// on, `None` for an empty chain).
pub fn entries_since(
    repo: &Repository,
    tip: Option<Oid>,
    base: Option<Oid>,
) -> Result<Vec<ChainEntry>, StoreError> {
    use crate::store::fault::{fire, Fault};
    if fire(repo.path(), Fault::ReadBatchBack) {
        return Err(git2::Error::from_str("injected fault: the batch was not read back").into());
    }
    let mut entries = Vec::new();
    let mut at = tip;
    while at != base {
        let Some(oid) = at else {
            return Err(git2::Error::from_str("the entries do not lead back to their base").into());
        };
        let commit = repo.find_commit(oid)?;
        entries.push(read_entry(&commit)?);
        at = commit.parent_ids().next();
    }
    entries.reverse();
    Ok(entries)
}

/// The tip of the chain, if it has one.
pub fn tip(repo: &Repository, refname: &str) -> Result<Option<ChainEntry>, StoreError> {
    let oid = match repo.refname_to_id(refname) {
        Ok(oid) => oid,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    read_entry(&repo.find_commit(oid)?).map(Some)
}

/// Appends `entries` at time `now` in one lock hold: one signed commit per
/// entry, one ref update, one flush to disk. `lock` proves the caller holds
/// the chain lock.
pub fn append(
    _lock: &ChainLock,
    repo: &Repository,
    refname: &str,
    key: &SigningKey,
    role: Role,
    entries: Vec<NewEntry>,
    now: DateTime<Utc>,
) -> Result<Vec<ChainEntry>, StoreError> {
    let old = tip(repo, refname)?;
    let mut staged = Staged::default();
    let written = stage(
        repo,
        &mut staged,
        refname,
        key,
        role,
        old.as_ref().map(ChainEntry::as_tip),
        entries,
        now,
    )?;
    staged.flush(repo)?;
    Ok(written)
}

/// Writes one signed commit per entry on top of `tip` (the chain's tip as
/// the batch sees it) and stages the ref move; nothing is durable until the
/// batch is flushed. Each entry gets the next sequence number and the
/// time `now` (the caller's clock), or the tip's when that is later.
#[allow(
    clippy::too_many_arguments,
    reason = "the batch, the chain, the signer and the entries with their time"
)]
pub fn stage(
    repo: &Repository,
    staged: &mut Staged,
    refname: &str,
    key: &SigningKey,
    role: Role,
    tip: Option<ChainTip>,
    entries: Vec<NewEntry>,
    now: DateTime<Utc>,
) -> Result<Vec<ChainEntry>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    // The empty tree every entry carries, in the batch's objects (in a
    // batch, a write to memory: no look-up on disk).
    let empty = staged.write(repo, git2::ObjectType::Tree, &[])?;
    let who = signer_identity(role, now)?;
    let (mut seq, mut last_ts) = match tip {
        Some(t) => (t.seq, t.ts),
        None => (0, chrono::DateTime::<Utc>::MIN_UTC),
    };
    let old = tip.map(|t| t.commit);
    let mut parent = old;
    let mut written = Vec::with_capacity(entries.len());
    for new in entries {
        seq += 1;
        // Clocks can step back; the chain's times never do. Microseconds
        // are what the message keeps, so the returned entry equals it.
        last_ts = last_ts.max(now.trunc_subsecs(6));
        let entry = new.place(seq, last_ts);
        // Checked before anything is written: an entry that could not be
        // read back would stop every later reader of the chain.
        let (message, entry) = entry.checked_commit_message()?;
        let parents: Vec<Oid> = parent.into_iter().collect();
        // In a writer's turn: the nonce is taken from those made ahead.
        let commit = NewCommit {
            author: &who,
            tree: empty,
            parents: &parents,
            message: &message,
        };
        let oid = commit_signed_by(repo, staged, key, Nonce::Ahead, commit)?;
        written.push(ChainEntry {
            commit: oid,
            entry,
            signer: Some(role),
        });
        parent = Some(oid);
    }
    if let Some(last) = written.last() {
        staged.set_record(repo, refname, Some(last.commit), old)?;
    }
    Ok(written)
}

/// The commits after sequence number `after` up to the tip, oldest first;
/// or `None` if the commit at `after` is not `expected` (or the chain does
/// not reach that far): the chain was rewritten since.
pub fn commits_after(
    repo: &Repository,
    refname: &str,
    after: u64,
    expected: Option<Oid>,
) -> Result<Option<Vec<Oid>>, StoreError> {
    let mut oid = match repo.refname_to_id(refname) {
        Ok(o) => o,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Ok(if after == 0 { Some(Vec::new()) } else { None });
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    loop {
        let commit = repo.find_commit(oid)?;
        let seq =
            commit
                .message()
                .and_then(seq_of_message)
                .ok_or_else(|| StoreError::BadEntry {
                    commit: oid.to_string(),
                    reason: "message is not an audit entry".into(),
                })?;
        if seq == after {
            if expected.is_some_and(|e| e != oid) {
                return Ok(None);
            }
            break;
        }
        if seq < after {
            return Ok(None);
        }
        out.push(oid);
        match commit.parent_ids().next() {
            Some(p) => oid = p,
            None if after == 0 => break,
            None => return Ok(None),
        }
    }
    out.reverse();
    Ok(Some(out))
}

/// Entries from `from_seq` (1 for all) to the tip, oldest first. Holds only
/// the commit ids in memory; entries are read one at a time.
pub fn entries_from<'r>(
    repo: &'r Repository,
    refname: &str,
    from_seq: u64,
) -> Result<impl Iterator<Item = Result<ChainEntry, StoreError>> + 'r, StoreError> {
    let oids = commits_after(repo, refname, from_seq.saturating_sub(1), None)?.unwrap_or_default();
    Ok(oids
        .into_iter()
        .map(move |oid| read_entry(&repo.find_commit(oid)?)))
}

/// Calls `read` on each commit of the chain from the tip back to the root,
/// newest first.
fn walk_back<'r, T>(
    repo: &'r Repository,
    refname: &str,
    read: impl Fn(&Commit<'_>) -> Result<T, StoreError> + 'r,
) -> Result<impl Iterator<Item = Result<T, StoreError>> + 'r, StoreError> {
    let mut next = match repo.refname_to_id(refname) {
        Ok(o) => Some(o),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    Ok(std::iter::from_fn(move || {
        let oid = next.take()?;
        let result = repo
            .find_commit(oid)
            .map_err(StoreError::from)
            .and_then(|c| {
                next = c.parent_ids().next();
                read(&c)
            });
        Some(result)
    }))
}

/// The raw messages of the chain's commits from the tip back to the root,
/// newest first, unparsed: a reader that parses them elsewhere (on other
/// threads) pays here only for reading the commits.
pub fn messages_back<'r>(
    repo: &'r Repository,
    refname: &str,
) -> Result<impl Iterator<Item = Result<(Oid, String), StoreError>> + 'r, StoreError> {
    walk_back(repo, refname, |c| {
        c.message()
            .map(|m| (c.id(), m.to_string()))
            .ok_or_else(|| StoreError::BadEntry {
                commit: c.id().to_string(),
                reason: "message is not UTF-8".into(),
            })
    })
}

/// Entries from the tip back to the root, newest first (the unit tests
/// check the chain both ways; the program only reads it forward).
#[cfg(test)]
pub fn entries_back<'r>(
    repo: &'r Repository,
    refname: &str,
) -> Result<impl Iterator<Item = Result<ChainEntry, StoreError>> + 'r, StoreError> {
    walk_back(repo, refname, read_entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Event};
    use serde_json::json;

    #[test]
    fn appends_a_linear_numbered_chain() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        let key = SigningKey::generate("t")?;
        let lock = ChainLock::acquire(repo.path())?;
        let r = "refs/heads/gov/audit";
        let one = append(
            &lock,
            &repo,
            r,
            &key,
            Role::Server,
            vec![NewEntry::new(
                Actor::server(),
                Event::other("a", json!({}))?,
            )],
            Utc::now(),
        )?;
        let b = Event::other("b", json!({}))?;
        let batch: Vec<NewEntry> = (0..3)
            .map(|_| NewEntry::new(Actor::server(), b.clone()).agent("x"))
            .collect();
        let more = append(&lock, &repo, r, &key, Role::Watchdog, batch, Utc::now())?;
        assert_eq!(one[0].entry.seq, 1);
        assert_eq!(
            more.iter().map(|e| e.entry.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let back: Vec<u64> = entries_back(&repo, r)?
            .map(|e| e.map(|e| e.entry.seq))
            .collect::<Result<_, _>>()?;
        assert_eq!(back, vec![4, 3, 2, 1]);
        let fwd: Vec<ChainEntry> = entries_from(&repo, r, 3)?.collect::<Result<_, _>>()?;
        assert_eq!(fwd.len(), 2);
        assert_eq!(fwd[0].signer, Some(Role::Watchdog));
        assert_eq!(
            commits_after(&repo, r, 2, Some(more[0].commit))?.map(|v| v.len()),
            Some(2)
        );
        assert_eq!(commits_after(&repo, r, 2, Some(one[0].commit))?, None);
        assert_eq!(commits_after(&repo, r, 9, None)?, None);
        assert_eq!(seq_of_message("gov audit #12 x -\n\n{}"), Some(12));
        Ok(())
    }
}
