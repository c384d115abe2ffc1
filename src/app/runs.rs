//! Runs and tool calls, for the runner (`gov run`) and its hook: start a
//! run (mint its agent token), finish it (charge, record, revoke), mint an
//! agent token by hand, and evaluate one tool call against the policy set.

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::agents::{self, BudgetView, ChargeInput};
use super::error::AppError;
use super::proposals::{agent_entity, refuse_if_paused};
use super::service::{new_uuid, random_bytes, Service, Step};
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::credential::{token_from_bytes, token_hash};
use crate::domain::event::{
    AgentRunSkipped, AgentRunStarted, AgentTokenIssued, RunEnded, ToolApprovalUsed, ToolDecision,
};
use crate::domain::proposal::{payload_hash, Proposal, ProposalStatus};
use crate::domain::request::{CedarRequest, DecisionRecord, EntityRef, Outcome, PolicyCitation};
use crate::domain::run::{undecided, undecided_reason, ToolUse};
use crate::store::projection;

#[derive(Debug, Clone)]
pub struct RunStarted {
    pub run_id: String,
    pub agent_id: String,
    pub agent_token: String,
}

/// Starts a run: refuses a paused agent or one its `continue` policies
/// stop (`agent_run_skipped`), else mints the run's agent token.
pub fn start_run(
    svc: &Service,
    agent_id: &str,
    task_id: Option<&str>,
    actor: Actor,
) -> Result<RunStarted, AppError> {
    if let Some(why) = svc.agent_error(agent_id) {
        // Fail closed: an agent whose settings on main do not parse does
        // not run (its pauses and history stay).
        return Err(AppError::Conflict(format!(
            "agent `{agent_id}` is not in force: its agent.toml on main is not valid: {why}"
        )));
    }
    if svc.agent_settings(agent_id).is_none() {
        return Err(AppError::NotFound(format!(
            "unknown agent_id: {agent_id} (agents run only once their agent.toml is on main)"
        )));
    }
    let token = token_from_bytes("gov_agent", &random_bytes());
    let hash = token_hash(&token);
    svc.transact(|tx| -> Step<RunStarted> {
        let conn = tx.index().conn();
        let skipped = |reason: &str, policies: &[PolicyCitation]| {
            let skipped = AgentRunSkipped {
                reason: reason.into(),
                policies: policies.to_vec(),
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
                vec![skipped("agent_paused", &[])],
            ));
        }
        let (_, decision, record) =
            super::watchdog::continue_check(svc, tx.repo(), conn, agent_id, Utc::now())?;
        if decision.outcome != Outcome::Auto {
            return Ok((
                Err(AppError::ContinueDenied {
                    agent_id: agent_id.into(),
                    policies: decision.policies.clone(),
                }),
                vec![skipped("continue_denied", &decision.policies).decision(record)],
            ));
        }
        let run_id = new_uuid();
        let started = AgentRunStarted {
            run_id: run_id.clone(),
            token_hash: hash.clone(),
        };
        let e = NewEntry::new(actor.clone(), Event::AgentRunStarted(started))
            .agent(agent_id)
            .maybe_task(task_id);
        Ok((
            Ok(RunStarted {
                run_id,
                agent_id: agent_id.into(),
                agent_token: token.clone(),
            }),
            vec![e],
        ))
    })
}

/// How a run ended, as the runner reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct RunEnd {
    pub status: RunStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub tokens: i64,
    #[serde(default)]
    pub dollars: Option<f64>,
    #[serde(default)]
    pub usage_missing: bool,
    /// The tool calls the agent's stream reported (claude agents): each
    /// must have a decision of this run, or the run fails.
    #[serde(default)]
    pub tool_uses: Vec<ToolUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Complete,
    Failed,
}

/// How a run was recorded: the runner's status and reason, unless a tool
/// call ran without a decision, which fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecorded {
    pub status: RunStatus,
    pub reason: Option<String>,
}

