//! Agents: budgets (read, charge), pauses (pause, resume, pause-all), live
//! state (`/status/me`, `/scoreboard`) and audit flags about them.

use chrono::{DateTime, Datelike, Utc};

use super::error::AppError;
use super::service::{Service, Step};
use crate::config::BudgetSettings;
use crate::domain::audit::{Actor, Event, NewEntry};
use crate::domain::budget::{
    agent_status, charge_effect, remaining_pct, Charge, ChargeEffect, PeriodKeys, Spend,
};
use crate::domain::event::{
    AdminPauseAll, AgentPaused, AgentResumed, BudgetCharge, BudgetPaused, Impersonation,
};
use crate::domain::money::Micros;
use crate::domain::pricing::{Prices, TokenUsage};
use crate::store::projection;
use crate::wire::{AgentState, Budget, ScoreRow};

/// Whether gov knows the agent: it is on main or the chain mentions it.
pub fn known(svc: &Service, conn: &rusqlite::Connection, agent_id: &str) -> Result<bool, AppError> {
    Ok(svc.agents().contains_key(agent_id) || projection::agent(conn, agent_id)?.is_some())
}

pub(crate) fn spent(
    conn: &rusqlite::Connection,
    caps: &BudgetSettings,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Spend, AppError> {
    let key = PeriodKeys::current(caps.period, now);
    Ok(projection::spend(conn, agent, key.as_deref())?)
}

/// The budget of an agent as the index knows it.
pub fn budget_view(
    svc: &Service,
    conn: &rusqlite::Connection,
    agent_id: &str,
    wave: i64,
) -> Result<Budget, AppError> {
    if !known(svc, conn, agent_id)? {
        return Err(AppError::NotFound(format!("unknown agent `{agent_id}`")));
    }
    let caps = svc.caps(agent_id);
    let now = svc.now();
    let spend = spent(conn, &caps, agent_id, now)?;
    let row = projection::agent(conn, agent_id)?;
    let paused = row.as_ref().is_some_and(|r| r.paused);
    let held = super::run_budget::held(conn, agent_id, now)?;
    let mut view = view_of(
        agent_id,
        wave,
        &caps,
        spend,
        paused,
        row.and_then(|r| r.paused_reason),
        now,
    );
    view.tokens_reserved = Some(held.tokens);
    view.dollars_reserved = Some(held.micros.as_dollars_f64());
    Ok(view)
}

/// The charges of an agent's current budget period in the order they were
/// recorded, and when the period began, for the dashboard's chart.
#[derive(Debug, Clone, Default)]
pub struct SpendHistory {
    /// (Unix seconds, micro-dollars) of each charge.
    pub charges: Vec<(i64, i64)>,
    /// The start of the period in Unix seconds; `None` for lifetime.
    pub from: Option<i64>,
}

pub fn spend_history(svc: &Service, agent_id: &str) -> Result<SpendHistory, AppError> {
    let caps = svc.caps(agent_id);
    let now = svc.now();
    let key = PeriodKeys::current(caps.period, now);
    let rows = svc.read(|c| projection::charges(c, agent_id, key.as_deref()))?;
    let points = rows
        .into_iter()
        .filter_map(|(ts, _, micros)| {
            chrono::DateTime::parse_from_rfc3339(&ts)
                .ok()
                .map(|t| (t.timestamp(), micros))
        })
        .collect();
    let today = now.date_naive();
    let start = match caps.period {
        crate::config::Period::Lifetime => None,
        crate::config::Period::Daily => Some(today),
        crate::config::Period::Monthly => today.with_day(1),
    };
    Ok(SpendHistory {
        charges: points,
        from: start
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp()),
    })
}

pub fn budget(svc: &Service, agent_id: &str, wave: i64) -> Result<Budget, AppError> {
    let index = svc.governance().index()?;
    budget_view(svc, index.conn(), agent_id, wave)
}

/// A charge as the API takes it.
#[derive(Debug, Clone, Default)]
pub struct ChargeInput {
    pub tokens: i64,
    pub dollars: Option<f64>,
    pub tool: String,
    pub task_id: Option<String>,
    /// The run the spend belongs to (the runner's charges).
    pub run_id: Option<String>,
    /// The model whose tokens these are: priced by `[prices]`.
    pub model: Option<String>,
    /// Tokens by kind, when known (each kind has its own price).
    pub usage: Option<TokenUsage>,
    /// The amount, already priced by the runner (exact micro-dollars).
    pub micros: Option<Micros>,
    /// Spend seen in a stream that never reached its final report.
    pub estimate: bool,
}

