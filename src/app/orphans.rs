//! A Git change never outlives its entry.
//!
//! A batch moves Git refs (a proposal branch, an approval merge on `main`,
//! a rejection's or expiry's rename) and the audit ref that records them;
//! `Staged::flush` moves the audit ref last. So if the flush fails or the
//! process dies in between, Git changes are left that no entry records,
//! never an entry whose Git change is missing. Under the chain lock nobody
//! is between the two steps, so [`repair`] (run when a server, watchdog or
//! CLI command opens the repository, and by the next writer after a failed
//! flush) finds them ([`find`]) and repairs each:
//!
//! - a proposal branch (`<prefix><id>`, `gov/policy/<id>`) whose proposal
//!   no entry records: set aside under `refs/gov/orphaned/` (kept, never
//!   deleted), `proposal_orphan_set_aside`;
//! - a `gov/rejected/<id>` or `gov/expired/<id>` name of a proposal the
//!   chain says is pending: set aside the same way (the rejection or expiry
//!   did not happen), and the pending branch put back at its submitted
//!   commit if the rename had removed it, `proposal_branch_restored`;
//! - an approval merge on `main`, signed by an approver key, of a proposal
//!   the chain says is pending: the `proposal_decided` entry the merge
//!   proves is written (with `repaired` saying so). `main` moves only
//!   through review and the merge is the approver's signed act, so the
//!   record follows Git rather than `main` being moved back under anyone
//!   who already read it.
//!
//! - merges of pending proposals on `main` that no approver signed (forge
//!   merges a `gov sync` took, whose entries failed): local `main` is moved
//!   back below the oldest of them when the remote's `main` still has every
//!   commit moved back over (the old tip kept under `refs/gov/orphaned/`),
//!   `main_rolled_back`; the next sync takes them again, with their checks
//!   and entries. Without the remote's copy they are left, and named.
//!
//! `gov audit verify` names every kind still present.

use std::cell::Cell;
use std::collections::HashMap;

use chrono::TimeZone;
use git2::{Oid, Repository};

use super::error::AppError;
use super::service::{Service, Step};
use crate::config::Settings;
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::event::{BranchRestored, MainRolledBack, OrphanSetAside};
use crate::domain::proposal::Proposal;
use crate::store::entry_check::{signature_problem, signature_status, SignersSource};
use crate::store::git::branch_names;
use crate::store::keys::{AllowedSigners, Role, SignatureCheck};
use crate::store::projection;
use crate::store::trust::MainMerges;

/// Pending proposals whose decided names [`find`] looks up one by one; with
/// more, it lists the decided branches instead.
const LOOKUPS_AT_MOST: usize = 2_048;

/// Where set-aside refs are kept.
pub const ORPHAN_PREFIX: &str = "refs/gov/orphaned/";

/// The names a rejected or expired proposal's branch is renamed to.
pub const DECIDED_PREFIXES: [&str; 2] = ["gov/rejected/", "gov/expired/"];

/// A pending proposal as the chain has it: its branch and submitted commit.
#[derive(Debug, Clone)]
pub struct PendingBranch {
    pub branch: String,
    pub commit: Oid,
}

/// A Git change that no entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Orphan {
    /// A proposal or policy-change branch (full ref name) whose proposal no
    /// entry records.
    Unrecorded { refname: String, commit: Oid },
    /// A rejection's or expiry's name (full ref name) of a proposal still
    /// pending.
    Renamed {
        id: String,
        refname: String,
        commit: Oid,
    },
    /// A pending proposal whose branch is gone.
    Missing {
        id: String,
        branch: String,
        commit: Oid,
    },
    /// An approver-signed merge of a pending proposal on `main`.
    Approval {
        id: String,
        merge: Oid,
        approver: String,
    },
    /// A merge of a pending proposal on `main` that no approver signed.
    UnsignedMerge { id: String, merge: Oid, why: String },
}

fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_string()
}

fn branch_name(refname: &str) -> &str {
    refname.strip_prefix("refs/heads/").unwrap_or(refname)
}

impl Orphan {
    /// The commit it is about: the branch's, or the merge.
    pub fn commit(&self) -> Oid {
        match self {
            Orphan::Unrecorded { commit, .. }
            | Orphan::Renamed { commit, .. }
            | Orphan::Missing { commit, .. } => *commit,
            Orphan::Approval { merge, .. } | Orphan::UnsignedMerge { merge, .. } => *merge,
        }
    }

