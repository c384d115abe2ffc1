//! The HTTP API's request and response bodies, one type each, shared by the
//! server (which builds them), `client.rs` and its users (the CLI and the
//! runner, which read them) and the tests' stand-in servers. A change to the
//! API is a change here; docs/API.md describes the same shapes.
//!
//! Replies are read leniently (a newer server may add fields), so the test
//! `server::wire_types_are_what_the_server_sends` checks that each real
//! reply and its type agree field for field.

use serde::{Deserialize, Serialize};

use crate::domain::audit::{AuditEntry, Timestamp};
pub use crate::domain::budget::AgentStatus;
use crate::domain::pricing::{ModelCharge, TokenUsage};
use crate::domain::proposal::{Proposal, ProposalStatus, Proposed, Verdict};
use crate::domain::request::{DecisionRecord, PolicyCitation};
use crate::domain::run::ToolUse;

/// `POST /proposals`: a submission as the original's API takes it: what
/// the agent proposes, and the id and times gov fills in when they are
/// left out.
///
/// Serialised flat, as the original's object. Read with
/// [`Submission::from_slice`], which names the field a wrong value is in;
/// the derived `Deserialize` reads valid input the same way, but serde's
/// `flatten` loses the field's name from its errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    #[serde(default)]
    pub proposal_id: Option<String>,
    /// Required by the original; gov defaults it to the time of arrival.
    #[serde(default)]
    pub submitted_at: Option<Timestamp>,
    /// Required by the original; gov defaults it to a day after submission.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(flatten)]
    pub proposed: Proposed,
}

/// The fields of a [`Submission`] beside what is proposed (read on their
/// own, so that errors keep the field's name).
#[derive(Deserialize)]
#[serde(rename = "Submission")]
struct SubmissionIds {
    #[serde(default)]
    proposal_id: Option<String>,
    #[serde(default)]
    submitted_at: Option<Timestamp>,
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

impl Submission {
    /// Reads a submission from its JSON text, each part as a plain struct
    /// so a wrong or missing value's error carries its path (`wave`, not
    /// `.`). The text is read twice, once per part, into no JSON value:
    /// the fields the other part holds are skipped. serde_json's errors
    /// end in " at line N column M" (the server's 422 leaves that out).
    pub fn from_slice(
        text: &[u8],
    ) -> Result<Submission, serde_path_to_error::Error<serde_json::Error>> {
        fn read<T: serde::de::DeserializeOwned>(
            text: &[u8],
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text))
        }
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Refused by the derived reader: "invalid type: sequence,
            // expected struct Submission" (a plain struct would take an
            // array as its fields in order, and name itself).
            return read(text);
        }
        let ids: SubmissionIds = read(text)?;
        let proposed: Proposed = read(text)?;
        Ok(Submission {
            proposal_id: ids.proposal_id,
            submitted_at: ids.submitted_at,
            expires_at: ids.expires_at,
            proposed,
        })
    }
}

/// `POST /proposals` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalFiled {
    pub proposal_id: String,
    pub status: ProposalStatus,
    pub review_url: String,
    pub policies: Vec<PolicyCitation>,
    pub policy_version: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
}

/// `POST /proposals/{id}/decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRequest {
    pub decision: Verdict,
    #[serde(default, rename = "final")]
    pub final_: bool,
    #[serde(default)]
    pub note: Option<String>,
    /// Answer an approval only once its file is in a checked-out `main`
    /// (`gov approve` asks); otherwise the server puts it there within a
    /// moment of the answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_checkout: bool,
}

/// `POST /proposals/{id}/decision` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalDecided {
    pub proposal_id: String,
    pub status: ProposalStatus,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub merge_commit: Option<String>,
    pub branch: Option<String>,
    /// Asked to wait for the checkout (`wait_for_checkout`), an approval
    /// whose files a `git` command kept out of it for now (it held the
    /// Git index): the server puts them there once it lets go.
    #[serde(default)]
    pub checkout_waits: bool,
}

/// `POST /audit`: an agent's own entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPost {
    #[serde(default)]
    pub agent_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub proposal_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// `POST /audit` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPosted {
    pub audit_id: u64,
    pub ts: Timestamp,
}

/// `POST /runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOpen {
    pub agent_id: String,
    #[serde(default)]
    pub task_id: Option<String>,
    /// A `gov guard` session's project folder (absolute): its tool calls are
    /// judged against it instead of `agents/<id>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

/// `POST /runs` → 201.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOpened {
    pub run_id: String,
    pub agent_id: String,
    pub agent_token: String,
    /// What the run reserved at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<RunReservation>,
}

/// A run's reservation: what it may spend, and until when (Unix seconds) it
/// holds the agent's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReservation {
    pub tokens: i64,
    pub dollars: f64,
    pub hold_until: i64,
}

