//! The server's tables in the index: proposals, agents and their pauses,
//! the budget ledger, one-shot credentials, agent tokens and runs.
//!
//! Each table is a projection of audit entries ([`project`], called by
//! `index::apply` for every entry in chain order), so `gov reindex` rebuilds
//! them from Git. Entries whose actor is an agent never change state: an
//! agent cannot resume itself by posting `agent_resumed` to `/audit`.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::audit::Timestamp;
use crate::domain::audit::{AuditEntry, Event};
use crate::domain::budget::{Hold, Spend};
use crate::domain::credential::CredentialState;
use crate::domain::event::{
    AgentPaused, BudgetPaused, ProposalDecided, ProposalExpired, WatchdogPause,
};
use crate::domain::money::Micros;
use crate::domain::proposal::{Proposal, ProposalStatus, Proposed};
use crate::domain::request::PolicyCitation;
use serde::{Deserialize, Serialize};

/// The tool-call proposals' action types (`use_tool:<Tool>`,
/// [`TOOL_ACTION_PREFIX`](crate::domain::proposal::TOOL_ACTION_PREFIX)) as
/// a condition on `action_type`: the rows `proposals_tool` holds. A query
/// names it word for word, so that SQLite knows the index applies, and
/// names the index (`INDEXED BY`): left to itself, SQLite walked the
/// agent's proposals in `seq` order (`proposals_agent`) instead, every one
/// of them when no proposal matched.
macro_rules! tool_actions {
    () => {
        "action_type GLOB 'use_tool:*'"
    };
}

pub const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    paused_reason TEXT,
    first_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    action_type TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    expected_cost_tokens INTEGER NOT NULL,
    expected_cost_dollars REAL NOT NULL,
    policy_version TEXT NOT NULL,
    submitted_json TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    decided_by TEXT,
    decided_at TEXT,
    decision_final INTEGER NOT NULL,
    branch TEXT,
    commit_id TEXT,
    merge_commit TEXT,
    seq INTEGER NOT NULL,
    used_seq INTEGER
);
CREATE INDEX IF NOT EXISTS proposals_status ON proposals(status, seq);
CREATE INDEX IF NOT EXISTS proposals_agent ON proposals(agent_id, seq);
CREATE INDEX IF NOT EXISTS proposals_submitted ON proposals(submitted_at, seq);
CREATE INDEX IF NOT EXISTS proposals_status_submitted ON proposals(status, submitted_at, seq);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    micros INTEGER NOT NULL,
    day TEXT NOT NULL,
    month TEXT NOT NULL,
    ts TEXT NOT NULL DEFAULT '',
    run_id TEXT,
    model TEXT,
    estimate INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ledger_agent ON ledger(agent_id);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger(run_id);
CREATE TABLE IF NOT EXISTS spend_totals (
    agent_id TEXT NOT NULL,
    period TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    micros INTEGER NOT NULL,
    PRIMARY KEY (agent_id, period)
);
",
    // Only tool calls' proposals are looked up by payload hash: the hash
    // puts each row on a page at random, which every other submission
    // would write for nothing. In `seq` order within a hash, so that a
    // lookup needs no sort.
    "CREATE INDEX IF NOT EXISTS proposals_tool
    ON proposals(agent_id, action_type, payload_hash, status, seq) WHERE ",
    tool_actions!(),
    ";
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
    revoked INTEGER NOT NULL DEFAULT 0,
    expires_at TEXT
);
CREATE INDEX IF NOT EXISTS agent_tokens_run ON agent_tokens(run_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    task_id TEXT,
    started_seq INTEGER NOT NULL,
    finished TEXT,
    started_at TEXT NOT NULL DEFAULT '',
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    hold_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_open ON runs(agent_id, finished);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs(started_seq) WHERE finished IS NULL;
CREATE INDEX IF NOT EXISTS proposals_unused ON proposals(agent_id, seq)
    WHERE status IN ('approved', 'auto-approved') AND used_seq IS NULL;
"
);

