//! The `claude -p` command line for a claude agent, and the settings file
//! that installs gov's PreToolUse hook. Pure: paths and texts in, arguments
//! and JSON out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::AgentSettings;

/// Everything the command line depends on besides the agent's settings.
#[derive(Debug, Clone)]
pub struct ClaudeInvocation {
    /// The task prompt (`tasks/<task>.md`).
    pub prompt: String,
    /// The settings file the runner wrote (see [`hook_settings`]).
    pub settings_path: PathBuf,
    /// A fresh UUID v4.
    pub session_id: String,
    /// The agent's prompt file, when it has one.
    pub system_prompt: Option<String>,
}

/// The arguments after the program name.
pub fn claude_args(agent: &AgentSettings, inv: &ClaudeInvocation) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &str| args.push(OsString::from(a));
    push("-p");
    push(&inv.prompt);
    push("--output-format");
    push("stream-json");
    push("--verbose");
    if let Some(model) = agent.claude_model.as_deref().filter(|m| !m.is_empty()) {
        push("--model");
        push(model);
    }
    if let Some(max) = agent.claude_max_budget {
        push("--max-budget-usd");
        push(&format!("{}", max.as_dollars_f64()));
    }
    push("--session-id");
    push(&inv.session_id);
    push("--no-session-persistence");
    push("--setting-sources");
    push("project");
    push("--strict-mcp-config");
    if let Some(sp) = inv.system_prompt.as_deref() {
        push("--append-system-prompt");
        push(sp);
    }
    args.push(OsString::from("--settings"));
    args.push(inv.settings_path.clone().into_os_string());
    args
}

/// The settings JSON that routes every tool call through `gov hook
/// pre-tool-use`, run by the same `gov` executable as the runner.
/// `timeout_secs` comes from [`super::hook::claude_hook_timeout_seconds`]:
/// longer than the hook's own deadline.
pub fn hook_settings(gov_exe: &Path, timeout_secs: u64) -> serde_json::Value {
    let command = format!(
        "{} hook pre-tool-use",
        shell_quote(&gov_exe.to_string_lossy())
    );
    serde_json::json!({
        "hooks": {
            "PreToolUse": [
                {"matcher": "*", "hooks": [{"type": "command", "command": command, "timeout": timeout_secs}]}
            ]
        }
    })
}

/// Quotes a word for `sh`, which is how Claude Code runs hook commands.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | '=' | ',')
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A fresh random UUID v4, as Claude Code's `--session-id` wants.
pub fn new_session_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)?;
    Ok(crate::domain::ids::uuid_v4(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentKind, BudgetSettings};
    use crate::domain::money::Micros;

    fn agent() -> AgentSettings {
        AgentSettings {
            id: "researcher".into(),
            dir: PathBuf::from("/r/agents/researcher"),
            kind: AgentKind::Claude,
            description: String::new(),
            group: "research".into(),
            wallclock_seconds: 60,
            budget: BudgetSettings::default(),
            command: None,
            claude_model: Some("claude-sonnet-4-5".into()),
            claude_max_budget: Some(Micros(2_500_000)),
            claude_prompt_file: "CLAUDE.md".into(),
        }
    }

    #[test]
    fn command_line_has_every_flag() {
        let inv = ClaudeInvocation {
            prompt: "do it".into(),
            settings_path: PathBuf::from("/tmp/x/settings.json"),
            session_id: "sid".into(),
            system_prompt: Some("be good".into()),
        };
        let args: Vec<String> = claude_args(&agent(), &inv)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-p do it --output-format stream-json --verbose --model claude-sonnet-4-5 \
             --max-budget-usd 2.5 --session-id sid --no-session-persistence \
             --setting-sources project --strict-mcp-config --append-system-prompt be good \
             --settings /tmp/x/settings.json"
        );
        let mut bare = agent();
        bare.claude_model = None;
        bare.claude_max_budget = None;
        let inv = ClaudeInvocation {
            system_prompt: None,
            ..inv
        };
        let args: Vec<String> = claude_args(&bare, &inv)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args
            .iter()
            .any(|a| a == "--model" || a == "--max-budget-usd" || a == "--append-system-prompt"));
    }

    #[test]
    fn settings_install_the_hook() {
        let v = hook_settings(Path::new("/opt/my gov/gov"), 60);
        assert_eq!(
            v["hooks"]["PreToolUse"][0]["hooks"][0]["command"],
            "'/opt/my gov/gov' hook pre-tool-use"
        );
        assert_eq!(v["hooks"]["PreToolUse"][0]["matcher"], "*");
        assert_eq!(v["hooks"]["PreToolUse"][0]["hooks"][0]["timeout"], 60);
        assert_eq!(shell_quote("/usr/bin/gov"), "/usr/bin/gov");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn session_ids_are_uuid_v4() {
        let a = new_session_id().expect("random");
        let b = new_session_id().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
