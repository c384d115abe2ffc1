//! Proposals: submit (the gate), decide (approve = signed merge; reject),
//! expire. Shared by the HTTP API and `gov approve` / `gov reject`.

use std::sync::Arc;

use serde_json::json;

use super::error::{check_text, AppError};
use super::governance::Tx;
use super::service::{group_in, new_time_ordered_uuid, Service, Step};
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::event::{
    AgentRequestRefused, Empty, ProposalDecided, ProposalExpired, ProposalForbidden,
    ProposalSubmitted, ProposalTampered, SelfApproveAttempt, VIA_FORGE,
};
use crate::domain::money::Micros;
use crate::domain::proposal::{valid_proposal_id, DecideError, Proposal, ProposalStatus, Verdict};
use crate::domain::request::{
    CedarRequest, Decision, DecisionRecord, EntityData, EntityRef, Outcome,
};
use crate::store::projection;
use crate::store::proposals::{self as git_proposals, BranchName, MadeAhead, Tamper};

/// A submission as the original's API takes it (the wire type).
pub use crate::wire::Submission;

pub use crate::domain::proposal::TOOL_ACTION_PREFIX;

/// How long a proposal that names no `expires_at` waits for a person.
pub const DEFAULT_EXPIRY_HOURS: i64 = 24;

/// The answer to a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub proposal: Proposal,
}

