//! `gov policy propose`: the working tree's changes to governed paths become
//! one commit on `gov/policy/<id>` (on top of `main`) and a proposal of type
//! `policy_change` whose commit sits on that one, so that approving it (the
//! approver-signed merge, as for any proposal) brings the change onto `main`
//! and into force (see `store::trust`). It is never auto-approved.

use std::path::Path;

use git2::Oid;
use serde_json::json;

use super::error::AppError;
use super::proposals::{ask_policy, file_pending_on};
use super::service::{new_uuid, Service, Step};
use crate::domain::audit::{Actor, NewEntry, Timestamp};
use crate::domain::event::{Event, ProposalForbidden};
use crate::domain::proposal::Proposal;
use crate::domain::request::Outcome;
use crate::store::trust::{blob_at, SETTINGS_FILE};

/// The action type of a proposed policy change.
pub const POLICY_CHANGE: &str = "policy_change";
/// The branches that hold proposed policy changes.
pub const POLICY_BRANCH_PREFIX: &str = "gov/policy/";
/// How long a proposed policy change waits for a person.
const EXPIRY_DAYS: i64 = 14;

/// A filed policy change.
#[derive(Debug, Clone)]
pub struct Proposed {
    pub proposal: Proposal,
    /// `gov/policy/<id>` and its commit.
    pub branch: String,
    pub commit: String,
    pub paths: Vec<String>,
}

/// The governed files of the working tree (`policies/**`,
/// `agents/*/agent.toml`, `gov.toml`) that differ from commit `tip`.
pub fn working_tree_changes(
    root: &Path,
    repo: &git2::Repository,
    tip: Oid,
) -> Result<Vec<(String, Vec<u8>)>, AppError> {
    let mut paths: Vec<String> = Vec::new();
    collect_files(root, "policies", &mut paths)?;
    if let Ok(agents) = std::fs::read_dir(root.join("agents")) {
        for a in agents.flatten() {
            let name = a.file_name().to_string_lossy().into_owned();
            if a.path().join("agent.toml").is_file() {
                paths.push(format!("agents/{name}/agent.toml"));
            }
        }
    }
    paths.push(SETTINGS_FILE.to_string());
    paths.sort();
    let mut changed = Vec::new();
    for path in paths {
        let Ok(here) = std::fs::read(root.join(&path)) else {
            continue;
        };
        if blob_at(repo, tip, &path).as_deref() != Some(here.as_slice()) {
            changed.push((path, here));
        }
    }
    Ok(changed)
}

fn collect_files(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), AppError> {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        let kind = e.file_type().map_err(AppError::internal)?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Commits the working tree's governed changes on `gov/policy/<id>` and
/// files the `policy_change` proposal, as `operator`.
pub fn propose(svc: &Service, message: &str, operator: &str) -> Result<Proposed, AppError> {
    let settings = svc.settings().clone();
    svc.transact(|tx| -> Step<Proposed> {
        let repo = tx.repo();
        // Main as the batch sees it (an approval earlier in the batch
        // may have moved it).
        let tip = tx
            .ref_target(&settings.main_refname())
            .map_err(AppError::from)?
            .ok_or_else(|| AppError::internal(format!("`{}` does not exist", settings.main_refname())))?;
        let changes = working_tree_changes(&settings.root, repo, tip)?;
        if changes.is_empty() {
            return Ok((
                Err(AppError::BadRequest(format!(
                    "no change to `policies/`, `agents/*/agent.toml` or `gov.toml` in the working tree: nothing to propose against `{}`",
                    settings.main_branch
                ))),
                vec![],
            ));
        }
        let id = new_uuid();
        let branch = format!("{POLICY_BRANCH_PREFIX}{id}");
        let (key, _) = tx.signer();
        let who = git2::Signature::now(
            operator,
            &crate::store::keys::Role::Approver.principal(operator),
        )
        .map_err(AppError::internal)?;
        let commit = crate::store::git::stage_commit_files(
            repo,
            tx.staged(),
            key,
            &who,
            &format!("refs/heads/{branch}"),
            Some(tip),
            &changes,
            message,
        )
        .map_err(AppError::internal)?;
        let paths: Vec<String> = changes.iter().map(|(p, _)| p.clone()).collect();
        let payload = json!({
            "message": message,
            "branch": branch,
            "commit": commit.to_string(),
            "base": tip.to_string(),
            "paths": paths,
        });
        let now = svc.now();
        let policy = svc.policy_at(repo)?;
        let mut p = Proposal {
            expected_outcome: format!("the change on `{branch}` comes into force"),
            rationale: message.to_string(),
            policy_version: policy.version().to_string(),
            ..Proposal::pending(
                id.clone(),
                operator.to_string(),
                POLICY_CHANGE.into(),
                payload.as_object().cloned().unwrap_or_default(),
                Timestamp(now),
                Timestamp(now + chrono::Duration::days(EXPIRY_DAYS)),
            )
        };
        let (decision, record) = ask_policy(svc, &policy, &mut p);
        if decision.outcome == Outcome::Forbidden {
            let entry = NewEntry::new(
                Actor::operator(operator),
                Event::ProposalForbidden(ProposalForbidden {
                    action_type: POLICY_CHANGE.into(),
                    wave: 0,
                }),
            )
            .agent(operator)
            .proposal(&id)
            .decision(record);
            return Ok((
                Err(AppError::ForbiddenByPolicy {
                    policies: decision.policies,
                }),
                vec![entry],
            ));
        }
        // Never auto-approved, whatever the set says: it waits for a person.
        let (filed, entry) = file_pending_on(svc, tx, p, record, Some(commit))?;
        Ok((
            Ok(Proposed {
                proposal: filed,
                branch,
                commit: commit.to_string(),
                paths,
            }),
            vec![entry],
        ))
    })
}
