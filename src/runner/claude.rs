//! The `claude -p` command line for a claude agent, and the settings file
//! that installs gov's PreToolUse hook. Pure: paths and texts in, arguments
//! and JSON out.
//!
//! Written against Claude Code 2.1.332 (`@anthropic-ai/claude-agent-sdk`
//! 0.3.332, whose `.d.ts` files define the settings and flags used here):
//!
//! - the hook blocks the call when it fails (`onFailure: "block"`: it could
//!   not start, timed out, crashed or printed invalid output), with an
//!   explicit timeout longer than the hook's own deadline;
//! - the permission mode is explicit (`dontAsk`: a call the hook did not
//!   allow is denied, never asked about) and bypass mode is disabled;
//! - no settings file the agent could write is read: `--setting-sources=`
//!   (empty) turns off the user, project and local settings, so only the
//!   `--settings` file gov writes outside the agent's reach (and the
//!   machine's managed settings) apply; a `.claude/settings.json` with
//!   `disableAllHooks` in the agent's folder changes nothing.

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
    // Empty: no user, project or local settings file is read.
    push("--setting-sources=");
    push("--permission-mode");
    push(PERMISSION_MODE);
    push("--strict-mcp-config");
    if let Some(sp) = inv.system_prompt.as_deref() {
        push("--append-system-prompt");
        push(sp);
    }
    args.push(OsString::from("--settings"));
    args.push(inv.settings_path.clone().into_os_string());
    args
}

/// The permission mode of every claude agent: a call the hook did not
/// allow is denied without asking (there is nobody to ask).
pub const PERMISSION_MODE: &str = "dontAsk";

/// Seconds between the hook's own deadline and Claude Code's timeout for
/// it: room for starting the process and reading its answer.
pub const HOOK_TIMEOUT_MARGIN_SECS: u64 = 10;

/// The timeout (whole seconds) gov writes for its hook: always longer than
/// `deadline`, the longest the hook takes ([`super::hook::HOOK_DEADLINE`]),
/// so Claude Code never times out a hook that is still deciding.
pub fn hook_timeout_seconds(deadline: std::time::Duration) -> u64 {
    let whole = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
    whole + HOOK_TIMEOUT_MARGIN_SECS
}

/// The file name of gov's hook program, installed beside `gov` (the
/// `gov-hook` binary of this crate).
pub const HOOK_PROGRAM: &str = "gov-hook";

/// The program that runs gov's Claude Code hook `event` (`pre-tool-use`,
/// `meter`) for the `gov` at `gov_exe`, with its arguments: `gov-hook
/// <event>` when `gov-hook` is beside `gov_exe`, else `gov hook <event>`.
/// Both answer alike; `gov-hook` links only the hook, so it starts in
/// about a third of the time, and Claude Code starts the hook before every
/// tool call.
pub fn hook_program(gov_exe: &Path, event: &str) -> (PathBuf, Vec<String>) {
    let small = gov_exe.with_file_name(HOOK_PROGRAM);
    if small.is_file() {
        (small, vec![event.to_string()])
    } else {
        (
            gov_exe.to_path_buf(),
            vec!["hook".to_string(), event.to_string()],
        )
    }
}

/// [`hook_program`] as a command line for `sh`.
pub fn hook_command(gov_exe: &Path, event: &str) -> String {
    let (program, args) = hook_program(gov_exe, event);
    std::iter::once(program.to_string_lossy().into_owned())
        .chain(args)
        .map(|w| shell_quote(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings JSON that routes every tool call through gov's hook (see
/// [`hook_command`]), the one beside the runner's `gov` executable, and
/// that fails closed: a hook that cannot answer blocks the call.
pub fn hook_settings(gov_exe: &Path, deadline: std::time::Duration) -> serde_json::Value {
    let command = hook_command(gov_exe, "pre-tool-use");
    serde_json::json!({
        "hooks": {
            "PreToolUse": [{
                "matcher": "*",
                "hooks": [{
                    "type": "command",
                    "command": command,
                    "timeout": hook_timeout_seconds(deadline),
                    "onFailure": "block"
                }]
            }]
        },
        "disableAllHooks": false,
        "permissions": {
            "defaultMode": PERMISSION_MODE,
            "disableBypassPermissionsMode": "disable"
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
    use std::time::Duration;

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
             --setting-sources= --permission-mode dontAsk --strict-mcp-config \
             --append-system-prompt be good --settings /tmp/x/settings.json"
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
    fn the_hook_is_the_small_program_beside_gov_when_there_is_one(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let bin = dir.path().join("my bin");
        std::fs::create_dir(&bin)?;
        let gov = bin.join("gov");
        std::fs::write(&gov, "")?;
        let shown = bin.to_string_lossy().into_owned();
        assert_eq!(
            hook_command(&gov, "pre-tool-use"),
            format!("'{shown}/gov' hook pre-tool-use")
        );
        std::fs::write(bin.join(HOOK_PROGRAM), "")?;
        assert_eq!(
            hook_command(&gov, "meter"),
            format!("'{shown}/gov-hook' meter")
        );
        assert_eq!(
            hook_program(&gov, "pre-tool-use"),
            (bin.join("gov-hook"), vec!["pre-tool-use".to_string()])
        );
        Ok(())
    }

    #[test]
    fn settings_install_the_hook() {
        let v = hook_settings(Path::new("/opt/my gov/gov"), Duration::from_secs(15));
        let hook = &v["hooks"]["PreToolUse"][0]["hooks"][0];
        assert_eq!(hook["command"], "'/opt/my gov/gov' hook pre-tool-use");
        assert_eq!(v["hooks"]["PreToolUse"][0]["matcher"], "*");
        assert_eq!(hook["onFailure"], "block");
        assert_eq!(hook["timeout"], 25);
        assert_eq!(v["disableAllHooks"], false);
        assert_eq!(v["permissions"]["defaultMode"], "dontAsk");
        assert_eq!(v["permissions"]["disableBypassPermissionsMode"], "disable");
        assert_eq!(shell_quote("/usr/bin/gov"), "/usr/bin/gov");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn the_hook_timeout_outlasts_the_hook() {
        for ms in [0, 1, 999, 1000, 15_000, 15_001, 600_000] {
            let deadline = Duration::from_millis(ms);
            let timeout = Duration::from_secs(hook_timeout_seconds(deadline));
            assert!(timeout > deadline, "{ms} ms");
            assert!(timeout >= deadline + Duration::from_secs(HOOK_TIMEOUT_MARGIN_SECS));
        }
        let settings = hook_settings(Path::new("/g"), super::super::hook::HOOK_DEADLINE);
        let timeout = settings["hooks"]["PreToolUse"][0]["hooks"][0]["timeout"]
            .as_u64()
            .expect("timeout");
        assert!(Duration::from_secs(timeout) > super::super::hook::HOOK_DEADLINE);
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
