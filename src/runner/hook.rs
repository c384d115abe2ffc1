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
//! The translation (stdin → request body, answer → hook output) is pure; the
//! I/O lives in [`run`].

use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError, Timeouts, Token};

/// The part of Claude Code's hook input the hook uses.
#[derive(Debug, Clone, Deserialize)]
pub struct HookInput {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub hook_event_name: Option<String>,
    pub tool_name: String,
    #[serde(default)]
    pub tool_input: serde_json::Value,
    /// Claude Code's id for the call, as in its stream's `tool_use` block.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// What the runner put in the environment of the agent, read by the hook.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub url: String,
    pub agent_id: String,
    pub run_id: String,
    pub agent_token: Token,
}

/// The body of `POST /tools/evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    pub agent_id: String,
    pub run_id: String,
    pub tool_name: String,
    pub tool_input: serde_json::Value,
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
}

/// A policy that took part in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub id: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolDecision {
    Allow,
    Deny,
    NeedsPerson,
}

/// The answer of `POST /tools/evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateResponse {
    pub decision: ToolDecision,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub policies: Vec<PolicyRef>,
    #[serde(default)]
    pub proposal_id: Option<String>,
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
    #[error("unexpected hook event `{0}` (expected `PreToolUse`)")]
    WrongEvent(String),
    #[error("`{0}` is not set: this session was not started by `gov run`")]
    MissingEnv(&'static str),
    #[error("the policy check failed: {0}")]
    Server(#[from] ClientError),
}

/// Reads the runner's variables through `get` (the process environment in
/// production, a map in tests).
pub fn hook_env(get: impl Fn(&str) -> Option<String>) -> Result<HookEnv, HookError> {
    let need = |name: &'static str| {
        get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or(HookError::MissingEnv(name))
    };
    Ok(HookEnv {
        url: need("GOV_URL")?,
        agent_id: need("GOV_AGENT_ID")?,
        run_id: need("GOV_RUN_ID")?,
        agent_token: Token::new(need("GOV_AGENT_TOKEN")?),
    })
}

/// stdin JSON → the body of `POST /tools/evaluate`.
pub fn evaluate_request(stdin: &str, env: &HookEnv) -> Result<EvaluateRequest, HookError> {
    let input: HookInput =
        serde_json::from_str(stdin).map_err(|e| HookError::BadInput(e.to_string()))?;
    match input.hook_event_name.as_deref() {
        None | Some("PreToolUse") => {}
        Some(other) => return Err(HookError::WrongEvent(other.to_string())),
    }
    let tool_input = if input.tool_input.is_null() {
        serde_json::json!({})
    } else {
        input.tool_input
    };
    Ok(EvaluateRequest {
        agent_id: env.agent_id.clone(),
        run_id: env.run_id.clone(),
        tool_name: input.tool_name,
        tool_input,
        cwd: input.cwd,
        tool_use_id: input.tool_use_id,
    })
}

fn policy_list(policies: &[PolicyRef]) -> String {
    if policies.is_empty() {
        return String::new();
    }
    let ids: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
    format!(" (policies: {})", ids.join(", "))
}

/// The server's answer → what Claude Code is told.
pub fn hook_output(tool_name: &str, resp: &EvaluateResponse) -> HookOutput {
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
    let result = hook_env(get).and_then(|env| {
        let req = evaluate_request(stdin, &env)?;
        let client = Client::new(&env.url, env.agent_token.clone(), hook_timeouts());
        let resp: EvaluateResponse = client.post_json("/tools/evaluate", &req)?;
        Ok(hook_output(&req.tool_name, &resp))
    });
    result.unwrap_or_else(|e| failure_output(&e))
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
        let post = json!({"hook_event_name": "PostToolUse", "tool_name": "Bash"}).to_string();
        assert!(matches!(
            evaluate_request(&post, &env()),
            Err(HookError::WrongEvent(_))
        ));
    }

    #[test]
    fn env_must_be_complete() {
        let err =
            hook_env(|k| (k != "GOV_AGENT_TOKEN").then(|| "x".to_string())).expect_err("missing");
        assert!(err.to_string().contains("GOV_AGENT_TOKEN"));
        let out = failure_output(&err);
        assert!(!out.is_allow());
    }

    #[test]
    fn answers_translate() {
        let allow = EvaluateResponse {
            decision: ToolDecision::Allow,
            reason: "read-only".into(),
            policies: vec![PolicyRef {
                id: "tools-read".into(),
                reason: String::new(),
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
        let deny = EvaluateResponse {
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
        let person = EvaluateResponse {
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
        let bad: Result<EvaluateResponse, _> = serde_json::from_str(r#"{"decision":"maybe"}"#);
        assert!(bad.is_err());
        let bad: Result<EvaluateResponse, _> = serde_json::from_str(r#"{"reason":"x"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn unreachable_server_denies() {
        let out = run(
            &json!({"tool_name": "Bash", "tool_input": {}}).to_string(),
            |k| match k {
                "GOV_URL" => Some("http://127.0.0.1:1".into()),
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