impl Submission {
    fn validate(&self) -> Result<(), AppError> {
        if self.proposed.agent_id.trim().is_empty() {
            return Err(AppError::invalid("agent_id", "agent_id must be non-empty"));
        }
        if !crate::config::valid_agent_id(&self.proposed.agent_id) {
            return Err(AppError::invalid(
                "agent_id",
                "agent_id may hold letters, digits, `-` and `_` (at most 64)",
            ));
        }
        if let Some(id) = &self.proposal_id {
            if !valid_proposal_id(id) {
                return Err(AppError::invalid(
                    "proposal_id",
                    "proposal_id may hold letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        if self.proposed.action_type.trim().is_empty() || self.proposed.action_type.len() > 200 {
            return Err(AppError::invalid(
                "action_type",
                "action_type must be non-empty",
            ));
        }
        crate::domain::audit::check_name("action_type", &self.proposed.action_type)?;
        crate::domain::audit::check_input_depth(
            "payload",
            &serde_json::Value::Object(self.proposed.payload.clone()),
        )?;
        check_text("expected_outcome", &self.proposed.expected_outcome)?;
        check_text("rationale", &self.proposed.rationale)?;
        for link in &self.proposed.links {
            crate::domain::audit::check_name("links", link)?;
        }
        if self.proposed.action_type.starts_with(TOOL_ACTION_PREFIX) {
            return Err(AppError::invalid(
                "action_type",
                "`use_tool:` action types are filed by gov itself for tool calls",
            ));
        }
        if self.proposed.expected_cost_tokens < 0 {
            return Err(AppError::invalid(
                "expected_cost_tokens",
                "must not be negative",
            ));
        }
        if !self.proposed.expected_cost_dollars.is_finite()
            || self.proposed.expected_cost_dollars < 0.0
        {
            return Err(AppError::invalid(
                "expected_cost_dollars",
                "must be a non-negative number",
            ));
        }
        Ok(())
    }
}

/// The Cedar `propose` question for a proposal by an agent of group
/// `group`.
fn propose_request(p: &Proposal, group: String) -> CedarRequest {
    let micros = Micros::from_dollars_f64(p.proposed.expected_cost_dollars)
        .map(|m| m.0)
        .unwrap_or(i64::MAX);
    let mut context = serde_json::Map::new();
    context.insert("reversible".into(), json!(p.proposed.reversible));
    context.insert(
        "requires_approval".into(),
        json!(p.proposed.requires_approval),
    );
    context.insert(
        "expected_cost_tokens".into(),
        json!(p.proposed.expected_cost_tokens),
    );
    context.insert("expected_cost_micros".into(), json!(micros));
    context.insert("payload_hash".into(), json!(p.payload_hash));
    CedarRequest {
        principal: EntityRef::new("Agent", &p.proposed.agent_id),
        action: "propose".into(),
        resource: EntityRef::new("ActionType", &p.proposed.action_type),
        context,
        entities: vec![agent_in_group(&p.proposed.agent_id, group)],
    }
}

pub fn agent_entity(svc: &Service, agent_id: &str) -> EntityData {
    agent_in_group(agent_id, svc.group(agent_id))
}

fn agent_in_group(agent_id: &str, group: String) -> EntityData {
    let mut attrs = serde_json::Map::new();
    attrs.insert("group".into(), json!(group));
    EntityData {
        uid: EntityRef::new("Agent", agent_id),
        attrs,
        parents: vec![],
        tags: Default::default(),
    }
}

/// The audit commit whose `proposal_submitted` entry records proposal
/// `id` (for an auto-approved one, its only record).
pub fn audit_commit(svc: &Service, id: &str) -> Result<Option<String>, AppError> {
    svc.read(|c| crate::store::index::submitted_commit(c, id))
}

/// One proposal as the index knows it.
pub fn get(svc: &Service, id: &str) -> Result<Proposal, AppError> {
    svc.read(|c| projection::proposal(c, id))?
        .ok_or_else(|| AppError::NotFound(format!("proposal `{id}` not found")))
}

/// How many proposals wait for a person.
pub fn pending_count(svc: &Service) -> Result<i64, AppError> {
    svc.read(projection::pending_count)
}

/// Proposals, newest first, of one status or all.
pub fn list(
    svc: &Service,
    status: Option<ProposalStatus>,
    limit: u32,
) -> Result<Vec<Proposal>, AppError> {
    svc.read(|c| projection::proposals(c, status.map(ProposalStatus::as_str), limit))
}

/// A status filter as users write it: a status, or `all` (or nothing) for
/// every proposal.
pub fn status_filter(s: Option<&str>) -> Result<Option<ProposalStatus>, String> {
    match s.map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => ProposalStatus::parse(s).map(Some).ok_or_else(|| {
            format!(
                "`{s}` is not a status (pending, approved, auto-approved, rejected, expired, all)"
            )
        }),
    }
}

/// Refuses the request of a paused agent, recording the refusal.
pub fn refuse_if_paused(
    conn: &rusqlite::Connection,
    agent_id: &str,
    what: &str,
) -> Result<Option<(AppError, NewEntry)>, AppError> {
    match projection::agent(conn, agent_id)? {
        Some(a) if a.paused => {
            let reason = a.paused_reason.unwrap_or_else(|| "paused".into());
            let refused = AgentRequestRefused {
                request: what.into(),
                reason: "agent_paused".into(),
                paused_reason: reason.clone(),
            };
            let entry =
                NewEntry::new(Actor::server(), Event::AgentRequestRefused(refused)).agent(agent_id);
            Ok(Some((
                AppError::Paused {
                    agent_id: agent_id.into(),
                    reason,
                },
                entry,
            )))
        }
        _ => Ok(None),
    }
}

/// Submits a proposal: the gate.
pub fn submit(svc: &Service, sub: Submission) -> Result<Submitted, AppError> {
    sub.validate()?;
    submit_checked(svc, sub)
}

fn submit_checked(svc: &Service, sub: Submission) -> Result<Submitted, AppError> {
    let id = sub
        .proposal_id
        .clone()
        .unwrap_or_else(|| new_time_ordered_uuid(svc.now()));
    let ahead = decide_ahead(svc, &sub, &id);
    svc.transact(|tx| -> Step<Submitted> {
        let conn = tx.index().conn();
        if let Some((err, entry)) = refuse_if_paused(conn, &sub.proposed.agent_id, "proposal")? {
            return Ok((Err(err), vec![entry]));
        }
        let branch = format!("{}{id}", svc.settings().proposal_prefix);
        let exists = projection::proposal(conn, &id)?.is_some()
            || (branch_name(&sub.proposal_id) == BranchName::Chosen
                && tx
                    .ref_target(&format!("refs/heads/{branch}"))
                    .map_err(AppError::internal)?
                    .is_some());
        if exists {
            return Ok((
                Err(AppError::Conflict(format!(
                    "proposal_id '{id}' already exists"
                ))),
                vec![],
            ));
        }
        let main_tip = tx.main_on_disk()?;
        let policy = svc.policy_in(tx)?;
        let (p, decision, record, made) = match ahead {
            Some(a) if a.main_tip == main_tip && Arc::ptr_eq(&a.policy, &policy) => {
                (a.proposal, a.decision, a.record, a.made)
            }
            _ => {
                let group = group_in(&svc.agents_at_tip(main_tip), &sub.proposed.agent_id);
                let mut p = proposal_to_file(svc, &sub, &id, &policy);
                let (decision, record) = ask_policy_in(&policy, &mut p, group);
                (p, decision, record, None)
            }
        };
        let asked = sub.proposal_id.clone();
        file_decided(svc, tx, (p, asked, made), decision, record)
    })
}

/// A submission decided before its batch opened, and what it was decided
/// against: the writers of a batch stage one at a time, and the policy
/// evaluation was a tenth of a submit's CPU. It stands only if `main` (the
/// policy set and the agents in force) has not moved since. A proposal
/// that waits for a person also has its commit made ahead (a quarter of
/// its turn), on that tip; the writer takes it only if the commit would be
/// the same (`store::proposals::write_pending`).
struct DecidedAhead {
    main_tip: Option<git2::Oid>,
    policy: Arc<crate::domain::policy::PolicySet>,
    proposal: Proposal,
    decision: Decision,
    record: DecisionRecord,
    made: Option<Box<MadeAhead>>,
}

fn decide_ahead(svc: &Service, sub: &Submission, id: &str) -> Option<DecidedAhead> {
    // One read of main's tip: the policy set and the agent's group are
    // both those in force at it.
    let (main_tip, policy) = svc.policy_now().ok()?;
    let group = group_in(&svc.agents_at_tip(main_tip), &sub.proposed.agent_id);
    let mut proposal = proposal_to_file(svc, sub, id, &policy);
    let (decision, record) = ask_policy_in(&policy, &mut proposal, group);
    // Made as `file_decided` would file it; a commit that cannot be made
    // now is made in the writer's turn, which reports why.
    let made = match (waits_for_person(&proposal, &decision), main_tip) {
        (Some(pending), Some(tip)) => svc
            .read_ahead(|repo| {
                let key = svc.governance().signing_key();
                git_proposals::made_ahead(repo, (key, svc.now()), tip, pending)
                    .map_err(AppError::from)
            })
            .ok(),
        _ => None,
    };
    Some(DecidedAhead {
        main_tip,
        policy,
        proposal,
        decision,
        record,
        made,
    })
}

/// The proposal as filed on its branch, if `decision` leaves it waiting
/// for a person (see [`file_decided`]).
fn waits_for_person(p: &Proposal, decision: &Decision) -> Option<Proposal> {
    match decision.outcome {
        Outcome::NeedsPerson if !blocked_self_approval(p, decision) => Some(as_pending(p.clone())),
        _ => None,
    }
}

/// A proposal that waits for a person, as it is filed: it requires
/// approval, whatever the agent asked.
fn as_pending(mut p: Proposal) -> Proposal {
    p.proposed.requires_approval = true;
    p
}

/// Whether the agent asked to skip a person on an action reserved for one.
fn blocked_self_approval(p: &Proposal, decision: &Decision) -> bool {
    !p.proposed.requires_approval && decision.self_approve_blocked
}

/// The pending proposal a submission files under `id`, before the policy
/// set decides it.
fn proposal_to_file(
    svc: &Service,
    sub: &Submission,
    id: &str,
    policy: &crate::domain::policy::PolicySet,
) -> Proposal {
    let now = svc.now();
    let submitted_at = sub.submitted_at.unwrap_or(Timestamp(now));
    let expires_at = sub.expires_at.unwrap_or(Timestamp(
        now + chrono::Duration::hours(DEFAULT_EXPIRY_HOURS),
    ));
    // As the agent asked, `requires_approval` too: the self-approval check
    // comes first (an irreversible action then needs a person, see
    // `file_decided`).
    Proposal {
        policy_version: policy.version().to_string(),
        ..Proposal::pending(
            id.to_string(),
            sub.proposed.clone(),
            submitted_at,
            expires_at,
        )
    }
}

/// Asks the policy set about a proposal: the decision (whose policies the
/// proposal now cites) and the record that goes into the chain.
pub fn ask_policy(
    svc: &Service,
    policy: &crate::domain::policy::PolicySet,
    p: &mut Proposal,
) -> (Decision, DecisionRecord) {
    let group = svc.group(&p.proposed.agent_id);
    ask_policy_in(policy, p, group)
}

/// [`ask_policy`] for an agent of group `group`, read with the policy set
/// at one tip of `main`.
fn ask_policy_in(
    policy: &crate::domain::policy::PolicySet,
    p: &mut Proposal,
    group: String,
) -> (Decision, DecisionRecord) {
    let request = propose_request(p, group);
    let decision = policy.decide(&request);
    p.policies = decision.policies.clone();
    let record = DecisionRecord {
        decision: decision.clone(),
        request,
    };
    (decision, record)
}

/// Who can know the name of the branch a submission that asked for
/// `asked_id` is filed on: anyone, if the agent chose the id; nobody, if
/// it was drawn here at random.
fn branch_name(asked_id: &Option<String>) -> BranchName {
    match asked_id {
        Some(_) => BranchName::Chosen,
        None => BranchName::Drawn,
    }
}

/// Files a proposal the policy set has decided, in Git and the chain.
/// The proposal comes with the id the agent asked for and its pending
/// commit, if one was made ahead.
fn file_decided(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    (mut p, asked_id, made): (Proposal, Option<String>, Option<Box<MadeAhead>>),
    decision: Decision,
    record: DecisionRecord,
) -> Step<Submitted> {
    match decision.outcome {
        Outcome::NeedsPerson if blocked_self_approval(&p, &decision) => {
            let attempt = SelfApproveAttempt {
                action_type: p.proposed.action_type.clone(),
                proposal_id: asked_id.clone(),
                reason: "requires_approval=false on an action reserved for a person".into(),
            };
            let entry = NewEntry::new(Actor::server(), Event::AuditFlagSelfApproveAttempt(attempt))
                .agent(&p.proposed.agent_id)
                .maybe_proposal(asked_id)
                .decision(record);
            Ok((
                Err(AppError::SelfApproveBlocked {
                    action_type: p.proposed.action_type.clone(),
                    policies: decision.policies,
                }),
                vec![entry],
            ))
        }
        Outcome::Forbidden => {
            let forbidden = ProposalForbidden {
                action_type: p.proposed.action_type.clone(),
                wave: p.proposed.wave,
            };
            let entry = NewEntry::new(Actor::server(), Event::ProposalForbidden(forbidden))
                .agent(&p.proposed.agent_id)
                .proposal(&p.proposal_id)
                .decision(record);
            Ok((
                Err(AppError::ForbiddenByPolicy {
                    policies: decision.policies,
                }),
                vec![entry],
            ))
        }
        Outcome::Auto => {
            p.status = ProposalStatus::AutoApproved;
            p.decided_by = Some("auto_policy".into());
            p.decided_at = Some(Timestamp(svc.now()));
            // No commit: `main` moves only through review. The signed
            // audit entry holds the whole proposal and its decision.
            Ok((
                Ok(Submitted {
                    proposal: p.clone(),
                }),
                vec![submitted_entry(&p, record)],
            ))
        }
        Outcome::NeedsPerson => {
            let on = PendingOn::Main(branch_name(&asked_id), made);
            let (filed, entry) = file_pending_at(svc, tx, as_pending(p), record, on)?;
            Ok((Ok(Submitted { proposal: filed }), vec![entry]))
        }
    }
}

/// Files a proposal that waits for a person (its branch and commit) and
/// returns it as filed, with the entry that records it.
pub fn file_pending(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    p: Proposal,
    record: DecisionRecord,
) -> Result<(Proposal, NewEntry), AppError> {
    file_pending_on(svc, tx, p, record, None)
}

/// [`file_pending`], its commit on top of `base` (a policy change's
/// commit) instead of main's tip.
pub fn file_pending_on(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    p: Proposal,
    record: DecisionRecord,
    base: Option<git2::Oid>,
) -> Result<(Proposal, NewEntry), AppError> {
    let on = base.map_or(PendingOn::Main(BranchName::Chosen, None), PendingOn::Commit);
    file_pending_at(svc, tx, p, record, on)
}

/// Where a pending proposal's commit goes.
enum PendingOn {
    /// On main's tip, its branch named as said; the commit made ahead,
    /// if it was.
    Main(BranchName, Option<Box<MadeAhead>>),
    /// On this commit (a policy change's).
    Commit(git2::Oid),
}

fn file_pending_at(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    mut p: Proposal,
    record: DecisionRecord,
    on: PendingOn,
) -> Result<(Proposal, NewEntry), AppError> {
    let (key, _) = tx.signer();
    let signer = (key, svc.now());
    let branch = format!("{}{}", svc.settings().proposal_prefix, p.proposal_id);
    let repo = tx.repo();
    let main_ref = svc.settings().main_refname();
    let staged = tx.staged();
    let commit = match on {
        PendingOn::Commit(base) => {
            git_proposals::write_pending_on(repo, staged, signer, base, &branch, &p)
        }
        PendingOn::Main(name, made) => {
            let branch = (branch.as_str(), name);
            git_proposals::write_pending(repo, staged, signer, &main_ref, branch, &p, made)
        }
    }
    .map_err(AppError::from)?;
    p.branch = Some(branch);
    p.commit = Some(commit.to_string());
    let entry = submitted_entry(&p, record);
    Ok((p, entry))
}

fn submitted_entry(p: &Proposal, record: DecisionRecord) -> NewEntry {
    let submitted = Event::ProposalSubmitted(ProposalSubmitted::of(p));
    NewEntry::new(Actor::server(), submitted)
        .agent(&p.proposed.agent_id)
        .proposal(&p.proposal_id)
        .decision(record)
}

/// A person's decision.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    pub verdict: Verdict,
    pub note: Option<String>,
    pub final_: bool,
}

/// What [`decide_in_person`] did besides deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutState {
    /// Nothing to put there (a rejection), or every file is there.
    Done,
    /// A `git` command holds the checkout's Git index: the approved
    /// files follow once it lets go (a server's next looks, else the
    /// next `gov serve`'s start).
    Waits,
}

