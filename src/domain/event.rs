//! What an audit entry records: one typed [`Event`] per event type.
//!
//! An entry's JSON keeps the shape it always had: an `event_type` string and
//! a `payload` object ([`Event::to_parts`], [`Event::from_parts`]). Each
//! event type is named once, in the [`events!`] table below; the payload
//! structs list their fields in the order entries have always written them.
//!
//! Agents post their own, free-form entries through `POST /audit`
//! (`tool_call`, `action_executed`, `agent_stop`, …): those are
//! [`Event::Other`], with a checked name and any JSON object as payload. An
//! entry of a known type whose payload this version cannot read (written by
//! another version) is kept as `Other` too: it reads, it changes no state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::audit::Timestamp;
use super::forge::MergeEvidence;
use super::pricing::TokenUsage;
use super::proposal::{Proposal, ProposalStatus};
use super::request::{Outcome, PolicyCitation};

/// Declares [`Event`]: `Variant(Payload) = "event_type", Kind;` per line.
/// `State` events change the projected state (the index's tables), so only
/// gov itself may write them; `Record` events only record.
macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal, $kind:ident; )*) => {
        /// One audit event: its type and its payload.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $( $(#[$doc])* $variant($payload), )*
            /// An event gov does not interpret (see the module docs).
            Other(OtherEvent),
        }

        impl Event {
            /// Every event type gov writes, with whether it changes state.
            pub const KNOWN: &'static [(&'static str, EventKind)] =
                &[ $( ($name, EventKind::$kind), )* ];

            /// The `event_type` string.
            pub fn name(&self) -> &str {
                match self {
                    $( Event::$variant(_) => $name, )*
                    Event::Other(o) => &o.name,
                }
            }

            fn serialize_payload<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Event::$variant(p) => p.serialize(s), )*
                    Event::Other(o) => o.payload.serialize(s),
                }
            }

            fn known(name: &str, payload: &Value) -> Option<Event> {
                match name {
                    $( $name => <$payload>::deserialize(payload).ok().map(Event::$variant), )*
                    _ => None,
                }
            }

            /// [`Event::known`] for a payload still in its JSON text.
            fn known_in_text(name: &str, payload: &str) -> Option<Event> {
                match name {
                    $( $name => serde_json::from_str::<$payload>(payload).ok().map(Event::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

/// An event's payload as it serialises ([`Event::payload`]).
#[derive(Debug, Clone, Copy)]
pub struct PayloadRef<'a>(&'a Event);

impl Serialize for PayloadRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_payload(s)
    }
}

/// Whether an event type changes the projected state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Changes the index's tables (proposals, pauses, ledger, tokens, runs).
    State,
    /// Only recorded.
    Record,
}

