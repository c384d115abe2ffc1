//! The environment an agent process gets: the runner's own, minus anything
//! that looks like a secret of the operator, minus what would switch off or
//! get around gov's control of Claude Code, plus the run's variables.
//!
//! An agent must not inherit the operator's token (it could decide its own
//! proposals) or any other credential of the shell that started `gov run`.
//! The only secret it gets is its own run's agent token (and, for claude
//! agents, the model key).
//!
//! Claude Code reads many `CLAUDE_*` variables, some of which turn hooks or
//! permission checks off (`CLAUDE_CODE_SIMPLE`: settings-file hooks never
//! fire; `CLAUDE_CODE_SAFE_MODE`, `CLAUDE_CODE_PERSONAL_HOOKS_OFF`,
//! `CLAUDE_CODE_EVEN_MORE_DANGEROUSLY_SKIP_PERMISSIONS`, ...) or point it at
//! other settings (`CLAUDE_CONFIG_DIR`, `CLAUDE_CODE_MANAGED_SETTINGS_PATH`).
//! The list grows with every release, so none is passed on: every
//! `CLAUDE_*` variable is dropped except the OAuth token, and so is any
//! variable whose name mentions hooks.

use std::collections::BTreeMap;

/// Variables kept even though their names look like secrets would be
/// dropped by the rules below. Claude agents need their model key; nothing
/// else is passed through by name.
const KEEP_ALWAYS: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "TERM",
    "TMPDIR",
    "CLAUDE_BIN",
    "USER",
    "SHELL",
];
const KEEP_FOR_CLAUDE: &[&str] = &["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"];

/// Ways to reach the operator's own agents and session (an ssh-agent could
/// sign a forge merge as the operator; the session bus can start programs
/// outside the sandbox). Never passed on.
const OPERATOR_CHANNELS: &[&str] = &[
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
];

/// True for a variable that configures Claude Code (or any hook) and is not
/// gov's to pass on: see the module header.
pub fn steers_claude(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    (upper.starts_with("CLAUDE_") && name != "CLAUDE_BIN") || upper.contains("HOOK")
}

/// Words that make a variable look like a credential.
const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "COOKIE",
    "SESSION",
];

/// True when `name` looks like it holds a secret: one of its `_`-separated
/// words (or a suffix like `APIKEY`) is a secret word.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.split('_').any(|word| {
        SECRET_WORDS
            .iter()
            .any(|s| word == *s || word.ends_with(s) || word.starts_with(s))
    })
}

/// The run's variables, set last so nothing inherited can shadow them.
#[derive(Debug, Clone)]
pub struct RunVars {
    pub url: String,
    pub agent_id: String,
    pub run_id: String,
    pub agent_token: crate::client::Token,
    pub task_id: Option<String>,
    pub repo: String,
    /// The run's private folders: the agent's `HOME` and `TMPDIR` (`TMP`,
    /// `TEMP`), the only places besides its folder it may write.
    pub home: String,
    pub tmp: String,
}

