//! Checking the audit chain (`gov audit verify`) and reading it (`log`,
//! `export`).
//!
//! Verification is done in Rust, without `git` or `ssh-keygen`:
//! - every audit commit carries a good signature by a key listed in
//!   `policies/allowed_signers` (as on `main`'s tip) with the server or the
//!   watchdog role;
//! - every message parses as an entry; the chain is linear, starts at #1 and
//!   counts up by one; every commit has the empty tree;
//! - the chain still contains the last tip `verify` accepted
//!   (`.gov/verified-tip`), and the one the index last applied: a ref moved
//!   back or rewritten is caught even with good signatures;
//! - every merge on `main`'s first-parent history is signed by an approver,
//!   or is a forge merge: exactly a submitted proposal commit (as a
//!   `proposal_submitted` entry names it), adding nothing but its file as
//!   submitted, and recorded as that proposal's approval (`via: forge`);
//!   a one-parent commit recorded as a squash or rebase merge on the forge
//!   (`kind: squash`, with the webhook's evidence) must add exactly that
//!   file to its parent, nothing else;
//! - the index agrees with Git.

use std::io::Write;
use std::path::PathBuf;

use git2::{Oid, Repository};

use crate::app::governance::{open_index, open_repo, GovError};
use crate::config::Settings;
use crate::domain::audit::Event;
use crate::domain::event::VIA_FORGE;
use crate::store::audit::entries_from;
/// The filter of `gov audit log` and `GET /audit`, and a signature's check,
/// as the edges name them.
pub use crate::store::entry_check::signature_status;
use crate::store::entry_check::signature_statuses;
use crate::store::entry_check::{
    proved_signer, read_chain, signature_problem, signer_roles, LoadSignersError, ReadCommit,
    SignersSource,
};
use crate::store::git::StoreError;
pub use crate::store::index::AuditFilter;
pub use crate::store::index::IndexedEntry;
use crate::store::index::{Index, Projection};
pub use crate::store::keys::SignatureCheck;
use crate::store::keys::{AllowedSigners, Role, SignersError};

/// Whether `e` is a record of a type gov writes itself that an agent
/// posted to `/audit`, which it could until 2026-12-04 (only state types
/// and `audit_flag_*` were refused then; see `Event::agent_may_post`).
/// gov writes no such record with an agent's actor, so each is listed for
/// the operator; none counts where gov reads records back.
fn posted_by_an_agent(e: &crate::domain::audit::AuditEntry) -> bool {
    let name = e.entry.event_type();
    e.entry.actor.is_agent() && Event::once_postable_records().any(|t| t == name)
}

/// What the chain says about proposal commits, for checking merges on
/// `main` that no approver signed.
#[derive(Debug, Default)]
struct ForgeRecords {
    /// Submitted proposal commits: the proposal's id, and the audit commit
    /// whose entry holds it (its file is rendered only for a merge that
    /// needs it).
    submitted: Vec<(Oid, String, Oid)>,
    /// Merge commits recorded as approvals of proposals made on the forge.
    approvals: std::collections::HashSet<String>,
    /// Merge commits of reviewed changes that are not proposals, recorded
    /// by gov (`forge_merge_recorded`), with the paths each changed.
    changes: std::collections::HashMap<String, Vec<String>>,
    /// Every proposal id a `proposal_submitted` entry records.
    proposals: std::collections::HashSet<String>,
    /// One-parent commits recorded as squash or rebase merges on the forge,
    /// with the proposal each approved.
    squashes: std::collections::HashMap<String, String>,
    /// Commits flagged as tampered forge merges, with the problem found.
    tampered: std::collections::HashMap<String, String>,
    /// Proposals that wait for a person, with their branch and commit (the
    /// oldest submission of each; complete after [`ForgeRecords::finish`]).
    pending: std::collections::HashMap<String, crate::app::orphans::PendingBranch>,
    /// Proposals decided or expired.
    closed: std::collections::HashSet<String>,
}

