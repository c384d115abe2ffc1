//! Teams through a Git remote: `gov sync`, the forge webhook and the
//! watchdog's pass all call [`sync`].
//!
//! One sync (one at a time per repository: a file lock):
//! 1. fetches the remote's `main`, audit ref and gov's branches into
//!    `refs/remotes/<remote>/…` with the system `git` (any transport, the
//!    user's SSH and credential set-up, a time limit, no prompts);
//! 2. under the chain lock, takes the commits the remote's `main` has on top
//!    of ours, oldest first. Each must be a forge merge of a pending
//!    proposal: exactly its submitted commit, adding exactly its file as
//!    submitted ([`forge_merge_problem`]); or, when a signed webhook
//!    reported it ([`record_merge_evidence`]), a squash or rebase merge of
//!    the proposal's pull request adding exactly that file
//!    ([`squash_merge_problem`]), or a reviewed change that is not a
//!    proposal (recorded as `forge_merge_recorded`). Each such merge is
//!    recorded as the proposal's approval, attributed to the merger named by
//!    the webhook (else the merge's author), through the same checks as
//!    `gov approve` ([`approve_by_forge`]); then local `main` is
//!    fast-forwarded to the last merge taken. The first commit that is
//!    anything else stops the walk: it is refused and audit-flagged
//!    (`audit_flag_proposal_tampered` when it merges a proposal,
//!    `audit_flag_main_diverged` otherwise), and `main` stays where it was
//!    (never moved backwards, never reset). A flag is written once per
//!    offending commit, not on every pass;
//! 3. pushes, never forced: `main` and the audit ref when they are ahead of
//!    the remote's, every pending proposal's branch, the `gov/rejected/` and
//!    `gov/expired/` branches the remote lacks; it deletes the remote's
//!    branches of proposals that are no longer pending;
//! 4. with `[remote.forge]`, opens (once) a pull request per pending
//!    proposal on the remote and closes those of rejected and expired ones.
//!
//! Its outcome is kept in `.gov/sync-state.json` for [`remote_status`],
//! which adds what local refs hold that the remote lacks.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use git2::{Oid, Repository};
use serde::Serialize;

use super::error::AppError;
use super::proposals::{approve_by_forge, ForgeMerge};
use super::service::{Service, Step};
use crate::config::{ForgeSettings, Settings};
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::event::{
    ForgeChangeMerged, MainDiverged, ProposalTampered, PullRequestClosed, PullRequestOpened,
    VIA_FORGE,
};
use crate::domain::forge::{pull_request_text, redact_text, MergeEvidence};
use crate::domain::proposal::{Proposal, ProposalStatus};
use crate::store::forge::{self as forge_api, ForgeApi};
use crate::store::index::AuditFilter;
use crate::store::keys::Role;
use crate::store::lock::{ChainLock, SYNC_LOCK_FILE};
use crate::store::projection;
use crate::store::remote::{
    self as git_remote, commits_ahead, forge_merge_problem, is_fast_forward, squash_merge_problem,
    tracking_ref, RefUpdate, RemoteError,
};
pub use crate::wire::{RemoteStatus, SyncRecord, Waiting};

/// Where rejected and expired proposals' branches are kept (see
/// `app::proposals`); pushed so that the team sees the outcome.
const KEPT_PREFIXES: &[&str] = &["gov/rejected/", "gov/expired/"];

/// How far back the remote's `main` is walked looking for ours.
const MAX_WALK: usize = 100_000;

/// The event types this module looks up in the index (named in
/// `domain::event`'s table).
const MERGE_REPORTED: &str = "forge_merge_reported";
const PULL_REQUEST_OPENED: &str = "pull_request_opened";
const PULL_REQUEST_CLOSED: &str = "pull_request_closed";

/// A proposal approved by a forge merge during a sync.
#[derive(Debug, Clone, Serialize)]
pub struct ForgeApproved {
    pub proposal_id: String,
    pub merge_commit: String,
    pub merged_by: String,
    /// `merge` (a merge commit) or `squash` (one commit: a squash or a
    /// rebase merge, taken only with the webhook's evidence).
    pub kind: &'static str,
}