/// [`decide`] for a person at a terminal or a browser: an approval
/// returns once its files are in a checked-out `main`, also where a
/// server puts such files there on its own schedule
/// (`Governance::follow_checkout_in_background`), or once tried while a
/// `git` command holds the Git index.
pub fn decide_in_person(
    svc: &Service,
    id: &str,
    input: &DecisionInput,
    decider: &str,
) -> Result<(Proposal, CheckoutState), AppError> {
    let p = decide(svc, id, input, decider)?;
    let there = p.merge_commit.is_none() || svc.governance().sync_checkout();
    Ok((
        p,
        if there {
            CheckoutState::Done
        } else {
            CheckoutState::Waits
        },
    ))
}

/// Decides a pending proposal as the operator `decider`.
pub fn decide(
    svc: &Service,
    id: &str,
    input: &DecisionInput,
    decider: &str,
) -> Result<Proposal, AppError> {
    if let Some(note) = &input.note {
        check_text("note", note)?;
    }
    let p = svc.transact(|tx| -> Step<Proposal> {
        let conn = tx.index().conn();
        let Some(mut p) = projection::proposal(conn, id)? else {
            return Ok((
                Err(AppError::NotFound(format!("proposal `{id}` not found"))),
                vec![],
            ));
        };
        let now = Timestamp(svc.now());
        match p.check_decidable(input.verdict, now) {
            Ok(()) => {}
            Err(DecideError::AlreadyDecided(status)) => {
                return Ok((
                    Err(AppError::BadRequest(format!(
                        "proposal `{id}` already decided (status={status})"
                    ))),
                    vec![],
                ))
            }
            Err(DecideError::Expired) => {
                let entry = expire_entry(tx, &mut p, Actor::server(), now)?;
                return Ok((Err(AppError::Expired(id.into())), vec![entry]));
            }
        }
        let main_ref = svc.settings().main_refname();
        let mut record = None;
        let mut merge_commit = None;
        match input.verdict {
            Verdict::Approve => {
                let rec = match approval_question(svc, tx, &p, decider)? {
                    Ok(rec) => rec,
                    Err((err, entry)) => return Ok((Err(err), vec![*entry])),
                };
                let (Some(branch), Some(commit)) = (p.branch.clone(), p.commit.clone()) else {
                    return Err(AppError::internal(format!("proposal {id} has no branch")));
                };
                let submitted = git2::Oid::from_str(&commit)?;
                let checked =
                    git_proposals::check_untampered(tx.repo(), tx.staged(), &branch, submitted, &p)
                        .map_err(AppError::internal)?;
                let filed = match checked {
                    Ok(filed) => filed,
                    Err(t) => {
                        let mut what = ProposalTampered {
                            via: None,
                            branch: Some(branch),
                            expected: None,
                            found: None,
                            merge_commit: None,
                            merged_by: None,
                            evidence: None,
                            problem: String::new(),
                        };
                        match t {
                            Tamper::Missing => what.problem = "branch missing".into(),
                            Tamper::Moved { found } => {
                                what.problem = "branch moved".into();
                                what.expected = Some(commit);
                                what.found = Some(found);
                            }
                            Tamper::FileChanged => what.problem = "proposal file changed".into(),
                        };
                        let flag = Event::AuditFlagProposalTampered(what);
                        let entry = NewEntry::new(Actor::server(), flag)
                            .agent(&p.proposed.agent_id)
                            .proposal(id);
                        return Ok((Err(AppError::Tampered(id.into())), vec![entry]));
                    }
                };
                let key = svc.approver_key()?;
                let repo = tx.repo();
                let merge = git_proposals::merge_approved(
                    repo,
                    tx.staged(),
                    (key, now.0),
                    decider,
                    &main_ref,
                    submitted,
                    &p,
                    filed,
                    input.note.as_deref(),
                )
                .map_err(AppError::from)?;
                merge_commit = Some(merge.to_string());
                record = Some(rec);
                p.status = ProposalStatus::Approved;
            }
            Verdict::Reject => {
                if let Some(branch) = p.branch.clone() {
                    let to = format!("gov/rejected/{id}");
                    let repo = tx.repo();
                    git_proposals::rename_branch(repo, tx.staged(), &branch, &to)
                        .map_err(AppError::from)?;
                    p.branch = Some(to);
                }
                p.status = ProposalStatus::Rejected;
            }
        }
        let decided = Decided {
            verdict: input.verdict,
            note: input.note.clone(),
            final_: input.final_,
            decided_by: decider.into(),
            merge_commit,
            forge_merger: None,
        };
        let entry = decided_entry(&mut p, decided, Actor::operator(decider), now, record);
        Ok((Ok(p), vec![entry]))
    })?;
    Ok(p)
}

