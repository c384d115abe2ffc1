//! The PreToolUse hook: Claude Code runs `gov hook pre-tool-use` before every
//! tool call, with the call as JSON on stdin. The hook asks the server's
//! policy set (`POST /tools/evaluate`) and answers allow or deny on stdout.
//!
//! Invariant: it never allows on error. Whatever fails (stdin, environment,
//! network, server, answer) becomes a deny whose reason says what failed, and
//! the process still exits 0 so that Claude Code reads the JSON: with Claude
//! Code a non-zero exit other than 2 is a *non-blocking* error that lets the
//! tool run.
//!
//! A call that needs a person can wait for one: with a wait configured
//! (`GOV_APPROVAL_WAIT_SECONDS`), the hook polls the proposal it filed and
//! answers allow once a person approves (asking the server once more, which
//! spends the one-time approval and audits it), deny when a person rejects,
//! and deny when the wait runs out. The whole hook never takes longer than
//! [`hook_deadline`]; the timeout gov writes into Claude Code's hook settings
//! is derived from it and always longer, so Claude Code never times the hook
//! out.
//!
//! The translation (stdin → request body, answer → hook output) is pure; the
//! I/O lives in [`run`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::session_meter::{MeterError, MeterSession, METER_ALLOWANCE};
use crate::client::{Client, ClientError, Timeouts, Token};
use crate::domain::proposal::ProposalStatus;
use crate::domain::request::PolicyCitation;
use crate::wire::{ProposalView, ToolCall, ToolDecision, ToolVerdict};

/// The part of Claude Code's hook input the hook uses.
#[derive(Debug, Clone, Deserialize)]
pub struct HookInput {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// The session's JSONL transcript: what a `gov guard` session's usage
    /// is read from.
    #[serde(default)]
    pub transcript_path: Option<String>,
    #[serde(default)]
    pub hook_event_name: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub tool_input: serde_json::Value,
    /// Claude Code's id for the call, as in its stream's `tool_use` block.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// Set when a subagent makes the call.
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub agent_type: Option<String>,
    #[serde(default)]
    pub permission_mode: Option<String>,
}

/// What the runner put in the environment of the agent, read by the hook.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub url: String,
    pub agent_id: String,
    pub run_id: String,
    pub agent_token: Token,
    /// How long a call that needs a person waits for one (0: deny at once).
    pub wait: Duration,
    /// The agent's `PATH`, on which shell programs are resolved.
    pub path_var: Option<String>,
    /// A `gov guard` session meters itself from its transcript.
    pub meter: Option<MeterSession>,
}

/// What the hook prints: Claude Code's PreToolUse output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookOutput {
    #[serde(rename = "hookSpecificOutput")]
    pub hook_specific_output: HookSpecificOutput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookSpecificOutput {
    #[serde(rename = "hookEventName")]
    pub hook_event_name: String,
    #[serde(rename = "permissionDecision")]
    pub permission_decision: String,
    #[serde(rename = "permissionDecisionReason")]
    pub permission_decision_reason: String,
}

impl HookOutput {
    pub fn allow(reason: impl Into<String>) -> Self {
        Self::new("allow", reason.into())
    }
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::new("deny", reason.into())
    }
    fn new(decision: &str, reason: String) -> Self {
        HookOutput {
            hook_specific_output: HookSpecificOutput {
                hook_event_name: "PreToolUse".into(),
                permission_decision: decision.into(),
                permission_decision_reason: reason,
            },
        }
    }
    pub fn is_allow(&self) -> bool {
        self.hook_specific_output.permission_decision == "allow"
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing plain strings cannot fail; stay closed if it does.
            r#"{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny","permissionDecisionReason":"gov hook: cannot write its answer"}}"#.into()
        })
    }
}

