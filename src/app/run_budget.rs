//! The budget of runs: reservations at admission, charges while a run
//! goes, and the settlement at its end.
//!
//! - **Admission.** A run reserves `run_tokens` / `run_dollars` (agent.toml
//!   `[budget]`, defaults in gov.toml). It starts only when the caps minus
//!   what is spent minus what open reservations hold cover that, checked and
//!   reserved in one transaction under the chain lock, so concurrent runs
//!   cannot together slip past a cap.
//! - **What holds budget.** A run not finished holds its reservation less
//!   what it has been charged, until `hold_until` (its start plus its wall
//!   clock plus [`HOLD_MARGIN_SECONDS`]): the reservation of a runner that
//!   died never leaks for longer than that. An approved proposal with an
//!   expected cost holds that cost while it is open in the watchdog's sense
//!   (no `action_executed`, `action_failed`, `agent_stop` naming it, no end
//!   of a run of its agent since it was approved).
//! - **During a run.** The runner charges each usage report as it arrives
//!   (`POST /runs/{id}/usage`); the answer says `stop` once the run has
//!   spent its reservation or the agent is paused (a charge that crosses a
//!   cap pauses it).
//! - **Settlement.** The end of a run charges what was not charged yet,
//!   records what was reserved, spent and released, and the difference
//!   between the ledger and Claude Code's own `total_cost_usd`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::agents::{self, ChargeInput};
use super::error::AppError;
use super::runs::RunEnd;
use super::service::{Service, Step};
use crate::config::BudgetSettings;
use crate::domain::audit::Actor;
use crate::domain::budget::{admit, Hold, Spend};
use crate::domain::event::{Reconciliation, RunEnded, RunRelease};
use crate::domain::money::Micros;
use crate::domain::pricing::ModelCharge;
use crate::store::projection;
use crate::wire::{RunCharged, RunSpend, StopReason, UsageReport};

/// How long after its wall clock a run's reservation still holds: the kill
/// grace and the report of its end fit well within it.
pub const HOLD_MARGIN_SECONDS: i64 = 120;

/// When a run started at `started` stops holding its reservation.
pub fn hold_until(started: DateTime<Utc>, wallclock_seconds: u64) -> i64 {
    started
        .timestamp()
        .saturating_add(i64::try_from(wallclock_seconds).unwrap_or(i64::MAX / 2))
        .saturating_add(HOLD_MARGIN_SECONDS)
}

/// What an approved proposal's expected cost holds.
fn proposal_hold(p: &crate::domain::proposal::Proposal) -> Hold {
    Hold {
        tokens: p.proposed.expected_cost_tokens.max(0),
        micros: dollars_to_micros(p.proposed.expected_cost_dollars).max(Micros(0)),
    }
}

/// One open reservation, as the dashboard and `GET /budget` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    /// `run` or `proposal`.
    pub kind: &'static str,
    pub id: String,
    pub agent_id: String,
    pub reserved: Hold,
    pub spent: Spend,
    /// What it still holds: reserved less spent, never below zero.
    pub held: Hold,
    /// When a run's reservation stops holding (RFC 3339).
    pub until: Option<String>,
}

fn proposal_reservations(
    conn: &rusqlite::Connection,
    agent: &str,
) -> Result<Vec<Reservation>, AppError> {
    let mut out = Vec::new();
    for (id, _) in super::watchdog::open_approved(conn, agent, true)? {
        let Some(p) = projection::proposal(conn, &id)? else {
            continue;
        };
        let hold = proposal_hold(&p);
        if hold == Hold::default() {
            continue;
        }
        out.push(Reservation {
            kind: "proposal",
            id,
            agent_id: agent.into(),
            reserved: hold,
            spent: Spend::default(),
            held: hold,
            until: None,
        });
    }
    Ok(out)
}

