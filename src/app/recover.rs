//! `gov audit recover`: the explicit, audited way out of a tampered chain.
//!
//! Three heads may tell where the chain should be: the audit ref, the
//! index's last entry and the tip `gov audit verify` last accepted
//! (`.gov/verified-tip`). Each is checked entry by entry from #1 (the same
//! check catch-up uses: `store::trust`); the chain resumes from the longest
//! run of verified entries. Every head that is not part of it is kept under
//! `refs/gov/set-aside/<time>/<which>` (never deleted), the old index is
//! moved aside, the index is rebuilt from the chain, and an
//! `audit_recovered` entry naming what was set aside and why is appended,
//! signed by the operator's approver key: the operator's authority is that
//! signature, which `verify` and catch-up accept for this event type only.

use std::path::PathBuf;

use git2::{Oid, Repository};

use crate::app::governance::{entry_check, open_repo, GovError};
use crate::config::Settings;
use crate::domain::audit::{Actor, Event, NewEntry};
use crate::domain::event::{AuditRecovered, ChainPoint, MissingHead, SetAsideHead};
use crate::store::audit as chain;
use crate::store::entry_check::EntryCheck;
use crate::store::git::{cas_ref, StoreError};
use crate::store::index::{move_aside, Index};
use crate::store::keys::{Role, SigningKey};
use crate::store::lock::ChainLock;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Gov(#[from] GovError),
    #[error("cannot load the operator's approver key `{path}`: {source}")]
    Key {
        path: PathBuf,
        source: crate::store::keys::KeyError,
    },
    #[error("nothing to recover: every entry up to the tip #{0} verifies and the index and the last verified tip are on the chain")]
    NothingToRecover(u64),
    #[error("no entry of the chain verifies, not even #1: there is nothing to resume from")]
    NoVerifiedEntry,
    #[error("a reason is required (`--reason`): it is recorded in the chain")]
    NoReason,
}

impl From<StoreError> for RecoverError {
    fn from(e: StoreError) -> Self {
        RecoverError::Gov(e.into())
    }
}

impl From<git2::Error> for RecoverError {
    fn from(e: git2::Error) -> Self {
        RecoverError::Gov(StoreError::from(e).into())
    }
}

/// A head that was not kept on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// `audit ref`, `index's last entry`, `last verified tip`.
    pub what: &'static str,
    pub commit: Oid,
    /// The ref it is kept under.
    pub refname: String,
    /// Why it was not kept: the first entry that did not verify, or that it
    /// is not on the chain resumed from.
    pub why: String,
}

/// What `gov audit recover` did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The last verified entry the chain resumes from.
    pub resumed_from: (u64, Oid),
    pub set_aside: Vec<SetAside>,
    pub index_moved_to: Option<PathBuf>,
    /// The `audit_recovered` entry's sequence number.
    pub entry_seq: u64,
}

/// How far a head verifies.
struct Walk {
    what: &'static str,
    head: Oid,
    last_good: Option<(u64, Oid)>,
    first_problem: Option<String>,
}

/// Checks the chain ending at `head` from its first entry on.
fn walk(repo: &Repository, check: &mut EntryCheck, what: &'static str, head: Oid) -> Walk {
    let mut oids = Vec::new();
    let mut next = Some(head);
    while let Some(oid) = next {
        oids.push(oid);
        next = repo
            .find_commit(oid)
            .ok()
            .and_then(|c| c.parent_ids().next());
    }
    oids.reverse();
    let mut last_good = None;
    let mut first_problem = None;
    for oid in oids {
        match check.check(repo, oid, last_good) {
            Ok(e) => last_good = Some((e.entry.seq, oid)),
            Err(e) => {
                first_problem = Some(e.to_string());
                break;
            }
        }
    }
    Walk {
        what,
        head,
        last_good,
        first_problem,
    }
}

fn contains(repo: &Repository, tip: Oid, commit: Oid) -> bool {
    tip == commit || repo.graph_descendant_of(tip, commit).unwrap_or(false)
}

