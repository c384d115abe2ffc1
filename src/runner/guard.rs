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
    /// The metering hook command gov added (Stop, SessionEnd).
    #[serde(default)]
    pub meter_command: Option<String>,
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
    #[error("`{0}` has a `hooks` that is not an object")]
    HooksNotAnObject(String),
    #[error("`{0}` has a `hooks.{1}` that is not a list")]
    BadHooks(String, String),
}

/// The hooks gov adds to a project's settings.
#[derive(Debug, Clone, Copy)]
pub struct GovHooks<'a> {
    /// `gov hook pre-tool-use`: asks the policies about every tool call.
    pub check: &'a str,
    /// `gov hook meter`: reports the session's usage when a turn or the
    /// session ends.
    pub meter: &'a str,
    /// The PreToolUse hook's timeout, longer than its deadline.
    pub timeout_secs: u64,
}

/// The events the metering hook runs on.
pub const METER_EVENTS: &[&str] = &["Stop", "SessionEnd"];

/// The settings text with gov's hooks added. `existing` is the file's text
/// (`None`: no file); `shown` names the file in errors.
pub fn install(
    existing: Option<&str>,
    shown: &str,
    gov: &GovHooks<'_>,
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
        return Err(GuardError::HooksNotAnObject(shown.into()));
    };
    for event in std::iter::once("PreToolUse").chain(METER_EVENTS.iter().copied()) {
        if !matches!(hooks.get(event), None | Some(Value::Array(_))) {
            return Err(GuardError::BadHooks(shown.into(), event.into()));
        }
    }
    let mut add = |event: &str, entry: Value| {
        if let Value::Array(list) = hooks
            .entry(event)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(entry);
        }
    };
    // `onFailure: block`: a hook that cannot answer blocks the call.
    add(
        "PreToolUse",
        json!({
            "matcher": "*",
            "hooks": [{"type": "command", "command": gov.check, "timeout": gov.timeout_secs,
                       "onFailure": "block"}]
        }),
    );
    for event in METER_EVENTS {
        add(
            event,
            json!({"hooks": [{"type": "command", "command": gov.meter,
                              "timeout": super::session_meter::METER_ALLOWANCE.as_secs() + 10}]}),
        );
    }
    Ok(to_text(&Value::Object(root)))
}

/// Claude Code managed settings (`managed-settings.json`) that put every
/// session on the machine under gov's hooks and let no user or project
/// hook, and no bypass mode, in: `allowManagedHooksOnly` (only managed
/// hooks run; managed hooks run even where another settings file sets
/// `disableAllHooks`), `permissions.disableBypassPermissionsMode`, and
/// gov's hooks as `gov guard` installs them.
pub fn managed_settings(gov: &GovHooks<'_>) -> Result<Value, GuardError> {
    let hooks: Value = serde_json::from_str(&install(None, "managed-settings.json", gov)?)
        .map_err(|e| GuardError::BadJson("managed-settings.json".into(), e.to_string()))?;
    Ok(json!({
        "allowManagedHooksOnly": true,
        "permissions": {"disableBypassPermissionsMode": "disable"},
        "hooks": hooks["hooks"],
    }))
}

/// The settings text with exactly gov's hooks (`commands`) taken out; an
/// event's list and `hooks` left empty by it are removed too.
pub fn uninstall(current: &str, shown: &str, commands: &[&str]) -> Result<String, GuardError> {
    let mut root = match serde_json::from_str::<Value>(current) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(GuardError::NotAnObject(shown.into())),
        Err(e) => return Err(GuardError::BadJson(shown.into(), e.to_string())),
    };
    if let Some(Value::Object(hooks)) = root.get_mut("hooks") {
        let events: Vec<String> = hooks.keys().cloned().collect();
        for event in events {
            if let Some(Value::Array(list)) = hooks.get_mut(&event) {
                let before = list.len();
                list.retain(|entry| !commands.iter().any(|c| is_ours(entry, c)));
                if list.is_empty() && before > 0 {
                    hooks.remove(&event);
                }
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
        Some(now) => {
            let mut ours = vec![record.command.as_str()];
            ours.extend(record.meter_command.as_deref());
            uninstall(now, &record.settings_file, &ours).map(Some)
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "GOV_SESSION_FILE=/r/.gov/guard/x.json /bin/gov hook pre-tool-use";
    const METER: &str = "GOV_SESSION_FILE=/r/.gov/guard/x.json /bin/gov hook meter";

    fn gov(timeout_secs: u64) -> GovHooks<'static> {
        GovHooks {
            check: CMD,
            meter: METER,
            timeout_secs,
        }
    }

    fn record(original: Option<&str>, installed: &str) -> GuardRecord {
        GuardRecord {
            project: "/p".into(),
            settings_file: "/p/.claude/settings.json".into(),
            original: original.map(str::to_string),
            created_dir: false,
            installed: installed.into(),
            command: CMD.into(),
            meter_command: Some(METER.into()),
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
        let after = install(Some(before), "s", &gov(100)).expect("install");
        let v: Value = serde_json::from_str(&after).expect("json");
        assert_eq!(v["model"], "opus");
        assert_eq!(v["permissions"]["allow"][0], "Read");
        assert_eq!(v["hooks"]["Stop"][0]["hooks"][0]["command"], "bye");
        assert_eq!(v["hooks"]["Stop"][1]["hooks"][0]["command"], METER);
        assert_eq!(v["hooks"]["SessionEnd"][0]["hooks"][0]["command"], METER);
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
            serde_json::from_str(&uninstall(&after, "s", &[CMD, METER]).expect("uninstall"))
                .expect("json");
        assert_eq!(back, serde_json::from_str::<Value>(before).expect("json"));
    }

    #[test]
    fn install_refuses_what_it_cannot_keep_or_would_not_run() {
        assert!(matches!(
            install(Some("[1]"), "s", &gov(1)),
            Err(GuardError::NotAnObject(_))
        ));
        assert!(matches!(
            install(Some("{"), "s", &gov(1)),
            Err(GuardError::BadJson(..))
        ));
        assert_eq!(
            install(Some(r#"{"disableAllHooks": true}"#), "s", &gov(1)),
            Err(GuardError::HooksDisabled("s".into()))
        );
        assert_eq!(
            install(Some(r#"{"hooks": {"PreToolUse": {}}}"#), "s", &gov(1)),
            Err(GuardError::BadHooks("s".into(), "PreToolUse".into()))
        );
        assert_eq!(
            install(Some(r#"{"hooks": {"Stop": 1}}"#), "s", &gov(1)),
            Err(GuardError::BadHooks("s".into(), "Stop".into()))
        );
        let fresh = install(None, "s", &gov(1)).expect("install");
        assert!(fresh.contains(CMD));
    }

    #[test]
    fn restore_puts_back_the_original_bytes_or_removes_only_the_hook() {
        let original = "{\n  \"model\": \"opus\"\n}\n";
        let installed = install(Some(original), "s", &gov(1)).expect("install");
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