    /// What `gov audit verify` says about it.
    pub fn describe(&self, main_branch: &str) -> String {
        match self {
            Orphan::Unrecorded { refname, .. } => format!(
                "orphan: branch `{}` has no `proposal_submitted` entry (the next `gov serve` or `gov watchdog` sets it aside)",
                branch_name(refname)
            ),
            Orphan::Renamed { id, refname, .. } => format!(
                "orphan: branch `{}` renames proposal `{id}`, which no entry decided (the next `gov serve` or `gov watchdog` sets it aside)",
                branch_name(refname)
            ),
            Orphan::Missing { id, branch, commit } => format!(
                "orphan: pending proposal `{id}` has lost its branch `{branch}` (commit {}) to a rejection or expiry no entry records (the next `gov serve` or `gov watchdog` puts it back)",
                short(*commit)
            ),
            Orphan::Approval { id, merge, approver } => format!(
                "orphan: merge {} on `{main_branch}` by `{approver}` approves proposal `{id}`, which no `proposal_decided` entry records (the next `gov serve` or `gov watchdog` writes it)",
                short(*merge)
            ),
            Orphan::UnsignedMerge { id, merge, why } => format!(
                "orphan: merge {} on `{main_branch}` of proposal `{id}` has no `proposal_decided` entry and is {why} (the next `gov serve` or `gov watchdog` moves `{main_branch}` back below it if the remote still has it)",
                short(*merge)
            ),
        }
    }
}

/// Finds the Git changes no entry records. `known` says whether an entry
/// records a proposal id; `pending` holds the proposals the chain says wait
/// for a person; `main_merges` are the merges on `main`'s first-parent
/// history (as the caller's trust walk read them; `None` without `main`)
/// and `signers` the allowed signers that judge them.
pub fn find(
    repo: &Repository,
    settings: &Settings,
    main_merges: Option<&MainMerges>,
    signers: &AllowedSigners,
    pending: &HashMap<String, PendingBranch>,
    known: &dyn Fn(&str) -> Result<bool, AppError>,
) -> Result<Vec<Orphan>, AppError> {
    let mut out = Vec::new();
    let prefixes = [
        settings.proposal_prefix.as_str(),
        crate::app::policy_change::POLICY_BRANCH_PREFIX,
    ];
    // The branches listed here: a pending proposal's branch among them
    // exists, and its proposal is known without asking the index.
    let mut listed = std::collections::HashSet::new();
    for prefix in prefixes {
        let head = format!("refs/heads/{prefix}");
        for refname in branch_names(repo, prefix)? {
            let id = &refname[head.len()..];
            if !pending.contains_key(id) && !known(id)? {
                // A name whose ref is gone (or unreadable) names no change.
                if let Ok(commit) = repo.refname_to_id(&refname) {
                    out.push(Orphan::Unrecorded {
                        refname: refname.clone(),
                        commit,
                    });
                }
            }
            listed.insert(refname);
        }
    }
    for (refname, commit, id) in renamed_as_decided(repo, pending, LOOKUPS_AT_MOST)? {
        out.push(Orphan::Renamed {
            id,
            refname,
            commit,
        });
    }
    let mut by_commit = HashMap::new();
    for (id, p) in pending {
        by_commit.insert(p.commit, id.clone());
        let refname = format!("refs/heads/{}", p.branch);
        let exists = listed.contains(&refname) || repo.refname_to_id(&refname).is_ok();
        if !exists && repo.find_commit(p.commit).is_ok() {
            out.push(Orphan::Missing {
                id: id.clone(),
                branch: p.branch.clone(),
                commit: p.commit,
            });
        }
    }
    if let (Some(merges), false) = (main_merges, by_commit.is_empty()) {
        // An approval merge's second parent is the submitted proposal
        // commit.
        for (oid, second_parent) in merges.iter() {
            let Some(id) = by_commit.get(&second_parent) else {
                continue;
            };
            let check = signature_status(repo, signers, oid);
            match (&check, signature_problem(&check, &[Role::Approver])) {
                (SignatureCheck::Good { principal, .. }, None) => out.push(Orphan::Approval {
                    id: id.clone(),
                    merge: oid,
                    approver: principal
                        .strip_suffix(&format!("@{}.gov", Role::Approver.as_str()))
                        .unwrap_or(principal)
                        .to_string(),
                }),
                (_, problem) => out.push(Orphan::UnsignedMerge {
                    id: id.clone(),
                    merge: oid,
                    why: problem.unwrap_or_default(),
                }),
            }
        }
    }
    Ok(out)
}