/// A merged pull request that is not a proposal, taken onto `main` on the
/// strength of the forge's signed evidence.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeTaken {
    pub merge_commit: String,
    pub merged_by: String,
    pub pull_request: u64,
    pub paths: Vec<String>,
}

/// A pull request gov opened or closed for a proposal.
#[derive(Debug, Clone, Serialize)]
pub struct PullRequestNote {
    pub proposal_id: String,
    pub number: u64,
    /// `opened` or `closed`.
    pub action: &'static str,
    pub url: Option<String>,
}

/// What one sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub remote: String,
    /// The remote's URL, credentials taken out.
    pub url: String,
    pub approved: Vec<ForgeApproved>,
    pub changes: Vec<ChangeTaken>,
    /// `main` moved from the first to the second commit.
    pub main_moved: Option<(String, String)>,
    /// What was refused or could not be done; each needs a person's eye.
    pub refused: Vec<String>,
    /// Remote branches created or updated.
    pub pushed: Vec<String>,
    /// Remote branches deleted.
    pub deleted: Vec<String>,
    pub pull_requests: Vec<PullRequestNote>,
    /// Calls to the forge's API that failed (tried again on the next sync).
    pub forge_errors: Vec<String>,
}

impl SyncReport {
    /// Nothing was refused.
    pub fn is_clean(&self) -> bool {
        self.refused.is_empty()
    }
}

fn remote_error(e: RemoteError) -> AppError {
    match e {
        RemoteError::NotConfigured(_) => AppError::NotConfigured(e.to_string()),
        other => AppError::internal(crate::domain::errors::error_chain(&other)),
    }
}

/// The configured remote's name, or why there is none.
pub fn configured_remote(settings: &Settings) -> Result<String, AppError> {
    settings.remote.clone().ok_or_else(|| {
        AppError::NotConfigured("no remote is configured: set `[remote] name` in gov.toml".into())
    })
}

fn sync_state_path(settings: &Settings) -> std::path::PathBuf {
    settings.local_dir().join("sync-state.json")
}

fn timeout(settings: &Settings) -> Duration {
    Duration::from_secs(settings.remote_timeout_seconds)
}

/// The entries' author: the watchdog when it is the one syncing.
fn actor_of(tx: &crate::app::governance::Tx<'_>) -> Actor {
    match tx.signer().1 {
        Role::Watchdog => Actor::watchdog(),
        _ => Actor::server(),
    }
}