events! {
    ProposalSubmitted(ProposalSubmitted) = "proposal_submitted", State;
    ProposalDecided(ProposalDecided) = "proposal_decided", State;
    ProposalExpired(ProposalExpired) = "proposal_expired", State;
    ProposalForbidden(ProposalForbidden) = "proposal_forbidden", State;
    /// An approver asked to approve what the `approve` policies forbid.
    ApprovalForbidden(Empty) = "approval_forbidden", Record;
    AgentRequestRefused(AgentRequestRefused) = "agent_request_refused", Record;
    ToolDecision(ToolDecision) = "tool_decision", State;
    ToolApprovalUsed(ToolApprovalUsed) = "tool_approval_used", State;
    BudgetCharge(BudgetCharge) = "budget_charge", State;
    BudgetChargeRefused(BudgetChargeRefused) = "budget_charge_refused", State;
    BudgetPaused(BudgetPaused) = "budget_paused", State;
    WatchdogPause(WatchdogPause) = "watchdog_pause", State;
    AdminPauseAll(AdminPauseAll) = "admin_pause_all", State;
    AgentPaused(AgentPaused) = "agent_paused", State;
    AgentResumed(AgentResumed) = "agent_resumed", State;
    CredentialsIssued(CredentialsIssued) = "credentials_issued", State;
    CredentialsRedeemed(CredentialUse) = "credentials_redeemed", State;
    CredentialsReplayBlocked(CredentialUse) = "credentials_replay_blocked", State;
    CredentialsExpired(CredentialUse) = "credentials_expired", State;
    /// Redemptions of unknown tokens, counted: at most one entry a minute.
    CredentialsUnknown(UnknownRedemptions) = "credentials_unknown", Record;
    AgentTokenIssued(AgentTokenIssued) = "agent_token_issued", State;
    AgentTokenRevoked(AgentTokenRevoked) = "agent_token_revoked", State;
    AgentRunStarted(AgentRunStarted) = "agent_run_started", State;
    AgentRunComplete(RunEnded) = "agent_run_complete", State;
    AgentRunFailed(RunEnded) = "agent_run_failed", State;
    AgentRunSkipped(AgentRunSkipped) = "agent_run_skipped", State;
    AuditFlagSelfApproveAttempt(SelfApproveAttempt) = "audit_flag_self_approve_attempt", Record;
    AuditFlagProposalTampered(ProposalTampered) = "audit_flag_proposal_tampered", Record;
    AuditFlagMainDiverged(MainDiverged) = "audit_flag_main_diverged", Record;
    AuditFlagImpersonation(Impersonation) = "audit_flag_impersonation", Record;
    /// `gov audit recover`, signed by the operator's approver key.
    AuditRecovered(AuditRecovered) = "audit_recovered", Record;
    /// A proposal branch no entry recorded, set aside.
    ProposalOrphanSetAside(OrphanSetAside) = "proposal_orphan_set_aside", Record;
    /// A pending proposal's branch, removed by a rejection or expiry whose
    /// entry was never written, put back.
    ProposalBranchRestored(BranchRestored) = "proposal_branch_restored", Record;
    /// Local `main` moved back from forge merges a sync took without
    /// recording them (the remote still has them).
    MainRolledBack(MainRolledBack) = "main_rolled_back", Record;
    /// The index was changed outside gov while a process had it open: it
    /// was kept aside and rebuilt from the verified chain.
    IndexRebuilt(IndexRebuilt) = "index_rebuilt", Record;
    /// A signed webhook reported a merged pull request (who merged, and
    /// the commit the merge made).
    ForgeMergeReported(MergeEvidence) = "forge_merge_reported", Record;
    /// A reviewed change that is not a proposal, taken from the forge.
    ForgeMergeRecorded(ForgeChangeMerged) = "forge_merge_recorded", Record;
    PullRequestOpened(PullRequestOpened) = "pull_request_opened", Record;
    PullRequestClosed(PullRequestClosed) = "pull_request_closed", Record;
    /// A commit on main changes governed paths without authorization: it
    /// is not in force (recorded once per commit).
    PolicyChangeRefused(PolicyChangeRefused) = "policy_change_refused", Record;
}

/// The agent-posted event type that says an agent stopped.
pub const AGENT_STOP: &str = "agent_stop";

/// Event types that end a run, and with it the wait of every approved
/// proposal of the agent before them ([`Event::ends_run`]).
pub const RUN_ENDS: &[&str] = &[AGENT_STOP, "agent_run_complete", "agent_run_failed"];

/// Event types that end the wait of an approved proposal when they carry its
/// id: an agent's report that it acted (or stopped), or the use of a
/// person's one-time tool approval.
pub const ENDS_PROPOSAL_WAIT: &[&str] = &[
    "action_executed",
    "action_failed",
    AGENT_STOP,
    "tool_approval_used",
];

/// The longest event type accepted.
pub const MAX_NAME_LEN: usize = 100;

impl Event {
    /// The event of type `name` with `payload`: the typed variant when the
    /// type is known and the payload reads as it, [`Event::Other`] otherwise.
    pub fn from_parts(name: String, payload: Value) -> Event {
        Event::known(&name, &payload).unwrap_or(Event::Other(OtherEvent { name, payload }))
    }

    /// [`Event::from_parts`] for a payload still in its JSON text (valid
    /// JSON): read once, straight into the typed variant when the type is
    /// known and the payload reads as it. Differs from reading it into a
    /// value first only for an object that repeats a key, which gov never
    /// writes: a value keeps the last, a typed payload refuses it (and the
    /// event is then [`Event::Other`]).
    pub fn from_parts_in_text(name: String, payload: &str) -> Result<Event, serde_json::Error> {
        if let Some(known) = Event::known_in_text(&name, payload) {
            return Ok(known);
        }
        let payload = serde_json::from_str(payload)?;
        Ok(Event::Other(OtherEvent { name, payload }))
    }