/// `POST /runs` → 423: the run was refused (a paused agent, a `continue`
/// policy); `error` is `agent_paused` or `continue_denied`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSkipped {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub policies: Vec<PolicyCitation>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Complete,
    Failed,
}

/// `POST /runs/{id}/finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinish {
    pub status: RunStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub usage_missing: bool,
    /// The run's spend not charged while it ran, per model, priced.
    #[serde(default)]
    pub charges: Vec<ModelCharge>,
    /// No final usage report: the spend is what the stream showed.
    #[serde(default)]
    pub estimate: bool,
    /// Claude Code's own `total_cost_usd`, reconciled by the server.
    #[serde(default)]
    pub claude_cost_usd: Option<f64>,
    /// The tool calls a claude agent's stream reported; the server fails the
    /// run if one of them has no decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_uses: Vec<ToolUse>,
    /// A flat charge, for clients that do not itemize `charges` (priced as
    /// `POST /budget/{agent}/charge` prices it); gov's runner sends none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dollars: Option<f64>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `POST /agents/{id}/pause`, `/resume` → 200 (and `GET /status/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: String,
    pub status: AgentStatus,
    pub paused_reason: Option<String>,
}

/// `POST /admin/pause-all`, `POST /agents/{id}/pause`: the body is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /admin/pause-all` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedAll {
    pub paused_agents: Vec<String>,
}

/// `POST /agents/{id}/tokens` → 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenMinted {
    pub agent_id: String,
    pub agent_token: String,
}

/// `GET /budget/{agent}`, `POST /budget/{agent}/charge` → 200, and the
/// `budget` of a run's usage and finish replies. The original's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub agent_id: String,
    pub wave: i64,
    pub tokens_consumed: i64,
    pub tokens_cap: u64,
    pub dollars_consumed: f64,
    pub dollars_cap: f64,
    pub status: AgentStatus,
    pub remaining_pct: f64,
    /// The current period's key: `lifetime`, a day (`2026-11-25`) or a
    /// month (`2026-11`).
    pub period: String,
    pub paused_reason: Option<String>,
    /// What open reservations hold (runs under way, approved proposals not
    /// yet executed); on `GET /budget` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_reserved: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dollars_reserved: Option<f64>,
}

/// `POST /budget/{agent}/charge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub tokens: i64,
    pub tool: String,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub dollars: Option<f64>,
    /// gov adds: the model (priced by `[prices]`) and the tokens by kind.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

/// `GET /scoreboard` → 200: one row per agent, as the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub agent_id: String,
    pub status: AgentStatus,
    pub proposals_submitted: i64,
    pub proposals_approved: i64,
    pub proposals_rejected: i64,
    pub tokens_consumed: i64,
    pub dollars_consumed: f64,
    pub revenue_events_count: i64,
    pub runs: i64,
    pub paused_reason: Option<String>,
}

/// `GET /proposals/{id}` → 200: the proposal and the audit commit that
/// recorded its submission. (`GET /proposals` lists [`Proposal`]s.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalView {
    #[serde(flatten)]
    pub proposal: Proposal,
    pub audit_commit: Option<String>,
}

/// An audit entry in the original's field names (`audit_id, ts, agent_id,
/// event_type, proposal_id, task_id, payload`) plus gov's `actor` and
/// `decision`: a line of `gov audit export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub audit_id: u64,
    pub ts: Timestamp,
    pub agent_id: Option<String>,
    pub event_type: String,
    pub proposal_id: Option<String>,
    pub task_id: Option<String>,
    pub payload: serde_json::Value,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> Self {
        AuditRecord {
            audit_id: e.seq,
            ts: e.ts,
            agent_id: e.entry.agent_id.clone(),
            event_type: e.entry.event_type().to_string(),
            proposal_id: e.entry.proposal_id.clone(),
            task_id: e.entry.task_id.clone(),
            payload: e.entry.payload(),
            actor: e.entry.actor.0.clone(),
            decision: e.entry.decision.clone(),
        }
    }
}

/// `GET /audit` → 200: one per entry, with the commit that holds it and
/// the role of the key that signed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditListed {
    #[serde(flatten)]
    pub record: AuditRecord,
    pub commit: String,
    pub signer: Option<String>,
}

/// `POST /credentials/issue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialIssue {
    pub agent_id: String,
    pub scope: String,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: i64,
}

fn default_ttl() -> i64 {
    300
}

/// `POST /credentials/issue` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialIssued {
    pub token: String,
    pub expires_at: Timestamp,
}

/// `POST /credentials/redeem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRedeem {
    pub token: String,
}

/// `POST /credentials/redeem` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRedeemed {
    pub scope: String,
    pub agent_id: String,
}