/// Asks the policy set whether `decider` may approve `p`. A refusal comes
/// with the entry that records it.
#[allow(
    clippy::type_complexity,
    reason = "a refusal is the error and its entry; a named type would only rename the pair"
)]
fn approval_question(
    svc: &Service,
    tx: &Tx<'_>,
    p: &Proposal,
    decider: &str,
) -> Result<Result<DecisionRecord, (AppError, Box<NewEntry>)>, AppError> {
    let policy = svc.policy_in(tx)?;
    let mut attrs = serde_json::Map::new();
    attrs.insert("name".into(), json!(decider));
    let request = CedarRequest {
        principal: EntityRef::new("Approver", decider),
        action: "approve".into(),
        resource: EntityRef::new("ActionType", &p.proposed.action_type),
        context: serde_json::Map::new(),
        entities: vec![EntityData {
            uid: EntityRef::new("Approver", decider),
            attrs,
            parents: vec![],
            tags: Default::default(),
        }],
    };
    let decision = policy.decide(&request);
    let rec = DecisionRecord {
        decision: decision.clone(),
        request,
    };
    if decision.outcome == Outcome::Forbidden {
        let entry = NewEntry::new(Actor::operator(decider), Event::ApprovalForbidden(Empty {}))
            .agent(&p.proposed.agent_id)
            .proposal(&p.proposal_id)
            .decision(rec);
        return Ok(Err((
            AppError::ForbiddenByPolicy {
                policies: decision.policies,
            },
            Box::new(entry),
        )));
    }
    Ok(Ok(rec))
}