/// Fetches, takes the forge merges, pushes, keeps the forge's pull
/// requests in step. See the module docs. One sync at a time per
/// repository (a file lock), and each one's outcome is kept for
/// [`remote_status`].
pub fn sync(svc: &Service) -> Result<SyncReport, AppError> {
    let settings = svc.settings();
    let remote = configured_remote(settings)?;
    let repo = svc.open_repo()?;
    let _one_at_a_time =
        ChainLock::acquire_named(repo.path(), SYNC_LOCK_FILE).map_err(AppError::internal)?;
    let result = sync_locked(svc, &repo, &remote);
    let record = SyncRecord {
        at: Timestamp(svc.now()).to_rfc3339(),
        ok: result.as_ref().is_ok_and(|r| r.is_clean()),
        error: result.as_ref().err().map(|e| redact_text(&e.to_string())),
        pushed: result
            .as_ref()
            .map(|r| r.pushed.clone())
            .unwrap_or_default(),
        refused: result
            .as_ref()
            .map(|r| r.refused.clone())
            .unwrap_or_default(),
        forge_errors: result
            .as_ref()
            .map(|r| r.forge_errors.clone())
            .unwrap_or_default(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        if let Err(e) = git_remote::write_state(&sync_state_path(settings), &bytes) {
            tracing::warn!("cannot keep the sync's outcome: {e}");
        }
    }
    result
}

fn sync_locked(svc: &Service, repo: &Repository, remote: &str) -> Result<SyncReport, AppError> {
    let settings = svc.settings();
    let mut prefixes = vec![settings.proposal_prefix.as_str()];
    prefixes.extend(KEPT_PREFIXES);
    git_remote::fetch(
        repo,
        remote,
        &[&settings.main_branch, &settings.audit_ref],
        &prefixes,
        timeout(settings),
    )
    .map_err(remote_error)?;
    let mut report = svc.transact(|tx| take_forge_merges(svc, tx, remote))?;
    if !report.changes.is_empty() || !report.approved.is_empty() {
        svc.forget_in_force();
    }
    report.url = git_remote::remote_url(repo, remote).map_err(remote_error)?;
    // Reload the policy set now if main moved (a server would on its next
    // request anyway).
    if report.main_moved.is_some() {
        let _ = svc.policy_at(repo);
    }
    let updates = plan_push(svc, repo, remote, &mut report)?;
    git_remote::push(repo, remote, &updates, timeout(settings)).map_err(remote_error)?;
    for u in updates {
        let name = u.dst.trim_start_matches("refs/heads/").to_string();
        match u.src {
            Some(_) => report.pushed.push(name),
            None => report.deleted.push(name),
        }
    }
    if let Some(forge) = &settings.forge {
        pull_requests(svc, repo, remote, forge, &mut report)?;
    }
    Ok(report)
}

/// The remote, its last sync and what waits to be pushed; `None` when no
/// remote is configured.
pub fn remote_status(svc: &Service) -> Result<Option<RemoteStatus>, AppError> {
    let settings = svc.settings();
    let Some(remote) = settings.remote.clone() else {
        return Ok(None);
    };
    let repo = svc.open_repo()?;
    let url = git_remote::remote_url(&repo, &remote).unwrap_or_else(|e| e.to_string());
    let last_sync = git_remote::read_state(&sync_state_path(settings))
        .and_then(|b| serde_json::from_slice(&b).ok());
    let ahead = |branch: &str| -> Result<usize, AppError> {
        let Ok(local) = repo.refname_to_id(&format!("refs/heads/{branch}")) else {
            return Ok(0);
        };
        let theirs = repo.refname_to_id(&tracking_ref(&remote, branch)).ok();
        Ok(commits_ahead(&repo, local, theirs)?)
    };
    // Audit entries are numbered: what the remote lacks is the difference
    // of the two tips' sequence numbers, not a walk of the whole chain
    // (this runs for every `/status` and every dashboard page).
    let seq_at = |refname: &str| -> u64 {
        repo.refname_to_id(refname)
            .ok()
            .and_then(|oid| repo.find_commit(oid).ok())
            .and_then(|c| c.message().and_then(crate::store::audit::seq_of_message))
            .unwrap_or(0)
    };
    let audit_entries = seq_at(&format!("refs/heads/{}", settings.audit_ref))
        .saturating_sub(seq_at(&tracking_ref(&remote, &settings.audit_ref)));
    let mut waiting = Waiting {
        main_commits: ahead(&settings.main_branch)?,
        audit_entries: usize::try_from(audit_entries).unwrap_or(usize::MAX),
        proposal_branches: Vec::new(),
    };
    let pending = svc.read(|conn| projection::proposals(conn, Some("pending"), u32::MAX))?;
    for p in pending {
        let Some(branch) = p.branch else { continue };
        let local = repo.refname_to_id(&format!("refs/heads/{branch}")).ok();
        let theirs = repo.refname_to_id(&tracking_ref(&remote, &branch)).ok();
        if local.is_some() && local != theirs {
            waiting.proposal_branches.push(branch);
        }
    }
    Ok(Some(RemoteStatus {
        name: remote,
        url,
        last_sync,
        waiting,
    }))
}

/// Records what a signed webhook says about a merged pull request, once
/// per merge commit. The next sync reads it: it names the approver, and it
/// is what lets a squash or rebase merge, or a reviewed change that is not
/// a proposal, be taken. Returns whether it was new.
pub fn record_merge_evidence(svc: &Service, ev: &MergeEvidence) -> Result<bool, AppError> {
    let prefix = svc.settings().proposal_prefix.clone();
    svc.transact(|tx| -> Step<bool> {
        if recorded_evidence(tx)?.get(&ev.merge_commit) == Some(ev) {
            return Ok((Ok(false), vec![]));
        }
        let mut entry = NewEntry::new(actor_of(tx), Event::ForgeMergeReported(ev.clone()));
        if let Some(id) = ev.head_ref.strip_prefix(&prefix) {
            entry = entry.proposal(id);
        }
        Ok((Ok(true), vec![entry]))
    })
}

/// The evidence recorded so far, by merge commit.
fn recorded_evidence(
    tx: &crate::app::governance::Tx<'_>,
) -> Result<HashMap<String, MergeEvidence>, AppError> {
    let rows = tx
        .index()
        .query(&AuditFilter {
            event_type: Some(MERGE_REPORTED.into()),
            recorded_by_gov: true,
            ..AuditFilter::default()
        })
        .map_err(AppError::internal)?;
    // Newest first: the newest report of a merge commit wins.
    let mut out = HashMap::new();
    for r in rows.into_iter().rev() {
        if let Event::ForgeMergeReported(ev) = r.entry.entry.event {
            out.insert(ev.merge_commit.clone(), ev);
        }
    }
    Ok(out)
}

/// How the remote's `main` relates to ours.
enum Remote {
    /// Nothing to take: the same, behind ours, or not there.
    Nothing,
    /// Ours is not in its history.
    Diverged { local: Oid, remote: Oid },
    /// These commits are on top of ours, oldest first.
    Ahead { commits: Vec<Oid> },
}

fn relate(repo: &Repository, local: Oid, remote: Option<Oid>) -> Result<Remote, AppError> {
    let Some(remote) = remote else {
        return Ok(Remote::Nothing);
    };
    if is_fast_forward(repo, remote, local)? {
        return Ok(Remote::Nothing);
    }
    if !repo.graph_descendant_of(remote, local)? {
        return Ok(Remote::Diverged { local, remote });
    }
    let mut commits = Vec::new();
    let mut at = remote;
    while at != local {
        if commits.len() >= MAX_WALK {
            return Ok(Remote::Diverged { local, remote });
        }
        commits.push(at);
        match repo.find_commit(at)?.parent_ids().next() {
            Some(p) => at = p,
            // Ours is in its history, but not on its first-parent line.
            None => return Ok(Remote::Diverged { local, remote }),
        }
    }
    commits.reverse();
    Ok(Remote::Ahead { commits })
}

fn short(oid: Oid) -> String {
    oid.to_string().chars().take(12).collect()
}

/// The pending proposal that merge `commit` brings in: the one whose
/// submitted commit is its second parent or in that parent's history.
fn merged_proposal(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    pending: &[(Oid, Proposal)],
) -> Result<Option<(Oid, Proposal)>, AppError> {
    let Ok(side) = commit.parent_id(1) else {
        return Ok(None);
    };
    for (submitted, p) in pending {
        if is_fast_forward(repo, *submitted, side)? {
            return Ok(Some((*submitted, p.clone())));
        }
    }
    Ok(None)
}

/// Whether an entry of `event_type` (about `proposal`) already carries
/// `key` = `value`: a refusal is flagged once, not on every pass.
fn already_flagged(
    tx: &crate::app::governance::Tx<'_>,
    event_type: &str,
    proposal: Option<&str>,
    key: &str,
    value: &str,
) -> Result<bool, AppError> {
    let rows = tx
        .index()
        .query(&AuditFilter {
            event_type: Some(event_type.into()),
            proposal_id: proposal.map(str::to_string),
            limit: Some(200),
            recorded_by_gov: true,
            ..AuditFilter::default()
        })
        .map_err(AppError::internal)?;
    Ok(rows
        .iter()
        .any(|r| r.entry.entry.payload().get(key).and_then(|v| v.as_str()) == Some(value)))
}

/// Records `flag` about `proposal` unless an entry of its type already
/// carries `key` = `value` (a refusal is flagged once, not on every pass).
fn flag_once(
    tx: &crate::app::governance::Tx<'_>,
    entries: &mut Vec<NewEntry>,
    flag: Event,
    proposal: Option<&Proposal>,
    key: &str,
    value: &str,
) -> Result<(), AppError> {
    let id = proposal.map(|p| p.proposal_id.as_str());
    if already_flagged(tx, flag.name(), id, key, value)? {
        return Ok(());
    }
    let mut entry = NewEntry::new(actor_of(tx), flag);
    if let Some(p) = proposal {
        entry = entry.agent(&p.proposed.agent_id).proposal(&p.proposal_id);
    }
    entries.push(entry);
    Ok(())
}

/// The paths `commit` changes against its first parent.
fn changed_paths(repo: &Repository, commit: &git2::Commit<'_>) -> Result<Vec<String>, AppError> {
    let base = commit.parent(0)?.tree()?;
    let changes = crate::store::tree::changed_files(repo, Some(&base), Some(&commit.tree()?))?;
    Ok(changes.into_iter().map(|c| c.path).collect())
}

fn take_forge_merges(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    remote: &str,
) -> Step<SyncReport> {
    let settings = svc.settings();
    let repo = tx.repo();
    let actor = actor_of(tx);
    let mut report = SyncReport {
        remote: remote.to_string(),
        ..SyncReport::default()
    };
    let mut entries = Vec::new();
    let main_ref = settings.main_refname();
    let main = &settings.main_branch;
    let local = tx
        .ref_target(&main_ref)
        .map_err(AppError::internal)?
        .ok_or_else(|| AppError::internal(format!("`{main_ref}` does not exist")))?;
    let remote_main = repo.refname_to_id(&tracking_ref(remote, main)).ok();
    let commits = match relate(repo, local, remote_main)? {
        Remote::Nothing => return Ok((Ok(report), entries)),
        Remote::Diverged { local, remote: r } => {
            let reason = format!(
                "`{remote}/{main}` ({}) is not a fast-forward of local `{main}` ({}); local `{main}` was not moved",
                short(r),
                short(local),
            );
            let flag = MainDiverged {
                remote: remote.into(),
                local_main: local.to_string(),
                remote_main: Some(r.to_string()),
                commit: None,
                reason: reason.clone(),
            };
            flag_once(
                tx,
                &mut entries,
                Event::AuditFlagMainDiverged(flag),
                None,
                "remote_main",
                &r.to_string(),
            )?;
            report.refused.push(reason);
            return Ok((Ok(report), entries));
        }
        Remote::Ahead { commits, .. } => commits,
    };
    let pending: Vec<(Oid, Proposal)> =
        projection::proposals(tx.index().conn(), Some("pending"), u32::MAX)?
            .into_iter()
            .filter_map(|p| {
                let c = p.commit.as_deref().and_then(|c| Oid::from_str(c).ok())?;
                Some((c, p))
            })
            .collect();
    let evidence = recorded_evidence(tx)?;
    let now = Timestamp(svc.now());
    let mut good = local;
    for oid in commits {
        let commit = repo.find_commit(oid)?;
        let ev = evidence
            .get(&oid.to_string())
            .filter(|e| &e.base_ref == main);
        let is_merge = commit.parent_count() >= 2;
        // The pending proposal it brings in: by its second parent, or (a
        // squash or rebase) by the branch the forge says it merged.
        let mut merged = if is_merge {
            merged_proposal(repo, &commit, &pending)?
        } else {
            None
        };
        if merged.is_none() {
            if let Some(id) = ev.and_then(|e| e.head_ref.strip_prefix(&settings.proposal_prefix)) {
                merged = pending.iter().find(|(_, p)| p.proposal_id == id).cloned();
            }
        }
        let Some((submitted, p)) = merged else {
            if let Some(ev) = ev.filter(|e| !e.head_ref.starts_with(&settings.proposal_prefix)) {
                // A reviewed change merged on the forge, not a proposal:
                // recorded so that what it changes counts as authorized.
                let paths = changed_paths(repo, &commit)?;
                let change = ForgeChangeMerged {
                    via: VIA_FORGE.into(),
                    merge_commit: oid.to_string(),
                    merged_by: format!("@{}", ev.merged_by),
                    kind: if is_merge { "merge" } else { "squash" }.into(),
                    paths: paths.clone(),
                    evidence: ev.clone(),
                };
                entries.push(NewEntry::new(
                    actor.clone(),
                    Event::ForgeMergeRecorded(change),
                ));
                report.changes.push(ChangeTaken {
                    merge_commit: oid.to_string(),
                    merged_by: format!("@{}", ev.merged_by),
                    pull_request: ev.pull_request,
                    paths,
                });
                good = oid;
                continue;
            }
            let reason = format!(
                "commit {} on `{remote}/{main}` is not the merge of a pending proposal; local `{main}` stops before it",
                short(oid),
            );
            let flag = MainDiverged {
                remote: remote.into(),
                local_main: good.to_string(),
                remote_main: remote_main.map(|r| r.to_string()),
                commit: Some(oid.to_string()),
                reason: reason.clone(),
            };
            flag_once(
                tx,
                &mut entries,
                Event::AuditFlagMainDiverged(flag),
                None,
                "commit",
                &oid.to_string(),
            )?;
            report.refused.push(reason);
            break;
        };
        let merged_by = match ev {
            Some(e) => format!("@{}", e.merged_by),
            None => {
                let author = commit.author();
                format!(
                    "{} <{}>",
                    author.name().unwrap_or("unknown"),
                    author.email().unwrap_or("")
                )
            }
        };
        let path = crate::store::proposals::file_in_commit(repo, submitted, &p)
            .map_err(AppError::internal)?
            .map_or_else(|| p.file_path(), |(path, _)| path);
        let content = p.to_file();
        let problem = match ev {
            _ if is_merge => forge_merge_problem(repo, oid, submitted, &path, content.as_bytes())?,
            Some(e) if e.head_sha != submitted.to_string() => Some(format!(
                "the pull request's head was commit {}, not the submitted proposal commit {}",
                e.head_sha.get(..12).unwrap_or(&e.head_sha),
                short(submitted)
            )),
            _ => squash_merge_problem(repo, oid, &path, content.as_bytes())?,
        };
        if let Some(why) = problem {
            let flag = ProposalTampered {
                via: Some(VIA_FORGE.into()),
                branch: p.branch.clone(),
                expected: Some(submitted.to_string()),
                found: None,
                merge_commit: Some(oid.to_string()),
                merged_by: Some(merged_by.clone()),
                problem: why.clone(),
                evidence: ev.cloned().map(Box::new),
            };
            flag_once(
                tx,
                &mut entries,
                Event::AuditFlagProposalTampered(flag),
                Some(&p),
                "merge_commit",
                &oid.to_string(),
            )?;
            report.refused.push(format!(
                "merge {} of proposal `{}` by {merged_by} is not an approval: {why}",
                short(oid),
                p.proposal_id
            ));
            break;
        }
        let kind = if is_merge { "merge" } else { "squash" };
        let merge = ForgeMerge {
            merge_commit: oid.to_string(),
            merged_by: merged_by.clone(),
            kind,
            evidence: ev.cloned(),
        };
        match approve_by_forge(svc, tx, p, &merge, now)? {
            Ok((p, entry)) => {
                entries.push(entry);
                report.approved.push(ForgeApproved {
                    proposal_id: p.proposal_id.clone(),
                    merge_commit: oid.to_string(),
                    merged_by,
                    kind,
                });
                good = oid;
            }
            Err(refusal) => {
                entries.extend(refusal.entries);
                report.refused.push(format!(
                    "merge {} by {merged_by} is not an approval: {}",
                    short(oid),
                    refusal.error
                ));
                break;
            }
        }
    }
    if good != local {
        tx.staged()
            .set(repo, &main_ref, Some(good), Some(local))
            .map_err(AppError::internal)?;
        // A checked-out `main` gets everything the taken merges changed
        // (a policy change's files, not only the proposals').
        let changes = crate::store::proposals::checkouts_between(repo, &main_ref, local, good)
            .map_err(AppError::internal)?;
        for change in changes {
            tx.staged().checkout_after(change);
        }
        report.main_moved = Some((local.to_string(), good.to_string()));
    }
    Ok((Ok(report), entries))
}

/// The ref updates to push; what cannot be pushed without forcing is
/// reported instead.
fn plan_push(
    svc: &Service,
    repo: &Repository,
    remote: &str,
    report: &mut SyncReport,
) -> Result<Vec<RefUpdate>, AppError> {
    let settings = svc.settings();
    let mut updates = Vec::new();
    let mut ahead_only = |branch: &str, report: &mut SyncReport| -> Result<(), AppError> {
        let local_ref = format!("refs/heads/{branch}");
        let Ok(local) = repo.refname_to_id(&local_ref) else {
            return Ok(());
        };
        match repo.refname_to_id(&tracking_ref(remote, branch)).ok() {
            Some(theirs) if theirs == local => {}
            Some(theirs) if !is_fast_forward(repo, theirs, local)? => {
                // `main` ahead or apart on the remote was dealt with (and
                // reported) when its merges were taken.
                if branch != settings.main_branch {
                    report.refused.push(format!(
                        "`{remote}/{branch}` is not an ancestor of local `{branch}`; not pushed (never forced)"
                    ));
                }
            }
            _ => updates.push(RefUpdate {
                src: Some(local_ref.clone()),
                dst: local_ref,
            }),
        }
        Ok(())
    };
    ahead_only(&settings.main_branch, report)?;
    ahead_only(&settings.audit_ref, report)?;
    let (pending, decided) = svc.read(|conn| {
        let pending = projection::proposals(conn, Some("pending"), u32::MAX)?;
        let all = projection::proposals(conn, None, u32::MAX)?;
        Ok((pending, all))
    })?;
    for p in &pending {
        if let Some(branch) = &p.branch {
            ahead_only(branch, report)?;
        }
    }
    // Kept branches of rejected and expired proposals the remote lacks.
    for prefix in KEPT_PREFIXES {
        for r in repo.references_glob(&format!("refs/heads/{prefix}*"))? {
            let r = r?;
            let Some(name) = r.name() else { continue };
            let branch = name.trim_start_matches("refs/heads/");
            if repo.refname_to_id(&tracking_ref(remote, branch)).is_err() {
                updates.push(RefUpdate {
                    src: Some(name.to_string()),
                    dst: name.to_string(),
                });
            }
        }
    }
    // The remote's branches of proposals that are no longer pending.
    let not_pending: BTreeSet<&str> = decided
        .iter()
        .filter(|p| p.status != ProposalStatus::Pending)
        .map(|p| p.proposal_id.as_str())
        .collect();
    let tracking_prefix = tracking_ref(remote, &settings.proposal_prefix);
    for r in repo.references_glob(&format!("{tracking_prefix}*"))? {
        let r = r?;
        let Some(name) = r.name() else { continue };
        let id = name.trim_start_matches(&tracking_prefix);
        if not_pending.contains(id) {
            updates.push(RefUpdate {
                src: None,
                dst: format!("refs/heads/{}{id}", settings.proposal_prefix),
            });
        }
    }
    Ok(updates)
}

/// Proposal ids with a pull request recorded by `event_type`, and its
/// number.
fn recorded_pulls(svc: &Service, event_type: &str) -> Result<HashMap<String, u64>, AppError> {
    let rows = svc
        .governance()
        .index()
        .map_err(AppError::internal)?
        .query(&AuditFilter {
            event_type: Some(event_type.into()),
            recorded_by_gov: true,
            ..AuditFilter::default()
        })
        .map_err(AppError::internal)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let e = r.entry.entry;
            let n = match e.event {
                Event::PullRequestOpened(o) => o.number,
                Event::PullRequestClosed(c) => c.number,
                _ => return None,
            };
            Some((e.proposal_id?, n))
        })
        .collect())
}