/// Derives the server's tables from one entry. Every event type is named
/// here, so a new one is a compile error until it is decided what it
/// changes.
pub fn project(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    let e = &entry.entry;
    let seq = entry.seq as i64;
    if let Some(agent) = &e.agent_id {
        tx.prepare_cached("INSERT OR IGNORE INTO agents (agent_id, first_seq) VALUES (?1, ?2)")?
            .execute(params![agent, seq])?;
    }
    if e.actor.is_agent() {
        return Ok(());
    }
    match &e.event {
        Event::ProposalSubmitted(s) => put_proposal(tx, &s.proposal, seq)?,
        Event::ProposalDecided(ProposalDecided { proposal, .. })
        | Event::ProposalExpired(ProposalExpired { proposal, .. }) => {
            if e.proposal_id.as_deref() == Some(proposal.proposal_id.as_str())
                && !update_proposal(tx, proposal)?
            {
                put_proposal(tx, proposal, seq)?;
            }
        }
        Event::ToolApprovalUsed(_) => {
            if let Some(id) = &e.proposal_id {
                tx.prepare_cached("UPDATE proposals SET used_seq = ?2 WHERE proposal_id = ?1 AND used_seq IS NULL")?.execute(params![id, seq],
                )?;
            }
        }
        Event::BudgetCharge(c) => {
            if let Some(agent) = &e.agent_id {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO ledger
                       (seq, agent_id, tokens, micros, day, month, ts, run_id, model, estimate)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    seq,
                    agent,
                    c.tokens,
                    c.micros,
                    c.period_day,
                    c.period_month,
                    entry.ts.to_rfc3339(),
                    c.run_id,
                    c.model,
                    c.estimate,
                ])?;
                let periods: std::collections::BTreeSet<&str> =
                    ["", c.period_day.as_str(), c.period_month.as_str()].into();
                for period in periods {
                    add_spend(tx, agent, period, c.tokens, c.micros)?;
                }
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
                tx.prepare_cached(
                    "UPDATE agents SET paused = 0, paused_reason = NULL WHERE agent_id = ?1",
                )?
                .execute(params![agent])?;
            }
        }
        Event::CredentialsIssued(c) => {
            if let Some(agent) = &e.agent_id {
                tx.prepare_cached("INSERT OR IGNORE INTO credentials (hash, agent_id, scope, expires_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![c.token_hash, agent, c.scope, c.expires_at.to_rfc3339()],
                )?;
            }
        }
        Event::CredentialsRedeemed(c) => {
            tx.prepare_cached(
                "UPDATE credentials SET redeemed_seq = ?2 WHERE hash = ?1 AND redeemed_seq IS NULL",
            )?
            .execute(params![c.token_hash, seq])?;
        }
        Event::AgentTokenIssued(t) => {
            if let Some(agent) = &e.agent_id {
                tx.prepare_cached("INSERT OR IGNORE INTO agent_tokens (hash, agent_id, run_id, expires_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![t.token_hash, agent, t.run_id, t.expires_at.map(|x| x.to_rfc3339())],
                )?;
            }
        }
        Event::AgentTokenRevoked(t) => {
            tx.prepare_cached("UPDATE agent_tokens SET revoked = 1 WHERE hash = ?1")?
                .execute(params![t.token_hash])?;
        }
        Event::AgentRunStarted(r) => {
            if let Some(agent) = &e.agent_id {
                let held = r.reservation.as_ref();
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO runs
                       (run_id, agent_id, task_id, started_seq, started_at,
                        reserved_tokens, reserved_micros, hold_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    r.run_id,
                    agent,
                    e.task_id,
                    seq,
                    entry.ts.to_rfc3339(),
                    held.map_or(0, |h| h.tokens),
                    held.map_or(0, |h| h.micros),
                    held.map_or(0, |h| h.hold_until),
                ])?;
                tx.prepare_cached("INSERT OR IGNORE INTO agent_tokens (hash, agent_id, run_id) VALUES (?1, ?2, ?3)")?.execute(params![r.token_hash, agent, r.run_id],
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
        | Event::AuditRecovered(_)
        | Event::ProposalOrphanSetAside(_)
        | Event::ProposalBranchRestored(_)
        | Event::MainRolledBack(_)
        | Event::IndexRebuilt(_)
        | Event::ForgeMergeReported(_)
        | Event::ForgeMergeRecorded(_)
        | Event::PullRequestOpened(_)
        | Event::PullRequestClosed(_)
        | Event::PolicyChangeRefused(_)
        | Event::Other(_) => {}
    }
    Ok(())
}

