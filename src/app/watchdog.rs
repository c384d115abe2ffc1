//! The watchdog's pass, and the observation it shares with `POST /runs`.
//!
//! For every agent (a folder in `agents/` or an id the chain mentions) the
//! pass builds an [`Observation`] from the index, asks the policy set's
//! `continue` rules, and pauses the agent when they say no (a
//! `watchdog_pause` entry carrying the decision). Then it expires pending
//! proposals past their `expires_at`. It never talks to the server: it
//! writes through [`Governance`](super::governance::Governance) like the
//! server does, so the chain lock and the compare-and-swap keep the two
//! from losing or forking entries. Opened with [`Service::open_as`] and
//! [`Role::Watchdog`](crate::store::keys::Role), its entries are signed with
//! the watchdog's key.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::error::AppError;
use super::service::{Service, Step};
use crate::config::Settings;
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::budget::PeriodKeys;
use crate::domain::event::{WatchdogObserved, WatchdogPause, ENDS_PROPOSAL_WAIT, RUN_ENDS};
use crate::domain::proposal::ProposalStatus;
use crate::domain::request::{Decision, DecisionRecord, Outcome, PolicyCitation};
use crate::domain::watchdog::{continue_request, Observation, Thresholds};
use crate::store::projection;

/// How many of an agent's newest proposals the observation lists.
const RECENT_PROPOSALS: u32 = 20;

/// The default rules' thresholds from `gov.toml [watchdog]`.
pub fn thresholds(settings: &Settings) -> Thresholds {
    Thresholds {
        stuck_after_minutes: settings.watchdog.stuck_after_minutes,
        repeat_payload_count: settings.watchdog.repeat_payload_count,
    }
}

/// Every agent the watchdog looks after: those on main first, then ids only the
/// chain knows, sorted.
pub fn agent_ids(svc: &Service, conn: &Connection) -> Result<Vec<String>, AppError> {
    let mut ids = svc.agent_ids();
    for a in projection::agents(conn)? {
        if !ids.contains(&a.agent_id) {
            ids.push(a.agent_id);
        }
    }
    ids.sort();
    Ok(ids)
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The audit entry that last changed a proposal (its submission or its
/// decision): its sequence number and time.
fn last_proposal_entry(
    conn: &Connection,
    proposal_id: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT seq, ts FROM audit WHERE proposal_id = ?1
           AND event_type IN ('proposal_submitted', 'proposal_decided')
         ORDER BY seq DESC LIMIT 1",
        [proposal_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

fn has_terminal_after(
    conn: &Connection,
    agent: &str,
    proposal_id: &str,
    after_seq: i64,
) -> rusqlite::Result<bool> {
    let in_list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("'{x}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM audit WHERE seq > ?3 AND agent_id = ?1 AND (
            (proposal_id = ?2 AND event_type IN ({})) OR event_type IN ({})))",
        in_list(ENDS_PROPOSAL_WAIT),
        in_list(RUN_ENDS)
    );
    conn.query_row(&sql, params![agent, proposal_id, after_seq], |r| {
        r.get::<_, bool>(0)
    })
}

/// When each approved proposal of the agent that has seen no terminal event
/// was approved.
fn open_approvals(conn: &Connection, agent: &str) -> Result<Vec<DateTime<Utc>>, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT proposal_id FROM proposals
         WHERE agent_id = ?1 AND status IN ('approved', 'auto-approved') AND used_seq IS NULL",
    )?;
    let ids: Vec<String> = stmt
        .query_map([agent], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        let Some((seq, ts)) = last_proposal_entry(conn, &id)? else {
            continue;
        };
        if has_terminal_after(conn, agent, &id, seq)? {
            continue;
        }
        let decided = projection::proposal(conn, &id)?
            .and_then(|p| p.decided_at)
            .map(|t| t.0)
            .or_else(|| parse_ts(&ts));
        if let Some(t) = decided {
            out.push(t);
        }
    }
    Ok(out)
}

fn last_activity(conn: &Connection, agent: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let ts: Option<String> = conn
        .query_row(
            "SELECT ts FROM audit WHERE agent_id = ?1 ORDER BY seq DESC LIMIT 1",
            [agent],
            |r| r.get(0),
        )
        .optional()?;
    Ok(ts.as_deref().and_then(parse_ts))
}

