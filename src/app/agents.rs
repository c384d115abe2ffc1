//! Agents: budgets (read, charge), pauses (pause, resume, pause-all), live
//! state (`/status/me`, `/scoreboard`) and audit flags about them.

use chrono::Utc;
use serde::Serialize;

use super::error::AppError;
use super::service::{Service, Step};
use crate::config::BudgetSettings;
use crate::domain::audit::{Actor, Event, NewEntry};
use crate::domain::budget::{
    agent_status, check_charge, remaining_pct, Charge, ChargeCheck, PeriodKeys, Spend,
};
use crate::domain::event::{
    AdminPauseAll, AgentPaused, AgentResumed, BudgetCharge, BudgetChargeRefused, BudgetPaused,
    Impersonation,
};
use crate::domain::money::Micros;
use crate::store::projection;

/// The original's budget answer.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub agent_id: String,
    pub wave: i64,
    pub tokens_consumed: i64,
    pub tokens_cap: u64,
    pub dollars_consumed: f64,
    pub dollars_cap: f64,
    pub status: &'static str,
    pub remaining_pct: f64,
    pub period: String,
    pub paused_reason: Option<String>,
}

/// Whether gov knows the agent: it is on main or the chain mentions it.
pub fn known(svc: &Service, conn: &rusqlite::Connection, agent_id: &str) -> Result<bool, AppError> {
    Ok(svc.agents().contains_key(agent_id) || projection::agent(conn, agent_id)?.is_some())
}

fn spent(
    conn: &rusqlite::Connection,
    caps: &BudgetSettings,
    agent: &str,
) -> Result<Spend, AppError> {
    let key = PeriodKeys::current(caps.period, Utc::now());
    Ok(projection::spend(conn, agent, key.as_deref())?)
}

/// The budget of an agent as the index knows it.
pub fn budget_view(
    svc: &Service,
    conn: &rusqlite::Connection,
    agent_id: &str,
    wave: i64,
) -> Result<BudgetView, AppError> {
    if !known(svc, conn, agent_id)? {
        return Err(AppError::NotFound(format!("unknown agent_id: {agent_id}")));
    }
    let caps = svc.caps(agent_id);
    let spend = spent(conn, &caps, agent_id)?;
    let row = projection::agent(conn, agent_id)?;
    let paused = row.as_ref().is_some_and(|r| r.paused);
    Ok(BudgetView {
        agent_id: agent_id.into(),
        wave,
        tokens_consumed: spend.tokens,
        tokens_cap: caps.tokens_cap,
        dollars_consumed: spend.micros.as_dollars_f64(),
        dollars_cap: caps.dollars_cap.as_dollars_f64(),
        status: agent_status(&caps, spend, paused).as_str(),
        remaining_pct: remaining_pct(&caps, spend),
        period: crate::domain::budget::period_label(caps.period, Utc::now()),
        paused_reason: row.and_then(|r| r.paused_reason),
    })
}

pub fn budget(svc: &Service, agent_id: &str, wave: i64) -> Result<BudgetView, AppError> {
    let index = svc.governance().index()?;
    budget_view(svc, index.conn(), agent_id, wave)
}

/// A charge as the API takes it.
#[derive(Debug, Clone)]
pub struct ChargeInput {
    pub tokens: i64,
    pub dollars: Option<f64>,
    pub tool: String,
    pub task_id: Option<String>,
}

impl ChargeInput {
    pub fn to_charge(&self, per_1k: Micros) -> Result<Charge, AppError> {
        let micros = match self.dollars {
            None => None,
            Some(d) => Some(
                Micros::from_dollars_f64(d)
                    .map_err(|e| AppError::invalid("dollars", e.to_string()))?,
            ),
        };
        Charge::new(self.tokens, micros, per_1k).map_err(|e| {
            let field = match e {
                crate::domain::budget::ChargeError::NegativeTokens => "tokens",
                crate::domain::budget::ChargeError::NegativeDollars => "dollars",
                crate::domain::budget::ChargeError::Absurd => {
                    if self.dollars.is_some() {
                        "dollars"
                    } else {
                        "tokens"
                    }
                }
            };
            AppError::invalid(field, e.to_string())
        })
    }
}

/// Checks and records a charge atomically. One that would cross a cap is
/// refused and pauses the agent (once: a paused agent's charges are refused
/// before they are checked).
pub fn charge(
    svc: &Service,
    agent_id: &str,
    input: &ChargeInput,
    actor: Actor,
) -> Result<BudgetView, AppError> {
    let caps = svc.caps(agent_id);
    let charge = input.to_charge(caps.dollars_per_1k_tokens)?;
    svc.transact(|tx| -> Step<BudgetView> {
        let conn = tx.index().conn();
        if !known(svc, conn, agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent_id: {agent_id}"))),
                vec![],
            ));
        }
        plan_charge(svc, conn, agent_id, &caps, charge, input, actor)
    })
}

