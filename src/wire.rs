//! The HTTP API's request and response bodies, one type each, shared by the
//! server (which builds them), `client.rs` and its users (the CLI and the
//! runner, which read them) and the tests' stand-in servers. A change to the
//! API is a change here; docs/API.md describes the same shapes.
//!
//! Replies are read leniently (a newer server may add fields), so the test
//! `server::wire_types_are_what_the_server_sends` checks that each real
//! reply and its type agree field for field.

use serde::{Deserialize, Serialize};

use crate::domain::audit::Timestamp;
use crate::domain::proposal::{ProposalStatus, Verdict};
use crate::domain::request::PolicyCitation;
use crate::domain::run::ToolUse;

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
}

/// `POST /runs` → 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOpened {
    pub run_id: String,
    pub agent_id: String,
    pub agent_token: String,
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
    pub tokens: u64,
    #[serde(default)]
    pub dollars: Option<f64>,
    #[serde(default)]
    pub usage_missing: bool,
    /// The tool calls a claude agent's stream reported; the server fails the
    /// run if one of them has no decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_uses: Vec<ToolUse>,
}

/// `POST /agents/{id}/pause`, `/resume` → 200 (and `GET /status/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: String,
    /// `ok`, `paused`, …
    pub status: String,
    pub paused_reason: Option<String>,
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
    pub started_at: Timestamp,
    pub agents_paused: Vec<String>,
    pub known_agents: Vec<String>,
    pub agent_errors: std::collections::BTreeMap<String, String>,
    pub pending_proposals: u64,
    pub policy_version: Option<String>,
    pub policy_error: Option<String>,
    /// Commits on main that change governed paths without authorization:
    /// not in force.
    #[serde(default)]
    pub policy_refused: Vec<RefusedCommit>,
    /// The Git remote, when one is configured.
    #[serde(default)]
    pub remote: Option<RemoteStatus>,
    /// `required` or `optional`.
    pub agent_auth: String,
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

/// `POST /dashboard/login-codes` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLink {
    pub url: String,
    pub expires_in_seconds: u64,
}
