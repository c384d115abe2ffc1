//! Runs and tool calls, for the runner (`gov run`) and its hook: start a
//! run (mint its agent token), finish it (charge, record, revoke), mint an
//! agent token by hand, and evaluate one tool call against the policy set.

use chrono::Duration;
use serde_json::json;

use super::agents;
use super::error::AppError;
use super::proposals::{agent_entity, refuse_if_paused};
use super::run_budget;
use super::service::{new_uuid, random_bytes, Service, Step};
use super::tool_calls::{self, CallInfo, CallSite, ToolQuestion};
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::budget::Hold;
use crate::domain::credential::{token_from_bytes, token_hash};
use crate::domain::event::{
    AgentRunSkipped, AgentRunStarted, AgentTokenIssued, AgentTokenRevoked, RunReservation,
    ToolApprovalUsed, ToolDecision,
};
use crate::domain::proposal::{payload_hash, Proposal, Proposed};
use crate::domain::request::{CedarRequest, Decision, DecisionRecord, Outcome, PolicyCitation};
use crate::domain::run::{undecided, undecided_reason};
use crate::store::projection;
use crate::wire::ToolDecision as Verdict;

#[derive(Debug, Clone)]
pub struct RunStarted {
    pub run_id: String,
    pub agent_id: String,
    pub agent_token: String,
    /// What the run reserved, and until when (Unix seconds) it holds.
    pub reservation: Hold,
    pub hold_until: i64,
}

/// Starts a run: refuses a paused agent, one its `continue` policies stop,
/// or one whose budget left cannot cover a run's reservation
/// (`agent_run_skipped`); else reserves, and mints the run's agent token.
pub fn start_run(
    svc: &Service,
    agent_id: &str,
    task_id: Option<&str>,
    actor: Actor,
) -> Result<RunStarted, AppError> {
    start_run_in(svc, agent_id, task_id, None, actor)
}

/// [`start_run`] for a session in a project folder of its own (`gov
/// guard`): the folder (absolute) is recorded with the run, and its tool
/// calls are judged against it instead of `agents/<id>/`.
pub fn start_run_in(
    svc: &Service,
    agent_id: &str,
    task_id: Option<&str>,
    folder: Option<&str>,
    actor: Actor,
) -> Result<RunStarted, AppError> {
    if let Some(f) = folder {
        if !std::path::Path::new(f).is_absolute() {
            return Err(AppError::invalid(
                "folder",
                format!("must be an absolute path, got `{f}`"),
            ));
        }
    }
    if let Some(why) = svc.agent_error(agent_id) {
        // Fail closed: an agent whose settings on main do not parse does
        // not run (its pauses and history stay).
        return Err(AppError::Conflict(format!(
            "agent `{agent_id}` is not in force: its agent.toml on main is not valid: {why}"
        )));
    }
    if svc.agent_settings(agent_id).is_none() {
        return Err(AppError::NotFound(format!(
            "unknown agent `{agent_id}` (agents run only once their agent.toml is on main)"
        )));
    }
    let token = token_from_bytes("gov_agent", &random_bytes());
    let hash = token_hash(&token);
    svc.transact(|tx| -> Step<RunStarted> {
        let conn = tx.index().conn();
        let skipped = |reason: &str, policies: &[PolicyCitation], detail: Option<&str>| {
            let skipped = AgentRunSkipped {
                reason: reason.into(),
                policies: policies.to_vec(),
                detail: detail.map(String::from),
            };
            NewEntry::new(actor.clone(), Event::AgentRunSkipped(skipped))
                .agent(agent_id)
                .maybe_task(task_id)
        };
        if let Some(row) = projection::agent(conn, agent_id)?.filter(|r| r.paused) {
            let reason = row.paused_reason.unwrap_or_else(|| "paused".into());
            return Ok((
                Err(AppError::Paused {
                    agent_id: agent_id.into(),
                    reason: reason.clone(),
                }),
                vec![skipped("agent_paused", &[], None)],
            ));
        }
        let (_, decision, record) =
            super::watchdog::continue_check(svc, tx.repo(), conn, agent_id, svc.now())?;
        if decision.outcome != Outcome::Auto {
            return Ok((
                Err(AppError::ContinueDenied {
                    agent_id: agent_id.into(),
                    policies: decision.policies.clone(),
                }),
                vec![skipped("continue_denied", &decision.policies, None).decision(record)],
            ));
        }
        let now = svc.now();
        let caps = svc.caps(agent_id);
        let reservation = match run_budget::admit_run(conn, agent_id, &caps, now)? {
            Ok(r) => r,
            Err(detail) => {
                return Ok((
                    Err(AppError::BudgetInsufficient {
                        agent_id: agent_id.into(),
                        detail: detail.clone(),
                    }),
                    vec![skipped("budget_insufficient", &[], Some(&detail))],
                ))
            }
        };
        let wallclock = svc
            .agent_settings(agent_id)
            .map_or(0, |a| a.wallclock_seconds);
        let hold_until = run_budget::hold_until(now, wallclock);
        let run_id = new_uuid();
        let started = AgentRunStarted {
            run_id: run_id.clone(),
            token_hash: hash.clone(),
            folder: folder.map(str::to_string),
            reservation: Some(RunReservation {
                tokens: reservation.tokens,
                micros: reservation.micros.0,
                dollars: reservation.micros.as_dollars_f64(),
                hold_until,
            }),
        };
        let e = NewEntry::new(actor.clone(), Event::AgentRunStarted(started))
            .agent(agent_id)
            .maybe_task(task_id);
        Ok((
            Ok(RunStarted {
                run_id,
                agent_id: agent_id.into(),
                agent_token: token.clone(),
                reservation,
                hold_until,
            }),
            vec![e],
        ))
    })
}