/// Decides a charge under the chain lock: the entries that record it (a
/// `budget_charge`; or a refusal, and the pause when it would cross a cap)
/// and the budget after it.
pub fn plan_charge(
    svc: &Service,
    conn: &rusqlite::Connection,
    agent_id: &str,
    caps: &BudgetSettings,
    charge: Charge,
    input: &ChargeInput,
    actor: Actor,
) -> Step<BudgetView> {
    let refused = |reason: &str| {
        let refused = BudgetChargeRefused {
            tokens: charge.tokens,
            micros: charge.micros.0,
            dollars: charge.micros.as_dollars_f64(),
            tool: input.tool.clone(),
            reason: reason.into(),
        };
        NewEntry::new(actor.clone(), Event::BudgetChargeRefused(refused))
            .agent(agent_id)
            .maybe_task(input.task_id.as_ref())
    };
    if let Some(row) = projection::agent(conn, agent_id)?.filter(|r| r.paused) {
        let reason = row.paused_reason.unwrap_or_else(|| "paused".into());
        return Ok((
            Err(AppError::Paused {
                agent_id: agent_id.into(),
                reason,
            }),
            vec![refused("agent_paused")],
        ));
    }
    let spend = spent(conn, caps, agent_id)?;
    match check_charge(caps, spend, charge) {
        ChargeCheck::Fits => {
            let keys = PeriodKeys::at(Utc::now());
            let booked = BudgetCharge {
                tokens: charge.tokens,
                dollars: charge.micros.as_dollars_f64(),
                micros: charge.micros.0,
                tool: input.tool.clone(),
                period_day: keys.day,
                period_month: keys.month,
            };
            let e = NewEntry::new(actor.clone(), Event::BudgetCharge(booked))
                .agent(agent_id)
                .maybe_task(input.task_id.as_ref());
            let after = Spend {
                tokens: spend.tokens + charge.tokens,
                micros: Micros(spend.micros.0 + charge.micros.0),
            };
            let view = view_after(svc, agent_id, caps, after, false, None);
            Ok((Ok(view), vec![e]))
        }
        ChargeCheck::OverCap {
            tokens_over,
            dollars_over,
        } => {
            let paused = BudgetPaused {
                reason: "budget_cap_exceeded".into(),
                tokens_consumed: spend.tokens,
                dollars_consumed: spend.micros.as_dollars_f64(),
                tokens_cap: caps.tokens_cap,
                dollars_cap: caps.dollars_cap.as_dollars_f64(),
                refused_tokens: charge.tokens,
                refused_dollars: charge.micros.as_dollars_f64(),
                tokens_over,
                dollars_over,
            };
            let pause = NewEntry::new(Actor::server(), Event::BudgetPaused(paused)).agent(agent_id);
            let view = view_after(
                svc,
                agent_id,
                caps,
                spend,
                true,
                Some("budget_cap_exceeded".into()),
            );
            let budget = serde_json::to_value(&view).unwrap_or_default();
            Ok((
                Err(AppError::OverCap {
                    agent_id: agent_id.into(),
                    budget,
                }),
                vec![refused("over_cap"), pause],
            ))
        }
    }
}

fn view_after(
    _svc: &Service,
    agent_id: &str,
    caps: &BudgetSettings,
    spend: Spend,
    paused: bool,
    paused_reason: Option<String>,
) -> BudgetView {
    BudgetView {
        agent_id: agent_id.into(),
        wave: 0,
        tokens_consumed: spend.tokens,
        tokens_cap: caps.tokens_cap,
        dollars_consumed: spend.micros.as_dollars_f64(),
        dollars_cap: caps.dollars_cap.as_dollars_f64(),
        status: agent_status(caps, spend, paused).as_str(),
        remaining_pct: remaining_pct(caps, spend),
        period: crate::domain::budget::period_label(caps.period, Utc::now()),
        paused_reason,
    }
}

/// `/status/me`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentState {
    pub agent_id: String,
    pub status: &'static str,
    pub paused_reason: Option<String>,
}

pub fn state(svc: &Service, agent_id: &str) -> Result<AgentState, AppError> {
    let b = budget(svc, agent_id, 0)?;
    Ok(AgentState {
        agent_id: b.agent_id,
        status: b.status,
        paused_reason: b.paused_reason,
    })
}