/// Opens a pull request for every pending proposal whose branch is on the
/// remote and has none yet (an existing one from the same branch is
/// adopted, so a sync that died half-way never opens a second), labels it,
/// and closes those of proposals rejected or expired since. What the forge
/// refuses is reported in `forge_errors` and tried again on the next sync;
/// what succeeded is recorded in the chain (`pull_request_opened`,
/// `pull_request_closed`).
fn pull_requests(
    svc: &Service,
    repo: &Repository,
    remote: &str,
    forge: &ForgeSettings,
    report: &mut SyncReport,
) -> Result<(), AppError> {
    let settings = svc.settings();
    let opened = recorded_pulls(svc, PULL_REQUEST_OPENED)?;
    let closed = recorded_pulls(svc, PULL_REQUEST_CLOSED)?;
    let all = svc.read(|conn| projection::proposals(conn, None, u32::MAX))?;
    let on_remote = |branch: &str| {
        let local = repo.refname_to_id(&format!("refs/heads/{branch}")).ok();
        local.is_some() && local == repo.refname_to_id(&tracking_ref(remote, branch)).ok()
    };
    let to_open: Vec<&Proposal> = all
        .iter()
        .filter(|p| p.status == ProposalStatus::Pending && !opened.contains_key(&p.proposal_id))
        .filter(|p| p.branch.as_deref().is_some_and(on_remote))
        .collect();
    let to_close: Vec<(&Proposal, u64)> = all
        .iter()
        .filter(|p| matches!(p.status, ProposalStatus::Rejected | ProposalStatus::Expired))
        .filter(|p| !closed.contains_key(&p.proposal_id))
        .filter_map(|p| opened.get(&p.proposal_id).map(|n| (p, *n)))
        .collect();
    if to_open.is_empty() && to_close.is_empty() {
        return Ok(());
    }
    let api = match forge_api::token(forge, repo, timeout(settings)) {
        Ok(token) => ForgeApi::new(forge, token, timeout(settings)),
        Err(e) => {
            report.forge_errors.push(e.to_string());
            return Ok(());
        }
    };
    let dashboard = forge
        .dashboard_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.port));
    let mut entries = Vec::new();
    for p in to_open {
        let Some(branch) = p.branch.as_deref() else {
            continue;
        };
        let link = format!("{dashboard}/dashboard/proposals/{}", p.proposal_id);
        let (title, mut body) = pull_request_text(p, &link);
        // A policy change carries its review: the diff and the impact.
        if let Ok(Some(review)) = super::policy_change::review(svc, p) {
            body.push_str(&super::policy_change::review_markdown(&review));
        }
        let pr = match api.find_pull(branch) {
            Ok(Some(pr)) => Ok(pr),
            Ok(None) => api.open_pull(branch, &settings.main_branch, &title, &body),
            Err(e) => Err(e),
        };
        let pr = match pr.and_then(|pr| api.label(pr.number, &forge.labels).map(|()| pr)) {
            Ok(pr) => pr,
            Err(e) => {
                report.forge_errors.push(e.to_string());
                continue;
            }
        };
        entries.push(
            NewEntry::new(
                Actor::server(),
                Event::PullRequestOpened(PullRequestOpened {
                    number: pr.number,
                    url: pr.html_url.clone(),
                    branch: branch.to_string(),
                    labels: forge.labels.clone(),
                }),
            )
            .agent(&p.proposed.agent_id)
            .proposal(&p.proposal_id),
        );
        report.pull_requests.push(PullRequestNote {
            proposal_id: p.proposal_id.clone(),
            number: pr.number,
            action: "opened",
            url: pr.html_url,
        });
    }
    for (p, number) in to_close {
        let outcome = match p.status {
            ProposalStatus::Expired => format!("expired at {}", p.expires_at.to_rfc3339()),
            _ => format!(
                "rejected by {}",
                p.decided_by.as_deref().unwrap_or("an approver")
            ),
        };
        let why = format!(
            "gov: proposal `{}` {outcome}; this pull request is closed and its branch kept as `{}`.",
            p.proposal_id,
            p.branch.as_deref().unwrap_or("-")
        );
        match api.close_pull(number, &why) {
            Ok(pr) => {
                entries.push(
                    NewEntry::new(
                        Actor::server(),
                        Event::PullRequestClosed(PullRequestClosed {
                            number,
                            status: p.status,
                        }),
                    )
                    .agent(&p.proposed.agent_id)
                    .proposal(&p.proposal_id),
                );
                report.pull_requests.push(PullRequestNote {
                    proposal_id: p.proposal_id.clone(),
                    number,
                    action: "closed",
                    url: pr.html_url,
                });
            }
            Err(e) => report.forge_errors.push(e.to_string()),
        }
    }
    if !entries.is_empty() {
        svc.transact(|tx| -> Step<()> {
            let actor = actor_of(tx);
            let entries = entries
                .into_iter()
                .map(|mut e| {
                    e.actor = actor.clone();
                    e
                })
                .collect();
            Ok((Ok(()), entries))
        })?;
    }
    Ok(())
}