    /// The `event_type` string and the payload object.
    pub fn to_parts(&self) -> (&str, Value) {
        // Serialising plain data to a value cannot fail.
        let payload = serde_json::to_value(self.payload()).unwrap_or_default();
        (self.name(), payload)
    }

    /// The payload, to be serialised as it is written: the same JSON as
    /// [`Event::to_parts`]'s value (object keys keep their order), without
    /// building that value first.
    pub fn payload(&self) -> PayloadRef<'_> {
        PayloadRef(self)
    }

    /// The kind of a known event type, `None` for a type gov does not write.
    pub fn kind_of(name: &str) -> Option<EventKind> {
        Event::KNOWN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
    }

    /// Whether this event changes the projected state. An `Other` event
    /// never does, even one that carries a known name.
    pub fn changes_state(&self) -> bool {
        !matches!(self, Event::Other(_)) && Event::kind_of(self.name()) == Some(EventKind::State)
    }

    /// Whether this event may be posted to `/audit` (by an agent, the
    /// runner or the operator): only a type gov does not write itself
    /// (even with a payload that does not read as one), and no
    /// `audit_flag_*`. gov reads some of its own records back as facts (a
    /// forge merge recorded as an approval brings a change to `main` into
    /// force; a refusal recorded is not recorded again), so a posted one
    /// would be a forgery.
    pub fn agent_may_post(&self) -> bool {
        let name = self.name();
        Event::kind_of(name).is_none() && !name.starts_with("audit_flag_")
    }

    /// The types of gov's own records that `/audit` accepted from anyone
    /// until 2026-12-04 (every `Record` type but `audit_flag_*`; see
    /// [`Event::agent_may_post`]). One with an agent's actor was posted
    /// by that agent: it counts for nothing where gov reads records back.
    pub fn once_postable_records() -> impl Iterator<Item = &'static str> {
        Event::KNOWN
            .iter()
            .filter(|(n, k)| *k == EventKind::Record && !n.starts_with("audit_flag_"))
            .map(|(n, _)| *n)
    }

    /// Whether the event ends the agent's run, and with it the wait of
    /// every approved proposal before it (the watchdog's view).
    pub fn ends_run(&self) -> bool {
        RUN_ENDS.contains(&self.name())
    }

    /// An agent's (or a tool's) own event of a type gov does not write;
    /// the name is checked.
    pub fn other(name: impl Into<String>, payload: Value) -> Result<Event, EventNameError> {
        let name = name.into();
        check_name(&name)?;
        if Event::kind_of(&name).is_some() {
            return Err(EventNameError::Known(name));
        }
        Ok(Event::Other(OtherEvent { name, payload }))
    }

    /// An event as an agent posts it to `/audit`: the name is checked, the
    /// payload read as the type's when the type is known.
    pub fn posted(name: String, payload: Value) -> Result<Event, EventNameError> {
        check_name(&name)?;
        Ok(Event::from_parts(name, payload))
    }

    /// The proposal this event carries, if it carries one.
    pub fn proposal(&self) -> Option<&Proposal> {
        match self {
            Event::ProposalSubmitted(e) => Some(&e.proposal),
            Event::ProposalDecided(e) => Some(&e.proposal),
            Event::ProposalExpired(e) => Some(&e.proposal),
            _ => None,
        }
    }
}

/// Why a name cannot be an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventNameError {
    #[error("event_type must be non-empty")]
    Empty,
    #[error("event_type must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("event_type `{0}` may only contain letters, digits, `_`, `-`, `.` and `:`")]
    BadCharacter(String),
    #[error("event_type `{0}` is written by gov itself")]
    Known(String),
}

fn check_name(name: &str) -> Result<(), EventNameError> {
    if name.trim().is_empty() {
        return Err(EventNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(EventNameError::TooLong);
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if !name.chars().all(ok) {
        return Err(EventNameError::BadCharacter(name.into()));
    }
    Ok(())
}

/// An event gov does not interpret: its name and payload as written.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherEvent {
    name: String,
    payload: Value,
}

impl OtherEvent {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn payload(&self) -> &Value {
        &self.payload
    }
}

/// A payload with no fields (`{}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalSubmitted {
    pub action_type: String,
    pub status: ProposalStatus,
    pub wave: i64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub proposal: Proposal,
}