impl ForgeRecords {
    /// Notes one entry; entries come oldest first. Where two entries say
    /// something of the same merge commit, the oldest counts.
    /// `entry` is the audit commit that carries `e`.
    fn note(&mut self, e: &crate::domain::audit::AuditEntry, entry: Oid) {
        match &e.entry.event {
            Event::ProposalSubmitted(s) => {
                self.proposals.insert(s.proposal.proposal_id.clone());
                let commit = s.commit.as_deref().and_then(|c| Oid::from_str(c).ok());
                if let (Some(c), Some(branch)) = (commit, &s.proposal.branch) {
                    let p = &s.proposal;
                    self.submitted.push((c, p.proposal_id.clone(), entry));
                    if p.status == crate::domain::proposal::ProposalStatus::Pending {
                        let pending = crate::app::orphans::PendingBranch {
                            branch: branch.clone(),
                            commit: c,
                        };
                        self.pending.entry(p.proposal_id.clone()).or_insert(pending);
                    }
                }
            }
            Event::ProposalExpired(x) => {
                self.closed.insert(x.proposal.proposal_id.clone());
            }
            // Counted only as gov wrote it: before 2026-12-04 an agent
            // could post one (see `Event::agent_may_post`).
            Event::ForgeMergeRecorded(c) if e.entry.actor.is_gov() && c.via == VIA_FORGE => {
                self.changes
                    .entry(c.merge_commit.clone())
                    .or_insert_with(|| c.paths.clone());
            }
            Event::AuditFlagProposalTampered(t) if t.via.as_deref() == Some(VIA_FORGE) => {
                if let Some(m) = &t.merge_commit {
                    self.tampered
                        .entry(m.clone())
                        .or_insert_with(|| t.problem.clone());
                }
            }
            Event::ProposalDecided(d) => {
                self.closed.insert(d.proposal.proposal_id.clone());
                if d.via.as_deref() != Some(VIA_FORGE) {
                    return;
                }
                if let Some(m) = &d.merge_commit {
                    self.approvals.insert(m.clone());
                    let squash = d.kind.as_deref() == Some("squash") && d.evidence.is_some();
                    if squash {
                        self.squashes
                            .entry(m.clone())
                            .or_insert_with(|| d.proposal.proposal_id.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Once every entry is noted: a proposal ever decided or expired does
    /// not wait; submissions are searched newest first.
    fn finish(&mut self) {
        let closed = &self.closed;
        self.pending.retain(|id, _| !closed.contains(id));
        self.submitted.reverse();
    }

    /// Why merge `oid` is not a recorded forge merge of a submitted
    /// proposal (`Err`), or the proposal it approved (`Ok`).
    fn check(&self, repo: &Repository, oid: Oid) -> Result<Result<String, String>, VerifyError> {
        let commit = repo.find_commit(oid)?;
        let side = commit.parent_id(1)?;
        let mut found = None;
        for (submitted, id, entry) in &self.submitted {
            if *submitted == side || repo.graph_descendant_of(side, *submitted)? {
                found = Some((*submitted, id, *entry));
                break;
            }
        }
        let Some((submitted, id, entry)) = found else {
            return Ok(Err(format!(
                "it is not a forge merge of a submitted proposal either: it merges commit {}, which no `proposal_submitted` entry names",
                short(&side.to_string())
            )));
        };
        let path = proposal_path_in(repo, submitted, id)?;
        let file = submitted_file(repo, entry)?;
        if let Some(why) =
            crate::store::remote::forge_merge_problem(repo, oid, submitted, &path, file.as_bytes())?
        {
            return Ok(Err(format!(
                "it is not a faithful forge merge of proposal `{id}`: {why}"
            )));
        }
        if !self.approvals.contains(&oid.to_string()) {
            return Ok(Err(format!(
                "it merges proposal `{id}` but no `proposal_decided` entry records it as the approval (run `gov sync`)"
            )));
        }
        Ok(Ok(id.clone()))
    }

    /// For a one-parent commit recorded as a squash merge on the forge:
    /// why it is not exactly the approved proposal's file added (`Err`), or
    /// the proposal (`Ok`). `None` when no squash approval names it.
    fn check_squash(
        &self,
        repo: &Repository,
        oid: Oid,
    ) -> Result<Option<Result<String, String>>, VerifyError> {
        let Some(id) = self.squashes.get(&oid.to_string()) else {
            return Ok(None);
        };
        let Some((submitted, _, entry)) = self.submitted.iter().find(|(_, pid, _)| pid == id)
        else {
            return Ok(Some(Err(format!(
                "it is recorded as the squash merge of proposal `{id}`, which no `proposal_submitted` entry names"
            ))));
        };
        let path = proposal_path_in(repo, *submitted, id)?;
        let file = submitted_file(repo, *entry)?;
        Ok(Some(
            match crate::store::remote::squash_merge_problem(repo, oid, &path, file.as_bytes())? {
                Some(why) => Err(format!(
                    "it is recorded as the squash merge of proposal `{id}`, but {why}"
                )),
                None => Ok(id.clone()),
            },
        ))
    }
}

/// The proposal's file as submitted, rendered from the `proposal_submitted`
/// entry audit commit `entry` carries (read, and so checked, before).
fn submitted_file(repo: &Repository, entry: Oid) -> Result<String, VerifyError> {
    let read = crate::store::audit::read_entry(&repo.find_commit(entry)?)?;
    match &read.entry.entry.event {
        Event::ProposalSubmitted(s) => Ok(s.proposal.to_file()),
        _ => Err(VerifyError::from(StoreError::BadEntry {
            commit: entry.to_string(),
            reason: "the entry no longer records a submitted proposal".into(),
        })),
    }
}

/// The path at which a submitted proposal commit added `<id>.toml` (the
/// monthly layout or the flat one of older repositories).
fn proposal_path_in(repo: &Repository, submitted: Oid, id: &str) -> Result<String, VerifyError> {
    let commit = repo.find_commit(submitted)?;
    let name = format!("{id}.toml");
    let parent = commit.parent(0).ok().map(|p| p.tree()).transpose()?;
    let changes = crate::store::tree::changed_files(repo, parent.as_ref(), Some(&commit.tree()?))?;
    let added = changes
        .into_iter()
        .map(|c| c.path)
        .find(|path| path.rsplit('/').next() == Some(name.as_str()));
    Ok(added.unwrap_or_else(|| crate::domain::proposal::Proposal::legacy_file_path(id)))
}

/// Where `verify` keeps the last tip it accepted: `SEQ COMMIT`.
pub fn verified_tip_path(settings: &Settings) -> PathBuf {
    settings.local_dir().join("verified-tip")
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Gov(#[from] GovError),
    #[error(transparent)]
    Signers(#[from] SignersError),
    #[error("no allowed signers: `policies/allowed_signers` is neither on `{branch}` nor in the working tree")]
    NoSigners { branch: String },
    #[error("the audit chain changed while it was read (commit {commit} does not follow the commit before it); run `gov audit verify` again")]
    ChainChanged { commit: String },
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        VerifyError::Gov(e.into())
    }
}

impl From<git2::Error> for VerifyError {
    fn from(e: git2::Error) -> Self {
        VerifyError::Gov(StoreError::from(e).into())
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry's sequence number, when it has one.
    pub seq: Option<u64>,
    pub commit: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.seq, &self.commit) {
            (Some(s), Some(c)) => write!(f, "entry #{s} (commit {}): {}", short(c), self.reason),
            (None, Some(c)) => write!(f, "commit {}: {}", short(c), self.reason),
            (Some(s), None) => write!(f, "entry #{s}: {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// What `verify` found. `problems` is in chain order: the first is the
/// first bad entry.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub entries: u64,
    pub tip: Option<(u64, String)>,
    pub merges_checked: u64,
    /// Of those, the merges made on the forge (unsigned, each recorded by
    /// gov as an approval).
    pub forge_merges: u64,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The allowed signers as `main`'s tip has them, else the working file.
pub fn load_signers(settings: &Settings, repo: &Repository) -> Result<AllowedSigners, VerifyError> {
    let source = SignersSource {
        main_ref: settings.main_refname(),
        file: settings.allowed_signers_path(),
    };
    source.load(repo).map_err(|e| match e {
        LoadSignersError::Signers(e) => VerifyError::Signers(e),
        LoadSignersError::Missing { .. } => VerifyError::NoSigners {
            branch: settings.main_branch.clone(),
        },
    })
}

/// A position in the chain recorded earlier: `SEQ COMMIT`.
pub(crate) fn read_verified_tip(settings: &Settings) -> Option<(u64, Oid)> {
    let text = std::fs::read_to_string(verified_tip_path(settings)).ok()?;
    let (seq, commit) = text.trim().split_once(' ')?;
    Some((seq.parse().ok()?, Oid::from_str(commit).ok()?))
}

pub(crate) fn write_verified_tip(
    settings: &Settings,
    seq: u64,
    commit: &str,
) -> Result<(), StoreError> {
    let path = verified_tip_path(settings);
    std::fs::create_dir_all(settings.local_dir())
        .map_err(|e| StoreError::io("create", &settings.local_dir(), e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{seq} {commit}\n"))
        .map_err(|e| StoreError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("write", &path, e))
}

/// The commits of the chain whose tip is `tip`, oldest first, and whether
/// `known` (the commits of entries #1, #2, … as the index lists them) gave
/// them: the walk down first parents from the tip stops at the first
/// commit `known` lists (the tip itself when the index is as far as the
/// chain, or further: a writer may have gone on since the tip was read),
/// and `known` up to that commit is taken for the rest. A hint only: the
/// caller checks that each commit's first parent is the one before, and
/// walks the whole chain when one is not.
fn chain_commits(
    repo: &Repository,
    tip: Option<Oid>,
    known: Option<&[Oid]>,
) -> Result<(Vec<Oid>, bool), VerifyError> {
    let at: std::collections::HashMap<Oid, usize> = known
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, oid)| (*oid, i))
        .collect();
    let mut newest_first = Vec::new();
    let mut next = tip;
    while let Some(oid) = next.take() {
        if let Some(&i) = at.get(&oid) {
            let mut commits = known.unwrap_or_default()[..=i].to_vec();
            commits.extend(newest_first.into_iter().rev());
            return Ok((commits, true));
        }
        newest_first.push(oid);
        next = repo.find_commit(oid)?.parent_ids().next();
    }
    newest_first.reverse();
    Ok((newest_first, false))
}

/// A chain position the chain must still contain.
struct Checkpoint {
    seq: u64,
    commit: Oid,
    what: &'static str,
    seen: bool,
}

/// The problems found in one entry, in the order they are reported for
/// it, until its child (the next entry) is read: whether the child follows
/// it is reported between them.
struct Held {
    seq: Option<u64>,
    /// Its signature, message, tree and parents.
    own: Vec<Problem>,
    /// Where the chain starts and the checkpoints it rewrote.
    tail: Vec<Problem>,
}

impl Held {
    /// Adds this entry's problems to `found`, with the problem of its
    /// `child` (sequence number and commit) that does not follow it.
    fn settle(self, child: Option<(u64, Oid)>, found: &mut Vec<Problem>) {
        found.extend(self.tail.into_iter().rev());
        if let (Some((cseq, coid)), Some(s)) = (child, self.seq) {
            if s + 1 != cseq {
                // Reported on the child: it does not follow its parent.
                found.push(Problem {
                    seq: Some(cseq),
                    commit: Some(coid.to_string()),
                    reason: format!("follows entry #{s}, expected #{}", cseq.saturating_sub(1)),
                });
            }
        }
        found.extend(self.own.into_iter().rev());
    }
}

/// One pass of verify over the chain's commits as they are read, in chain
/// order: the problems found, the forge records, the fresh projection.
struct ChainPass<'i> {
    found: Vec<Problem>,
    /// Records of gov's own types that an agent posted (see
    /// [`posted_by_an_agent`]), as notes.
    posted: Vec<String>,
    /// The problems of the entry read just before (its parent), held until
    /// its child shows whether the child follows it.
    held: Option<Held>,
    forge: ForgeRecords,
    fresh: Option<Result<Projection<'i>, StoreError>>,
    /// The commit read just before.
    before: Option<Oid>,
    /// The last entry read: its sequence number and commit.
    tip: Option<(u64, String)>,
}

impl<'i> ChainPass<'i> {
    fn new(fresh: Option<Result<Projection<'i>, StoreError>>) -> Self {
        ChainPass {
            found: Vec::new(),
            posted: Vec::new(),
            held: None,
            forge: ForgeRecords::default(),
            fresh,
            before: None,
            tip: None,
        }
    }

    /// Checks the next commit of the chain; stops the pass when it does
    /// not follow the one before.
    fn take(
        &mut self,
        read: ReadCommit,
        checkpoints: &mut [Checkpoint],
    ) -> Result<(), VerifyError> {
        let oid = read.commit.oid;
        if read.first_parent != self.before {
            return Err(VerifyError::ChainChanged {
                commit: oid.to_string(),
            });
        }
        self.before = Some(oid);
        let seq = read.entry.as_ref().map(|e| e.entry.seq);
        let bad = |seq: Option<u64>, reason: String| Problem {
            seq,
            commit: Some(oid.to_string()),
            reason,
        };
        let mut own = Vec::new();
        let roles = read
            .entry
            .as_ref()
            .map_or(&[Role::Server, Role::Watchdog][..], |e| {
                signer_roles(e.entry.entry.event_type())
            });
        if let Some(why) = signature_problem(&read.signature, roles) {
            own.push(bad(seq, why));
        }
        if read.entry.is_none() {
            own.push(bad(None, "message is not a valid audit entry".into()));
        }
        if !read.commit.empty_tree {
            own.push(bad(
                seq,
                "commit carries files (an audit commit has the empty tree)".into(),
            ));
        }
        match read.commit.parent_count {
            0 | 1 => {}
            n => own.push(bad(
                seq,
                format!("chain is not linear: commit has {n} parents"),
            )),
        }
        let mut tail = Vec::new();
        if read.commit.parent_count == 0 && seq.is_some_and(|s| s != 1) {
            tail.push(bad(seq, "the chain starts here, not at entry #1".into()));
        }
        for cp in checkpoints.iter_mut().filter(|cp| Some(cp.seq) == seq) {
            cp.seen = true;
            if cp.commit != oid {
                tail.push(bad(
                    seq,
                    format!(
                        "the {} #{} was commit {}: the chain was rewritten",
                        cp.what,
                        cp.seq,
                        short(&cp.commit.to_string())
                    ),
                ));
            }
        }
        if let Some(parent) = self.held.take() {
            parent.settle(seq.map(|s| (s, oid)), &mut self.found);
        }
        self.held = Some(Held { seq, own, tail });
        self.tip = Some((seq.unwrap_or(0), oid.to_string()));
        if let Some(mut e) = read.entry {
            if posted_by_an_agent(&e.entry) {
                self.posted.push(format!(
                    "entry #{} (commit {}): `{}` posted `{}`, a record gov writes itself (refused since 2026-12-04); it counts for nothing",
                    e.entry.seq,
                    short(&oid.to_string()),
                    e.entry.entry.actor.0,
                    e.entry.entry.event_type()
                ));
            }
            self.forge.note(&e.entry, oid);
            // Projected with the role its signature proved (only used when
            // every entry passed: the chain is sound).
            e.signer = proved_signer(&read.signature, roles, e.signer);
            if let Some(Ok(p)) = &mut self.fresh {
                if let Err(err) = p.apply(&e) {
                    self.fresh = Some(Err(err));
                }
            }
        }
        Ok(())
    }
}

/// Walks the whole chain and `main`'s merges; see the module docs. When all
/// is well, records the tip in `.gov/verified-tip`.
pub fn verify(settings: &Settings) -> Result<VerifyReport, VerifyError> {
    let repo = open_repo(settings)?;
    let signers = load_signers(settings, &repo)?;
    let mut report = VerifyReport::default();
    // Read the index as it is: catching it up would forget what it saw.
    let index = Index::open_existing(&settings.index_path())?;
    let index_pos = match index.as_ref().map(Index::position) {
        Some(Ok(pos)) => pos,
        Some(Err(e)) => {
            report
                .notes
                .push(format!("cannot read the index, not comparing it: {e}"));
            None
        }
        None => None,
    };
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    if let Some((seq, commit)) = read_verified_tip(settings) {
        checkpoints.push(Checkpoint {
            seq,
            commit,
            what: "last verified tip",
            seen: false,
        });
    }
    if let Some((seq, commit)) = index_pos {
        checkpoints.push(Checkpoint {
            seq,
            commit,
            what: "index's last entry",
            seen: false,
        });
    }

    let refname = settings.audit_refname();
    let tip = match repo.refname_to_id(&refname) {
        Ok(o) => Some(o),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    // The index lists the chain's commits: read them without walking the
    // chain first (each link is checked as it is read).
    let mut known = index
        .as_ref()
        .and_then(|i| i.chain_commits().ok().flatten());
    let pass = loop {
        // The chain's commits, oldest first: each is read once (its entry
        // parsed and its signature checked on every core) and checked here
        // in chain order, and projected afresh for the index comparison
        // below.
        let (commits, listed) = chain_commits(&repo, tip, known.take().as_deref())?;
        for cp in checkpoints.iter_mut() {
            cp.seen = false;
        }
        let fresh = match index.as_ref().map(Index::projection) {
            None => None,
            Some(Ok(p)) => p.map(Ok),
            Some(Err(e)) => Some(Err(e)),
        };
        let mut pass = ChainPass::new(fresh);
        let read = read_chain(repo.path(), &signers, &commits, |read| {
            pass.take(read, &mut checkpoints)
        });
        match read {
            // The index's list does not follow the chain, or names what
            // cannot be read: walk the chain (a real failure fails again).
            Err(_) if listed => continue,
            other => other?,
        }
        report.entries = commits.len() as u64;
        break pass;
    };
    let ChainPass {
        mut found,
        posted,
        held,
        mut forge,
        fresh,
        tip: chain_tip,
        ..
    } = pass;
    report.tip = chain_tip;
    report.notes.extend(posted);
    if let Some(last) = held {
        last.settle(None, &mut found);
    }
    forge.finish();
    let tip_seq = report.tip.as_ref().map_or(0, |t| t.0);
    for cp in &checkpoints {
        if !cp.seen && cp.seq > tip_seq {
            found.push(Problem {
                seq: Some(cp.seq),
                commit: Some(cp.commit.to_string()),
                reason: format!(
                    "the audit ref moved back: the {} #{} is no longer on the chain, whose tip is #{tip_seq}",
                    cp.what, cp.seq
                ),
            });
        }
    }
    check_index(
        index.as_ref(),
        index_pos,
        tip_seq,
        &mut report.notes,
        &mut found,
    );
    // The index's contents, once the chain itself is sound up to it.
    if let (Some(fresh), true) = (fresh, found.is_empty()) {
        match fresh.and_then(Projection::difference) {
            Ok(None) => {}
            Ok(Some(why)) => found.push(Problem {
                seq: None,
                commit: None,
                reason: format!("the index was changed outside gov: {why}"),
            }),
            Err(e) => found.push(Problem {
                seq: None,
                commit: None,
                reason: format!("the index cannot be compared with the chain: {e}"),
            }),
        }
    }
    check_main_merges(settings, &repo, &signers, &forge, &mut report, &mut found)?;
    let trust = check_in_force(settings, &repo, &forge, &mut report, &mut found)?;
    let known = |id: &str| Ok(forge.proposals.contains(id));
    let merges = trust.as_ref().map(|t| t.merges());
    let orphans =
        crate::app::orphans::find(&repo, settings, merges, &signers, &forge.pending, &known)
            .map_err(|e| StoreError::BadEntry {
                commit: "-".into(),
                reason: e.to_string(),
            })?;
    for orphan in orphans {
        found.push(Problem {
            seq: None,
            commit: Some(orphan.commit().to_string()),
            reason: orphan.describe(&settings.main_branch),
        });
    }
    report.problems = found;
    if report.is_ok() {
        if let Some((seq, commit)) = &report.tip {
            write_verified_tip(settings, *seq, commit)?;
        }
    }
    Ok(report)
}

fn check_index(
    index: Option<&Index>,
    pos: Option<(u64, Oid)>,
    tip_seq: u64,
    notes: &mut Vec<String>,
    found: &mut Vec<Problem>,
) {
    let Some(index) = index else {
        notes.push("no index yet (it is built on the next open)".into());
        return;
    };
    let indexed = pos.map_or(0, |p| p.0);
    if let Ok(count) = index.count() {
        if count != indexed {
            found.push(Problem {
                seq: None,
                commit: None,
                reason: format!("the index has {count} entries but says its last is #{indexed}; run `gov reindex`"),
            });
        }
    }
    if indexed < tip_seq {
        notes.push(format!(
            "the index is behind: it has #{indexed}, the chain #{tip_seq} (it catches up on the next open)"
        ));
    }
}

fn check_main_merges(
    settings: &Settings,
    repo: &Repository,
    signers: &AllowedSigners,
    forge: &ForgeRecords,
    report: &mut VerifyReport,
    found: &mut Vec<Problem>,
) -> Result<(), VerifyError> {
    let Ok(mut oid) = repo.refname_to_id(&settings.main_refname()) else {
        return Ok(());
    };
    // `main`'s first-parent history, newest first, with each commit's
    // parent count; the merges' signatures are checked in batches.
    let mut history = Vec::new();
    loop {
        let commit = repo.find_commit(oid)?;
        history.push((oid, commit.parent_count()));
        match commit.parent_ids().next() {
            Some(p) => oid = p,
            None => break,
        }
    }
    let merges: Vec<Oid> = history
        .iter()
        .filter(|(_, parents)| *parents >= 2)
        .map(|(oid, _)| *oid)
        .collect();
    let mut statuses = signature_statuses(repo, signers, &merges).into_iter();
    for (oid, parents) in history {
        if parents == 1 {
            match forge.check_squash(repo, oid)? {
                // A squash the chain flagged as tampered (a merge commit
                // is judged by the checks below).
                None => {
                    if let Some(problem) = forge.tampered.get(&oid.to_string()) {
                        found.push(Problem {
                            seq: None,
                            commit: Some(oid.to_string()),
                            reason: format!(
                                "commit on `{}` was refused as a forge merge and flagged: {problem}",
                                settings.main_branch
                            ),
                        });
                    }
                }
                Some(Ok(id)) => report.notes.push(format!(
                    "commit {} on `{}` was squash-merged on the forge: it approved proposal `{id}` and adds only its file as submitted",
                    short(&oid.to_string()),
                    settings.main_branch
                )),
                Some(Err(why)) => found.push(Problem {
                    seq: None,
                    commit: Some(oid.to_string()),
                    reason: format!("commit on `{}`: {why}", settings.main_branch),
                }),
            }
        }
        if parents >= 2 {
            report.merges_checked += 1;
            let status = statuses.next().unwrap_or(SignatureCheck::Missing);
            if let Some(why) = signature_problem(&status, &[Role::Approver]) {
                if let Some(paths) = forge.changes.get(&oid.to_string()) {
                    report.forge_merges += 1;
                    report.notes.push(format!(
                        "merge {} on `{}` was made on the forge: a reviewed change ({}) that gov recorded",
                        short(&oid.to_string()),
                        settings.main_branch,
                        crate::domain::paths::quoted_list(paths)
                    ));
                    continue;
                }
                match forge.check(repo, oid)? {
                    Ok(id) => {
                        report.forge_merges += 1;
                        report.notes.push(format!(
                            "merge {} on `{}` was made on the forge: it approved proposal `{id}` and adds only its file as submitted",
                            short(&oid.to_string()),
                            settings.main_branch
                        ))
                    }
                    Err(forge_why) => found.push(Problem {
                        seq: None,
                        commit: Some(oid.to_string()),
                        reason: format!(
                            "merge on `{}`: {why}, and {forge_why}",
                            settings.main_branch
                        ),
                    }),
                }
            }
        }
    }
    Ok(())
}

/// The root of trust: every commit on `main` that changes governed paths
/// without authorization and is still there is a problem; one that was
/// later reverted or adopted is a note. Returns the walk's outcome (`None`
/// without `main`).
fn check_in_force(
    settings: &Settings,
    repo: &Repository,
    forge: &ForgeRecords,
    report: &mut VerifyReport,
    found: &mut Vec<Problem>,
) -> Result<Option<crate::store::trust::TrustState>, VerifyError> {
    let Ok(tip) = repo.refname_to_id(&settings.main_refname()) else {
        return Ok(None);
    };
    let recorded = |merge: Oid| {
        let merge = merge.to_string();
        forge.approvals.contains(&merge) || forge.changes.contains_key(&merge)
    };
    let trust = crate::store::trust::TrustState::compute(repo, tip, None, &recorded)?;
    let branch = &settings.main_branch;
    for r in &trust.refused {
        found.push(Problem {
            seq: None,
            commit: Some(r.commit.clone()),
            reason: format!("not in force on `{branch}`: {}", r.reason),
        });
    }
    for r in &trust.resolved {
        report.notes.push(format!(
            "commit {} on `{branch}` was refused ({}) and later reverted or adopted",
            short(&r.commit),
            r.reason
        ));
    }
    Ok(Some(trust))
}

/// One line of `gov audit log`.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub indexed: IndexedEntry,
    pub signature: SignatureCheck,
}

/// Entries from the index (caught up first), newest first, each with the
/// status of its commit's signature.
pub fn log(settings: &Settings, filter: &AuditFilter) -> Result<Vec<LogLine>, VerifyError> {
    let (repo, index) = open_index(settings)?;
    let signers = load_signers(settings, &repo)?;
    let rows = index.query(filter)?;
    Ok(rows
        .into_iter()
        .map(|indexed| {
            let signature = match Oid::from_str(&indexed.commit) {
                Ok(oid) => signature_status(&repo, &signers, oid),
                Err(_) => SignatureCheck::Bad("commit id in the index is malformed".into()),
            };
            LogLine { indexed, signature }
        })
        .collect())
}

/// Writes every entry as one JSON line in the original's field names,
/// oldest first, read from Git. Returns how many were written.
pub fn export(settings: &Settings, out: &mut dyn Write) -> Result<u64, VerifyError> {
    let repo = open_repo(settings)?;
    let mut n = 0;
    for e in entries_from(&repo, &settings.audit_refname(), 1)? {
        let e = e?;
        let line = serde_json::to_string(&crate::wire::AuditRecord::from(&e.entry))
            .map_err(|err| StoreError::io("write", std::path::Path::new("<stdout>"), err.into()))?;
        writeln!(out, "{line}")
            .map_err(|err| StoreError::io("write", std::path::Path::new("<stdout>"), err))?;
        n += 1;
    }
    Ok(n)
}

/// The newest indexed entries that pass `filter` (`GET /audit`, the
/// dashboard), each with its commit and signer.
pub fn indexed(
    svc: &super::service::Service,
    filter: &AuditFilter,
) -> Result<Vec<IndexedEntry>, super::error::AppError> {
    let index = svc.governance().index()?;
    index
        .query(filter)
        .map_err(super::error::AppError::internal)
}

/// How many entries the index holds: the sequence number of its last
/// (the chain numbers its entries from 1, and `gov audit verify` checks
/// that the index holds each), read in one lookup where counting the rows
/// read the whole table (2-4 ms at 105,000 entries, on every `/status`).
pub fn entry_count(svc: &super::service::Service) -> Result<u64, super::error::AppError> {
    let index = svc.governance().index()?;
    index
        .position()
        .map(|p| p.map_or(0, |(seq, _)| seq))
        .map_err(super::error::AppError::internal)
}