fn finish_run(tx: &Connection, run: &str, status: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE runs SET finished = ?2 WHERE run_id = ?1")?
        .execute(params![run, status])?;
    tx.prepare_cached(SQL_REVOKE_RUN_TOKENS)?
        .execute(params![run])?;
    Ok(())
}

fn pause(tx: &Connection, agent: &str, reason: &str) -> rusqlite::Result<()> {
    // The first reason stays: a later pause does not rewrite why it stopped.
    tx.prepare_cached(
        "UPDATE agents SET paused_reason = CASE WHEN paused = 1 THEN paused_reason ELSE ?2 END,
                           paused = 1
         WHERE agent_id = ?1",
    )?
    .execute(params![agent, reason])?;
    Ok(())
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// What the `submitted_json` column of a proposal holds: the part the
/// agent wrote (payload, outcome, costs, rationale, links: `Proposed`) and
/// the policies cited when it was filed. Kept as JSON because none of it
/// changes after submission (the row's `INSERT` writes it, no `UPDATE`
/// touches it), the payload is any JSON object the agent sent, and nothing
/// is ever selected by it: it is read whole to answer with the proposal.
/// What changes (status, decision, who and when, branch, commits) and what
/// queries select by (agent, action, payload hash, times, expected costs)
/// are columns.
#[derive(Serialize)]
struct SubmittedPart<'a> {
    proposed: &'a Proposed,
    policies: &'a [PolicyCitation],
}

/// [`SubmittedPart`] read back.
#[derive(Deserialize)]
struct SubmittedPartOwned {
    proposed: Proposed,
    policies: Vec<PolicyCitation>,
}

/// The columns of a proposal's row that a decision or an expiry changes,
/// in the order both writes of the row bind them.
struct DecidedColumns<'a> {
    p: &'a Proposal,
    status: &'a str,
    decided_at: Option<String>,
}

impl<'a> DecidedColumns<'a> {
    fn of(p: &'a Proposal) -> Self {
        DecidedColumns {
            p,
            status: p.status.as_str(),
            decided_at: p.decided_at.map(Timestamp::to_rfc3339),
        }
    }

    /// status, decision, decided_by, decided_at, decision_final, branch,
    /// commit_id, merge_commit.
    fn values(&self) -> [&dyn rusqlite::ToSql; 8] {
        let p = self.p;
        [
            &self.status,
            &p.decision,
            &p.decided_by,
            &self.decided_at,
            &p.decision_final,
            &p.branch,
            &p.commit,
            &p.merge_commit,
        ]
    }
}

/// Writes a decision's or an expiry's columns into a proposal's row, as
/// [`put_proposal`] does for a row already there, without encoding its
/// submitted part again; whether the row was there.
fn update_proposal(tx: &Connection, p: &Proposal) -> rusqlite::Result<bool> {
    let decided = DecidedColumns::of(p);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&p.proposal_id];
    values.extend(decided.values());
    let changed = tx
        .prepare_cached(
            "UPDATE proposals SET status = ?2, decision = ?3, decided_by = ?4, decided_at = ?5,
                 decision_final = ?6, branch = ?7, commit_id = ?8, merge_commit = ?9
             WHERE proposal_id = ?1",
        )?
        .execute(&*values)?;
    Ok(changed > 0)
}

