//! `gov guard`: a person's Claude Code session in any project, under gov.
//! Installed into a project with settings of its own, the fake claude's
//! calls governed and audited as a run of the named agent, and the settings
//! file restored byte for byte on removal.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::repo::TestResult;
use crate::support::server::TestServer;
use crate::support::{gov_bin, text};

fn gov_guard(s: &TestServer, args: &[&str]) -> TestResult<std::process::Output> {
    Ok(Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .arg("guard")
        .args(args)
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .output()?)
}

const ORIGINAL: &str = r#"{
  "model": "opus",
  "permissions": { "allow": ["Read"] },
  "hooks": { "Stop": [ { "hooks": [ { "type": "command", "command": "echo bye" } ] } ] }
}
"#;

#[test]
fn guard_governs_a_project_session_and_restores_its_settings() -> TestResult {
    let s = TestServer::start()?;
    let project_tmp = tempfile::tempdir()?;
    let project = std::fs::canonicalize(project_tmp.path())?;
    std::fs::create_dir_all(project.join(".claude"))?;
    let settings = project.join(".claude/settings.json");
    std::fs::write(&settings, ORIGINAL)?;
    std::fs::write(project.join("notes.md"), "notes\n")?;
    let shown = project.to_string_lossy().into_owned();

    let out = gov_guard(&s, &["--agent", "researcher", &shown])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "gov guard: `{shown}` is under gov as agent `researcher` (run `"
        )),
        "{stdout}"
    );
    let installed: Value = serde_json::from_str(&std::fs::read_to_string(&settings)?)?;
    assert_eq!(installed["model"], "opus");
    assert_eq!(
        installed["hooks"]["Stop"][0]["hooks"][0]["command"],
        "echo bye"
    );
    let hook = &installed["hooks"]["PreToolUse"][0]["hooks"][0];
    assert!(hook["command"]
        .as_str()
        .is_some_and(|c| c.starts_with("GOV_SESSION_FILE=") && c.ends_with(" hook pre-tool-use")));
    let deadline = gov::runner::hook::hook_deadline(std::time::Duration::ZERO);
    assert!(hook["timeout"]
        .as_u64()
        .is_some_and(|t| t > deadline.as_secs()));
    assert_eq!(hook["onFailure"], "block");
    // A second guard on the same project is refused.
    let again = gov_guard(&s, &["--agent", "researcher", &shown])?;
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        text(&again.stderr),
        format!("error: `{shown}` is already under gov: run `gov guard --remove` there first\n")
    );

    // A session in the project: its calls go through gov.
    let scenario = project_tmp.path().join("scenario.jsonl");
    std::fs::write(
        &scenario,
        [
            r#"{"fake":"tool","tool_name":"Bash","tool_input":{"command":"git status"}}"#,
            r#"{"fake":"tool","tool_name":"Bash","tool_input":{"command":"git status; rm -rf ~"}}"#,
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"}}"#,
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"/etc/passwd"}}"#,
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"},"agent_id":"sub1","agent_type":"Explore"}"#,
        ]
        .join("\n"),
    )?;
    let log = project_tmp.path().join("fake.log");
    let claude = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"))
        .args(["-p", "work", "--output-format", "stream-json"])
        .current_dir(&project)
        .env("FAKE_CLAUDE_SCENARIO", &scenario)
        .env("FAKE_CLAUDE_LOG", &log)
        .output()?;
    assert!(claude.status.success(), "{}", text(&claude.stderr));
    let decisions: Vec<(String, String)> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("decision").is_some())
        .map(|v| {
            (
                v["decision"].as_str().unwrap_or_default().to_string(),
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let only: Vec<&str> = decisions.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(
        only,
        ["allow", "deny", "allow", "deny", "allow"],
        "{decisions:?}"
    );
    assert!(
        decisions[1].1.starts_with("gov: denied `Bash`"),
        "{decisions:?}"
    );

    // Audited as the guard run of the researcher.
    let started = s.audit("agent_run_started")?;
    let run_id = started[0]["payload"]["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(started[0]["payload"]["folder"], shown.as_str());
    let calls = s.audit("tool_decision")?;
    let ours: Vec<&Value> = calls
        .iter()
        .filter(|e| e["payload"]["run_id"] == run_id.as_str())
        .collect();
    assert_eq!(ours.len(), 5, "{calls:?}");
    assert!(ours.iter().all(|e| e["agent_id"] == "researcher"));
    assert_eq!(
        ours.iter()
            .filter(|e| e["payload"]["subagent_id"] == "sub1")
            .count(),
        1
    );

    // Removal puts the file back byte for byte and ends the run.
    let removed = gov_guard(&s, &["--remove", &shown])?;
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(std::fs::read_to_string(&settings)?, ORIGINAL);
    assert_eq!(
        text(&removed.stdout),
        format!(
            "gov guard: `{}` restored\ngov guard: run `{run_id}` of `researcher` ended\n",
            settings.display()
        )
    );
    let ended = s.audit("agent_run_complete")?;
    assert_eq!(ended[0]["payload"]["run_id"], run_id.as_str());
    // The token of the session is revoked with its run: the hook now denies.
    let claude = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"))
        .args(["-p", "work"])
        .current_dir(&project)
        .env("FAKE_CLAUDE_SCENARIO", &scenario)
        .output()?;
    assert!(claude.status.success());
    let again = gov_guard(&s, &["--remove", &shown])?;
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        text(&again.stderr),
        format!("error: `{shown}` is not under gov guard\n")
    );
    Ok(())
}

#[test]
fn guard_on_a_project_without_settings_leaves_nothing_behind() -> TestResult {
    let s = TestServer::start()?;
    let project_tmp = tempfile::tempdir()?;
    let project = std::fs::canonicalize(project_tmp.path())?;
    let shown = project.to_string_lossy().into_owned();
    let out = gov_guard(&s, &["--agent", "researcher", "--local", &shown])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(project.join(".claude/settings.local.json").is_file());
    let removed = gov_guard(&s, &["--remove", &shown])?;
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(!project.join(".claude").exists());
    // An unknown agent opens nothing and changes nothing.
    let bad = gov_guard(&s, &["--agent", "nobody", &shown])?;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stderr));
    assert!(!project.join(".claude").exists());
    Ok(())
}
