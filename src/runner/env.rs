//! The environment an agent process gets: the runner's own, minus anything
//! that looks like a secret of the operator, plus the run's variables.
//!
//! An agent must not inherit the operator's token (it could decide its own
//! proposals) or any other credential of the shell that started `gov run`.
//! The only secret it gets is its own run's agent token.

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
            if KEEP_ALWAYS.contains(&k.as_str())
                || (claude && KEEP_FOR_CLAUDE.contains(&k.as_str()))
            {
                return true;
            }
            // GOV_OPERATOR_TOKEN goes with the other secrets; the run's own
            // GOV_ variables are overwritten below.
            !looks_secret(k)
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
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = child_env(parent.clone(), &vars(), false);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
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
                "PATH"
            ]
        );
        assert_eq!(env["GOV_AGENT_TOKEN"], "agent-secret");
        assert_eq!(env["GOV_RUN_ID"], "r1");
        let env = child_env(parent, &vars(), true);
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk");
        assert!(!env.contains_key("GITHUB_TOKEN"));
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
