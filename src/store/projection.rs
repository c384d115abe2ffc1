//! The server's tables in the index: proposals, agents and their pauses,
//! the budget ledger, one-shot credentials, agent tokens and runs.
//!
//! Each table is a projection of audit entries ([`project`], called by
//! `index::apply` for every entry in chain order), so `gov reindex` rebuilds
//! them from Git. Entries whose actor is an agent never change state: an
//! agent cannot resume itself by posting `agent_resumed` to `/audit`.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::domain::audit::{AuditEntry, Event};
use crate::domain::budget::Spend;
use crate::domain::credential::CredentialState;
use crate::domain::event::{
    AgentPaused, BudgetPaused, ProposalDecided, ProposalExpired, WatchdogPause,
};
use crate::domain::money::Micros;
use crate::domain::proposal::Proposal;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    paused_reason TEXT,
    first_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    action_type TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    json TEXT NOT NULL,
    seq INTEGER NOT NULL,
    used_seq INTEGER
);
CREATE INDEX IF NOT EXISTS proposals_status ON proposals(status, seq);
CREATE INDEX IF NOT EXISTS proposals_agent ON proposals(agent_id, seq);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    micros INTEGER NOT NULL,
    day TEXT NOT NULL,
    month TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_agent ON ledger(agent_id);
CREATE TABLE IF NOT EXISTS credentials (
    hash TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    redeemed_seq INTEGER
);
CREATE TABLE IF NOT EXISTS agent_tokens (
    hash TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    run_id TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    task_id TEXT,
    started_seq INTEGER NOT NULL,
    finished TEXT
);
";

/// Derives the server's tables from one entry. Every event type is named
/// here, so a new one is a compile error until it is decided what it
/// changes.
pub fn project(tx: &Transaction<'_>, entry: &AuditEntry) -> rusqlite::Result<()> {
    let e = &entry.entry;
    let seq = entry.seq as i64;
    if let Some(agent) = &e.agent_id {
        tx.prepare_cached("INSERT OR IGNORE INTO agents (agent_id, first_seq) VALUES (?1, ?2)")?
            .execute(params![agent, seq])?;
    }
    if e.actor.0.starts_with("agent:") {
        return Ok(());
    }
    match &e.event {
        Event::ProposalSubmitted(s) => put_proposal(tx, &s.proposal, seq)?,
        Event::ProposalDecided(ProposalDecided { proposal, .. })
        | Event::ProposalExpired(ProposalExpired { proposal, .. }) => {
            if e.proposal_id.as_deref() == Some(proposal.proposal_id.as_str()) {
                put_proposal(tx, proposal, seq)?;
            }
        }
        Event::ToolApprovalUsed(_) => {
            if let Some(id) = &e.proposal_id {
                tx.execute(
                    "UPDATE proposals SET used_seq = ?2 WHERE proposal_id = ?1 AND used_seq IS NULL",
                    params![id, seq],
                )?;
            }
        }
        Event::BudgetCharge(c) => {
            if let Some(agent) = &e.agent_id {
                tx.execute(
                    "INSERT OR REPLACE INTO ledger (seq, agent_id, tokens, micros, day, month)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![seq, agent, c.tokens, c.micros, c.period_day, c.period_month],
                )?;
            }
        }
        Event::BudgetPaused(BudgetPaused { reason, .. })
        | Event::WatchdogPause(WatchdogPause { reason, .. })
        | Event::AgentPaused(AgentPaused { reason }) => {
            if let Some(agent) = &e.agent_id {
                pause(tx, agent, reason)?;
            }
        }
        Event::AdminPauseAll(all) => {
            for a in &all.paused_agents {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO agents (agent_id, first_seq) VALUES (?1, ?2)",
                )?
                .execute(params![a, seq])?;
                pause(tx, a, &all.reason)?;
            }
        }
        Event::AgentResumed(_) => {
            if let Some(agent) = &e.agent_id {
                tx.execute(
                    "UPDATE agents SET paused = 0, paused_reason = NULL WHERE agent_id = ?1",
                    params![agent],
                )?;
            }
        }
        Event::CredentialsIssued(c) => {
            if let Some(agent) = &e.agent_id {
                tx.execute(
                    "INSERT OR IGNORE INTO credentials (hash, agent_id, scope, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![c.token_hash, agent, c.scope, c.expires_at.to_rfc3339()],
                )?;
            }
        }
        Event::CredentialsRedeemed(c) => {
            tx.execute(
                "UPDATE credentials SET redeemed_seq = ?2 WHERE hash = ?1 AND redeemed_seq IS NULL",
                params![c.token_hash, seq],
            )?;
        }
        Event::AgentTokenIssued(t) => {
            if let Some(agent) = &e.agent_id {
                tx.execute(
                    "INSERT OR IGNORE INTO agent_tokens (hash, agent_id, run_id) VALUES (?1, ?2, ?3)",
                    params![t.token_hash, agent, t.run_id],
                )?;
            }
        }
        Event::AgentTokenRevoked(t) => {
            tx.execute(
                "UPDATE agent_tokens SET revoked = 1 WHERE hash = ?1",
                params![t.token_hash],
            )?;
        }
        Event::AgentRunStarted(r) => {
            if let Some(agent) = &e.agent_id {
                tx.execute(
                    "INSERT OR IGNORE INTO runs (run_id, agent_id, task_id, started_seq) VALUES (?1, ?2, ?3, ?4)",
                    params![r.run_id, agent, e.task_id, seq],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO agent_tokens (hash, agent_id, run_id) VALUES (?1, ?2, ?3)",
                    params![r.token_hash, agent, r.run_id],
                )?;
            }
        }
        Event::AgentRunComplete(r) => finish_run(tx, &r.run_id, "complete")?,
        Event::AgentRunFailed(r) => finish_run(tx, &r.run_id, "failed")?,
        // Recorded for the trail; they change no table.
        Event::ProposalForbidden(_)
        | Event::ApprovalForbidden(_)
        | Event::AgentRequestRefused(_)
        | Event::ToolDecision(_)
        | Event::BudgetChargeRefused(_)
        | Event::CredentialsReplayBlocked(_)
        | Event::CredentialsExpired(_)
        | Event::CredentialsUnknown(_)
        | Event::AgentRunSkipped(_)
        | Event::AuditFlagSelfApproveAttempt(_)
        | Event::AuditFlagProposalTampered(_)
        | Event::AuditFlagMainDiverged(_)
        | Event::AuditFlagImpersonation(_)
        | Event::PolicyChangeRefused(_)
        | Event::ForgeMergeReported(_)
        | Event::ForgeMergeRecorded(_)
        | Event::PullRequestOpened(_)
        | Event::PullRequestClosed(_)
        | Event::Other(_) => {}
    }
    Ok(())
}