/// How a run ended, as the runner reports it (the wire type).
pub use crate::wire::{RunFinish as RunEnd, RunStatus};

pub use crate::wire::RunFinished;

/// How a run was recorded: the runner's status and reason, unless a tool
/// call ran without a decision, which fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecorded {
    pub status: RunStatus,
    pub reason: Option<String>,
}

/// Finishes a run: charges the rest of its spend (a charge records a fact,
/// crossing a cap pauses the agent), releases its reservation, records its
/// end and revokes its token. A run whose agent reported a tool call that
/// has no decision of this run is recorded as failed
/// (`tool_without_gov_decision`), whatever the runner said.
pub fn finish_run(
    svc: &Service,
    run_id: &str,
    end: &RunEnd,
    actor: Actor,
) -> Result<RunFinished, AppError> {
    if end.tokens < 0 {
        return Err(AppError::invalid("tokens", "tokens must not be negative"));
    }
    let (agent_id, recorded, run) =
        svc.transact(|tx| -> Step<(String, RunRecorded, crate::wire::RunSpend)> {
            let conn = tx.index().conn();
            let (agent_id, task) = match run_budget::open_run(conn, run_id)? {
                Ok(run) => run,
                Err(e) => return Ok((Err(e), vec![])),
            };
            let decided = projection::decided_tool_uses(conn, run_id)?;
            let missing = undecided(&end.tool_uses, &decided);
            let (status, reason) = if missing.is_empty() {
                (end.status, end.reason.clone())
            } else {
                let why = undecided_reason(&missing);
                let reason = match &end.reason {
                    Some(r) => format!("{why}; {r}"),
                    None => why,
                };
                (RunStatus::Failed, Some(reason))
            };
            let run = run_budget::RunRef {
                run_id,
                agent: &agent_id,
                task: &task,
            };
            let settled = run_budget::settle(svc, conn, run, end, actor.clone())?;
            let mut entries = settled.entries;
            let mut ended = settled.ended;
            ended.reason = reason.clone();
            ended.undecided_tool_uses = missing.into_iter().cloned().collect();
            let event = match status {
                RunStatus::Complete => Event::AgentRunComplete(ended),
                RunStatus::Failed => Event::AgentRunFailed(ended),
            };
            entries.push(
                NewEntry::new(actor.clone(), event)
                    .agent(&agent_id)
                    .maybe_task(task.as_ref()),
            );
            let recorded = RunRecorded { status, reason };
            Ok((Ok((agent_id.clone(), recorded, settled.run)), entries))
        })?;
    Ok(RunFinished {
        status: recorded.status,
        reason: recorded.reason,
        budget: agents::budget(svc, &agent_id, 0)?,
        run,
    })
}