/// What the index says about one agent at `now`: the observation both the
/// watchdog and `POST /runs` ask the `continue` rules about.
pub fn observe(
    svc: &Service,
    conn: &Connection,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Result<Observation, AppError> {
    let caps = svc.caps(agent_id);
    let key = PeriodKeys::current(caps.period, now);
    let spend = projection::spend(conn, agent_id, key.as_deref())?;
    let recent = projection::proposals_of(conn, agent_id, RECENT_PROPOSALS)?;
    let expired_pending = projection::proposals_of(conn, agent_id, u32::MAX)?
        .iter()
        .filter(|p| p.status == ProposalStatus::Pending && p.is_expired_at(Timestamp(now)))
        .count() as u64;
    Ok(Observation {
        agent_id: agent_id.into(),
        group: svc.group(agent_id),
        tokens_consumed: spend.tokens.max(0) as u64,
        tokens_cap: caps.tokens_cap,
        micros_consumed: spend.micros,
        micros_cap: caps.dollars_cap,
        open_approvals: open_approvals(conn, agent_id)?,
        recent_payload_hashes: recent.into_iter().map(|p| p.payload_hash).collect(),
        expired_pending,
        last_activity: last_activity(conn, agent_id)?,
    })
}

/// Asks the `continue` rules about an agent; the decision and the record to
/// write into the chain.
pub fn continue_check(
    svc: &Service,
    repo: &git2::Repository,
    conn: &Connection,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Result<(Observation, Decision, DecisionRecord), AppError> {
    let obs = observe(svc, conn, agent_id, now)?;
    let request = continue_request(&obs, thresholds(svc.settings()), now);
    let policy = svc.policy_at(repo)?;
    let decision = policy.decide(&request);
    let record = DecisionRecord {
        decision: decision.clone(),
        request,
    };
    Ok((obs, decision, record))
}

/// One agent the pass paused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    pub agent_id: String,
    pub policies: Vec<PolicyCitation>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// Agents whose `continue` rules were asked.
    pub checked: Vec<String>,
    /// Agents that were already paused (not asked again).
    pub already_paused: Vec<String>,
    /// Agents this pass paused.
    pub paused: Vec<Paused>,
    /// Pending proposals this pass expired.
    pub expired: Vec<String>,
}

fn pause_reason(policies: &[PolicyCitation]) -> String {
    if policies.is_empty() {
        return "watchdog: no policy permits the agent to continue".into();
    }
    let ids: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
    format!("watchdog: {}", ids.join(", "))
}

/// Pauses an agent if, under the chain lock, it is not paused yet and the
/// `continue` rules still say no. Returns the citing policies when it did.
fn pause_if_denied(
    svc: &Service,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Vec<PolicyCitation>>, AppError> {
    svc.transact(|tx| -> Step<Option<Vec<PolicyCitation>>> {
        let conn = tx.index().conn();
        if projection::agent(conn, agent_id)?.is_some_and(|a| a.paused) {
            return Ok((Ok(None), vec![]));
        }
        let (obs, decision, record) = continue_check(svc, tx.repo(), conn, agent_id, now)?;
        if decision.outcome == Outcome::Auto {
            return Ok((Ok(None), vec![]));
        }
        let pause = WatchdogPause {
            reason: pause_reason(&decision.policies),
            policies: decision.policies.clone(),
            outcome: decision.outcome,
            observed: WatchdogObserved {
                tokens_consumed: obs.tokens_consumed,
                tokens_cap: obs.tokens_cap,
                micros_consumed: obs.micros_consumed.0,
                micros_cap: obs.micros_cap.0,
                open_approvals: obs.open_approvals.len() as u64,
                expired_pending: obs.expired_pending,
            },
        };
        let entry = NewEntry::new(Actor::watchdog(), Event::WatchdogPause(pause))
            .agent(agent_id)
            .decision(record);
        Ok((Ok(Some(decision.policies)), vec![entry]))
    })
}

/// Expires every pending proposal whose `expires_at` is before `now`, as
/// `actor`. Returns their ids.
pub fn expire_stale(
    svc: &Service,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<Vec<String>, AppError> {
    super::proposals::expire_stale_as(svc, actor, Timestamp(now))
}

/// One pass of the watchdog at `now` (the clock is passed in so tests can
/// look at a history from the future).
pub fn pass(svc: &Service, now: DateTime<Utc>) -> Result<PassReport, AppError> {
    // Catch the index up with whatever other processes appended.
    svc.transact(|_| -> Step<()> { Ok((Ok(()), vec![])) })?;
    let repo = svc.open_repo()?;
    let mut report = PassReport::default();
    let candidates = {
        let index = svc.governance().index()?;
        let conn = index.conn();
        let mut denied = Vec::new();
        for id in agent_ids(svc, conn)? {
            if projection::agent(conn, &id)?.is_some_and(|a| a.paused) {
                report.already_paused.push(id);
                continue;
            }
            if svc.agent_error(&id).is_some() {
                // Not in force (its agent.toml on main does not parse): it
                // cannot run, and its zero caps must not read as "over its
                // cap" and pause it for the wrong reason.
                continue;
            }
            let (_, decision, _) = continue_check(svc, &repo, conn, &id, now)?;
            if decision.outcome != Outcome::Auto {
                denied.push(id.clone());
            }
            report.checked.push(id);
        }
        denied
    };
    for id in candidates {
        if let Some(policies) = pause_if_denied(svc, &id, now)? {
            tracing::info!(agent = %id, reason = %pause_reason(&policies), "watchdog paused an agent");
            report.paused.push(Paused {
                agent_id: id,
                policies,
            });
        }
    }
    report.expired = expire_stale(svc, Actor::watchdog(), now)?;
    Ok(report)
}