impl ProposalSubmitted {
    pub fn of(p: &Proposal) -> Self {
        ProposalSubmitted {
            action_type: p.proposed.action_type.clone(),
            status: p.status,
            wave: p.proposed.wave,
            branch: p.branch.clone(),
            commit: p.commit.clone(),
            proposal: p.clone(),
        }
    }
}

/// How a decision reached gov when not through gov itself.
pub const VIA_FORGE: &str = "forge";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalDecided {
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(rename = "final")]
    pub final_: bool,
    pub note: Option<String>,
    pub status: ProposalStatus,
    pub decided_by: String,
    pub merge_commit: Option<String>,
    pub branch: Option<String>,
    pub proposal: Proposal,
    /// `forge` for a pull request merged on the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_by: Option<String>,
    /// For a forge merge: `merge` or `squash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The signed webhook's word on who merged (always for a squash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<MergeEvidence>>,
    /// Why the entry was written after its merge (the approval's own
    /// append failed): it is what the approver-signed merge proves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalExpired {
    pub expires_at: Timestamp,
    pub branch: Option<String>,
    pub proposal: Proposal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChangeRefused {
    /// The refused commit on main.
    pub commit: String,
    /// What it changes and why that does not count.
    pub reason: String,
    /// The first line of its message.
    pub summary: String,
    /// The commit whose governed files stay in force.
    pub in_force: String,
    /// The main branch.
    pub branch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalForbidden {
    pub action_type: String,
    pub wave: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequestRefused {
    pub request: String,
    pub reason: String,
    pub paused_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDecision {
    pub tool_name: String,
    pub run_id: Option<String>,
    /// Claude Code's id for the call: how a run's `tool_use` blocks are
    /// matched with their decisions. Absent in entries before it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// `allow`, `deny` or `needs_person`.
    pub decision: String,
    pub reason: String,
    pub payload_hash: String,
    /// Claude Code's `agent_id`: the subagent that made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_id: Option<String>,
    /// Claude Code's `agent_type` of that subagent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// Claude Code's permission mode for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// A shell line's simple commands, as words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell_commands: Vec<String>,
    /// Why a shell line could not be reduced (`command_substitution`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_reducible: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolApprovalUsed {
    pub tool_name: String,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCharge {
    pub tokens: i64,
    pub dollars: f64,
    pub micros: i64,
    pub tool: String,
    pub period_day: String,
    pub period_month: String,
    /// The run the spend belongs to (the runner's charges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The model whose tokens these are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tokens by kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// Usage a stream showed before its final report.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetChargeRefused {
    pub tokens: i64,
    pub micros: i64,
    pub dollars: f64,
    pub tool: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetPaused {
    pub reason: String,
    pub tokens_consumed: i64,
    pub dollars_consumed: f64,
    pub tokens_cap: u64,
    pub dollars_cap: f64,
    /// Written while charges over a cap were refused (before gov recorded
    /// every charge): the charge that was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_dollars: Option<f64>,
    pub tokens_over: bool,
    pub dollars_over: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogPause {
    pub reason: String,
    pub policies: Vec<PolicyCitation>,
    pub outcome: Outcome,
    pub observed: WatchdogObserved,
}

/// The figures the watchdog's policies were asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogObserved {
    pub tokens_consumed: u64,
    pub tokens_cap: u64,
    pub micros_consumed: i64,
    pub micros_cap: i64,
    pub open_approvals: u64,
    pub expired_pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPauseAll {
    pub reason: String,
    pub paused_agents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPaused {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResumed {
    pub was_paused_for: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsIssued {
    pub scope: String,
    pub expires_at: Timestamp,
    pub token_hash: String,
}

/// Redemptions of tokens nobody issued since `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownRedemptions {
    pub count: u64,
    pub since: Timestamp,
    pub window_seconds: i64,
}

/// What `gov audit recover` did and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecovered {
    pub reason: String,
    pub resumed_from: ChainPoint,
    pub previous_audit_tip: Option<String>,
    pub set_aside: Vec<SetAsideHead>,
    /// Heads whose commit is gone from the repository.
    pub missing: Vec<MissingHead>,
    pub index_moved_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAsideHead {
    pub what: String,
    pub commit: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingHead {
    pub what: String,
    pub seq: u64,
    pub commit: String,
}

/// A proposal branch set aside because no entry recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanSetAside {
    pub branch: String,
    pub commit: String,
    pub kept_as: String,
    pub reason: String,
}

/// Local `main` moved back: the commits are kept under `kept_as`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MainRolledBack {
    pub from: String,
    pub to: String,
    pub kept_as: String,
    pub reason: String,
}

/// An index changed outside gov, kept aside and rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRebuilt {
    /// What differed from a fresh projection of the chain.
    pub reason: String,
    /// Where the changed index was copied.
    pub kept_as: String,
}

/// A pending proposal's branch put back at its submitted commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchRestored {
    pub branch: String,
    pub commit: String,
    pub reason: String,
}

/// A one-shot credential presented: redeemed, replayed or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialUse {
    pub scope: String,
    pub token_hash: String,
    /// For a refused redemption (replayed, expired): the refused attempts
    /// with this token since its previous such entry, counted and not
    /// written one by one (at most one entry a minute per token).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub repeats: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTokenIssued {
    pub token_hash: String,
    pub run_id: Option<String>,
    /// When an operator-minted token stops working (run tokens end with
    /// their run instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTokenRevoked {
    pub token_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRunStarted {
    pub run_id: String,
    pub token_hash: String,
    /// The project folder of a `gov guard` session (absolute): its tool
    /// calls are judged against it instead of `agents/<id>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// What the run reserved at admission (absent before reservations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<RunReservation>,
}

/// A run's reservation: what it holds, and until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReservation {
    pub tokens: i64,
    pub micros: i64,
    pub dollars: f64,
    pub hold_until: i64,
}

/// What a run's end settled: its reservation and what was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRelease {
    pub tokens: i64,
    pub micros: i64,
    pub released_tokens: i64,
    pub released_micros: i64,
}

/// Claude Code's own cost of a run against what the ledger holds for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub claude_total_cost_usd: f64,
    pub claude_micros: i64,
    pub ledger_micros: i64,
    /// Claude Code's less the ledger's.
    pub difference_micros: i64,
}

/// A run's end, complete or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    pub run_id: String,
    pub reason: Option<String>,
    /// What the run spent in all.
    pub tokens: i64,
    pub dollars: f64,
    pub usage_missing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<RunRelease>,
    /// The spend is only what the stream showed (no final usage report).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Reconciliation>,
    /// The tool calls the stream reported that had no decision of the run
    /// (which failed it: `tool_without_gov_decision`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecided_tool_uses: Vec<super::run::ToolUse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRunSkipped {
    pub reason: String,
    pub policies: Vec<PolicyCitation>,
    /// Why, in words (`budget_insufficient`: what is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfApproveAttempt {
    pub action_type: String,
    pub proposal_id: Option<String>,
    pub reason: String,
}

/// A proposal's branch or merge does not match what was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalTampered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_by: Option<String>,
    pub problem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<MergeEvidence>>,
}