impl ChargeInput {
    /// The charge: `micros` when the runner priced it, else `dollars`, else
    /// the price of the tokens (the model's, or the flat rate per 1,000).
    pub fn to_charge(&self, prices: &Prices) -> Result<Charge, AppError> {
        if let Some(u) = &self.usage {
            if u64::try_from(self.tokens).ok() != Some(u.total()) {
                return Err(AppError::invalid(
                    "tokens",
                    format!("tokens must be the sum of usage ({})", u.total()),
                ));
            }
        }
        let micros = match (self.micros, self.dollars) {
            (Some(m), _) => Some(m),
            (None, Some(d)) => Some(
                Micros::from_dollars_f64(d)
                    .map_err(|e| AppError::invalid("dollars", e.to_string()))?,
            ),
            (None, None) if self.tokens >= 0 => {
                let model = self.model.as_deref().unwrap_or("");
                let usage = self.usage.unwrap_or(TokenUsage {
                    input_tokens: u64::try_from(self.tokens).unwrap_or(0),
                    ..TokenUsage::default()
                });
                // Tokens of no priced model keep the flat rate (the charge
                // below prices them).
                prices.of(model).map(|_| prices.cost(model, &usage))
            }
            (None, None) => None,
        };
        Charge::new(self.tokens, micros, prices.per_1k_tokens).map_err(|e| {
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

/// Records a charge. A charge records money already spent: it is recorded
/// whatever the caps and the pause say. One that crosses a cap pauses the
/// agent (`budget_paused`, once) and the answer's status says `paused`.
pub fn charge(
    svc: &Service,
    agent_id: &str,
    input: &ChargeInput,
    actor: Actor,
) -> Result<Budget, AppError> {
    let caps = svc.caps(agent_id);
    let charge = input.to_charge(&svc.settings().prices(&caps))?;
    svc.transact(|tx| -> Step<Budget> {
        let conn = tx.index().conn();
        if !known(svc, conn, agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent `{agent_id}`"))),
                vec![],
            ));
        }
        let planned = plan_charges(
            conn,
            agent_id,
            &caps,
            &[(charge, input.clone())],
            actor,
            svc.now(),
        )?;
        Ok((Ok(planned.view), planned.entries))
    })
}

/// Charges planned under the chain lock: the entries that record them and
/// the budget after them.
#[derive(Debug)]
pub struct PlannedCharges {
    pub entries: Vec<NewEntry>,
    pub view: Budget,
    /// Whether the agent is paused once they are recorded.
    pub paused: bool,
}

/// Plans charges in order under the chain lock: one `budget_charge` each,
/// and `budget_paused` when one of them crosses a cap of an agent not
/// paused yet (so an agent is paused once, whatever the number of charges).
pub fn plan_charges(
    conn: &rusqlite::Connection,
    agent_id: &str,
    caps: &BudgetSettings,
    charges: &[(Charge, ChargeInput)],
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<PlannedCharges, AppError> {
    let row = projection::agent(conn, agent_id)?;
    let mut paused = row.as_ref().is_some_and(|r| r.paused);
    let mut paused_reason = row.and_then(|r| r.paused_reason);
    let mut spend = spent(conn, caps, agent_id, now)?;
    let keys = PeriodKeys::at(now);
    let mut entries = Vec::new();
    for (charge, input) in charges {
        let booked = BudgetCharge {
            tokens: charge.tokens,
            dollars: charge.micros.as_dollars_f64(),
            micros: charge.micros.0,
            tool: input.tool.clone(),
            period_day: keys.day.clone(),
            period_month: keys.month.clone(),
            run_id: input.run_id.clone(),
            model: input.model.clone(),
            usage: input.usage,
            estimate: input.estimate,
        };
        let e = NewEntry::new(actor.clone(), Event::BudgetCharge(booked))
            .agent(agent_id)
            .maybe_task(input.task_id.as_ref());
        entries.push(e);
        let effect = charge_effect(caps, spend, *charge, paused);
        spend = spend.plus(charge.tokens, charge.micros);
        if let ChargeEffect::Pauses {
            tokens_over,
            dollars_over,
        } = effect
        {
            let pause = BudgetPaused {
                reason: "budget_cap_exceeded".into(),
                tokens_consumed: spend.tokens,
                dollars_consumed: spend.micros.as_dollars_f64(),
                tokens_cap: caps.tokens_cap,
                dollars_cap: caps.dollars_cap.as_dollars_f64(),
                refused_tokens: None,
                refused_dollars: None,
                tokens_over,
                dollars_over,
            };
            entries
                .push(NewEntry::new(Actor::server(), Event::BudgetPaused(pause)).agent(agent_id));
            paused = true;
            paused_reason = Some("budget_cap_exceeded".into());
        }
    }
    Ok(PlannedCharges {
        entries,
        view: view_of(agent_id, 0, caps, spend, paused, paused_reason, now),
        paused,
    })
}

fn view_of(
    agent_id: &str,
    wave: i64,
    caps: &BudgetSettings,
    spend: Spend,
    paused: bool,
    paused_reason: Option<String>,
    now: DateTime<Utc>,
) -> Budget {
    Budget {
        agent_id: agent_id.into(),
        wave,
        tokens_consumed: spend.tokens,
        tokens_cap: caps.tokens_cap,
        dollars_consumed: spend.micros.as_dollars_f64(),
        dollars_cap: caps.dollars_cap.as_dollars_f64(),
        status: agent_status(caps, spend, paused),
        remaining_pct: remaining_pct(caps, spend),
        period: crate::domain::budget::period_label(caps.period, now),
        paused_reason,
        tokens_reserved: None,
        dollars_reserved: None,
    }
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
                Err(AppError::NotFound(format!("unknown agent `{agent_id}`"))),
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

/// The agents that are paused, by id.
pub fn paused_ids(svc: &Service) -> Result<Vec<String>, AppError> {
    Ok(svc
        .read(projection::agents)?
        .into_iter()
        .filter(|a| a.paused)
        .map(|a| a.agent_id)
        .collect())
}

/// Resumes a paused agent (operator only).
pub fn resume(svc: &Service, agent_id: &str, actor: Actor) -> Result<AgentState, AppError> {
    svc.transact(|tx| -> Step<()> {
        let conn = tx.index().conn();
        if !known(svc, conn, agent_id)? {
            return Ok((
                Err(AppError::NotFound(format!("unknown agent `{agent_id}`"))),
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
    svc.governance()
        .append(vec![impersonation_entry(token_agent, claimed, what)])?;
    Ok(())
}

/// The entry that flags an agent acting for another.
pub fn impersonation_entry(token_agent: &str, claimed: &str, what: &str) -> NewEntry {
    let flag = Impersonation {
        claimed_agent_id: claimed.into(),
        request: what.into(),
    };
    NewEntry::new(
        Actor::agent(token_agent),
        Event::AuditFlagImpersonation(flag),
    )
    .agent(token_agent)
}

/// The agents `main` has in force, as `gov run` checks an agent against them.
#[derive(Debug)]
pub struct AgentsOnMain {
    /// The settings with `main`'s enforcement in force.
    pub settings: crate::config::Settings,
    /// Every agent on `main` (in force), or why its `agent.toml` is invalid.
    pub agents: std::collections::BTreeMap<String, Result<crate::config::AgentSettings, String>>,
    /// The `agent.toml` of the agent asked about, as `main` has it.
    pub agent_file: Option<Vec<u8>>,
}

/// The agents in force on `main` and the file of agent `id` there: the last
/// authorized state of main's governed files (the same root-of-trust walk
/// as the server's). `Ok(None)` when `settings.root` is not a Git
/// repository (a plain folder has no main); `Err` with why when `main`
/// cannot be read.
pub fn agents_on_main(
    settings: &crate::config::Settings,
    id: &str,
) -> Result<Option<AgentsOnMain>, String> {
    let Ok(repo) = git2::Repository::open(&settings.root) else {
        return Ok(None);
    };
    let tip = repo
        .refname_to_id(&settings.main_refname())
        .map_err(|e| e.message().to_string())?;
    let index = crate::store::index::Index::open_existing(&settings.index_path())
        .ok()
        .flatten();
    let forge = |merge: git2::Oid| {
        index
            .as_ref()
            .and_then(|i| i.forge_merge_recorded(&merge.to_string()).ok())
            .unwrap_or(false)
    };
    let tip = crate::store::trust::TrustState::compute(&repo, tip, None, &forge)
        .map_err(|e| e.message().to_string())?
        .in_force;
    let settings =
        super::service::enforcement_in_force(settings, &repo, tip).map_err(|e| e.to_string())?;
    let agents = crate::store::agents::agents_at(&repo, tip, &settings)
        .map_err(|e| e.message().to_string())?;
    let agent_file = crate::store::agents::agent_file_at(&repo, tip, id);
    Ok(Some(AgentsOnMain {
        settings,
        agents,
        agent_file,
    }))
}

/// The Git directories of the repository at `root` (its `.git`, a
/// worktree's own and the common one), which no agent may touch.
pub fn git_dirs(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    crate::store::git::git_dirs(root)
}