fn finish_run(tx: &Transaction<'_>, run: &str, status: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET finished = ?2 WHERE run_id = ?1",
        params![run, status],
    )?;
    tx.execute(
        "UPDATE agent_tokens SET revoked = 1 WHERE run_id = ?1",
        params![run],
    )?;
    Ok(())
}

fn pause(tx: &Transaction<'_>, agent: &str, reason: &str) -> rusqlite::Result<()> {
    // The first reason stays: a later pause does not rewrite why it stopped.
    tx.execute(
        "UPDATE agents SET paused_reason = CASE WHEN paused = 1 THEN paused_reason ELSE ?2 END,
                           paused = 1
         WHERE agent_id = ?1",
        params![agent, reason],
    )?;
    Ok(())
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn put_proposal(tx: &Transaction<'_>, p: &Proposal, seq: i64) -> rusqlite::Result<()> {
    let json = serde_json::to_string(p).map_err(to_sql_err)?;
    tx.execute(
        "INSERT INTO proposals (proposal_id, agent_id, status, submitted_at, action_type, payload_hash, json, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(proposal_id) DO UPDATE SET status = ?3, json = ?7",
        params![
            p.proposal_id,
            p.agent_id,
            p.status.as_str(),
            p.submitted_at.to_rfc3339(),
            p.action_type,
            p.payload_hash,
            json,
            seq
        ],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- queries

fn parse_proposal(json: String) -> rusqlite::Result<Proposal> {
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub fn proposal(conn: &Connection, id: &str) -> rusqlite::Result<Option<Proposal>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT json FROM proposals WHERE proposal_id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    json.map(parse_proposal).transpose()
}

/// Proposals, newest first, optionally of one status.
pub fn proposals(
    conn: &Connection,
    status: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<Proposal>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json FROM proposals WHERE (?1 IS NULL OR status = ?1) ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![status, limit], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.and_then(parse_proposal)).collect()
}

/// The newest proposals of one agent.
pub fn proposals_of(conn: &Connection, agent: &str, limit: u32) -> rusqlite::Result<Vec<Proposal>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json FROM proposals WHERE agent_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![agent, limit], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.and_then(parse_proposal)).collect()
}

/// A tool-use proposal of this agent with this payload hash that a person
/// approved (never an auto-approved one) and that has not been used yet.
pub fn unused_tool_approval(
    conn: &Connection,
    agent: &str,
    action_type: &str,
    hash: &str,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT proposal_id FROM proposals
         WHERE agent_id = ?1 AND action_type = ?2 AND payload_hash = ?3
           AND status = 'approved' AND used_seq IS NULL
         ORDER BY seq LIMIT 1",
        params![agent, action_type, hash],
        |r| r.get(0),
    )
    .optional()
}