/// `POST /tools/evaluate`: one tool call, as the hook sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub agent_id: String,
    /// The run the call belongs to; a run's own token implies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub tool_input: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Claude Code's id for the call, recorded with the decision so the
    /// runner can tell a call that was decided from one that was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// Claude Code's `agent_id`: set when a subagent makes the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_id: Option<String>,
    /// Claude Code's `agent_type` (the subagent's type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// Claude Code's permission mode for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// The `PATH` the agent's programs are looked up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_var: Option<String>,
}

/// What gov says about a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolDecision {
    Allow,
    Deny,
    NeedsPerson,
}

/// `POST /tools/evaluate` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolVerdict {
    pub decision: ToolDecision,
    pub reason: String,
    pub policies: Vec<PolicyCitation>,
    /// The proposal filed for a call that needs a person (or the approved
    /// one that let it through).
    pub proposal_id: Option<String>,
}

/// `POST /runs/{id}/usage`: what a run spent since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub charges: Vec<ModelCharge>,
    /// True for usage read from a stream before its final report.
    #[serde(default)]
    pub estimate: bool,
}

/// A run's own budget: its reservation and what it has spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpend {
    pub tokens_reserved: i64,
    pub dollars_reserved: f64,
    pub tokens_spent: i64,
    pub dollars_spent: f64,
}

/// Why a run must stop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The run spent what it reserved.
    ReservationExhausted,
    /// The agent is paused (a cap was crossed, or a person paused it).
    AgentPaused,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::ReservationExhausted => "reservation_exhausted",
            StopReason::AgentPaused => "agent_paused",
        })
    }
}

/// `POST /runs/{id}/usage` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCharged {
    pub budget: Budget,
    pub run: RunSpend,
    /// The run must stop now.
    pub stop: bool,
    pub stop_reason: Option<StopReason>,
}

/// `POST /runs/{id}/finish` → 200: how the run was recorded (the server
/// fails a run in which a tool call had no decision), the agent's budget
/// and the run's own spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    pub status: RunStatus,
    pub reason: Option<String>,
    pub budget: Budget,
    pub run: RunSpend,
}

/// `POST /tokens/revoke` (and `gov token revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoke {
    pub token: String,
}

/// `POST /tokens/revoke` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub agent_id: String,
    pub revoked: bool,
}

/// `GET /status` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub ok: bool,
    pub host: String,
    pub port: u16,
    /// Always true: the original's field, kept for its clients.
    pub db_ok: bool,
    /// Always true: the original's field, kept for its clients.
    pub audit_jsonl_ok: bool,
    pub audit_entries: u64,
    /// False when the audit chain was tampered with (writes are refused).
    #[serde(default = "yes")]
    pub audit_ok: bool,
    /// Why writes are refused, when the chain was tampered with.
    #[serde(default)]
    pub audit_tampered: Option<String>,
    pub started_at: Timestamp,
    pub agents_paused: Vec<String>,
    pub known_agents: Vec<String>,
    pub agent_errors: std::collections::BTreeMap<String, String>,
    pub pending_proposals: u64,
    pub policy_version: Option<String>,
    pub policy_error: Option<String>,
    /// The Git remote, when one is configured.
    #[serde(default)]
    pub remote: Option<RemoteStatus>,
    /// Commits on main that change governed paths without authorization:
    /// not in force.
    #[serde(default)]
    pub policy_refused: Vec<RefusedCommit>,
    /// `required` or `optional`.
    pub agent_auth: String,
    /// Group commit since the server started.
    #[serde(default)]
    pub batches: BatchCounts,
}

/// Batches of writes flushed, and the writers they carried (a batch is one
/// durable flush for every writer in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    pub flushed: u64,
    pub writers: u64,
}

/// The last sync, as `gov status` and the dashboard show it. Kept in
/// `.gov/sync-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub at: String,
    pub ok: bool,
    /// Why it failed (the remote unreachable, a push refused), redacted.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub pushed: Vec<String>,
    #[serde(default)]
    pub refused: Vec<String>,
    #[serde(default)]
    pub forge_errors: Vec<String>,
}

impl SyncRecord {
    /// Why it failed: the error, the refusals and the forge's failures,
    /// joined by `; `.
    pub fn problems(&self) -> String {
        let all: Vec<&str> = self
            .error
            .iter()
            .chain(&self.refused)
            .chain(&self.forge_errors)
            .map(String::as_str)
            .collect();
        all.join("; ")
    }
}

/// What waits to be pushed: what local refs have that the remote's (as
/// last fetched or pushed) lack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub main_commits: usize,
    pub audit_entries: usize,
    pub proposal_branches: Vec<String>,
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.main_commits == 0 && self.audit_entries == 0 && self.proposal_branches.is_empty()
    }
}