/// A decision about to be recorded.
struct Decided {
    verdict: Verdict,
    note: Option<String>,
    final_: bool,
    decided_by: String,
    merge_commit: Option<String>,
    /// Who merged the pull request, for a decision made on the forge.
    forge_merger: Option<String>,
}

/// Marks `p` decided and returns the `proposal_decided` entry.
fn decided_entry(
    p: &mut Proposal,
    d: Decided,
    actor: Actor,
    now: Timestamp,
    record: Option<DecisionRecord>,
) -> NewEntry {
    p.decision = Some(
        d.note
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| d.verdict.as_str().into()),
    );
    p.decided_by = Some(d.decided_by.clone());
    p.decided_at = Some(now);
    p.decision_final = d.final_;
    p.merge_commit = d.merge_commit.clone();
    let decided = ProposalDecided {
        decision: d.verdict.as_str().into(),
        final_: d.final_,
        note: d.note,
        status: p.status,
        decided_by: d.decided_by,
        merge_commit: d.merge_commit,
        branch: p.branch.clone(),
        proposal: p.clone(),
        via: d.forge_merger.as_ref().map(|_| VIA_FORGE.to_string()),
        merged_by: d.forge_merger,
        kind: None,
        evidence: None,
        repaired: None,
    };
    let entry = NewEntry::new(actor, Event::ProposalDecided(decided))
        .agent(&p.proposed.agent_id)
        .proposal(&p.proposal_id);
    match record {
        Some(r) => entry.decision(r),
        None => entry,
    }
}