/// Finishes a run: charges its spend (refused over the cap, which pauses
/// the agent), records its end and revokes its token. A run whose agent
/// reported a tool call that has no decision of this run is recorded as
/// failed (`tool_without_gov_decision`), whatever the runner said.
pub fn finish_run(
    svc: &Service,
    run_id: &str,
    end: &RunEnd,
    actor: Actor,
) -> Result<(RunRecorded, BudgetView), AppError> {
    let agent_id = {
        let index = svc.governance().index()?;
        match projection::run(index.conn(), run_id)? {
            Some((a, _, _)) => a,
            None => return Err(AppError::NotFound(format!("unknown run_id: {run_id}"))),
        }
    };
    let caps = svc.caps(&agent_id);
    let input = ChargeInput {
        tokens: end.tokens,
        dollars: end.dollars,
        tool: "run".into(),
        task_id: None,
    };
    let charge = input.to_charge(caps.dollars_per_1k_tokens)?;
    let recorded = svc.transact(|tx| -> Step<RunRecorded> {
        let conn = tx.index().conn();
        let Some((_, task, finished)) = projection::run(conn, run_id)? else {
            return Ok((
                Err(AppError::NotFound(format!("unknown run_id: {run_id}"))),
                vec![],
            ));
        };
        if let Some(f) = finished {
            return Ok((
                Err(AppError::Conflict(format!(
                    "run '{run_id}' already finished ({f})"
                ))),
                vec![],
            ));
        }
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
        let mut entries = Vec::new();
        let mut input = input.clone();
        input.task_id = task.clone();
        if charge.tokens > 0 || charge.micros.0 > 0 {
            let (_answer, mut charged) =
                agents::plan_charge(svc, conn, &agent_id, &caps, charge, &input, actor.clone())?;
            entries.append(&mut charged);
        }
        let ended = RunEnded {
            run_id: run_id.into(),
            reason: reason.clone(),
            tokens: charge.tokens,
            dollars: charge.micros.as_dollars_f64(),
            usage_missing: end.usage_missing,
            undecided_tool_uses: missing.into_iter().cloned().collect(),
        };
        let event = match status {
            RunStatus::Complete => Event::AgentRunComplete(ended),
            RunStatus::Failed => Event::AgentRunFailed(ended),
        };
        entries.push(
            NewEntry::new(actor.clone(), event)
                .agent(&agent_id)
                .maybe_task(task),
        );
        Ok((Ok(RunRecorded { status, reason }), entries))
    })?;
    Ok((recorded, agents::budget(svc, &agent_id, 0)?))
}

/// Mints an agent token by hand (operator), not bound to a run.
pub fn mint_token(svc: &Service, agent_id: &str, actor: Actor) -> Result<String, AppError> {
    if !crate::config::valid_agent_id(agent_id) {
        return Err(AppError::NotFound(format!("unknown agent_id: {agent_id}")));
    }
    let token = token_from_bytes("gov_agent", &random_bytes());
    let hash = token_hash(&token);
    svc.transact(|tx| -> Step<()> {
        if !agents::known(svc, tx.index().conn(), agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent_id: {agent_id}"))),
                vec![],
            ));
        }
        let issued = AgentTokenIssued {
            token_hash: hash.clone(),
            run_id: None,
        };
        let e = NewEntry::new(actor, Event::AgentTokenIssued(issued)).agent(agent_id);
        Ok((Ok(()), vec![e]))
    })?;
    Ok(token)
}

/// The agent (and run) a bearer token was minted for, if it is live.
pub fn token_agent(
    svc: &Service,
    token: &str,
) -> Result<Option<(String, Option<String>)>, AppError> {
    svc.read(|c| projection::agent_token(c, &token_hash(token)))
}

/// A tool call to evaluate.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    pub agent_id: String,
    #[serde(default)]
    pub run_id: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub tool_input: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Claude Code's id for the call, recorded with the decision so the
    /// runner can tell a call that was decided from one that was not.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolAnswer {
    pub decision: &'static str,
    pub reason: String,
    pub policies: Vec<PolicyCitation>,
    pub proposal_id: Option<String>,
}

/// The Cedar `use_tool` question for a call, paths made canonical relative
/// to the agent's folder.
pub fn tool_request(svc: &Service, call: &ToolCall) -> CedarRequest {
    let mut context = serde_json::Map::new();
    let agent_dir = svc.settings().agents_dir().join(&call.agent_id);
    // Every path the call names is checked: `path` is the first one, and
    // the call is inside the agent's folder only if all of them are. A path
    // key that is not a string, or a glob that can leave its folder, counts
    // as outside.
    let mut first: Option<String> = None;
    let mut inside = true;
    let mut note = |path: String, ok: bool| {
        first.get_or_insert(path);
        inside &= ok;
    };
    for key in ["file_path", "path", "notebook_path"] {
        match call.tool_input.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(raw)) => {
                let (path, ok) = crate::store::policies::canonical_tool_path(
                    &svc.settings().root,
                    &agent_dir,
                    raw,
                );
                note(path, ok);
            }
            Some(other) => note(other.to_string(), false),
        }
    }
    let glob_keys: &[&str] = if call.tool_name == "Glob" {
        &["pattern", "glob"]
    } else {
        &["glob"]
    };
    for key in glob_keys {
        match call.tool_input.get(*key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(g)) if !glob_may_escape(g) => {}
            Some(other) => note(
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
                false,
            ),
        }
    }
    if let Some(path) = first {
        context.insert("path".into(), json!(path));
        context.insert("inside_agent_dir".into(), json!(inside));
    }
    if let Some(c) = call.tool_input.get("command").and_then(|v| v.as_str()) {
        context.insert("command".into(), json!(c));
    }
    if let Some(u) = call.tool_input.get("url").and_then(|v| v.as_str()) {
        context.insert("url".into(), json!(u));
    }
    CedarRequest {
        principal: EntityRef::new("Agent", &call.agent_id),
        action: "use_tool".into(),
        resource: EntityRef::new("Tool", &call.tool_name),
        context,
        entities: vec![agent_entity(svc, &call.agent_id)],
    }
}