/// Mints an agent token by hand (operator), not bound to a run.
pub fn mint_token(svc: &Service, agent_id: &str, actor: Actor) -> Result<String, AppError> {
    if !crate::config::valid_agent_id(agent_id) {
        return Err(AppError::NotFound(format!("unknown agent `{agent_id}`")));
    }
    let token = token_from_bytes("gov_agent", &random_bytes());
    let hash = token_hash(&token);
    let expires_at =
        Timestamp(svc.now() + Duration::hours(i64::from(svc.settings().agent_token_ttl_hours)));
    svc.transact(|tx| -> Step<()> {
        if !agents::known(svc, tx.index().conn(), agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent `{agent_id}`"))),
                vec![],
            ));
        }
        let issued = AgentTokenIssued {
            token_hash: hash.clone(),
            run_id: None,
            expires_at: Some(expires_at),
        };
        let e = NewEntry::new(actor, Event::AgentTokenIssued(issued)).agent(agent_id);
        Ok((Ok(()), vec![e]))
    })?;
    Ok(token)
}

/// Revokes an agent token (audited). Returns the agent it belonged to.
pub fn revoke_token(svc: &Service, token: &str, actor: Actor) -> Result<String, AppError> {
    let hash = token_hash(token.trim());
    svc.transact(|tx| -> Step<String> {
        let conn = tx.index().conn();
        let Some((agent, _run)) = projection::agent_token(conn, &hash, Timestamp(svc.now()))?
        else {
            return Ok((
                Err(AppError::NotFound(
                    "no live agent token matches (unknown, expired or already revoked)".into(),
                )),
                vec![],
            ));
        };
        let revoked = AgentTokenRevoked {
            token_hash: hash.clone(),
        };
        let e = NewEntry::new(actor, Event::AgentTokenRevoked(revoked)).agent(&agent);
        Ok((Ok(agent), vec![e]))
    })
}

/// The agent (and run) a bearer token was minted for, if it is live.
pub fn token_agent(
    svc: &Service,
    token: &str,
) -> Result<Option<(String, Option<String>)>, AppError> {
    svc.read(|c| projection::agent_token(c, &token_hash(token), Timestamp(svc.now())))
}

/// A tool call to evaluate, and gov's answer (the wire types).
pub use crate::wire::{ToolCall, ToolVerdict as ToolAnswer};

/// The folder a call's agent works in: the project folder its run was
/// registered with (`gov guard`), else `agents/<id>/`.
fn agent_folder(svc: &Service, call: &ToolCall) -> Result<std::path::PathBuf, AppError> {
    if let Some(run) = &call.run_id {
        if let Some(folder) = svc.read(|c| projection::run_folder(c, run))? {
            return Ok(std::path::PathBuf::from(folder));
        }
    }
    Ok(svc.settings().agents_dir().join(&call.agent_id))
}

/// The Cedar questions of a call (see [`super::tool_calls`]).
pub fn tool_question(svc: &Service, call: &ToolCall) -> Result<ToolQuestion, AppError> {
    let folder = agent_folder(svc, call)?;
    let site = CallSite::new(
        &svc.settings().root,
        &folder,
        call.cwd.as_deref(),
        call.path_var.as_deref(),
    );
    let info = CallInfo {
        agent_id: &call.agent_id,
        tool_name: &call.tool_name,
        tool_input: Some(&call.tool_input),
        agent_type: call.agent_type.as_deref(),
    };
    let policy = svc.current_policy();
    Ok(tool_calls::tool_question(
        &site,
        &info,
        agent_entity(svc, &call.agent_id),
        |e| policy.as_ref().is_some_and(|p| p.knows(e)),
    ))
}

/// One decision for the whole call: denied if any question is forbidden,
/// else a person's if any needs one, else allowed; a shell line gov cannot
/// reduce is never allowed without a person. Returns the decision and the
/// request that decided it.
pub fn combine(
    decisions: Vec<(Decision, CedarRequest)>,
    not_reducible: &[&str],
) -> Option<(Decision, CedarRequest)> {
    let pick = |o: Outcome| decisions.iter().position(|(d, _)| d.outcome == o);
    let at = pick(Outcome::Forbidden)
        .or_else(|| pick(Outcome::NeedsPerson))
        .unwrap_or(0);
    let (mut decision, request) = decisions.into_iter().nth(at)?;
    if decision.outcome == Outcome::Auto && !not_reducible.is_empty() {
        decision.outcome = Outcome::NeedsPerson;
    }
    Some((decision, request))
}