/// Recovers from tampering; see the module docs. Stop the server first: a
/// running server keeps refusing writes until it is restarted.
pub fn recover(settings: &Settings, reason: &str) -> Result<Recovered, RecoverError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(RecoverError::NoReason);
    }
    crate::app::error::check_text("reason", reason).map_err(|_| RecoverError::NoReason)?;
    let key = SigningKey::load(&settings.operator_key).map_err(|source| RecoverError::Key {
        path: settings.operator_key.clone(),
        source,
    })?;
    let repo = open_repo(settings)?;
    let lock = ChainLock::acquire(repo.path())?;
    let refname = settings.audit_refname();
    let index_path = settings.index_path();
    let mut check = entry_check(settings);

    let ref_tip = repo.refname_to_id(&refname).ok();
    let index_tip = Index::open_existing(&index_path)
        .ok()
        .flatten()
        .and_then(|i| i.position().ok().flatten());
    let verified = crate::app::audit::read_verified_tip(settings);
    let mut heads: Vec<(&'static str, Oid)> = Vec::new();
    for (what, head) in [
        ("audit ref", ref_tip),
        ("index's last entry", index_tip.map(|p| p.1)),
        ("last verified tip", verified.map(|p| p.1)),
    ] {
        if let Some(h) = head {
            if repo.find_commit(h).is_ok() && !heads.iter().any(|(_, o)| *o == h) {
                heads.push((what, h));
            }
        }
    }
    let walks: Vec<Walk> = heads
        .iter()
        .map(|(what, head)| walk(&repo, &mut check, what, *head))
        .collect();
    // The longest verified run; the audit ref's own on a tie.
    let best = walks
        .iter()
        .filter_map(|w| w.last_good)
        .max_by_key(|(seq, _)| *seq)
        .ok_or(RecoverError::NoVerifiedEntry)?;
    let mut set_aside = Vec::new();
    let now = super::clock::Clock::system().now();
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let mut missing = Vec::new();
    for (what, seq) in [
        ("index's last entry", index_tip),
        ("last verified tip", verified),
    ] {
        if let Some((s, c)) = seq {
            if repo.find_commit(c).is_err() {
                missing.push(MissingHead {
                    what: what.to_string(),
                    seq: s,
                    commit: c.to_string(),
                });
            }
        }
    }
    for w in &walks {
        if contains(&repo, best.1, w.head) {
            continue;
        }
        let name = format!(
            "refs/gov/set-aside/{stamp}/{}",
            w.what.replace(['\'', ' '], "-")
        );
        repo.reference(
            &name,
            w.head,
            false,
            &format!("gov audit recover: {reason}"),
        )?;
        let why = w.first_problem.clone().unwrap_or_else(|| {
            format!(
                "it is not on the chain resumed from entry #{} (commit {})",
                best.0, best.1
            )
        });
        set_aside.push(SetAside {
            what: w.what,
            commit: w.head,
            refname: name,
            why,
        });
    }
    let index_stale = index_tip.is_some_and(|(_, c)| c != best.1 && !contains(&repo, best.1, c));
    if set_aside.is_empty() && missing.is_empty() && ref_tip == Some(best.1) && !index_stale {
        return Err(RecoverError::NothingToRecover(best.0));
    }
    // The chain resumes from the last verified entry.
    cas_ref(
        &repo,
        &refname,
        best.1,
        ref_tip,
        &format!("gov audit recover: resume from #{}", best.0),
    )?;
    crate::store::git::make_durable(&repo, &[], Some(&refname))?;
    let index_moved_to = if index_path.exists() {
        Some(move_aside(&index_path, "tampered", now)?)
    } else {
        None
    };
    let mut index = Index::open(&index_path)?;
    index.rebuild(&repo, &refname, &mut check)?;
    let recovered = AuditRecovered {
        reason: reason.to_string(),
        resumed_from: ChainPoint {
            seq: best.0,
            commit: best.1.to_string(),
        },
        previous_audit_tip: ref_tip.map(|t| t.to_string()),
        set_aside: set_aside
            .iter()
            .map(|s| SetAsideHead {
                what: s.what.to_string(),
                commit: s.commit.to_string(),
                refname: s.refname.clone(),
                why: s.why.clone(),
            })
            .collect(),
        missing,
        index_moved_to: index_moved_to.as_ref().map(|p| p.display().to_string()),
    };
    let entry = NewEntry::new(
        Actor::operator(&settings.operator_name),
        Event::AuditRecovered(recovered),
    );
    let written = chain::append(
        &lock,
        &repo,
        &refname,
        &key,
        Role::Approver,
        vec![entry],
        now,
    )?;
    // The new entry is projected like any other: once its check passes.
    index.catch_up(&repo, &refname, &mut check)?;
    let last = written.last().ok_or_else(|| StoreError::BadEntry {
        commit: "-".into(),
        reason: "nothing was written".into(),
    })?;
    crate::app::audit::write_verified_tip(settings, last.entry.seq, &last.commit.to_string())?;
    Ok(Recovered {
        resumed_from: best,
        set_aside,
        index_moved_to,
        entry_seq: last.entry.seq,
    })
}