fn put_proposal(tx: &Connection, p: &Proposal, seq: i64) -> rusqlite::Result<()> {
    let submitted = serde_json::to_string(&SubmittedPart {
        proposed: &p.proposed,
        policies: &p.policies,
    })
    .map_err(to_sql_err)?;
    let (submitted_at, expires_at) = (p.submitted_at.to_rfc3339(), p.expires_at.to_rfc3339());
    let decided = DecidedColumns::of(p);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![
        &p.proposal_id,
        &p.proposed.agent_id,
        &p.proposed.action_type,
        &p.payload_hash,
        &submitted_at,
        &expires_at,
        &p.policy_version,
        &submitted,
    ];
    values.extend(decided.values());
    values.extend([
        &seq as &dyn rusqlite::ToSql,
        &p.proposed.expected_cost_tokens,
        &p.proposed.expected_cost_dollars,
    ]);
    // A decision or an expiry changes only the mutable columns: the
    // submitted part stays as the submission's entry wrote it.
    tx.prepare_cached(
        "INSERT INTO proposals (proposal_id, agent_id, action_type, payload_hash, submitted_at,
                                expires_at, policy_version, submitted_json, status, decision,
                                decided_by, decided_at, decision_final, branch, commit_id,
                                merge_commit, seq, expected_cost_tokens, expected_cost_dollars)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19)
         ON CONFLICT(proposal_id) DO UPDATE SET
             status = ?9, decision = ?10, decided_by = ?11, decided_at = ?12,
             decision_final = ?13, branch = ?14, commit_id = ?15, merge_commit = ?16",
    )?
    .execute(&*values)?;
    Ok(())
}

// ---------------------------------------------------------------- queries

/// The columns a proposal is read from, in the order [`proposal_row`]
/// takes them.
macro_rules! proposal_columns {
    () => {
        "proposal_id, payload_hash, submitted_at, expires_at, policy_version, submitted_json,
         status, decision, decided_by, decided_at, decision_final, branch, commit_id,
         merge_commit"
    };
}

// The hot-path queries, named so a test can check each is served by an
// index (`EXPLAIN QUERY PLAN`), not a scan that grows with history.
pub(crate) const SQL_PROPOSAL: &str = concat!(
    "SELECT ",
    proposal_columns!(),
    " FROM proposals WHERE proposal_id = ?1"
);
pub(crate) const SQL_AGENT_PROPOSALS: &str = concat!(
    "SELECT ",
    proposal_columns!(),
    " FROM proposals WHERE agent_id = ?1 ORDER BY seq DESC LIMIT ?2"
);
pub(crate) const SQL_UNUSED_TOOL_APPROVAL: &str = concat!(
    "SELECT proposal_id FROM proposals INDEXED BY proposals_tool
         WHERE agent_id = ?1 AND action_type = ?2 AND payload_hash = ?3
           AND status = 'approved' AND used_seq IS NULL AND ",
    tool_actions!(),
    " ORDER BY seq LIMIT 1"
);
pub(crate) const SQL_PENDING_TOOL: &str = concat!(
    "SELECT proposal_id FROM proposals INDEXED BY proposals_tool
         WHERE agent_id = ?1 AND action_type = ?2 AND payload_hash = ?3 AND status = 'pending'
           AND ",
    tool_actions!(),
    " ORDER BY seq DESC LIMIT 1"
);
// A run's admission asks these (what the agent's open runs and approved
// proposals hold), and a run's end revokes its tokens: each through an
// index of the rows it wants (`runs_unfinished`, `proposals_unused`,
// `agent_tokens_run`), not a walk of every run or of the agent's every
// proposal.
pub(crate) const SQL_OPEN_RUNS: &str =
    "SELECT r.run_id, r.agent_id, r.task_id, r.started_at, r.reserved_tokens,
            r.reserved_micros, r.hold_until,
            COALESCE((SELECT SUM(tokens) FROM ledger l WHERE l.run_id = r.run_id), 0),
            COALESCE((SELECT SUM(micros) FROM ledger l WHERE l.run_id = r.run_id), 0)
     FROM runs r INDEXED BY runs_unfinished
     WHERE r.finished IS NULL AND r.hold_until > ?2 AND (?1 IS NULL OR r.agent_id = ?1)
     ORDER BY r.started_seq";