/// A merged pull request that is not a proposal (a change to policies,
/// agents, settings), taken onto `main` on the forge's signed evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeChangeMerged {
    /// Always `forge`.
    pub via: String,
    pub merge_commit: String,
    pub merged_by: String,
    /// `merge` or `squash`.
    pub kind: String,
    pub paths: Vec<String>,
    pub evidence: MergeEvidence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestOpened {
    pub number: u64,
    pub url: Option<String>,
    pub branch: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestClosed {
    pub number: u64,
    pub status: ProposalStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MainDiverged {
    pub remote: String,
    pub local_main: String,
    pub remote_main: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impersonation {
    pub claimed_agent_id: String,
    pub request: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, NewEntry};

    /// The event types that changed state before events were typed, spelled
    /// as the chains on disk spell them. A variant renamed or misspelled in
    /// the table above fails here.
    const STATE_TYPES_ON_DISK: &[&str] = &[
        "proposal_submitted",
        "proposal_decided",
        "proposal_expired",
        "proposal_forbidden",
        "tool_approval_used",
        "tool_decision",
        "budget_charge",
        "budget_charge_refused",
        "budget_paused",
        "watchdog_pause",
        "admin_pause_all",
        "agent_paused",
        "agent_resumed",
        "credentials_issued",
        "credentials_redeemed",
        "credentials_replay_blocked",
        "credentials_expired",
        "agent_token_issued",
        "agent_token_revoked",
        "agent_run_started",
        "agent_run_complete",
        "agent_run_failed",
        "agent_run_skipped",
    ];

    #[test]
    fn state_types_are_spelled_as_on_disk() {
        let mut state: Vec<&str> = Event::KNOWN
            .iter()
            .filter(|(_, k)| *k == EventKind::State)
            .map(|(n, _)| *n)
            .collect();
        state.sort_unstable();
        let mut on_disk = STATE_TYPES_ON_DISK.to_vec();
        on_disk.sort_unstable();
        assert_eq!(state, on_disk);
        for name in ["agent_run_complete", "agent_run_failed"] {
            assert!(RUN_ENDS.contains(&name));
            assert_eq!(Event::kind_of(name), Some(EventKind::State));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = Event::KNOWN.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::KNOWN.len());
    }

    fn entry_json(event: Event) -> String {
        serde_json::to_string(&NewEntry::new(Actor::server(), event).agent("noop"))
            .expect("serialises")
    }

    fn read(json: &str) -> NewEntry {
        serde_json::from_str(json).expect("reads")
    }

    #[test]
    fn a_typed_event_keeps_the_json_it_always_had() {
        let e = Event::AgentPaused(AgentPaused {
            reason: "manual".into(),
        });
        let json = entry_json(e.clone());
        assert_eq!(
            json,
            r#"{"actor":"server","event_type":"agent_paused","agent_id":"noop","payload":{"reason":"manual"}}"#
        );
        assert_eq!(read(&json).event, e);
        let charge = Event::BudgetCharge(BudgetCharge {
            tokens: 10,
            dollars: 0.25,
            micros: 250_000,
            tool: "llm".into(),
            period_day: "2026-11-25".into(),
            period_month: "2026-11".into(),
            run_id: None,
            model: None,
            usage: None,
            estimate: false,
        });
        assert_eq!(
            charge.to_parts().1.to_string(),
            r#"{"tokens":10,"dollars":0.25,"micros":250000,"tool":"llm","period_day":"2026-11-25","period_month":"2026-11"}"#
        );
        let ended = Event::AgentTokenIssued(AgentTokenIssued {
            token_hash: "h".into(),
            run_id: None,
            expires_at: None,
        });
        assert_eq!(
            ended.to_parts().1.to_string(),
            r#"{"token_hash":"h","run_id":null}"#
        );
    }

    #[test]
    fn a_payload_serialises_as_its_json_value_does() {
        // Entries and the index write the payload straight from the event;
        // it must be the very JSON its value gives (the order of keys, a
        // flattened struct, floats, nested objects, an agent's own event).
        let mut payload = serde_json::Map::new();
        payload.insert(
            "z".into(),
            serde_json::json!({"b": [1, 2.5, null], "a": "x"}),
        );
        payload.insert("a".into(), serde_json::json!(-3));
        let proposal = Proposal::pending(
            "p-1".into(),
            crate::domain::proposal::Proposed {
                expected_cost_dollars: 0.1,
                links: vec!["https://example.org/a".into()],
                ..crate::domain::proposal::Proposed::new(
                    "noop".into(),
                    "publish_content".into(),
                    payload,
                )
            },
            Timestamp::parse("2026-11-25T10:00:00Z").expect("time"),
            Timestamp::parse("2026-11-26T10:00:00Z").expect("time"),
        );
        let charge = Event::BudgetCharge(BudgetCharge {
            tokens: 10,
            dollars: 1.0 / 3.0,
            micros: 333_333,
            tool: "llm".into(),
            period_day: "2026-11-25".into(),
            period_month: "2026-11".into(),
            run_id: Some("r-1".into()),
            model: Some("m".into()),
            usage: Some(TokenUsage {
                input_tokens: 7,
                output_tokens: 3,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 1,
            }),
            estimate: true,
        });
        let events = [
            Event::ProposalSubmitted(ProposalSubmitted::of(&proposal)),
            charge,
            Event::other(
                "tool_call",
                serde_json::json!({"b": 1, "a": [true, {"y": 1, "x": 2}]}),
            )
            .expect("valid name"),
        ];
        for e in events {
            let direct = serde_json::to_string(&e.payload()).expect("serialises");
            assert_eq!(direct, e.to_parts().1.to_string(), "{}", e.name());
            // Read back from its text as from its value: the event again.
            let name = e.name().to_string();
            let from_text = Event::from_parts_in_text(name.clone(), &direct).expect("reads");
            assert_eq!(from_text, e, "{name}");
            assert_eq!(Event::from_parts(name, e.to_parts().1), e);
        }
    }

    #[test]
    fn a_payload_reads_from_its_text_as_from_its_value() {
        let cases = [
            ("agent_resumed", r#"{"was_paused_for":"budget"}"#),
            // A known type whose payload does not read as it.
            ("agent_resumed", r#"{"was_paused_for":3}"#),
            ("agent_resumed", "null"),
            ("agent_resumed", "{}"),
            ("budget_charge", r#"{"tokens":1.5}"#),
            ("tool_call", r#"{"b":1,"a":[true,{"y":1e400}]}"#),
            ("note", "null"),
        ];
        for (name, text) in cases {
            let from_text = Event::from_parts_in_text(name.into(), text);
            let from_value = serde_json::from_str(text).map(|v| Event::from_parts(name.into(), v));
            assert_eq!(
                from_text.map_err(|e| e.to_string()),
                from_value.map_err(|e| e.to_string()),
                "{name} {text}"
            );
        }
        // The one difference: a repeated key. A value keeps the last; a
        // typed payload refuses it, and the event is kept as it was written.
        let repeated = r#"{"was_paused_for":"a","was_paused_for":"b"}"#;
        let from_text = Event::from_parts_in_text("agent_resumed".into(), repeated);
        assert!(matches!(from_text, Ok(Event::Other(_))), "{from_text:?}");
    }

    #[test]
    fn unknown_or_unreadable_types_read_as_other_and_change_nothing() {
        let misspelled =
            read(r#"{"actor":"server","event_type":"agent_pasued","payload":{"reason":"x"}}"#);
        assert!(matches!(misspelled.event, Event::Other(_)));
        assert_eq!(misspelled.event_type(), "agent_pasued");
        assert!(!misspelled.event.changes_state());
        let unreadable =
            read(r#"{"actor":"server","event_type":"agent_paused","payload":{"why":"x"}}"#);
        assert!(matches!(unreadable.event, Event::Other(_)));
        assert!(!unreadable.event.changes_state());
        // Nor may an agent post it: the name is a state type's.
        assert!(!unreadable.event.agent_may_post());
        // Both write back what they read.
        assert_eq!(
            serde_json::to_string(&unreadable).expect("serialises"),
            r#"{"actor":"server","event_type":"agent_paused","payload":{"why":"x"}}"#
        );
    }

    #[test]
    fn agents_post_their_own_events_but_none_gov_writes() {
        let ok = Event::posted("action_executed".into(), serde_json::json!({"r": 1}))
            .expect("valid name");
        assert!(ok.agent_may_post());
        assert!(!ok.ends_run());
        let stop = Event::posted(AGENT_STOP.into(), serde_json::json!({})).expect("valid");
        assert!(stop.ends_run());
        let state = Event::posted("agent_resumed".into(), serde_json::json!({})).expect("valid");
        assert!(!state.agent_may_post());
        let flag =
            Event::posted("audit_flag_made_up".into(), serde_json::json!({})).expect("valid");
        assert!(!flag.agent_may_post());
        // Nor a record gov writes and reads back, such as a forge approval.
        for (name, kind) in Event::KNOWN {
            let posted = Event::posted(name.to_string(), serde_json::json!({})).expect("valid");
            assert!(!posted.agent_may_post(), "{name} ({kind:?})");
        }
        assert_eq!(
            Event::posted(" ".into(), serde_json::json!({})),
            Err(EventNameError::Empty)
        );
        assert_eq!(
            Event::posted("a".repeat(101), serde_json::json!({})),
            Err(EventNameError::TooLong)
        );
        assert_eq!(
            Event::posted("two words".into(), serde_json::json!({})),
            Err(EventNameError::BadCharacter("two words".into()))
        );
        assert_eq!(
            Event::other("agent_paused", serde_json::json!({})),
            Err(EventNameError::Known("agent_paused".into()))
        );
    }
}