/// The branches of pending proposals renamed as decided
/// (`gov/rejected/<id>`, `gov/expired/<id>`): name, commit and id. The
/// decided branches only ever grow, so the names of up to
/// `lookups_at_most` pending proposals are looked up one by one; a bigger
/// backlog (each lookup opens a file) lists the decided branches instead.
fn renamed_as_decided(
    repo: &Repository,
    pending: &HashMap<String, PendingBranch>,
    lookups_at_most: usize,
) -> Result<Vec<(String, Oid, String)>, AppError> {
    let mut out = Vec::new();
    if pending.len() > lookups_at_most {
        for prefix in DECIDED_PREFIXES {
            let head = format!("refs/heads/{prefix}");
            for refname in branch_names(repo, prefix)? {
                let id = refname[head.len()..].to_string();
                if !pending.contains_key(&id) {
                    continue;
                }
                if let Ok(commit) = repo.refname_to_id(&refname) {
                    out.push((refname, commit, id));
                }
            }
        }
        return Ok(out);
    }
    let mut ids: Vec<&String> = pending.keys().collect();
    ids.sort();
    for prefix in DECIDED_PREFIXES {
        for id in &ids {
            let refname = format!("refs/heads/{prefix}{id}");
            if let Ok(commit) = repo.refname_to_id(&refname) {
                out.push((refname, commit, id.to_string()));
            }
        }
    }
    Ok(out)
}

thread_local! {
    static REPAIRING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`repair`].
pub fn repairing() -> bool {
    REPAIRING.with(Cell::get)
}

struct Repairing;

impl Repairing {
    fn start() -> Repairing {
        REPAIRING.with(|r| r.set(true));
        Repairing
    }
}

impl Drop for Repairing {
    fn drop(&mut self) {
        REPAIRING.with(|r| r.set(false));
    }
}

/// The branches of the index's pending proposals, by id (a start-up reads
/// them all: only ids, branches and commits, not whole proposals).
fn pending_branches(
    conn: &rusqlite::Connection,
) -> Result<HashMap<String, PendingBranch>, AppError> {
    let mut branches = HashMap::new();
    for row in projection::pending_branches(conn)? {
        let commit = row.commit.as_deref().and_then(|c| Oid::from_str(c).ok());
        if let (Some(branch), Some(commit)) = (row.branch, commit) {
            branches.insert(row.proposal_id, PendingBranch { branch, commit });
        }
    }
    Ok(branches)
}

/// A pending proposal of the index (a repair reads only those it needs).
fn pending_proposal(
    tx: &crate::app::governance::Tx<'_>,
    id: &str,
) -> Result<Option<Proposal>, AppError> {
    Ok(projection::proposal(tx.index().conn(), id)?
        .filter(|p| p.status == crate::domain::proposal::ProposalStatus::Pending))
}

/// The approval note an approval merge's message carries.
fn merge_note(message: &str) -> Option<String> {
    message
        .lines()
        .find_map(|l| l.strip_prefix("Note: "))
        .map(str::to_string)
}