/// The open reservations of one agent, or of every agent.
pub fn reservations(
    conn: &rusqlite::Connection,
    agent: Option<&str>,
    agent_ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Reservation>, AppError> {
    let mut out: Vec<Reservation> = projection::open_runs(conn, agent, now.timestamp())?
        .into_iter()
        .map(|r| Reservation {
            kind: "run",
            held: r.reserved.left_after(r.spent),
            id: r.run_id,
            agent_id: r.agent_id,
            reserved: r.reserved,
            spent: r.spent,
            until: DateTime::from_timestamp(r.hold_until, 0).map(|t| t.to_rfc3339()),
        })
        .collect();
    match agent {
        Some(a) => out.extend(proposal_reservations(conn, a)?),
        None => {
            for a in agent_ids {
                out.extend(proposal_reservations(conn, a)?);
            }
        }
    }
    Ok(out)
}

/// What the open reservations of an agent hold in all.
pub fn held(
    conn: &rusqlite::Connection,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Hold, AppError> {
    Ok(reservations(conn, Some(agent), &[], now)?
        .iter()
        .fold(Hold::default(), |sum, r| sum.plus(r.held)))
}

/// Admission of a run, under the chain lock: the reservation it makes, or
/// why the budget left cannot cover it.
pub fn admit_run(
    conn: &rusqlite::Connection,
    agent: &str,
    caps: &BudgetSettings,
    now: DateTime<Utc>,
) -> Result<Result<Hold, String>, AppError> {
    let wanted = caps.run_hold();
    let spend = agents::spent(conn, caps, agent, now)?;
    let held = held(conn, agent, now)?;
    Ok(admit(caps, spend, held, wanted)
        .map(|()| wanted)
        .map_err(|s| s.to_string()))
}

impl RunSpend {
    fn of(reserved: Hold, spent: Spend) -> RunSpend {
        RunSpend {
            tokens_reserved: reserved.tokens,
            dollars_reserved: reserved.micros.as_dollars_f64(),
            tokens_spent: spent.tokens,
            dollars_spent: spent.micros.as_dollars_f64(),
        }
    }
}

fn charge_inputs(
    run_id: &str,
    task: &Option<String>,
    charges: &[ModelCharge],
    estimate: bool,
) -> Result<Vec<(crate::domain::budget::Charge, ChargeInput)>, AppError> {
    charges
        .iter()
        .filter(|c| !c.usage.is_zero() || c.micros != 0)
        .map(|c| {
            let input = ChargeInput {
                tokens: i64::try_from(c.usage.total())
                    .map_err(|_| AppError::invalid("charges", "too many tokens"))?,
                tool: "run".into(),
                task_id: task.clone(),
                run_id: Some(run_id.into()),
                model: (!c.model.is_empty()).then(|| c.model.clone()),
                usage: Some(c.usage),
                micros: Some(Micros(c.micros)),
                estimate,
                ..ChargeInput::default()
            };
            let charge = crate::domain::budget::Charge::new(input.tokens, input.micros, Micros(0))
                .map_err(|e| AppError::invalid("charges", e.to_string()))?;
            Ok((charge, input))
        })
        .collect()
}

/// A run that has not finished: its agent and task, or why not (unknown,
/// already finished).
pub fn open_run(
    conn: &rusqlite::Connection,
    run_id: &str,
) -> Result<Result<(String, Option<String>), AppError>, AppError> {
    Ok(match projection::run(conn, run_id)? {
        None => Err(AppError::NotFound(format!("unknown run_id: {run_id}"))),
        Some((_, _, Some(f))) => Err(AppError::Conflict(format!(
            "run '{run_id}' already finished ({f})"
        ))),
        Some((agent, task, None)) => Ok((agent, task)),
    })
}

/// Charges a usage report that a `gov guard` session sends about itself
/// (with its run's token): only for a guard run of `agent` (one registered
/// with a project folder), and priced here with `[prices]`, whatever price
/// the report names.
pub fn charge_own_run(
    svc: &Service,
    run_id: &str,
    agent: &str,
    report: &UsageReport,
    actor: Actor,
) -> Result<RunCharged, AppError> {
    let (folder, owner) = svc.read(|c| {
        Ok::<_, rusqlite::Error>((
            projection::run_folder(c, run_id)?,
            projection::run(c, run_id)?.map(|r| r.0),
        ))
    })?;
    if folder.is_none() || owner.as_deref() != Some(agent) {
        return Err(AppError::Forbidden(format!(
            "run `{run_id}` is metered by its runner: only a `gov guard` session reports its own usage"
        )));
    }
    let prices = svc.settings().prices(&svc.caps(agent));
    let charges = report
        .charges
        .iter()
        .map(|c| ModelCharge {
            model: c.model.clone(),
            usage: c.usage,
            micros: prices
                .cost_between(&c.model, &Default::default(), &c.usage)
                .0,
        })
        .collect();
    let priced = UsageReport {
        charges,
        estimate: report.estimate,
    };
    charge_run(svc, run_id, &priced, actor)
}

/// Charges a usage report of a run that is under way.
pub fn charge_run(
    svc: &Service,
    run_id: &str,
    report: &UsageReport,
    actor: Actor,
) -> Result<RunCharged, AppError> {
    svc.transact(|tx| -> Step<RunCharged> {
        let conn = tx.index().conn();
        let (agent, task) = match open_run(conn, run_id)? {
            Ok(run) => run,
            Err(e) => return Ok((Err(e), vec![])),
        };
        let caps = svc.caps(&agent);
        let inputs = charge_inputs(run_id, &task, &report.charges, report.estimate)?;
        let planned = agents::plan_charges(conn, &agent, &caps, &inputs, actor, svc.now())?;
        let (reserved, _) = projection::run_reservation(conn, run_id)?.unwrap_or_default();
        let spent = inputs
            .iter()
            .fold(projection::run_spend(conn, run_id)?, |s, (c, _)| {
                s.plus(c.tokens, c.micros)
            });
        let stop_reason = if planned.paused {
            Some(StopReason::AgentPaused)
        } else if reserved.exhausted_by(spent) {
            Some(StopReason::ReservationExhausted)
        } else {
            None
        };
        Ok((
            Ok(RunCharged {
                budget: planned.view,
                run: RunSpend::of(reserved, spent),
                stop: stop_reason.is_some(),
                stop_reason,
            }),
            planned.entries,
        ))
    })
}

/// What the end of a run settles: the charges' entries, and the run's end
/// for its `agent_run_*` entry.
pub struct Settlement {
    pub entries: Vec<crate::domain::audit::NewEntry>,
    pub ended: RunEnded,
    pub run: RunSpend,
}

/// The run being settled: its id, agent and task.
pub struct RunRef<'a> {
    pub run_id: &'a str,
    pub agent: &'a str,
    pub task: &'a Option<String>,
}

/// Plans the settlement of a run under the chain lock: charges the rest
/// of its spend (the itemized `charges`, and a flat `tokens` / `dollars`
/// charge when given) and says what was reserved, spent and released, and
/// how the ledger compares with Claude Code's own cost.
pub fn settle(
    svc: &Service,
    conn: &rusqlite::Connection,
    run: RunRef<'_>,
    end: &RunEnd,
    actor: Actor,
) -> Result<Settlement, AppError> {
    let caps = svc.caps(run.agent);
    let mut inputs = charge_inputs(run.run_id, run.task, &end.charges, end.estimate)?;
    if end.tokens != 0 || end.dollars.is_some_and(|d| d != 0.0) {
        let input = ChargeInput {
            tokens: end.tokens,
            dollars: end.dollars,
            tool: "run".into(),
            task_id: run.task.clone(),
            run_id: Some(run.run_id.into()),
            estimate: end.estimate,
            ..ChargeInput::default()
        };
        let charge = input.to_charge(&svc.settings().prices(&caps))?;
        inputs.push((charge, input));
    }
    let planned = agents::plan_charges(conn, run.agent, &caps, &inputs, actor, svc.now())?;
    let (reserved, _) = projection::run_reservation(conn, run.run_id)?.unwrap_or_default();
    let spent = inputs
        .iter()
        .fold(projection::run_spend(conn, run.run_id)?, |s, (c, _)| {
            s.plus(c.tokens, c.micros)
        });
    let released = reserved.left_after(spent);
    // Claude Code's own estimate against what the ledger holds for the run
    // (gov's prices): the difference is recorded, not charged.
    let reconciliation = end.claude_cost_usd.map(|usd| {
        let claude = dollars_to_micros(usd);
        Reconciliation {
            claude_total_cost_usd: usd,
            claude_micros: claude.0,
            ledger_micros: spent.micros.0,
            difference_micros: claude.0 - spent.micros.0,
        }
    });
    let ended = RunEnded {
        run_id: run.run_id.into(),
        reason: end.reason.clone(),
        tokens: spent.tokens,
        dollars: spent.micros.as_dollars_f64(),
        usage_missing: end.usage_missing,
        micros: Some(spent.micros.0),
        reservation: Some(RunRelease {
            tokens: reserved.tokens,
            micros: reserved.micros.0,
            released_tokens: released.tokens,
            released_micros: released.micros.0,
        }),
        estimate: end.estimate,
        reconciliation,
        undecided_tool_uses: Vec::new(),
    };
    Ok(Settlement {
        entries: planned.entries,
        ended,
        run: RunSpend::of(reserved, spent),
    })
}

/// Dollars reported as a float by someone else (Claude Code, an agent's
/// expected cost), to the nearest micro-dollar.
fn dollars_to_micros(usd: f64) -> Micros {
    Micros::from_dollars_f64(usd)
        .or_else(|_| Micros::from_dollars_str(&format!("{usd:.6}")))
        .unwrap_or(Micros(0))
}

/// The open reservations of `agent` now (the dashboard's agent page).
pub fn open_reservations(
    svc: &Service,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Reservation>, AppError> {
    let index = svc.governance().index()?;
    reservations(index.conn(), Some(agent), &[], now)
}