/// The child's whole environment, from the runner's (`parent`).
pub fn child_env(
    parent: impl IntoIterator<Item = (String, String)>,
    vars: &RunVars,
    claude: bool,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = parent
        .into_iter()
        .filter(|(k, _)| {
            if claude && KEEP_FOR_CLAUDE.contains(&k.as_str()) {
                return true;
            }
            if OPERATOR_CHANNELS.contains(&k.as_str()) || steers_claude(k) {
                return false;
            }
            // GOV_OPERATOR_TOKEN goes with the other secrets; the run's own
            // GOV_ variables are overwritten below.
            KEEP_ALWAYS.contains(&k.as_str()) || !looks_secret(k)
        })
        .collect();
    env.insert("GOV_URL".into(), vars.url.clone());
    env.insert("GOV_AGENT_ID".into(), vars.agent_id.clone());
    env.insert("GOV_RUN_ID".into(), vars.run_id.clone());
    env.insert(
        "GOV_AGENT_TOKEN".into(),
        vars.agent_token.expose().to_string(),
    );
    env.insert(
        "GOV_TASK_ID".into(),
        vars.task_id.clone().unwrap_or_default(),
    );
    env.insert("GOV_REPO".into(), vars.repo.clone());
    env.insert("HOME".into(), vars.home.clone());
    for name in ["TMPDIR", "TMP", "TEMP"] {
        env.insert(name.into(), vars.tmp.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Token;

    fn vars() -> RunVars {
        RunVars {
            url: "http://127.0.0.1:9".into(),
            agent_id: "noop".into(),
            run_id: "r1".into(),
            agent_token: Token::new("agent-secret"),
            task_id: Some("smoke".into()),
            repo: "/r".into(),
            home: "/run/home".into(),
            tmp: "/run/tmp".into(),
        }
    }

    #[test]
    fn secrets_are_dropped_and_run_vars_set() {
        let parent = [
            ("PATH", "/bin"),
            ("HOME", "/h"),
            ("GOV_OPERATOR_TOKEN", "op"),
            ("GOV_AGENT_TOKEN", "stale"),
            ("GITHUB_TOKEN", "gh"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("OPENAI_APIKEY", "x"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("DB_PASSWORD", "pw"),
            ("FAKE_CLAUDE_SCENARIO", "/s.jsonl"),
            ("GOV_RUN_ID", "stale"),
            ("GOV_NOOP_TIMEOUT", "5"),
            ("EDITOR", "vi"),
            ("TMPDIR", "/tmp"),
            ("CLAUDE_CODE_SIMPLE", "1"),
            ("CLAUDE_CODE_SAFE_MODE", "1"),
            ("CLAUDE_CONFIG_DIR", "/h/.claude"),
            ("CLAUDE_CODE_OAUTH_TOKEN", "oauth"),
            ("CLAUDE_BIN", "/bin/claude"),
            ("DISABLE_BRIEF_MODE_STOP_HOOK", "1"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-x/agent.1"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = child_env(parent.clone(), &vars(), false);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CLAUDE_BIN",
                "EDITOR",
                "FAKE_CLAUDE_SCENARIO",
                "GOV_AGENT_ID",
                "GOV_AGENT_TOKEN",
                "GOV_NOOP_TIMEOUT",
                "GOV_REPO",
                "GOV_RUN_ID",
                "GOV_TASK_ID",
                "GOV_URL",
                "HOME",
                "PATH",
                "TEMP",
                "TMP",
                "TMPDIR"
            ]
        );
        assert_eq!(env["GOV_AGENT_TOKEN"], "agent-secret");
        assert_eq!(env["GOV_RUN_ID"], "r1");
        assert_eq!(env["HOME"], "/run/home");
        assert_eq!(env["TMPDIR"], "/run/tmp");
        let env = child_env(parent, &vars(), true);
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk");
        assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "oauth");
        for gone in [
            "GITHUB_TOKEN",
            "CLAUDE_CODE_SIMPLE",
            "CLAUDE_CODE_SAFE_MODE",
            "CLAUDE_CONFIG_DIR",
            "DISABLE_BRIEF_MODE_STOP_HOOK",
            "SSH_AUTH_SOCK",
            "DBUS_SESSION_BUS_ADDRESS",
        ] {
            assert!(!env.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn secret_names() {
        for n in [
            "GOV_OPERATOR_TOKEN",
            "api_key",
            "SSH_KEYFILE",
            "MY_SECRETS",
            "NPM_AUTH_TOKEN",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        // Dropping a harmless variable that merely looks secret is fine:
        // the rules err on the side of not leaking.
        for n in ["PATH", "LANG", "TERM", "EDITOR", "FAKE_CLAUDE_LOG"] {
            assert!(!looks_secret(n), "{n}");
        }
    }
}