/// The remote as `/status`, `gov status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    pub name: String,
    pub url: String,
    pub last_sync: Option<SyncRecord>,
    pub waiting: Waiting,
}

/// A commit on main that is not in force (see docs/POLICIES.md, "What is
/// in force").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCommit {
    pub commit: String,
    /// e.g. "it changes `policies/` but it is not signed".
    pub reason: String,
    /// The first line of its message.
    pub summary: String,
}

/// `POST /dashboard/login-codes` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLink {
    pub url: String,
    pub expires_in_seconds: u64,
}

/// Every error reply but a refused run's, in FastAPI's shape:
/// `{"detail": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub detail: ErrorDetail,
}

impl ErrorReply {
    /// `{"detail": "<message>"}`.
    pub fn message(text: impl Into<String>) -> Self {
        ErrorReply {
            detail: ErrorDetail::Message(text.into()),
        }
    }

    /// The message a person reads: the text, a refusal's message, or the
    /// first malformed field's.
    pub fn text(&self) -> String {
        match &self.detail {
            ErrorDetail::Message(m) => m.clone(),
            ErrorDetail::Refusal(r) => r.message.clone(),
            ErrorDetail::Fields(f) => f
                .iter()
                .map(|e| format!("{}: {}", e.loc.join("."), e.msg))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// A refusal's code (`forbidden_by_policy`, `proposal_expired`, …).
    pub fn error(&self) -> Option<&str> {
        match &self.detail {
            ErrorDetail::Refusal(r) => Some(&r.error),
            _ => None,
        }
    }
}

/// What an error reply's `detail` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorDetail {
    /// Not found, unauthorized, a conflict, …
    Message(String),
    /// A refusal with a code: by policy, a tampered or expired proposal,
    /// the chain tampered with, the disk full.
    Refusal(Refusal),
    /// 422: the malformed fields.
    Fields(Vec<FieldError>),
}

/// A refusal with its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_flagged: Option<bool>,
    /// The policies behind a refusal by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<PolicyCitation>>,
    /// Why the chain is taken to be tampered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Refusal {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Refusal {
            error: error.into(),
            message: message.into(),
            action_type: None,
            audit_flagged: None,
            policies: None,
            reason: None,
        }
    }
}

/// One malformed field of a 422: where (`["body", "agent_id"]`), what is
/// wrong, and its kind (`missing`, `value_error`, `json_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The submission `v` reads as, else its error's path and its message
    /// without serde_json's " at line N column M".
    fn read(v: serde_json::Value) -> Result<Submission, (String, String)> {
        Submission::from_slice(v.to_string().as_bytes()).map_err(|e| {
            let message = e.inner().to_string();
            let message = message.split(" at line ").next().unwrap_or_default();
            (e.path().to_string(), message.to_string())
        })
    }

    /// A wrong value is named by its field, in what is proposed and beside
    /// it; the derived reader, through `flatten`, cannot name it.
    #[test]
    fn a_submission_error_names_its_field() {
        let good = serde_json::json!({"agent_id": "noop", "action_type": "a",
            "payload": {}, "expected_outcome": "o"});
        let sub = read(good.clone()).expect("reads");
        assert_eq!(sub.proposed.wave, 0);
        assert!(sub.proposed.reversible && sub.proposed.requires_approval);
        let mut wave = good.clone();
        wave["wave"] = "one".into();
        assert_eq!(
            read(wave.clone()).err().map(|e| e.0).as_deref(),
            Some("wave")
        );
        let flattened = serde_json::from_value::<Submission>(wave).expect_err("refused");
        assert!(!flattened.to_string().contains("wave"), "{flattened}");
        let mut at = good.clone();
        at["submitted_at"] = 1.into();
        assert_eq!(read(at).err().map(|e| e.0).as_deref(), Some("submitted_at"));
        let missing = serde_json::json!({"agent_id": "noop"});
        assert_eq!(
            read(missing).err().map(|e| e.1).as_deref(),
            Some("missing field `action_type`")
        );
        assert_eq!(
            read(serde_json::json!([])).err().map(|e| e.1).as_deref(),
            Some("invalid type: sequence, expected struct Submission")
        );
    }

    /// A submission is written as the original's flat object.
    #[test]
    fn a_submission_is_written_flat() {
        let sub = Submission {
            proposal_id: None,
            submitted_at: None,
            expires_at: None,
            proposed: Proposed::new("noop".into(), "a".into(), serde_json::Map::new()),
        };
        let v = serde_json::to_value(&sub).expect("serialises");
        assert_eq!(v["agent_id"], "noop");
        assert_eq!(v["requires_approval"], true);
        assert!(v.get("proposed").is_none(), "{v}");
    }
}