/// A proposal's pull request merged into the remote's `main` by a person
/// with merge rights, already checked against what was submitted
/// (`store::remote::forge_merge_problem`).
#[derive(Debug, Clone)]
pub struct ForgeMerge {
    pub merge_commit: String,
    /// `<name> <email>` of the merge commit's author, or `@<login>` when
    /// the forge's signed webhook named who merged.
    pub merged_by: String,
    /// `merge` or `squash` (a one-commit squash or rebase merge).
    pub kind: &'static str,
    /// The webhook's evidence, when there is some (always for a squash).
    pub evidence: Option<crate::domain::forge::MergeEvidence>,
}

/// Why a forge merge did not become an approval.
#[derive(Debug)]
pub struct ForgeRefusal {
    pub error: AppError,
    pub entries: Vec<NewEntry>,
}

/// Records the approval of pending proposal `p` by a forge merge, as
/// [`decide`] records a person's: the same checks (still pending, not
/// expired, the `approve` policies permit `forge:<name> <email>`), the same
/// `proposal_decided` entry with `via: forge`. The caller holds the chain
/// lock and moves `main` to the merge itself.
pub fn approve_by_forge(
    svc: &Service,
    tx: &mut crate::app::governance::Tx<'_>,
    mut p: Proposal,
    merge: &ForgeMerge,
    now: Timestamp,
) -> Result<Result<(Proposal, NewEntry), ForgeRefusal>, AppError> {
    let decider = format!("forge:{}", merge.merged_by);
    match p.check_decidable(Verdict::Approve, now) {
        Ok(()) => {}
        Err(DecideError::AlreadyDecided(status)) => {
            return Ok(Err(ForgeRefusal {
                error: AppError::BadRequest(format!(
                    "proposal `{}` already decided (status={status})",
                    p.proposal_id
                )),
                entries: vec![],
            }))
        }
        Err(DecideError::Expired) => {
            let entry = expire_entry(tx, &mut p, Actor::server(), now)?;
            return Ok(Err(ForgeRefusal {
                error: AppError::Expired(p.proposal_id.clone()),
                entries: vec![entry],
            }));
        }
    }
    let rec = match approval_question(svc, tx, &p, &decider)? {
        Ok(rec) => rec,
        Err((error, entry)) => {
            return Ok(Err(ForgeRefusal {
                error,
                entries: vec![*entry],
            }))
        }
    };
    p.status = ProposalStatus::Approved;
    let decided = Decided {
        verdict: Verdict::Approve,
        note: None,
        final_: false,
        decided_by: decider.clone(),
        merge_commit: Some(merge.merge_commit.clone()),
        forge_merger: Some(merge.merged_by.clone()),
    };
    let mut entry = decided_entry(&mut p, decided, Actor(decider), now, Some(rec));
    if let Event::ProposalDecided(d) = &mut entry.event {
        d.kind = Some(merge.kind.into());
        d.evidence = merge.evidence.clone().map(Box::new);
    }
    Ok(Ok((p, entry)))
}