pub(crate) const SQL_APPROVED_UNUSED: &str =
    "SELECT proposal_id FROM proposals INDEXED BY proposals_unused
     WHERE agent_id = ?1 AND status IN ('approved', 'auto-approved') AND used_seq IS NULL
       AND (?2 = 0 OR expected_cost_tokens > 0 OR expected_cost_dollars > 0)";
pub(crate) const SQL_REVOKE_RUN_TOKENS: &str =
    "UPDATE agent_tokens SET revoked = 1 WHERE run_id = ?1";
pub(crate) const SQL_SPEND: &str =
    "SELECT tokens, micros FROM spend_totals WHERE agent_id = ?1 AND period = ?2";
pub(crate) const SQL_PENDING_COUNT: &str =
    "SELECT COUNT(*) FROM proposals WHERE status = 'pending'";
pub(crate) const SQL_AGENT: &str =
    "SELECT agent_id, paused, paused_reason FROM agents WHERE agent_id = ?1";
pub(crate) const SQL_CREDENTIAL: &str =
    "SELECT agent_id, scope, expires_at, redeemed_seq FROM credentials WHERE hash = ?1";

/// A proposal from a row of [`proposal_columns`], in that order.
fn proposal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Proposal> {
    let submitted: String = r.get(5)?;
    let SubmittedPartOwned { proposed, policies } =
        serde_json::from_str(&submitted).map_err(|e| from_sql_err(5, e))?;
    let status: String = r.get(6)?;
    Ok(Proposal {
        proposal_id: r.get(0)?,
        proposed,
        submitted_at: timestamp(r, 2)?,
        payload_hash: r.get(1)?,
        expires_at: timestamp(r, 3)?,
        status: ProposalStatus::parse(&status)
            .ok_or_else(|| from_sql_err(6, format!("unknown status `{status}`")))?,
        decision: r.get(7)?,
        decided_by: r.get(8)?,
        decided_at: r
            .get::<_, Option<String>>(9)?
            .map(|t| Timestamp::parse(&t).map_err(|e| from_sql_err(9, e)))
            .transpose()?,
        decision_final: r.get(10)?,
        policies,
        policy_version: r.get(4)?,
        branch: r.get(11)?,
        commit: r.get(12)?,
        merge_commit: r.get(13)?,
    })
}

fn timestamp(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::parse(&r.get::<_, String>(i)?).map_err(|e| from_sql_err(i, e))
}

fn from_sql_err(
    i: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
}

pub fn proposal(conn: &Connection, id: &str) -> rusqlite::Result<Option<Proposal>> {
    conn.prepare_cached(SQL_PROPOSAL)?
        .query_row([id], proposal_row)
        .optional()
}

/// Whether the index holds a proposal with this id (read without its
/// columns: start-up asks this of every proposal branch it lists).
pub fn proposal_exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM proposals WHERE proposal_id = ?1")?
        .exists([id])
}

/// Whether the index holds the proposal `id`, on `branch`, as decided
/// (approved, rejected or expired: no longer waiting for a person).
pub fn proposal_decided(conn: &Connection, id: &str, branch: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM proposals WHERE proposal_id = ?1 AND branch = ?2 AND status <> 'pending'",
    )?
    .exists([id, branch])
}

/// Proposals, newest `submitted_at` first (as the original orders them;
/// arrival breaks ties), optionally of one status.
pub fn proposals(
    conn: &Connection,
    status: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<Proposal>> {
    // `submitted_at` is RFC 3339 in UTC (`+00:00`), so text order is time
    // order.
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        proposal_columns!(),
        " FROM proposals WHERE (?1 IS NULL OR status = ?1)
         ORDER BY submitted_at DESC, seq DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![status, limit], proposal_row)?;
    rows.collect()
}

/// A pending proposal's id, with its branch and commit where it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub proposal_id: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
}