/// Repairs every Git change no entry records (see the module docs), in one
/// batch with the entries that record the repairs. Returns how many there
/// were.
pub fn repair(svc: &Service) -> Result<usize, AppError> {
    let _repairing = Repairing::start();
    let settings = svc.settings().clone();
    let signers = SignersSource {
        main_ref: settings.main_refname(),
        file: settings.allowed_signers_path(),
    };
    svc.transact(|tx| -> Step<usize> {
        let conn = tx.index().conn();
        let pending = pending_branches(conn)?;
        let main = tx.ref_target(&settings.main_refname())?;
        let repo = tx.repo();
        // Without allowed signers no merge is proven; the rest is still
        // repaired.
        let allowed = signers.load(repo).unwrap_or_default();
        let known = |id: &str| Ok(projection::proposal_exists(conn, id)?);
        // The trust walk has read main's merges (at start-up it has just
        // run): read from it rather than walking main's history again.
        let trust = match main {
            Some(_) => Some(svc.trust_at(repo, main)?),
            None => None,
        };
        let merges = trust.as_ref().map(|t| t.merges());
        let orphans = find(repo, &settings, merges, &allowed, &pending, &known)?;
        let mut entries = Vec::new();
        let rolled_back = roll_back_forge_merges(tx, &settings, main, &orphans)?;
        for orphan in &orphans {
            if let (Some((target, _)), Orphan::Approval { merge, .. }) = (&rolled_back, orphan) {
                if merge != target && !tx.repo().graph_descendant_of(*target, *merge)? {
                    // No longer on main: the next sync takes it again.
                    continue;
                }
            }
            if let Some(entry) = repair_one(tx, orphan, svc.now())? {
                entries.push(entry);
            }
        }
        entries.extend(rolled_back.map(|(_, e)| e));
        Ok((Ok(entries.len()), entries))
    })
}

/// Moves local `main` back below the merges of pending proposals that no
/// approver signed (forge merges a `gov sync` took, whose entries failed),
/// when the remote's `main` still has every commit moved back over, so the
/// next sync takes them again, with their checks and entries. The old tip
/// is kept under `refs/gov/orphaned/`. Returns the commit `main` moves to
/// and the entry that records it.
fn roll_back_forge_merges(
    tx: &mut crate::app::governance::Tx<'_>,
    settings: &Settings,
    main: Option<Oid>,
    orphans: &[Orphan],
) -> Result<Option<(Oid, NewEntry)>, AppError> {
    // Found from the tip down: the last is the oldest.
    let oldest = orphans.iter().rev().find_map(|o| match o {
        Orphan::UnsignedMerge { merge, .. } => Some(*merge),
        _ => None,
    });
    let (Some(oldest), Some(remote), Some(tip)) = (oldest, settings.remote.as_deref(), main) else {
        return Ok(None);
    };
    let repo = tx.repo();
    let tracking = crate::store::remote::tracking_ref(remote, &settings.main_branch);
    let on_remote = match repo.refname_to_id(&tracking) {
        Ok(theirs) => theirs == tip || repo.graph_descendant_of(theirs, tip)?,
        Err(_) => false,
    };
    if !on_remote {
        return Ok(None);
    }
    let target = repo.find_commit(oldest)?.parent_id(0)?;
    let main_ref = settings.main_refname();
    let kept = format!("{ORPHAN_PREFIX}{}/{tip}", settings.main_branch);
    tx.staged().set(repo, &kept, Some(tip), None)?;
    tx.staged().set(repo, &main_ref, Some(target), Some(tip))?;
    tracing::warn!(from = %tip, to = %target, "moved main back below forge merges no entry records");
    let rolled = MainRolledBack {
        from: tip.to_string(),
        to: target.to_string(),
        kept_as: kept,
        reason: format!(
            "merge {} and what follows on `{}` were taken from the forge by a sync whose entries failed; `{tracking}` still has them, so the next `gov sync` takes them again",
            short(oldest),
            settings.main_branch
        ),
    };
    let entry = NewEntry::new(Actor::server(), Event::MainRolledBack(rolled));
    Ok(Some((target, entry)))
}

fn set_aside(
    tx: &mut crate::app::governance::Tx<'_>,
    refname: &str,
    commit: Oid,
    reason: &str,
) -> Result<Option<NewEntry>, AppError> {
    if tx.ref_target(refname)? != Some(commit) {
        // Already set aside earlier in this batch.
        return Ok(None);
    }
    let short = branch_name(refname);
    let kept = format!("{ORPHAN_PREFIX}{short}");
    let repo = tx.repo();
    let was = tx.ref_target(&kept)?;
    // Staged with the entry that records it: both are made durable by the
    // batch's flush, or neither.
    tx.staged().set(repo, &kept, Some(commit), was)?;
    tx.staged().set(repo, refname, None, Some(commit))?;
    tracing::warn!(branch = %short, "set aside a branch no entry records");
    let set_aside = OrphanSetAside {
        branch: short.to_string(),
        commit: commit.to_string(),
        kept_as: kept,
        reason: reason.into(),
    };
    Ok(Some(NewEntry::new(
        Actor::server(),
        Event::ProposalOrphanSetAside(set_aside),
    )))
}

