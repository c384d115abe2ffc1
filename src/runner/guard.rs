//! `gov guard`: a person's own Claude Code session in any project, under
//! gov. The session is registered as a run of a named agent (its folder is
//! the project), and gov's PreToolUse hook is added to the project's Claude
//! Code settings, keeping every setting already there. What was installed
//! is remembered in a record under `.gov/guard/` of the governance
//! repository, so that `gov guard --remove` puts the settings file back
//! byte for byte (or, when someone changed it meanwhile, takes out exactly
//! gov's hook).
//!
//! Pure: JSON values and texts in and out; the files and the server are the
//! command's (`cli/guard.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// What `gov guard` remembers about one installation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// The project folder (absolute).
    pub project: String,
    /// The settings file changed (absolute).
    pub settings_file: String,
    /// Its text before, `None` when it did not exist.
    pub original: Option<String>,
    /// Whether gov created the `.claude` folder.
    pub created_dir: bool,
    /// The text gov wrote.
    pub installed: String,
    /// The hook command gov added.
    pub command: String,
    pub agent_id: String,
    pub run_id: String,
    /// The file the hook reads its session from (url, run, token).
    pub session_file: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GuardError {
    #[error("`{0}` is not a JSON object: gov cannot add its hook to it")]
    NotAnObject(String),
    #[error("`{0}` is not valid JSON: {1}")]
    BadJson(String, String),
    #[error("`{0}` sets `disableAllHooks`: gov's hook would never run; remove that setting first")]
    HooksDisabled(String),
    #[error("`{0}` has a `hooks.PreToolUse` that is not a list")]
    BadHooks(String),
}

/// The settings text with gov's hook added. `existing` is the file's text
/// (`None`: no file); `shown` names the file in errors.
pub fn install(
    existing: Option<&str>,
    shown: &str,
    command: &str,
    timeout_secs: u64,
) -> Result<String, GuardError> {
    let mut root = match existing.map(str::trim) {
        None | Some("") => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(GuardError::NotAnObject(shown.into())),
            Err(e) => return Err(GuardError::BadJson(shown.into(), e.to_string())),
        },
    };
    if root.get("disableAllHooks").and_then(Value::as_bool) == Some(true) {
        return Err(GuardError::HooksDisabled(shown.into()));
    }
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(hooks) = hooks else {
        return Err(GuardError::BadHooks(shown.into()));
    };
    let pre = hooks
        .entry("PreToolUse")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(pre) = pre else {
        return Err(GuardError::BadHooks(shown.into()));
    };
    // `onFailure: block`: a hook that cannot answer blocks the call.
    pre.push(json!({
        "matcher": "*",
        "hooks": [{"type": "command", "command": command, "timeout": timeout_secs,
                   "onFailure": "block"}]
    }));
    Ok(to_text(&Value::Object(root)))
}

/// The settings text with exactly gov's hook (`command`) taken out; empty
/// `PreToolUse` and `hooks` left by it are removed too.
pub fn uninstall(current: &str, shown: &str, command: &str) -> Result<String, GuardError> {
    let mut root = match serde_json::from_str::<Value>(current) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(GuardError::NotAnObject(shown.into())),
        Err(e) => return Err(GuardError::BadJson(shown.into(), e.to_string())),
    };
    if let Some(Value::Object(hooks)) = root.get_mut("hooks") {
        if let Some(Value::Array(pre)) = hooks.get_mut("PreToolUse") {
            pre.retain(|entry| !is_ours(entry, command));
            if pre.is_empty() {
                hooks.remove("PreToolUse");
            }
        }
        if hooks.is_empty() {
            root.remove("hooks");
        }
    }
    Ok(to_text(&Value::Object(root)))
}

fn is_ours(entry: &Value, command: &str) -> bool {
    entry["hooks"]
        .as_array()
        .is_some_and(|hs| hs.iter().any(|h| h["command"] == command))
}