/// A pending tool-use proposal with this payload hash, to answer a repeated
/// call with the same proposal instead of filing another.
pub fn pending_tool_proposal(
    conn: &Connection,
    agent: &str,
    action_type: &str,
    hash: &str,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT proposal_id FROM proposals
         WHERE agent_id = ?1 AND action_type = ?2 AND payload_hash = ?3 AND status = 'pending'
         ORDER BY seq DESC LIMIT 1",
        params![agent, action_type, hash],
        |r| r.get(0),
    )
    .optional()
}

/// An agent as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    pub agent_id: String,
    pub paused: bool,
    pub paused_reason: Option<String>,
}

pub fn agent(conn: &Connection, id: &str) -> rusqlite::Result<Option<AgentRow>> {
    conn.query_row(
        "SELECT agent_id, paused, paused_reason FROM agents WHERE agent_id = ?1",
        [id],
        |r| {
            Ok(AgentRow {
                agent_id: r.get(0)?,
                paused: r.get::<_, i64>(1)? != 0,
                paused_reason: r.get(2)?,
            })
        },
    )
    .optional()
}

pub fn agents(conn: &Connection) -> rusqlite::Result<Vec<AgentRow>> {
    let mut stmt = conn
        .prepare_cached("SELECT agent_id, paused, paused_reason FROM agents ORDER BY agent_id")?;
    let rows = stmt.query_map([], |r| {
        Ok(AgentRow {
            agent_id: r.get(0)?,
            paused: r.get::<_, i64>(1)? != 0,
            paused_reason: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Spend of an agent: all of it, or the charges booked under `period_key`
/// (a day `2026-11-25` or a month `2026-11`).
pub fn spend(conn: &Connection, agent: &str, period_key: Option<&str>) -> rusqlite::Result<Spend> {
    let (tokens, micros): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(micros), 0) FROM ledger
         WHERE agent_id = ?1 AND (?2 IS NULL OR day = ?2 OR month = ?2)",
        params![agent, period_key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Spend {
        tokens,
        micros: Micros(micros),
    })
}

/// Proposal counts of an agent by status.
pub fn proposal_counts(conn: &Connection, agent: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM proposals WHERE agent_id = ?1 GROUP BY status",
    )?;
    let rows = stmt.query_map([agent], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub fn pending_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM proposals WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )
}

pub fn credential(conn: &Connection, hash: &str) -> rusqlite::Result<Option<CredentialState>> {
    conn.query_row(
        "SELECT agent_id, scope, expires_at, redeemed_seq FROM credentials WHERE hash = ?1",
        [hash],
        |r| {
            let exp: String = r.get(2)?;
            let expires_at = chrono::DateTime::parse_from_rfc3339(&exp)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
            Ok(CredentialState {
                agent_id: r.get(0)?,
                scope: r.get(1)?,
                expires_at,
                redeemed: r.get::<_, Option<i64>>(3)?.is_some(),
            })
        },
    )
    .optional()
}

/// A live (not revoked) agent token: its agent and run.
pub fn agent_token(
    conn: &Connection,
    hash: &str,
) -> rusqlite::Result<Option<(String, Option<String>)>> {
    conn.query_row(
        "SELECT agent_id, run_id FROM agent_tokens WHERE hash = ?1 AND revoked = 0",
        [hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// A run: its agent, its task and how it finished (if it did).
pub type RunRow = (String, Option<String>, Option<String>);

pub fn run(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<RunRow>> {
    conn.query_row(
        "SELECT agent_id, task_id, finished FROM runs WHERE run_id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// The `tool_use` ids of the tool calls the server decided for a run (its
/// `tool_decision` entries since the run started).
pub fn decided_tool_uses(
    conn: &Connection,
    run_id: &str,
) -> rusqlite::Result<std::collections::BTreeSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json_extract(a.payload_json, '$.tool_use_id') FROM audit a, runs r
         WHERE r.run_id = ?1 AND a.seq > r.started_seq AND a.agent_id = r.agent_id
           AND a.event_type = 'tool_decision'
           AND json_extract(a.payload_json, '$.run_id') = ?1
           AND json_type(a.payload_json, '$.tool_use_id') = 'text'",
    )?;
    let ids = stmt.query_map([run_id], |r| r.get::<_, String>(0))?;
    ids.collect()
}

/// The token hashes of a run that are still live.
pub fn run_tokens(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT hash FROM agent_tokens WHERE run_id = ?1 AND revoked = 0")?;
    let rows = stmt.query_map([run_id], |r| r.get(0))?;
    rows.collect()
}

pub fn run_count(conn: &Connection, agent: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM runs WHERE agent_id = ?1",
        [agent],
        |r| r.get(0),
    )
}