/// Marks an expired pending proposal, renaming its branch.
fn expire_entry(
    tx: &mut crate::app::governance::Tx<'_>,
    p: &mut Proposal,
    actor: Actor,
    now: Timestamp,
) -> Result<NewEntry, AppError> {
    if let Some(branch) = p.branch.clone() {
        let to = format!("gov/expired/{}", p.proposal_id);
        let repo = tx.repo();
        git_proposals::rename_branch(repo, tx.staged(), &branch, &to)
            .map_err(AppError::internal)?;
        p.branch = Some(to);
    }
    p.status = ProposalStatus::Expired;
    p.decided_at = Some(now);
    p.decided_by = Some("expiry".into());
    let expired = ProposalExpired {
        expires_at: p.expires_at,
        branch: p.branch.clone(),
        proposal: p.clone(),
    };
    Ok(NewEntry::new(actor, Event::ProposalExpired(expired))
        .agent(&p.proposed.agent_id)
        .proposal(&p.proposal_id))
}

/// Expires every pending proposal whose `expires_at` has passed. Returns
/// their ids.
pub fn expire_stale(svc: &Service) -> Result<Vec<String>, AppError> {
    expire_stale_as(svc, Actor::server(), Timestamp(svc.now()))
}

/// Expires, as `actor`, every pending proposal whose `expires_at` is before
/// `now`, under the chain lock (so a proposal decided meanwhile is left
/// alone). Returns their ids.
pub fn expire_stale_as(
    svc: &Service,
    actor: Actor,
    now: Timestamp,
) -> Result<Vec<String>, AppError> {
    svc.transact(|tx| -> Step<Vec<String>> {
        let pending = projection::proposals(tx.index().conn(), Some("pending"), u32::MAX)?;
        let mut ids = Vec::new();
        let mut entries = Vec::new();
        for mut p in pending.into_iter().filter(|p| p.is_expired_at(now)) {
            entries.push(expire_entry(tx, &mut p, actor.clone(), now)?);
            ids.push(p.proposal_id);
        }
        Ok((Ok(ids), entries))
    })
}

/// The `proposal_decided` entry that an approver-signed merge of pending
/// proposal `p` on `main` proves, written after the fact because the
/// approval's own append failed (`app::orphans`). `why` says so in the
/// entry.
pub fn approval_proven_by_merge(
    mut p: Proposal,
    merge_commit: &str,
    approver: &str,
    note: Option<String>,
    at: Timestamp,
    why: &str,
) -> NewEntry {
    p.status = ProposalStatus::Approved;
    let decided = Decided {
        verdict: Verdict::Approve,
        note,
        final_: false,
        decided_by: approver.into(),
        merge_commit: Some(merge_commit.into()),
        forge_merger: None,
    };
    let mut entry = decided_entry(&mut p, decided, Actor::operator(approver), at, None);
    if let Event::ProposalDecided(d) = &mut entry.event {
        d.repaired = Some(why.into());
    }
    entry
}