/// Pauses one agent (operator or watchdog). Pausing a paused agent changes
/// nothing and writes nothing.
pub fn pause(
    svc: &Service,
    agent_id: &str,
    reason: &str,
    actor: Actor,
) -> Result<AgentState, AppError> {
    svc.transact(|tx| -> Step<()> {
        let conn = tx.index().conn();
        if !known(svc, conn, agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent_id: {agent_id}"))),
                vec![],
            ));
        }
        if projection::agent(conn, agent_id)?.is_some_and(|a| a.paused) {
            return Ok((Ok(()), vec![]));
        }
        let paused = AgentPaused {
            reason: reason.into(),
        };
        let e = NewEntry::new(actor, Event::AgentPaused(paused)).agent(agent_id);
        Ok((Ok(()), vec![e]))
    })?;
    state(svc, agent_id)
}

/// Resumes a paused agent (operator only).
pub fn resume(svc: &Service, agent_id: &str, actor: Actor) -> Result<AgentState, AppError> {
    svc.transact(|tx| -> Step<()> {
        let conn = tx.index().conn();
        if !known(svc, conn, agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent_id: {agent_id}"))),
                vec![],
            ));
        }
        match projection::agent(conn, agent_id)? {
            Some(a) if a.paused => {
                let resumed = AgentResumed {
                    was_paused_for: a.paused_reason,
                };
                let e = NewEntry::new(actor, Event::AgentResumed(resumed)).agent(agent_id);
                Ok((Ok(()), vec![e]))
            }
            _ => Ok((Ok(()), vec![])),
        }
    })?;
    state(svc, agent_id)
}

/// Pauses every known agent that is not paused yet.
pub fn pause_all(svc: &Service, reason: &str, actor: Actor) -> Result<Vec<String>, AppError> {
    svc.transact(|tx| -> Step<Vec<String>> {
        let conn = tx.index().conn();
        let mut ids: Vec<String> = svc.agent_ids();
        for a in projection::agents(conn)? {
            if !ids.contains(&a.agent_id) {
                ids.push(a.agent_id);
            }
        }
        let mut now_paused = Vec::new();
        for id in ids {
            if !projection::agent(conn, &id)?.is_some_and(|a| a.paused) {
                now_paused.push(id);
            }
        }
        now_paused.sort();
        let all = AdminPauseAll {
            reason: reason.into(),
            paused_agents: now_paused.clone(),
        };
        let e = NewEntry::new(actor, Event::AdminPauseAll(all));
        Ok((Ok(now_paused), vec![e]))
    })
}

/// One row of `/scoreboard`, as the original.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRow {
    pub agent_id: String,
    pub status: &'static str,
    pub proposals_submitted: i64,
    pub proposals_approved: i64,
    pub proposals_rejected: i64,
    pub tokens_consumed: i64,
    pub dollars_consumed: f64,
    pub revenue_events_count: i64,
    pub runs: i64,
    pub paused_reason: Option<String>,
}

pub fn scoreboard(svc: &Service) -> Result<Vec<ScoreRow>, AppError> {
    let index = svc.governance().index()?;
    let conn = index.conn();
    let mut ids: Vec<String> = svc.agent_ids();
    for a in projection::agents(conn)? {
        if !ids.contains(&a.agent_id) {
            ids.push(a.agent_id);
        }
    }
    ids.sort();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let b = budget_view(svc, conn, &id, 0)?;
        let counts = projection::proposal_counts(conn, &id)?;
        let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        rows.push(ScoreRow {
            agent_id: id.clone(),
            status: b.status,
            proposals_submitted: counts.iter().map(|(_, n)| n).sum(),
            proposals_approved: count("approved") + count("auto-approved"),
            proposals_rejected: count("rejected"),
            tokens_consumed: b.tokens_consumed,
            dollars_consumed: b.dollars_consumed,
            revenue_events_count: 0,
            runs: projection::run_count(conn, &id)?,
            paused_reason: b.paused_reason,
        });
    }
    Ok(rows)
}

/// Records that a caller claimed to be another agent.
pub fn flag_impersonation(
    svc: &Service,
    token_agent: &str,
    claimed: &str,
    what: &str,
) -> Result<(), AppError> {
    let flag = Impersonation {
        claimed_agent_id: claimed.into(),
        request: what.into(),
    };
    svc.governance().append(vec![NewEntry::new(
        Actor::agent(token_agent),
        Event::AuditFlagImpersonation(flag),
    )
    .agent(token_agent)])?;
    Ok(())
}
