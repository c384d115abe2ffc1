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
use crate::domain::proposal::{self, Proposal};
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
    /// Files added or changed, and files deleted.
    pub paths: Vec<String>,
    pub deleted: Vec<String>,
}

/// The working tree's changes to governed files against a commit of main.
#[derive(Debug, Default)]
pub struct Changes {
    /// Files added or changed, with their content.
    pub written: Vec<(String, Vec<u8>)>,
    /// Governed files of the commit that the working tree no longer has.
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.deleted.is_empty()
    }
}

/// The governed files (`policies/**`, `agents/*/agent.toml`, `gov.toml`)
/// that the working tree adds, changes or deletes against commit `tip`.
pub fn working_tree_changes(
    root: &Path,
    repo: &git2::Repository,
    tip: Oid,
) -> Result<Changes, AppError> {
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
    let mut changes = Changes::default();
    for path in paths {
        let Ok(here) = std::fs::read(root.join(&path)) else {
            continue;
        };
        if blob_at(repo, tip, &path).as_deref() != Some(here.as_slice()) {
            changes.written.push((path, here));
        }
    }
    for path in governed_files_at(repo, tip).map_err(AppError::internal)? {
        if !root.join(&path).exists() {
            changes.deleted.push(path);
        }
    }
    Ok(changes)
}

/// The governed files commit `tip` holds.
fn governed_files_at(repo: &git2::Repository, tip: Oid) -> Result<Vec<String>, git2::Error> {
    let tree = repo.find_commit(tip)?.tree()?;
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let path = format!("{dir}{}", e.name().unwrap_or_default());
        let agent_toml = path
            .strip_prefix("agents/")
            .and_then(|rest| rest.strip_suffix("/agent.toml"))
            .is_some_and(|id| !id.contains('/'));
        if path.starts_with("policies/") || agent_toml || path == SETTINGS_FILE {
            out.push(path);
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(out)
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
            &changes.written,
            &changes.deleted,
            message,
        )
        .map_err(AppError::internal)?;
        let paths: Vec<String> = changes.written.iter().map(|(p, _)| p.clone()).collect();
        let deleted = changes.deleted.clone();
        let payload = json!({
            "message": message,
            "branch": branch,
            "commit": commit.to_string(),
            "base": tip.to_string(),
            "paths": paths,
            "deleted": deleted,
        });
        let now = svc.now();
        let policy = svc.policy_at(repo)?;
        let mut p = Proposal {
            policy_version: policy.version().to_string(),
            ..Proposal::pending(
                id.clone(),
                proposal::Proposed {
                    expected_outcome: format!("the change on `{branch}` comes into force"),
                    rationale: message.to_string(),
                    ..proposal::Proposed::new(
                        operator.to_string(),
                        POLICY_CHANGE.into(),
                        payload.as_object().cloned().unwrap_or_default(),
                    )
                },
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
                deleted,
            }),
            vec![entry],
        ))
    })
}

/// How many of the newest audit entries the dashboard's impact report
/// replays at most (the report says so when it was cut).
pub const REVIEW_MAX_ENTRIES: u64 = 20_000;
/// How many reviews [`Reviews`] keeps.
const REVIEWS_KEPT: usize = 32;

/// A proposed policy change as a reviewer sees it: what it changes (by
/// policy id, as `gov policy diff`, and by file) and what it would do to
/// the decisions gov recorded (as `gov policy impact`).
#[derive(Debug, Clone)]
pub struct Review {
    /// `gov/policy/<id>`, `main` when it was proposed, the change's commit.
    pub branch: String,
    pub base: String,
    pub commit: String,
    /// Governed files the change writes, and those it deletes.
    pub changed: Vec<String>,
    pub deleted: Vec<String>,
    /// `gov policy diff` base → change, or the problems of a set that does
    /// not load.
    pub diff: Vec<String>,
    /// `gov policy impact` of the change, or why it could not be replayed.
    pub impact: Vec<String>,
    /// The impact report as Markdown (empty when it could not be replayed).
    pub impact_markdown: String,
    /// The set at the change loads and validates.
    pub valid: bool,
    /// How many recorded decisions it changes (when valid).
    pub changes: Option<u64>,
}

/// Reviews already computed, by the proposal's commit (its branch tip): an
/// impact report is computed once per proposal head, by one thread at a
/// time (a page that asks while it is being computed waits for it rather
/// than replaying the chain again).
#[derive(Debug, Default)]
pub struct Reviews {
    kept: std::sync::Mutex<Vec<(String, std::sync::Arc<Review>)>>,
    computing: std::sync::Mutex<()>,
}