fn to_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// The text to put back on removal: the original when nobody changed the
/// file since gov wrote it, else the current text without gov's hook.
/// `None`: delete the file (it did not exist before).
pub fn restore(record: &GuardRecord, current: Option<&str>) -> Result<Option<String>, GuardError> {
    match current {
        Some(now) if now == record.installed => Ok(record.original.clone()),
        Some(now) => uninstall(now, &record.settings_file, &record.command).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "GOV_SESSION_FILE=/r/.gov/guard/x.json /bin/gov hook pre-tool-use";

    fn record(original: Option<&str>, installed: &str) -> GuardRecord {
        GuardRecord {
            project: "/p".into(),
            settings_file: "/p/.claude/settings.json".into(),
            original: original.map(str::to_string),
            created_dir: false,
            installed: installed.into(),
            command: CMD.into(),
            agent_id: "a".into(),
            run_id: "r".into(),
            session_file: "/r/.gov/guard/x.json".into(),
        }
    }

    #[test]
    fn install_keeps_every_existing_setting_and_hook() {
        let before = r#"{"model": "opus", "permissions": {"allow": ["Read"]},
            "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "mine"}]}],
                      "Stop": [{"hooks": [{"type": "command", "command": "bye"}]}]}}"#;
        let after = install(Some(before), "s", CMD, 100).expect("install");
        let v: Value = serde_json::from_str(&after).expect("json");
        assert_eq!(v["model"], "opus");
        assert_eq!(v["permissions"]["allow"][0], "Read");
        assert_eq!(v["hooks"]["Stop"][0]["hooks"][0]["command"], "bye");
        assert_eq!(v["hooks"]["PreToolUse"][0]["hooks"][0]["command"], "mine");
        assert_eq!(v["hooks"]["PreToolUse"][1]["matcher"], "*");
        assert_eq!(v["hooks"]["PreToolUse"][1]["hooks"][0]["command"], CMD);
        assert_eq!(v["hooks"]["PreToolUse"][1]["hooks"][0]["timeout"], 100);
        assert_eq!(
            v["hooks"]["PreToolUse"][1]["hooks"][0]["onFailure"],
            "block"
        );
        // Taking gov's hook out gives the same settings back.
        let back: Value =
            serde_json::from_str(&uninstall(&after, "s", CMD).expect("uninstall")).expect("json");
        assert_eq!(back, serde_json::from_str::<Value>(before).expect("json"));
    }

    #[test]
    fn install_refuses_what_it_cannot_keep_or_would_not_run() {
        assert!(matches!(
            install(Some("[1]"), "s", CMD, 1),
            Err(GuardError::NotAnObject(_))
        ));
        assert!(matches!(
            install(Some("{"), "s", CMD, 1),
            Err(GuardError::BadJson(..))
        ));
        assert_eq!(
            install(Some(r#"{"disableAllHooks": true}"#), "s", CMD, 1),
            Err(GuardError::HooksDisabled("s".into()))
        );
        assert_eq!(
            install(Some(r#"{"hooks": {"PreToolUse": {}}}"#), "s", CMD, 1),
            Err(GuardError::BadHooks("s".into()))
        );
        let fresh = install(None, "s", CMD, 1).expect("install");
        assert!(fresh.contains(CMD));
    }

    #[test]
    fn restore_puts_back_the_original_bytes_or_removes_only_the_hook() {
        let original = "{\n  \"model\": \"opus\"\n}\n";
        let installed = install(Some(original), "s", CMD, 1).expect("install");
        let r = record(Some(original), &installed);
        assert_eq!(
            restore(&r, Some(&installed)).expect("restore"),
            Some(original.to_string())
        );
        // Changed meanwhile: keep the change, drop the hook.
        let mut changed: Value = serde_json::from_str(&installed).expect("json");
        changed["theme"] = json!("dark");
        let changed = serde_json::to_string(&changed).expect("json");
        let kept: Value = serde_json::from_str(
            &restore(&r, Some(&changed))
                .expect("restore")
                .expect("a text"),
        )
        .expect("json");
        assert_eq!(kept, json!({"model": "opus", "theme": "dark"}));
        // No file before: none after.
        let r = record(None, &installed);
        assert_eq!(restore(&r, Some(&installed)).expect("restore"), None);
    }
}
