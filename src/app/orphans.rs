//! A Git change never outlives its entry.
//!
//! A proposal branch is written before the `proposal_submitted` entry that
//! records it, in one chain-lock hold. If the append fails or the process
//! dies in between, the branch is an orphan: no entry names it. Under the
//! chain lock nobody is between the two steps, so [`repair`] (run when a
//! server, watchdog or CLI command opens the repository, and after a
//! submission fails) rolls such a branch back: it is moved to
//! `refs/gov/orphaned/<branch>` (kept, never deleted) and a
//! `proposal_orphan_set_aside` entry records it. `gov audit verify` names
//! any orphan branch that is still there.

use git2::Repository;

use super::error::AppError;
use super::service::{Service, Step};
use crate::domain::audit::{Actor, Event, NewEntry};
use crate::domain::event::OrphanSetAside;
use crate::store::projection;

/// Where orphan branches are kept.
pub const ORPHAN_PREFIX: &str = "refs/gov/orphaned/";

/// Proposal branches (full ref names) whose proposal `known` does not know.
pub fn orphan_branches(
    repo: &Repository,
    prefix: &str,
    known: impl Fn(&str) -> Result<bool, AppError>,
) -> Result<Vec<(String, git2::Oid)>, AppError> {
    let mut out = Vec::new();
    let head = format!("refs/heads/{prefix}");
    for r in repo.references_glob(&format!("{head}*"))? {
        let r = r?;
        let (Some(name), Some(target)) = (r.name(), r.target()) else {
            continue;
        };
        let Some(id) = name.strip_prefix(&head) else {
            continue;
        };
        if !known(id)? {
            out.push((name.to_string(), target));
        }
    }
    Ok(out)
}

/// Sets every orphan proposal branch aside and records it. Returns how
/// many there were.
pub fn repair(svc: &Service) -> Result<usize, AppError> {
    let prefix = svc.settings().proposal_prefix.clone();
    svc.transact(|tx| -> Step<usize> {
        let conn = tx.index().conn();
        let orphans = orphan_branches(tx.repo(), &prefix, |id| {
            Ok(projection::proposal(conn, id)?.is_some())
        })?;
        let mut entries = Vec::new();
        for (name, commit) in &orphans {
            let short = name.strip_prefix("refs/heads/").unwrap_or(name);
            let kept = format!("{ORPHAN_PREFIX}{short}");
            // Staged with the entry that records it: both are made durable
            // by the batch's flush, or neither.
            let repo = tx.repo();
            if tx.ref_target(name)? != Some(*commit) {
                // Already set aside earlier in this batch.
                continue;
            }
            let was = tx.ref_target(&kept)?;
            tx.staged().set(repo, &kept, Some(*commit), was)?;
            tx.staged().set(repo, name, None, Some(*commit))?;
            tracing::warn!(branch = %short, "set aside a proposal branch no entry records");
            let set_aside = OrphanSetAside {
                branch: short.to_string(),
                commit: commit.to_string(),
                kept_as: kept,
                reason: "no proposal_submitted entry records it: the writer failed or died before its entry".into(),
            };
            entries.push(NewEntry::new(
                Actor::server(),
                Event::ProposalOrphanSetAside(set_aside),
            ));
        }
        Ok((Ok(entries.len()), entries))
    })
}