/// Whether a glob pattern can match outside the folder it is searched
/// from: absolute, from a home directory, or with a `..` component.
fn glob_may_escape(pattern: &str) -> bool {
    pattern.starts_with('/')
        || pattern.starts_with('~')
        || pattern.starts_with('\\')
        || pattern.split(['/', '\\']).any(|c| c == "..")
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
    if let Some(id) = &call.tool_use_id {
        if id.is_empty() || id.len() > 200 || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AppError::invalid(
                "tool_use_id",
                "tool_use_id must be 1 to 200 visible ASCII characters",
            ));
        }
    }
    let action_type = format!("{}{}", super::proposals::TOOL_ACTION_PREFIX, call.tool_name);
    let payload = json!({"tool_name": call.tool_name, "tool_input": call.tool_input});
    let hash = payload_hash(&payload);
    let request = tool_request(svc, call);
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
            };
            NewEntry::new(Actor::server(), Event::ToolDecision(decided))
                .agent(&call.agent_id)
                .maybe_proposal(pid)
        };
        if let Some((AppError::Paused { reason, .. }, _)) =
            refuse_if_paused(conn, &call.agent_id, "tool")?
        {
            let why = format!("agent is paused: {reason}");
            return Ok((
                Ok(ToolAnswer {
                    decision: "deny",
                    reason: why.clone(),
                    policies: vec![],
                    proposal_id: None,
                }),
                vec![base("deny", &why, None)],
            ));
        }
        let policy = svc.policy_at(tx.repo())?;
        let decision = policy.decide(&request);
        let record = DecisionRecord {
            decision: decision.clone(),
            request: request.clone(),
        };
        let reasons = decision
            .policies
            .iter()
            .map(|p| p.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        let answer = |d: &'static str, reason: String, pid: Option<String>| ToolAnswer {
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
                    Ok(answer("allow", r.clone(), None)),
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
                    Ok(answer("deny", r.clone(), None)),
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
                        Ok(answer("allow", r.clone(), Some(pid.clone()))),
                        vec![base("allow", &r, Some(&pid)).decision(record), used],
                    ));
                }
                if let Some(pid) =
                    projection::pending_tool_proposal(conn, &call.agent_id, &action_type, &hash)?
                {
                    let r = format!("waiting for a person: proposal {pid}");
                    return Ok((
                        Ok(answer("needs_person", r.clone(), Some(pid.clone()))),
                        vec![base("needs_person", &r, Some(&pid)).decision(record)],
                    ));
                }
                let now = Utc::now();
                let id = new_uuid();
                let p = Proposal {
                    proposal_id: id.clone(),
                    agent_id: call.agent_id.clone(),
                    wave: 0,
                    submitted_at: Timestamp(now),
                    action_type: action_type.clone(),
                    payload: match &payload {
                        serde_json::Value::Object(m) => m.clone(),
                        _ => serde_json::Map::new(),
                    },
                    payload_hash: hash.clone(),
                    expected_outcome: format!("the agent calls `{}`", call.tool_name),
                    expected_cost_tokens: 0,
                    expected_cost_dollars: 0.0,
                    reversible: false,
                    requires_approval: true,
                    expires_at: Timestamp(now + Duration::hours(24)),
                    rationale: reasons.clone(),
                    links: vec![],
                    status: ProposalStatus::Pending,
                    decision: None,
                    decided_by: None,
                    decided_at: None,
                    decision_final: false,
                    policies: decision.policies.clone(),
                    policy_version: decision.policy_version.clone(),
                    branch: None,
                    commit: None,
                    merge_commit: None,
                };
                let (_, filed) = super::proposals::file_pending(svc, tx, p, record.clone())?;
                let r = format!("needs a person: proposal {id}");
                Ok((
                    Ok(answer("needs_person", r.clone(), Some(id.clone()))),
                    vec![filed, base("needs_person", &r, Some(&id)).decision(record)],
                ))
            }
        }
    })
}