/// The pending proposals, as [`PendingRow`]s: what a repository's repair
/// at start-up compares with Git, without reading whole proposals.
pub fn pending_branches(conn: &Connection) -> rusqlite::Result<Vec<PendingRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT proposal_id, branch, commit_id FROM proposals WHERE status = 'pending'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PendingRow {
            proposal_id: r.get(0)?,
            branch: r.get(1)?,
            commit: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The newest proposals of one agent.
pub fn proposals_of(conn: &Connection, agent: &str, limit: u32) -> rusqlite::Result<Vec<Proposal>> {
    let mut stmt = conn.prepare_cached(SQL_AGENT_PROPOSALS)?;
    let rows = stmt.query_map(params![agent, limit], proposal_row)?;
    rows.collect()
}

/// A tool-use proposal of this agent with this payload hash that a person
/// approved (never an auto-approved one) and that has not been used yet.
pub fn unused_tool_approval(
    conn: &Connection,
    agent: &str,
    action_type: &str,
    hash: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(SQL_UNUSED_TOOL_APPROVAL)?
        .query_row(params![agent, action_type, hash], |r| r.get(0))
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
    conn.prepare_cached(SQL_PENDING_TOOL)?
        .query_row(params![agent, action_type, hash], |r| r.get(0))
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
    conn.prepare_cached(SQL_AGENT)?
        .query_row([id], |r| {
            Ok(AgentRow {
                agent_id: r.get(0)?,
                paused: r.get::<_, i64>(1)? != 0,
                paused_reason: r.get(2)?,
            })
        })
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
    // Running totals, so the cost does not grow with the agent's history.
    let (tokens, micros): (i64, i64) = conn
        .prepare_cached(SQL_SPEND)?
        .query_row(params![agent, period_key.unwrap_or("")], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    Ok(Spend {
        tokens,
        micros: Micros(micros),
    })
}

/// Adds a charge to an agent's running total for `period` (`""`: all time).
fn add_spend(
    tx: &Connection,
    agent: &str,
    period: &str,
    tokens: i64,
    micros: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO spend_totals (agent_id, period, tokens, micros) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(agent_id, period) DO UPDATE SET tokens = tokens + ?3, micros = micros + ?4",
    )?
    .execute(params![agent, period, tokens, micros])?;
    Ok(())
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
    conn.prepare_cached(SQL_PENDING_COUNT)?
        .query_row([], |r| r.get(0))
}

pub fn credential(conn: &Connection, hash: &str) -> rusqlite::Result<Option<CredentialState>> {
    conn.prepare_cached(SQL_CREDENTIAL)?
        .query_row([hash], |r| {
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
        })
        .optional()
}

/// A live (not revoked) agent token: its agent and run.
/// The agent (and run) of a live token: not revoked, not expired at `now`.
pub fn agent_token(
    conn: &Connection,
    hash: &str,
    now: crate::domain::audit::Timestamp,
) -> rusqlite::Result<Option<(String, Option<String>)>> {
    conn.prepare_cached(
        "SELECT agent_id, run_id FROM agent_tokens
         WHERE hash = ?1 AND revoked = 0 AND (expires_at IS NULL OR expires_at > ?2)",
    )?
    .query_row(params![hash, now.to_rfc3339()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// A run: its agent, its task and how it finished (if it did).
pub type RunRow = (String, Option<String>, Option<String>);

pub fn run(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<RunRow>> {
    conn.prepare_cached("SELECT agent_id, task_id, finished FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
}

/// The project folder a run was registered with (`gov guard`), read from
/// its `agent_run_started` entry; `None` for a run of `agents/<id>/`.
pub fn run_folder(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT json_extract(a.payload_json, '$.folder') FROM runs r \
         JOIN audit a ON a.seq = r.started_seq WHERE r.run_id = ?1",
    )?
    .query_row([run_id], |r| r.get::<_, Option<String>>(0))
    .optional()
    .map(Option::flatten)
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

/// What one run has been charged so far.
pub fn run_spend(conn: &Connection, run_id: &str) -> rusqlite::Result<Spend> {
    let (tokens, micros): (i64, i64) = conn.prepare_cached("SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(micros), 0) FROM ledger WHERE run_id = ?1")?.query_row([run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Spend {
        tokens,
        micros: Micros(micros),
    })
}

/// A run's reservation as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRun {
    pub run_id: String,
    pub agent_id: String,
    pub task_id: Option<String>,
    pub started_at: String,
    pub reserved: Hold,
    pub spent: Spend,
    /// Unix seconds after which the reservation no longer holds budget.
    pub hold_until: i64,
}

/// Runs not finished whose reservation still holds at `now_unix` (all
/// agents when `agent` is `None`), oldest first.
pub fn open_runs(
    conn: &Connection,
    agent: Option<&str>,
    now_unix: i64,
) -> rusqlite::Result<Vec<OpenRun>> {
    let mut stmt = conn.prepare_cached(SQL_OPEN_RUNS)?;
    let rows = stmt.query_map(params![agent, now_unix], |r| {
        Ok(OpenRun {
            run_id: r.get(0)?,
            agent_id: r.get(1)?,
            task_id: r.get(2)?,
            started_at: r.get(3)?,
            reserved: Hold {
                tokens: r.get(4)?,
                micros: Micros(r.get(5)?),
            },
            hold_until: r.get(6)?,
            spent: Spend {
                tokens: r.get(7)?,
                micros: Micros(r.get(8)?),
            },
        })
    })?;
    rows.collect()
}

/// A run's reservation, whether or not it still holds.
pub fn run_reservation(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<(Hold, i64)>> {
    conn.prepare_cached(
        "SELECT reserved_tokens, reserved_micros, hold_until FROM runs WHERE run_id = ?1",
    )?
    .query_row([run_id], |r| {
        Ok((
            Hold {
                tokens: r.get(0)?,
                micros: Micros(r.get(1)?),
            },
            r.get(2)?,
        ))
    })
    .optional()
}

/// An agent's charges in the order they were recorded, of the period
/// `period_key` selects (as [`spend`]): time, tokens, micro-dollars.
pub fn charges(
    conn: &Connection,
    agent: &str,
    period_key: Option<&str>,
) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, tokens, micros FROM ledger
         WHERE agent_id = ?1 AND (?2 IS NULL OR day = ?2 OR month = ?2) ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![agent, period_key], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    rows.collect()
}

pub fn run_count(conn: &Connection, agent: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM runs WHERE agent_id = ?1")?
        .query_row([agent], |r| r.get(0))
}

/// The audit entry that last changed a proposal (its submission or its
/// decision): its sequence number and time.
pub fn last_proposal_change(
    conn: &Connection,
    proposal_id: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached(
        "SELECT seq, ts FROM audit WHERE proposal_id = ?1
           AND event_type IN ('proposal_submitted', 'proposal_decided')
         ORDER BY seq DESC LIMIT 1",
    )?
    .query_row([proposal_id], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

/// Whether, after entry `after_seq`, the agent posted an entry of a type in
/// `for_proposal` carrying `proposal_id`, or any entry of a type in
/// `for_agent`. The type lists are gov's own constants, never user input.
pub fn ended_after(
    conn: &Connection,
    agent: &str,
    proposal_id: &str,
    after_seq: i64,
    for_proposal: &[&str],
    for_agent: &[&str],
) -> rusqlite::Result<bool> {
    let in_list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("'{}'", x.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM audit WHERE seq > ?3 AND agent_id = ?1 AND (
            (proposal_id = ?2 AND event_type IN ({})) OR event_type IN ({})))",
        in_list(for_proposal),
        in_list(for_agent)
    );
    conn.query_row(&sql, params![agent, proposal_id, after_seq], |r| {
        r.get::<_, bool>(0)
    })
}

/// The agent's approved (or auto-approved) proposals not yet used.
/// With `costly_only`, only those with an expected cost.
pub fn approved_unused(
    conn: &Connection,
    agent: &str,
    costly_only: bool,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(SQL_APPROVED_UNUSED)?;
    let rows = stmt.query_map(rusqlite::params![agent, costly_only], |r| r.get(0))?;
    rows.collect()
}

/// The time of the agent's newest audit entry.
pub fn last_entry_ts(conn: &Connection, agent: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT ts FROM audit WHERE agent_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([agent], |r| r.get(0))
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hot-path query is a search through an index (or a primary
    /// key), never a scan of a table and never a sort of its rows.
    #[test]
    fn hot_path_queries_use_an_index() -> Result<(), Box<dyn std::error::Error>> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::store::index::SCHEMA_FOR_TESTS)?;
        conn.execute_batch(SCHEMA)?;
        let audit_sql = [
            crate::store::index::SQL_SUBMITTED_COMMIT,
            "SELECT ts FROM audit WHERE agent_id = ?1 ORDER BY seq DESC LIMIT 1",
        ];
        for sql in [
            SQL_PROPOSAL,
            SQL_AGENT_PROPOSALS,
            SQL_UNUSED_TOOL_APPROVAL,
            SQL_PENDING_TOOL,
            SQL_SPEND,
            SQL_PENDING_COUNT,
            SQL_AGENT,
            SQL_CREDENTIAL,
            SQL_OPEN_RUNS,
            SQL_APPROVED_UNUSED,
            SQL_REVOKE_RUN_TOKENS,
        ]
        .into_iter()
        .chain(audit_sql)
        {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                .collect::<Result<_, _>>()?;
            // A scan is allowed only of `runs_unfinished`, a partial
            // index of the runs not finished (what is open, not history).
            assert!(
                plan.iter().all(|d| d.starts_with("SEARCH ")
                    || d.starts_with("CORRELATED SCALAR SUBQUERY")
                    || d == "SCAN r USING INDEX runs_unfinished"),
                "{sql}\n{plan:?}"
            );
            // The lookups of unused approvals and by payload hash go
            // through their partial indexes: `proposals_agent` also gives
            // a SEARCH, but reads the agent's whole history.
            if sql.contains("used_seq IS NULL\n") {
                assert!(
                    plan.iter()
                        .any(|d| d.contains("USING INDEX proposals_unused (agent_id=?)")),
                    "{sql}\n{plan:?}"
                );
            }
            if sql.contains("payload_hash = ") {
                assert!(
                    plan.iter()
                        .any(|d| d.contains("USING INDEX proposals_tool (")),
                    "{sql}\n{plan:?}"
                );
            }
        }
        Ok(())
    }

    /// `proposals_tool` holds the rows whose action type starts with
    /// [`TOOL_ACTION_PREFIX`], and only those.
    #[test]
    fn the_tool_index_holds_the_tool_proposals() -> Result<(), Box<dyn std::error::Error>> {
        use crate::domain::proposal::TOOL_ACTION_PREFIX;
        assert_eq!(
            tool_actions!(),
            format!("action_type GLOB '{TOOL_ACTION_PREFIX}*'")
        );
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        for (n, action) in [
            "use_tool:Bash",
            "use_tool:",
            "publish_content",
            "use_tool",
            "use_toolz",
        ]
        .iter()
        .enumerate()
        {
            conn.execute(
                "INSERT INTO proposals (proposal_id, agent_id, action_type, payload_hash,
                   submitted_at, expires_at, expected_cost_tokens, expected_cost_dollars,
                   policy_version, submitted_json, status, decision_final, seq)
                 VALUES (?1, 'a', ?2, 'h', '', '', 0, 0, '', '', 'pending', 0, ?3)",
                params![format!("p{n}"), action, n as i64],
            )?;
        }
        let mut stmt = conn.prepare(concat!(
            "SELECT action_type FROM proposals INDEXED BY proposals_tool
             WHERE agent_id = 'a' AND ",
            tool_actions!(),
            " ORDER BY action_type"
        ))?;
        let held: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(held, ["use_tool:", "use_tool:Bash"]);
        Ok(())
    }
}