fn repair_one(
    tx: &mut crate::app::governance::Tx<'_>,
    orphan: &Orphan,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<NewEntry>, AppError> {
    match orphan {
        Orphan::Unrecorded { refname, commit } => set_aside(
            tx,
            refname,
            *commit,
            "no proposal_submitted entry records it: the writer failed or died before its entry",
        ),
        Orphan::Renamed { id, refname, commit } => Ok(set_aside(
            tx,
            refname,
            *commit,
            "no entry decided the proposal, which is still pending: the rejection or expiry failed or died before its entry",
        )?
        .map(|e| e.proposal(id))),
        Orphan::Missing { id, branch, commit } => {
            let refname = format!("refs/heads/{branch}");
            let repo = tx.repo();
            tx.staged().set(repo, &refname, Some(*commit), None)?;
            tracing::warn!(%branch, "put back the branch of a pending proposal");
            let restored = BranchRestored {
                branch: branch.clone(),
                commit: commit.to_string(),
                reason: "the proposal is still pending: the rejection or expiry that removed its branch failed or died before its entry".into(),
            };
            let agent = pending_proposal(tx, id)?.map(|p| p.proposed.agent_id);
            let entry = NewEntry::new(Actor::server(), Event::ProposalBranchRestored(restored))
                .proposal(id);
            Ok(Some(match agent {
                Some(a) => entry.agent(&a),
                None => entry,
            }))
        }
        Orphan::Approval {
            id,
            merge,
            approver,
        } => {
            let Some(p) = pending_proposal(tx, id)? else {
                return Ok(None);
            };
            let commit = tx.repo().find_commit(*merge)?;
            let at = chrono::Utc
                .timestamp_opt(commit.time().seconds(), 0)
                .single()
                .map_or_else(|| Timestamp(now), Timestamp);
            let note = merge_note(commit.message().unwrap_or_default());
            tracing::warn!(proposal = %id, merge = %merge, "recorded an approval merge whose entry was missing");
            Ok(Some(crate::app::proposals::approval_proven_by_merge(
                p,
                &merge.to_string(),
                approver,
                note,
                at,
                "the approval's own entry failed or died after its merge landed on main; this entry records what the approver-signed merge proves",
            )))
        }
        Orphan::UnsignedMerge { id, merge, .. } => {
            tracing::warn!(proposal = %id, merge = %merge, "a merge of a pending proposal on main has no entry and no approver signature; `gov audit verify` names it");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looked up by name or found by listing, the renamed branches are the
    /// same: the pending proposals' decided names, not another proposal's.
    #[test]
    fn renamed_branches_are_found_by_lookup_and_by_listing_alike(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        let commit = repo.blob(b"a proposal")?;
        let pending: HashMap<String, PendingBranch> = ["p-1", "p-2", "p-3"]
            .into_iter()
            .map(|id| {
                let branch = format!("gov/proposal/{id}");
                (id.to_string(), PendingBranch { branch, commit })
            })
            .collect();
        repo.reference("refs/heads/gov/rejected/p-2", commit, false, "")?;
        repo.reference("refs/heads/gov/expired/p-3", commit, false, "")?;
        repo.reference(
            "refs/heads/gov/rejected/decided-long-ago",
            commit,
            false,
            "",
        )?;
        let expected = vec![
            (
                "refs/heads/gov/rejected/p-2".to_string(),
                commit,
                "p-2".to_string(),
            ),
            (
                "refs/heads/gov/expired/p-3".to_string(),
                commit,
                "p-3".to_string(),
            ),
        ];
        assert_eq!(
            renamed_as_decided(&repo, &pending, 3)?,
            expected,
            "looked up"
        );
        assert_eq!(renamed_as_decided(&repo, &pending, 2)?, expected, "listed");
        Ok(())
    }

    #[test]
    fn the_note_comes_from_the_merge_message() {
        let m = "approve proposal p: send_email by noop\n\nApproved by op.\nNote: ship it\n";
        assert_eq!(merge_note(m).as_deref(), Some("ship it"));
        assert_eq!(merge_note("approve proposal p\n"), None);
    }
}