/// Why the hook could not get a decision. Each becomes a deny.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the hook input is not valid JSON: {0}")]
    BadInput(String),
    #[error("the hook input's `tool_input` is not a JSON object")]
    ToolInputNotObject,
    #[error("unexpected hook event `{0}` (expected `PreToolUse`)")]
    WrongEvent(String),
    #[error("`{0}` is not set: this session was not started by `gov run` or `gov guard`")]
    MissingEnv(&'static str),
    #[error("`{0}` is not a number of seconds")]
    BadWait(String),
    #[error("cannot read the session file `{path}`: {message}")]
    Session { path: String, message: String },
    #[error("the policy check failed: {0}")]
    Server(#[from] ClientError),
    #[error("the session's usage could not be metered: {0}")]
    Meter(#[from] MeterError),
}

/// The variable that names a `gov guard` session file.
pub const SESSION_FILE_VAR: &str = "GOV_SESSION_FILE";
/// The variable with the approval wait in seconds.
pub const WAIT_VAR: &str = "GOV_APPROVAL_WAIT_SECONDS";

/// A `gov guard` session file: what `gov run` puts in the environment,
/// kept in a 0600 file of the governance repository instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionFile {
    pub url: String,
    pub agent_id: String,
    pub run_id: String,
    pub agent_token: String,
    #[serde(default)]
    pub approval_wait_seconds: u64,
    /// When the run started (RFC 3339): transcript entries written before
    /// it (a resumed session's earlier turns) are not charged to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// Reads the runner's variables through `get` (the process environment in
/// production, a map in tests). With `GOV_SESSION_FILE` set (a `gov guard`
/// session), they come from that file instead.
pub fn hook_env(get: impl Fn(&str) -> Option<String>) -> Result<HookEnv, HookError> {
    let var = |name: &str| {
        get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let path_var = get("PATH").filter(|p| !p.is_empty());
    if let Some(path) = var(SESSION_FILE_VAR) {
        let bad = |message: String| HookError::Session {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let f: SessionFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let since = match f.started_at.as_deref() {
            None => None,
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| bad(format!("`started_at`: {e}")))?
                    .with_timezone(&chrono::Utc),
            ),
        };
        let meter = MeterSession {
            url: f.url.clone(),
            run_id: f.run_id.clone(),
            token: Token::new(f.agent_token.clone()),
            session_file: std::path::PathBuf::from(&path),
            since,
        };
        return Ok(HookEnv {
            url: f.url,
            agent_id: f.agent_id,
            run_id: f.run_id,
            agent_token: Token::new(f.agent_token),
            wait: Duration::from_secs(f.approval_wait_seconds.min(MAX_WAIT_SECONDS)),
            path_var,
            meter: Some(meter),
        });
    }
    let need = |name: &'static str| var(name).ok_or(HookError::MissingEnv(name));
    let wait = match var(WAIT_VAR) {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| HookError::BadWait(v))?,
    };
    Ok(HookEnv {
        url: need("GOV_URL")?,
        agent_id: need("GOV_AGENT_ID")?,
        run_id: need("GOV_RUN_ID")?,
        agent_token: Token::new(need("GOV_AGENT_TOKEN")?),
        wait: Duration::from_secs(wait.min(MAX_WAIT_SECONDS)),
        path_var,
        meter: None,
    })
}

/// The longest wait for a person gov accepts (a day).
pub const MAX_WAIT_SECONDS: u64 = crate::config::MAX_APPROVAL_WAIT_SECONDS;

/// Between two looks at a proposal.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The most one look at a proposal may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest the hook runs with this wait for a person: without one,
/// [`HOOK_DEADLINE`] (its one request); with one, the first request, the
/// wait, the last look at the proposal and the request that spends the
/// approval, each bounded. Past it, the process answers deny and exits
/// whatever it is doing. The timeout gov writes into Claude Code's settings
/// is derived from it ([`super::claude::hook_timeout_seconds`]) and longer.
pub fn hook_deadline(wait: Duration) -> Duration {
    if wait.is_zero() {
        HOOK_DEADLINE
    } else {
        wait + HOOK_DEADLINE * 2 + POLL_TIMEOUT
    }
}

/// The deadline of a `gov guard` session's hook: it meters the session
/// ([`super::session_meter`]) before it asks, which may take up to
/// [`METER_ALLOWANCE`] more.
pub fn guard_hook_deadline(wait: Duration) -> Duration {
    hook_deadline(wait) + METER_ALLOWANCE
}

/// The deadline of a hook process whose environment is read through `get`
/// (an unreadable environment fails at once, so the shortest applies).
pub fn deadline_from_env(get: impl Fn(&str) -> Option<String>) -> Duration {
    match hook_env(get) {
        Ok(HookEnv {
            wait,
            meter: Some(_),
            ..
        }) => guard_hook_deadline(wait),
        Ok(env) => hook_deadline(env.wait),
        Err(_) => hook_deadline(Duration::ZERO),
    }
}

/// stdin JSON → the hook input.
pub fn parse_input(stdin: &str) -> Result<HookInput, HookError> {
    serde_json::from_str(stdin).map_err(|e| HookError::BadInput(e.to_string()))
}

/// stdin JSON → the body of `POST /tools/evaluate`.
pub fn evaluate_request(stdin: &str, env: &HookEnv) -> Result<ToolCall, HookError> {
    request_from(parse_input(stdin)?, env)
}

/// The hook input → the body of `POST /tools/evaluate`.
pub fn request_from(input: HookInput, env: &HookEnv) -> Result<ToolCall, HookError> {
    match input.hook_event_name.as_deref() {
        None | Some("PreToolUse") => {}
        Some(other) => return Err(HookError::WrongEvent(other.to_string())),
    }
    let tool_input = match input.tool_input {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(o) => o,
        _ => return Err(HookError::ToolInputNotObject),
    };
    Ok(ToolCall {
        agent_id: env.agent_id.clone(),
        run_id: Some(env.run_id.clone()),
        tool_name: input.tool_name,
        tool_input,
        cwd: input.cwd,
        tool_use_id: input.tool_use_id,
        subagent_id: input.agent_id,
        agent_type: input.agent_type,
        permission_mode: input.permission_mode,
        path_var: env.path_var.clone(),
    })
}

fn policy_list(policies: &[PolicyCitation]) -> String {
    if policies.is_empty() {
        return String::new();
    }
    let ids: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
    format!(" (policies: {})", ids.join(", "))
}

/// The server's answer → what Claude Code is told.
pub fn hook_output(tool_name: &str, resp: &ToolVerdict) -> HookOutput {
    let why = if resp.reason.trim().is_empty() {
        String::from("no reason given")
    } else {
        resp.reason.trim().to_string()
    };
    let policies = policy_list(&resp.policies);
    match resp.decision {
        ToolDecision::Allow => HookOutput::allow(format!("gov: allowed: {why}{policies}")),
        ToolDecision::Deny => HookOutput::deny(format!("gov: denied `{tool_name}`: {why}{policies}")),
        ToolDecision::NeedsPerson => match resp.proposal_id.as_deref() {
            Some(id) => HookOutput::deny(format!(
                "gov: `{tool_name}` needs a person's approval: {why}{policies}; proposal `{id}` was filed for this exact call. \
                 Wait until it is approved (GET /proposals/{id}), then retry the identical call (same tool, same input); do not try another way around it"
            )),
            None => HookOutput::deny(format!(
                "gov: `{tool_name}` needs a person's approval: {why}{policies}; no proposal was filed, so the call is denied"
            )),
        },
    }
}

/// A failure → a deny that says what failed.
pub fn failure_output(err: &HookError) -> HookOutput {
    HookOutput::deny(format!(
        "gov: tool call denied because the policy check could not be completed: {}",
        crate::domain::errors::error_chain(err)
    ))
}

/// How long the hook may take, from start to answer. The timeout gov writes
/// into Claude Code's hook settings is derived from it and always longer
/// ([`super::claude::hook_timeout_seconds`]), so Claude Code never times the
/// hook out (which it would treat as a failure).
pub const HOOK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// The timeouts of the hook's one request: within [`HOOK_DEADLINE`].
pub fn hook_timeouts() -> Timeouts {
    Timeouts {
        connect: std::time::Duration::from_secs(2),
        total: HOOK_DEADLINE,
    }
}

/// Reads the environment through `get`, asks the server, and returns the
/// answer for Claude Code. Never fails: errors are denies.
pub fn run(stdin: &str, get: impl Fn(&str) -> Option<String>) -> HookOutput {
    let started = Instant::now();
    let result = hook_env(get).and_then(|env| {
        let input = parse_input(stdin)?;
        let transcript = input.transcript_path.clone();
        let req = request_from(input, &env)?;
        if let Some(meter) = &env.meter {
            // A cap crossed by the session's last answers bites now.
            if let Some(why) = meter.meter(transcript.as_deref())?.stop {
                return Ok(HookOutput::deny(format!(
                    "gov: denied `{}`: this session has spent its budget ({why}); the operator can raise the caps or resume the agent",
                    req.tool_name
                )));
            }
        }
        let client = Client::new(&env.url, env.agent_token.clone(), hook_timeouts());
        let resp: ToolVerdict = client.post_json("/tools/evaluate", &req)?;
        match (&resp.decision, &resp.proposal_id) {
            (ToolDecision::NeedsPerson, Some(pid)) if !env.wait.is_zero() => {
                wait_for_person(&env, &client, &req, pid, started)
            }
            _ => Ok(hook_output(&req.tool_name, &resp)),
        }
    });
    result.unwrap_or_else(|e| failure_output(&e))
}

/// The metering hook of a `gov guard` session (Stop, SessionEnd): reads the
/// transcript the hook input names and reports the usage.
pub fn meter(stdin: &str, get: impl Fn(&str) -> Option<String>) -> Result<(), HookError> {
    let env = hook_env(get)?;
    let Some(meter) = &env.meter else {
        return Err(HookError::MissingEnv(SESSION_FILE_VAR));
    };
    #[derive(Deserialize)]
    struct AnyHookInput {
        #[serde(default)]
        transcript_path: Option<String>,
    }
    let input: AnyHookInput =
        serde_json::from_str(stdin).map_err(|e| HookError::BadInput(e.to_string()))?;
    meter.meter(input.transcript_path.as_deref())?;
    Ok(())
}

/// Polls proposal `pid` until a person decides or the wait runs out.
fn wait_for_person(
    env: &HookEnv,
    client: &Client,
    req: &ToolCall,
    pid: &str,
    started: Instant,
) -> Result<HookOutput, HookError> {
    let until = started + env.wait;
    let tool = &req.tool_name;
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(HookOutput::deny(format!(
                "gov: `{tool}` needs a person's approval and none came within {} s (proposal `{pid}`); the call is denied",
                env.wait.as_secs()
            )));
        }
        std::thread::sleep(POLL_INTERVAL.min(until - now));
        let timeouts = Timeouts {
            connect: POLL_TIMEOUT.min(Duration::from_secs(2)),
            total: POLL_TIMEOUT,
        };
        let poll = Client::new(&env.url, env.agent_token.clone(), timeouts);
        let state: ProposalView = match poll.get_json(&format!("/proposals/{pid}")) {
            Ok(s) => s,
            // A lost poll is retried until the wait runs out.
            Err(_) => continue,
        };
        match state.proposal.status {
            ProposalStatus::Pending => continue,
            ProposalStatus::Approved => {
                // Ask again: the server spends the one-time approval on this
                // exact call and audits it.
                let resp: ToolVerdict = client.post_json("/tools/evaluate", req)?;
                return Ok(hook_output(tool, &resp));
            }
            other => {
                return Ok(HookOutput::deny(format!(
                    "gov: `{tool}` was not approved: proposal `{pid}` is {other}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> HookEnv {
        HookEnv {
            url: "http://127.0.0.1:1".into(),
            agent_id: "researcher".into(),
            run_id: "run-1".into(),
            agent_token: Token::new("tok"),
            wait: Duration::ZERO,
            path_var: None,
            meter: None,
        }
    }

    #[test]
    fn request_carries_the_call_and_the_run() {
        let stdin = json!({
            "session_id": "s", "transcript_path": "/t", "cwd": "/w",
            "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_input": {"command": "ls"}, "tool_use_id": "toolu_1"
        })
        .to_string();
        let req = evaluate_request(&stdin, &env()).expect("request");
        assert_eq!(
            serde_json::to_value(&req).expect("json"),
            json!({"agent_id": "researcher", "run_id": "run-1", "tool_name": "Bash",
                   "tool_input": {"command": "ls"}, "cwd": "/w", "tool_use_id": "toolu_1"})
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            evaluate_request("nope", &env()),
            Err(HookError::BadInput(_))
        ));
        assert!(matches!(
            evaluate_request("{}", &env()),
            Err(HookError::BadInput(_))
        ));
        let list = json!({"tool_name": "Bash", "tool_input": ["ls"]}).to_string();
        let err = evaluate_request(&list, &env()).expect_err("not an object");
        assert_eq!(
            err.to_string(),
            "the hook input's `tool_input` is not a JSON object"
        );
        let post = json!({"hook_event_name": "PostToolUse", "tool_name": "Bash"}).to_string();
        assert!(matches!(
            evaluate_request(&post, &env()),
            Err(HookError::WrongEvent(_))
        ));
    }

    #[test]
    fn env_must_be_complete() {
        let err = hook_env(|k| {
            (!["GOV_AGENT_TOKEN", WAIT_VAR, SESSION_FILE_VAR].contains(&k)).then(|| "x".to_string())
        })
        .expect_err("missing");
        assert!(err.to_string().contains("GOV_AGENT_TOKEN"));
        let out = failure_output(&err);
        assert!(!out.is_allow());
    }

    #[test]
    fn answers_translate() {
        let allow = ToolVerdict {
            decision: ToolDecision::Allow,
            reason: "read-only".into(),
            policies: vec![PolicyCitation {
                id: "tools-read".into(),
                reason: String::new(),
                effect: None,
            }],
            proposal_id: None,
        };
        let out = hook_output("Read", &allow);
        assert!(out.is_allow());
        assert_eq!(
            serde_json::to_value(&out).expect("json"),
            json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                   "permissionDecisionReason": "gov: allowed: read-only (policies: tools-read)"}})
        );
        let deny = ToolVerdict {
            decision: ToolDecision::Deny,
            reason: "no shell".into(),
            ..allow.clone()
        };
        let out = hook_output("Bash", &deny);
        assert!(!out.is_allow());
        assert!(out
            .hook_specific_output
            .permission_decision_reason
            .contains("no shell"));
        let person = ToolVerdict {
            decision: ToolDecision::NeedsPerson,
            proposal_id: Some("p-42".into()),
            ..allow
        };
        let out = hook_output("WebFetch", &person);
        assert!(!out.is_allow());
        let why = &out.hook_specific_output.permission_decision_reason;
        assert!(
            why.contains("p-42") && why.contains("retry the identical call"),
            "{why}"
        );
    }

    #[test]
    fn malformed_answers_are_not_accepted() {
        let bad: Result<ToolVerdict, _> = serde_json::from_str(r#"{"decision":"maybe"}"#);
        assert!(bad.is_err());
        let bad: Result<ToolVerdict, _> = serde_json::from_str(r#"{"reason":"x"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn the_claude_code_timeout_is_always_longer_than_the_hook() {
        for secs in [0, 1, 30, 300, 3600, MAX_WAIT_SECONDS] {
            let wait = Duration::from_secs(secs);
            let deadline = hook_deadline(wait);
            let timeout = crate::runner::claude::hook_timeout_seconds(deadline);
            assert!(Duration::from_secs(timeout) > deadline, "{secs}");
            // The wait, one request before it and two after it all fit.
            assert!(deadline >= wait + HOOK_DEADLINE);
            if secs > 0 {
                assert!(deadline >= wait + HOOK_DEADLINE * 2 + POLL_TIMEOUT);
            }
        }
    }

    #[test]
    fn subagent_fields_reach_the_server() {
        let stdin = json!({
            "session_id": "s", "cwd": "/w", "hook_event_name": "PreToolUse",
            "tool_name": "Read", "tool_input": {"file_path": "a"},
            "tool_use_id": "toolu_1", "agent_id": "sub-7", "agent_type": "Explore",
            "permission_mode": "default"
        })
        .to_string();
        let req = evaluate_request(&stdin, &env()).expect("request");
        assert_eq!(req.tool_use_id.as_deref(), Some("toolu_1"));
        assert_eq!(req.subagent_id.as_deref(), Some("sub-7"));
        assert_eq!(req.agent_type.as_deref(), Some("Explore"));
        assert_eq!(req.permission_mode.as_deref(), Some("default"));
        assert_eq!(req.agent_id, "researcher");
    }

    #[test]
    fn a_bad_wait_is_an_error() {
        let err = hook_env(|k| match k {
            WAIT_VAR => Some("soon".into()),
            SESSION_FILE_VAR => None,
            _ => Some("x".into()),
        })
        .expect_err("bad wait");
        assert_eq!(err.to_string(), "`soon` is not a number of seconds");
    }

    #[test]
    fn unreachable_server_denies() {
        let out = run(
            &json!({"tool_name": "Bash", "tool_input": {}}).to_string(),
            |k| match k {
                "GOV_URL" => Some("http://127.0.0.1:1".into()),
                WAIT_VAR | SESSION_FILE_VAR => None,
                _ => Some("x".into()),
            },
        );
        assert!(!out.is_allow());
        assert!(out
            .hook_specific_output
            .permission_decision_reason
            .contains("cannot reach"));
    }
}
