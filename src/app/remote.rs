//! Teams through a Git remote: `gov sync`, the forge webhook and the
//! watchdog's pass all call [`sync`].
//!
//! One sync:
//! 1. fetches the remote's `main`, audit ref and gov's branches into
//!    `refs/remotes/<remote>/…`;
//! 2. under the chain lock, takes the commits the remote's `main` has on top
//!    of ours, oldest first. Each must be a forge merge of a pending
//!    proposal: exactly its submitted commit, adding exactly its file as
//!    submitted ([`forge_merge_problem`]). Each such merge is recorded as
//!    the proposal's approval, attributed to the merge's author, through the
//!    same checks as `gov approve` ([`approve_by_forge`]); then local `main`
//!    is fast-forwarded to the last merge taken. The first commit that is
//!    anything else stops the walk: it is refused and audit-flagged
//!    (`audit_flag_proposal_tampered` when it merges a proposal,
//!    `audit_flag_main_diverged` otherwise), and `main` stays where it was
//!    (never moved backwards, never reset). A flag is written once per
//!    offending commit, not on every pass;
//! 3. pushes, never forced: `main` and the audit ref when they are ahead of
//!    the remote's, every pending proposal's branch, the `gov/rejected/` and
//!    `gov/expired/` branches the remote lacks; it deletes the remote's
//!    branches of proposals that are no longer pending.

use std::collections::BTreeSet;

use chrono::Utc;
use git2::{Oid, Repository};
use serde::Serialize;

use super::error::AppError;
use super::proposals::{approve_by_forge, ForgeMerge};
use super::service::{Service, Step};
use crate::config::Settings;
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::event::{MainDiverged, ProposalTampered, VIA_FORGE};
use crate::domain::proposal::{Proposal, ProposalStatus};
use crate::store::git::{cas_ref, make_durable};
use crate::store::index::AuditFilter;
use crate::store::keys::Role;
use crate::store::projection;
use crate::store::proposals::sync_worktree;
use crate::store::remote::{
    self as git_remote, forge_merge_problem, is_fast_forward, tracking_ref, RefUpdate, RemoteError,
};

/// Where rejected and expired proposals' branches are kept (see
/// `app::proposals`); pushed so that the team sees the outcome.
const KEPT_PREFIXES: &[&str] = &["gov/rejected/", "gov/expired/"];

/// How far back the remote's `main` is walked looking for ours.
const MAX_WALK: usize = 100_000;

/// A proposal approved by a forge merge during a sync.
#[derive(Debug, Clone, Serialize)]
pub struct ForgeApproved {
    pub proposal_id: String,
    pub merge_commit: String,
    pub merged_by: String,
}

/// What one sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub remote: String,
    pub approved: Vec<ForgeApproved>,
    /// `main` moved from the first to the second commit.
    pub main_moved: Option<(String, String)>,
    /// What was refused or could not be done; each needs a person's eye.
    pub refused: Vec<String>,
    /// Remote branches created or updated.
    pub pushed: Vec<String>,
    /// Remote branches deleted.
    pub deleted: Vec<String>,
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

/// Fetches, takes the forge merges, pushes. See the module docs.
pub fn sync(svc: &Service) -> Result<SyncReport, AppError> {
    let settings = svc.settings();
    let remote = configured_remote(settings)?;
    let repo = svc.open_repo()?;
    let mut prefixes = vec![settings.proposal_prefix.as_str()];
    prefixes.extend(KEPT_PREFIXES);
    git_remote::fetch(
        &repo,
        &remote,
        &[&settings.main_branch, &settings.audit_ref],
        &prefixes,
    )
    .map_err(remote_error)?;
    let mut report = svc.transact(|tx| take_forge_merges(svc, tx, &remote))?;
    // Reload the policy set now if main moved (a server would on its next
    // request anyway).
    if report.main_moved.is_some() {
        let _ = svc.policy_at(&repo);
    }
    let updates = plan_push(svc, &repo, &remote, &mut report)?;
    git_remote::push(&repo, &remote, &updates).map_err(remote_error)?;
    for u in updates {
        let name = u.dst.trim_start_matches("refs/heads/").to_string();
        match u.src {
            Some(_) => report.pushed.push(name),
            None => report.deleted.push(name),
        }
    }
    Ok(report)
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
            ..AuditFilter::default()
        })
        .map_err(AppError::internal)?;
    Ok(rows
        .iter()
        .any(|r| r.entry.entry.payload().get(key).and_then(|v| v.as_str()) == Some(value)))
}