/// Evaluates one tool call: allow, deny, or needs a person (filed as a
/// proposal; once approved, one identical call is allowed).
pub fn evaluate_tool(svc: &Service, call: &ToolCall) -> Result<ToolAnswer, AppError> {
    if !crate::config::valid_agent_id(&call.agent_id) {
        return Err(AppError::invalid("agent_id", "not a valid agent id"));
    }
    if call.tool_name.trim().is_empty() || call.tool_name.len() > 200 {
        return Err(AppError::invalid(
            "tool_name",
            "tool_name must be non-empty",
        ));
    }
    crate::domain::audit::check_name("tool_name", &call.tool_name)?;
    // A tool call that needs a person becomes a proposal whose entry wraps
    // this input several levels down.
    crate::domain::audit::check_input_depth(
        "tool_input",
        &serde_json::Value::Object(call.tool_input.clone()),
    )?;
    if let Some(run) = &call.run_id {
        crate::domain::audit::check_name("run_id", run)?;
    }
    if let Some(id) = &call.tool_use_id {
        if id.is_empty() || id.len() > 200 || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AppError::invalid(
                "tool_use_id",
                "tool_use_id must be 1 to 200 visible ASCII characters",
            ));
        }
    }
    let action_type = format!("{}{}", super::proposals::TOOL_ACTION_PREFIX, call.tool_name);
    // An approval is bound to this exact call: tool, input and run.
    let payload =
        json!({"tool_name": call.tool_name, "tool_input": call.tool_input, "run_id": call.run_id});
    let hash = payload_hash(&payload);
    let question = tool_question(svc, call)?;
    let not_reducible = question.not_reducible();
    let commands: Vec<String> = question
        .line
        .as_ref()
        .map(|l| l.commands.iter().map(|c| c.words()).collect())
        .unwrap_or_default();
    svc.transact(|tx| -> Step<ToolAnswer> {
        let conn = tx.index().conn();
        let base = |decision: &str, reason: &str, pid: Option<&str>| {
            let decided = ToolDecision {
                tool_name: call.tool_name.clone(),
                run_id: call.run_id.clone(),
                tool_use_id: call.tool_use_id.clone(),
                decision: decision.into(),
                reason: reason.into(),
                payload_hash: hash.clone(),
                subagent_id: call.subagent_id.clone(),
                agent_type: call.agent_type.clone(),
                permission_mode: call.permission_mode.clone(),
                shell_commands: commands.clone(),
                not_reducible: not_reducible.iter().map(|s| s.to_string()).collect(),
            };
            NewEntry::new(Actor::server(), Event::ToolDecision(decided))
                .agent(&call.agent_id)
                .maybe_proposal(pid)
        };
        let paused = match refuse_if_paused(conn, &call.agent_id, "tool")? {
            Some((AppError::Paused { reason, .. }, _)) => {
                Some(format!("agent is paused: {reason}"))
            }
            _ => None,
        };
        let refused = match paused {
            Some(why) => Some(why),
            None => guard_session_spent(conn, call.run_id.as_deref())?,
        };
        if let Some(why) = refused {
            return Ok((
                Ok(ToolAnswer {
                    decision: Verdict::Deny,
                    reason: why.clone(),
                    policies: vec![],
                    proposal_id: None,
                }),
                vec![base("deny", &why, None)],
            ));
        }
        let policy = svc.policy_in(tx)?;
        let decided = question
            .requests
            .iter()
            .map(|r| (policy.decide(r), r.clone()))
            .collect();
        let Some((decision, request)) = combine(decided, &not_reducible) else {
            return Err(AppError::internal("a tool call asked no question"));
        };
        let record = DecisionRecord {
            decision: decision.clone(),
            request,
        };
        let mut reasons = decision
            .policies
            .iter()
            .map(|p| p.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        if decision.outcome == Outcome::NeedsPerson && !not_reducible.is_empty() {
            let why = format!(
                "the command cannot be judged from its text ({}), so a person must approve it",
                not_reducible.join(", ")
            );
            reasons = if reasons.is_empty() {
                why
            } else {
                format!("{why}; {reasons}")
            };
        }
        let answer = |d: Verdict, reason: String, pid: Option<String>| ToolAnswer {
            decision: d,
            reason,
            policies: decision.policies.clone(),
            proposal_id: pid,
        };
        match decision.outcome {
            Outcome::Auto => {
                let r = if reasons.is_empty() {
                    "allowed by policy".into()
                } else {
                    reasons
                };
                Ok((
                    Ok(answer(Verdict::Allow, r.clone(), None)),
                    vec![base("allow", &r, None).decision(record)],
                ))
            }
            Outcome::Forbidden => {
                let r = if reasons.is_empty() {
                    format!("no policy permits `{}`", call.tool_name)
                } else {
                    reasons
                };
                Ok((
                    Ok(answer(Verdict::Deny, r.clone(), None)),
                    vec![base("deny", &r, None).decision(record)],
                ))
            }
            Outcome::NeedsPerson => {
                if let Some(pid) =
                    projection::unused_tool_approval(conn, &call.agent_id, &action_type, &hash)?
                {
                    let r = format!("approved by a person (proposal {pid}), once");
                    let used = ToolApprovalUsed {
                        tool_name: call.tool_name.clone(),
                        run_id: call.run_id.clone(),
                    };
                    let used = NewEntry::new(Actor::server(), Event::ToolApprovalUsed(used))
                        .agent(&call.agent_id)
                        .proposal(&pid);
                    return Ok((
                        Ok(answer(Verdict::Allow, r.clone(), Some(pid.clone()))),
                        vec![base("allow", &r, Some(&pid)).decision(record), used],
                    ));
                }
                if let Some(pid) =
                    projection::pending_tool_proposal(conn, &call.agent_id, &action_type, &hash)?
                {
                    let r = with_why(format!("waiting for a person: proposal {pid}"), &reasons);
                    return Ok((
                        Ok(answer(Verdict::NeedsPerson, r.clone(), Some(pid.clone()))),
                        vec![base("needs_person", &r, Some(&pid)).decision(record)],
                    ));
                }
                let now = svc.now();
                let id = new_uuid();
                let p = Proposal {
                    policies: decision.policies.clone(),
                    policy_version: decision.policy_version.clone(),
                    ..Proposal::pending(
                        id.clone(),
                        Proposed {
                            expected_outcome: format!("the agent calls `{}`", call.tool_name),
                            reversible: false,
                            rationale: reasons.clone(),
                            ..Proposed::new(
                                call.agent_id.clone(),
                                action_type.clone(),
                                match &payload {
                                    serde_json::Value::Object(m) => m.clone(),
                                    _ => serde_json::Map::new(),
                                },
                            )
                        },
                        Timestamp(now),
                        Timestamp(now + Duration::hours(24)),
                    )
                };
                let (_, filed) = super::proposals::file_pending(svc, tx, p, record.clone())?;
                let r = with_why(format!("needs a person: proposal {id}"), &reasons);
                Ok((
                    Ok(answer(Verdict::NeedsPerson, r.clone(), Some(id.clone()))),
                    vec![filed, base("needs_person", &r, Some(&id)).decision(record)],
                ))
            }
        }
    })
}

/// Why a `gov guard` session may make no more tool calls: it has spent
/// its run's reservation. (A `gov run` run is stopped by its runner.)
fn guard_session_spent(
    conn: &rusqlite::Connection,
    run_id: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(run) = run_id else { return Ok(None) };
    if projection::run_folder(conn, run)?.is_none() {
        return Ok(None);
    }
    let Some((reserved, _)) = projection::run_reservation(conn, run)? else {
        return Ok(None);
    };
    let spent = projection::run_spend(conn, run)?;
    Ok(reserved.exhausted_by(spent).then(|| {
        format!(
            "this session has spent its run's reservation: {} of {} tokens, ${:.2} of ${:.2}",
            spent.tokens,
            reserved.tokens,
            spent.micros.as_dollars_f64(),
            reserved.micros.as_dollars_f64()
        )
    }))
}

/// `what`, then why, when there is a why.
fn with_why(what: String, why: &str) -> String {
    if why.is_empty() {
        what
    } else {
        format!("{what}: {why}")
    }
}