impl Reviews {
    fn get(&self, key: &str) -> Option<std::sync::Arc<Review>> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter().find(|(k, _)| k == key).map(|(_, r)| r.clone())
    }

    fn keep(&self, key: String, review: std::sync::Arc<Review>) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.retain(|(k, _)| *k != key);
        if kept.len() >= REVIEWS_KEPT {
            kept.remove(0);
        }
        kept.push((key, review));
    }
}

fn payload_str(p: &Proposal, key: &str) -> Option<String> {
    p.proposed.payload.get(key)?.as_str().map(String::from)
}

fn payload_list(p: &Proposal, key: &str) -> Vec<String> {
    p.proposed
        .payload
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The review of a `policy_change` proposal (`None` for any other), from
/// [`Reviews`] when this proposal head was reviewed before.
pub fn review(svc: &Service, p: &Proposal) -> Result<Option<std::sync::Arc<Review>>, AppError> {
    if p.proposed.action_type != POLICY_CHANGE {
        return Ok(None);
    }
    let (Some(branch), Some(base), Some(commit)) = (
        payload_str(p, "branch"),
        payload_str(p, "base"),
        payload_str(p, "commit"),
    ) else {
        return Ok(None);
    };
    let key = p.commit.clone().unwrap_or_else(|| commit.clone());
    if let Some(r) = svc.reviews().get(&key) {
        return Ok(Some(r));
    }
    let _one_at_a_time = svc
        .reviews()
        .computing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(r) = svc.reviews().get(&key) {
        return Ok(Some(r));
    }
    let review = std::sync::Arc::new(compute_review(svc, p, branch, base, commit)?);
    svc.reviews().keep(key, review.clone());
    Ok(Some(review))
}

fn compute_review(
    svc: &Service,
    p: &Proposal,
    branch: String,
    base: String,
    commit: String,
) -> Result<Review, AppError> {
    use super::policy_report::{diff_lines, impact_markdown, impact_text, short};
    use super::replay::{impact, load_set, ImpactFilter, SetError, SetSource};
    let settings = svc.settings();
    let problems = |e: SetError| -> Vec<String> {
        let mut out = vec![format!("error: {e}")];
        if let SetError::Invalid { problems, .. } = e {
            out.extend(problems.into_iter().map(|p| format!("error: {p}")));
        }
        out
    };
    let from = load_set(settings, &SetSource::Revision(base.clone()));
    let to = load_set(settings, &SetSource::Revision(commit.clone()));
    let (diff, impact_lines, markdown, valid, changes) = match (from, to) {
        (_, Err(e)) => {
            let lines = problems(e);
            (lines.clone(), lines, String::new(), false, None)
        }
        (Err(e), Ok(_)) => (problems(e), vec![], String::new(), true, None),
        (Ok(before), Ok(after)) => {
            let d = crate::domain::policy_diff::diff(&before, &after);
            let source = SetSource::Revision(branch.clone());
            let lines = diff_lines(&d, &SetSource::Revision(short(&base).into()), &source);
            let filter = ImpactFilter {
                max_entries: Some(REVIEW_MAX_ENTRIES),
                ..ImpactFilter::default()
            };
            let report = impact(settings, &after, &filter).map_err(AppError::internal)?;
            (
                lines,
                impact_text(&report, &source),
                impact_markdown(&report, &source),
                true,
                Some(report.changed),
            )
        }
    };
    Ok(Review {
        branch,
        base,
        commit,
        changed: payload_list(p, "paths"),
        deleted: payload_list(p, "deleted"),
        diff,
        impact: impact_lines,
        impact_markdown: markdown,
        valid,
        changes,
    })
}

/// A review as Markdown, for the pull request of a policy change: the
/// files, the diff by policy id and the impact report.
pub fn review_markdown(r: &Review) -> String {
    let list = crate::domain::paths::quoted_list::<String>;
    let mut md = String::from("\n### Policy change\n\n");
    if !r.changed.is_empty() {
        md.push_str(&format!("- changed: {}\n", list(&r.changed)));
    }
    if !r.deleted.is_empty() {
        md.push_str(&format!("- deleted: {}\n", list(&r.deleted)));
    }
    md.push_str(&format!("\n```\n{}\n```\n\n", r.diff.join("\n")));
    if r.impact_markdown.is_empty() {
        md.push_str(&format!("```\n{}\n```\n", r.impact.join("\n")));
    } else {
        md.push_str(&r.impact_markdown);
    }
    md
}