fn take_forge_merges(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    remote: &str,
) -> Step<SyncReport> {
    let settings = svc.settings();
    let repo = tx.repo();
    let actor = match tx.signer().1 {
        Role::Watchdog => Actor::watchdog(),
        _ => Actor::server(),
    };
    let mut report = SyncReport {
        remote: remote.to_string(),
        ..SyncReport::default()
    };
    let mut entries = Vec::new();
    let main_ref = settings.main_refname();
    let local = repo.refname_to_id(&main_ref)?;
    let remote_main = repo
        .refname_to_id(&tracking_ref(remote, &settings.main_branch))
        .ok();
    let commits = match relate(repo, local, remote_main)? {
        Remote::Nothing => return Ok((Ok(report), entries)),
        Remote::Diverged { local, remote: r } => {
            let reason = format!(
                "`{remote}/{main}` ({}) is not a fast-forward of local `{main}` ({}); local `{main}` was not moved",
                short(r),
                short(local),
                main = settings.main_branch
            );
            if !already_flagged(
                tx,
                "audit_flag_main_diverged",
                None,
                "remote_main",
                &r.to_string(),
            )? {
                let flag = MainDiverged {
                    remote: remote.into(),
                    local_main: local.to_string(),
                    remote_main: Some(r.to_string()),
                    commit: None,
                    reason: reason.clone(),
                };
                entries.push(NewEntry::new(actor, Event::AuditFlagMainDiverged(flag)));
            }
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
    let now = Timestamp(Utc::now());
    let mut good = local;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for oid in commits {
        let commit = repo.find_commit(oid)?;
        let merged = if commit.parent_count() >= 2 {
            merged_proposal(repo, &commit, &pending)?
        } else {
            None
        };
        let Some((submitted, p)) = merged else {
            let reason = format!(
                "commit {} on `{remote}/{}` is not the merge of a pending proposal; local `{}` stops before it",
                short(oid),
                settings.main_branch,
                settings.main_branch
            );
            if !already_flagged(
                tx,
                "audit_flag_main_diverged",
                None,
                "commit",
                &oid.to_string(),
            )? {
                let flag = MainDiverged {
                    remote: remote.into(),
                    local_main: good.to_string(),
                    remote_main: remote_main.map(|r| r.to_string()),
                    commit: Some(oid.to_string()),
                    reason: reason.clone(),
                };
                entries.push(NewEntry::new(actor, Event::AuditFlagMainDiverged(flag)));
            }
            report.refused.push(reason);
            break;
        };
        let author = commit.author();
        let merged_by = format!(
            "{} <{}>",
            author.name().unwrap_or("unknown"),
            author.email().unwrap_or("")
        );
        let path = Proposal::file_path(&p.proposal_id);
        let content = p.to_file();
        if let Some(why) = forge_merge_problem(repo, oid, submitted, &path, content.as_bytes())? {
            if !already_flagged(
                tx,
                "audit_flag_proposal_tampered",
                Some(&p.proposal_id),
                "merge_commit",
                &oid.to_string(),
            )? {
                let flag = ProposalTampered {
                    via: Some(VIA_FORGE.into()),
                    branch: p.branch.clone(),
                    expected: Some(submitted.to_string()),
                    found: None,
                    merge_commit: Some(oid.to_string()),
                    merged_by: Some(merged_by.clone()),
                    problem: why.clone(),
                };
                entries.push(
                    NewEntry::new(actor.clone(), Event::AuditFlagProposalTampered(flag))
                        .agent(&p.agent_id)
                        .proposal(&p.proposal_id),
                );
            }
            report.refused.push(format!(
                "merge {} of proposal `{}` by {merged_by} is not an approval: {why}",
                short(oid),
                p.proposal_id
            ));
            break;
        }
        let merge = ForgeMerge {
            merge_commit: oid.to_string(),
            merged_by: merged_by.clone(),
        };
        match approve_by_forge(svc, tx, p, &merge, now)? {
            Ok((p, entry)) => {
                entries.push(entry);
                report.approved.push(ForgeApproved {
                    proposal_id: p.proposal_id.clone(),
                    merge_commit: oid.to_string(),
                    merged_by,
                });
                files.push((path, content.into_bytes()));
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
        cas_ref(repo, &main_ref, good, Some(local), "gov sync: forge merge")
            .map_err(AppError::internal)?;
        make_durable(repo, &[], Some(&main_ref)).map_err(AppError::internal)?;
        for (path, content) in &files {
            sync_worktree(repo, &main_ref, path, content);
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
