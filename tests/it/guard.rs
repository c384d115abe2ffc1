//! `gov guard`: a person's Claude Code session in any project, under gov.
//! Installed into a project with settings of its own, the fake claude's
//! calls governed and audited as a run of the named agent, and the settings
//! file restored byte for byte on removal.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::repo::TestResult;
use crate::support::server::TestServer;
use crate::support::{gov_bin, gov_hook_bin, text};

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
        .is_some_and(|c| c.starts_with("GOV_SESSION_FILE=")
            && c.ends_with(&format!(" {} pre-tool-use", gov_hook_bin().display()))));
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
            r#"{"fake":"tool","tool_name":"Write","tool_input":{"file_path":".claude/settings.local.json","content":"{\"disableAllHooks\": true}"}}"#,
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"}}"#,
        ]
        .join("\n"),
    )?;
    let log = project_tmp.path().join("fake.log");
    let config = tempfile::tempdir()?;
    let claude = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"))
        .args(["-p", "work", "--output-format", "stream-json"])
        .current_dir(&project)
        .env("CLAUDE_CONFIG_DIR", config.path())
        .env("FAKE_CLAUDE_SCENARIO", &scenario)
        .env("FAKE_CLAUDE_LOG", &log)
        .output()?;
    assert!(claude.status.success(), "{}", text(&claude.stderr));
    let decisions = decisions(&log)?;
    let only: Vec<&str> = decisions.iter().map(|d| d.0.as_str()).collect();
    // The agent cannot write a settings file that would switch gov off:
    // the call after its attempt is still governed.
    assert_eq!(
        only,
        ["allow", "deny", "allow", "deny", "allow", "deny", "allow"],
        "{decisions:?}"
    );
    assert!(
        decisions[5]
            .1
            .contains("agent-claude-settings-not-writable"),
        "{decisions:?}"
    );
    assert!(!project.join(".claude/settings.local.json").exists());
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
    assert_eq!(ours.len(), 7, "{calls:?}");
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
        .env("CLAUDE_CONFIG_DIR", config.path())
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

/// The fake claude's decisions, in order: (decision, reason).
fn decisions(log: &Path) -> TestResult<Vec<(String, String)>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("decision").is_some())
        .map(|v| {
            (
                v["decision"].as_str().unwrap_or_default().to_string(),
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// A session of the fake claude in `project`, its transcripts under
/// `config`.
fn session(project: &Path, config: &Path, scenario: &[&str], log: &Path) -> TestResult {
    let file = log.with_extension("scenario.jsonl");
    std::fs::write(&file, scenario.join("\n"))?;
    let claude = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"))
        .args(["-p", "work", "--output-format", "stream-json"])
        .current_dir(project)
        .env("CLAUDE_CONFIG_DIR", config)
        .env("FAKE_CLAUDE_SCENARIO", &file)
        .env("FAKE_CLAUDE_LOG", log)
        .output()?;
    assert!(claude.status.success(), "{}", text(&claude.stderr));
    Ok(())
}

/// The researcher with a token cap that one session can cross.
const CAPPED: &str = "kind = \"claude\"\ngroup = \"research\"\nwallclock_seconds = 900\n\
                      [claude]\nmodel = \"claude-sonnet-4-5\"\n\
                      [budget]\ntokens_cap = 5000\ndollars_cap = 50\nrun_tokens = 5000\nrun_dollars = 2\n";

#[test]
fn a_guard_session_is_metered_from_its_transcript_and_its_cap_bites_mid_session() -> TestResult {
    // The server prices what the session reports, with its `[prices]`.
    let s = TestServer::start_with(|settings| {
        let m = |d: &str| gov::domain::money::Micros::from_dollars_str(d).unwrap_or_default();
        for (model, input, output, cache_read) in [
            ("claude-sonnet-4", "3", "15", "0.30"),
            ("claude-haiku-4-5", "1", "5", "0.10"),
        ] {
            settings.model_prices.insert(
                model.into(),
                gov::domain::pricing::ModelPrice {
                    input: m(input),
                    output: m(output),
                    cache_write: m("0"),
                    cache_read: m(cache_read),
                },
            );
        }
    })?;
    crate::support::server::commit_agent(&s.repo, "researcher", CAPPED)?;
    let project_tmp = tempfile::tempdir()?;
    let project = std::fs::canonicalize(project_tmp.path())?;
    std::fs::write(project.join("notes.md"), "notes\n")?;
    let shown = project.to_string_lossy().into_owned();
    let out = gov_guard(&s, &["--agent", "researcher", &shown])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let installed: Value = serde_json::from_str(&std::fs::read_to_string(
        project.join(".claude/settings.json"),
    )?)?;
    for event in ["Stop", "SessionEnd"] {
        assert!(
            installed["hooks"][event][0]["hooks"][0]["command"]
                .as_str()
                .is_some_and(|c| c.ends_with(&format!(" {} meter", gov_hook_bin().display()))),
            "{installed}"
        );
    }
    let config = tempfile::tempdir()?;

    // A first turn: a call, a subagent's call, a damaged transcript line,
    // and the answer that ends the turn (metered by the Stop hook).
    let log1 = project_tmp.path().join("one.log");
    session(
        &project,
        config.path(),
        &[
            r#"{"fake":"tool","tool_name":"Bash","tool_input":{"command":"git status"},"model":"claude-sonnet-4-5","usage":{"input_tokens":1000,"output_tokens":100}}"#,
            r#"{"fake":"transcript","line":"{\"type\":\"assistant\",\"message\":\"damaged"}"#,
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"},"agent_id":"sub1","agent_type":"Explore","model":"claude-haiku-4-5","usage":{"input_tokens":200,"output_tokens":20}}"#,
            r#"{"fake":"answer","text":"done","model":"claude-sonnet-4-5","usage":{"input_tokens":300,"output_tokens":30,"cache_read_input_tokens":70}}"#,
        ],
        &log1,
    )?;
    let first = decisions(&log1)?;
    assert_eq!(
        first.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["allow", "allow"],
        "{first:?}"
    );
    let stops: Vec<Value> = std::fs::read_to_string(&log1)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect();
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(stops.iter().all(|v| v["exit"] == 0), "{stops:?}");
    // Every message is charged once: 1,100 + 220 + 400 tokens, priced by
    // the server (sonnet: $3 in, $15 out, $0.30 cache read per million;
    // haiku: $1 and $5).
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 1720, "{:?}", b.body);
    let dollars =
        (1000.0 * 3.0 + 100.0 * 15.0 + 200.0 + 20.0 * 5.0 + 300.0 * 3.0 + 30.0 * 15.0 + 70.0 * 0.3)
            / 1e6;
    let got = b.body["dollars_consumed"].as_f64().unwrap_or_default();
    assert!((got - dollars).abs() < 1e-6, "{got} vs {dollars}");
    let charges = s.audit("budget_charge")?;
    assert!(!charges.is_empty());
    assert!(
        charges.iter().all(|c| c["agent_id"] == "researcher"),
        "{charges:?}"
    );

    // A second turn crosses the cap: the call that follows is denied, the
    // agent paused, and every later call denied.
    let log2 = project_tmp.path().join("two.log");
    session(
        &project,
        config.path(),
        &[
            r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"},"model":"claude-sonnet-4-5","usage":{"input_tokens":3000,"output_tokens":500}}"#,
            r#"{"fake":"tool","tool_name":"Bash","tool_input":{"command":"git status"}}"#,
            r#"{"fake":"tool","tool_name":"Bash","tool_input":{"command":"ls"},"usage":{"input_tokens":0,"output_tokens":0}}"#,
        ],
        &log2,
    )?;
    let second = decisions(&log2)?;
    assert_eq!(second.len(), 3, "{second:?}");
    assert_eq!(second[0].0, "deny", "{second:?}");
    assert_eq!(
        second[0].1,
        "gov: denied `Read`: this session has spent its budget (agent_paused); the operator can raise the caps or resume the agent"
    );
    // The next answer is charged too (a charge records money spent), and
    // the call after it denied; one with no new usage meets the pause.
    assert_eq!(
        second[1].1,
        "gov: denied `Bash`: this session has spent its budget (agent_paused); the operator can raise the caps or resume the agent"
    );
    assert!(
        second[2]
            .1
            .starts_with("gov: denied `Bash`: agent is paused"),
        "{second:?}"
    );
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["status"], "paused", "{:?}", b.body);
    assert_eq!(b.body["tokens_consumed"], 1720 + 3500 + 2, "{:?}", b.body);

    // A session without a transcript cannot be metered: denied.
    let log3 = project_tmp.path().join("three.log");
    std::fs::write(
        project_tmp.path().join("three.scenario.jsonl"),
        r#"{"fake":"tool","tool_name":"Read","tool_input":{"file_path":"notes.md"}}"#,
    )?;
    let claude = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"))
        .args(["-p", "work", "--no-session-persistence"])
        .current_dir(&project)
        .env("CLAUDE_CONFIG_DIR", config.path())
        .env(
            "FAKE_CLAUDE_SCENARIO",
            project_tmp.path().join("three.scenario.jsonl"),
        )
        .env("FAKE_CLAUDE_LOG", &log3)
        .output()?;
    assert!(claude.status.success());
    let third = decisions(&log3)?;
    assert_eq!(third[0].0, "deny");
    assert!(
        third[0].1.starts_with(
            "gov: tool call denied because the policy check could not be completed: the session's usage could not be metered: cannot read the session's transcript `"
        ),
        "{third:?}"
    );

    // Usage written after the session's last hook (a turn cut short) is
    // read by the removal, which ends the run with all the session spent.
    let folder = std::fs::read_dir(config.path().join("projects"))?
        .next()
        .ok_or("no transcript folder")??
        .path();
    let transcript = std::fs::read_dir(&folder)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .ok_or("no transcript")?;
    let mut f = std::fs::OpenOptions::new().append(true).open(&transcript)?;
    std::io::Write::write_all(
        &mut f,
        b"{\"type\":\"assistant\",\"timestamp\":\"2999-01-01T00:00:00Z\",\"message\":{\"id\":\"msg_late\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":0}}}\n",
    )?;
    let removed = gov_guard(&s, &["--remove", &shown])?;
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let ended = s.audit("agent_run_complete")?;
    assert_eq!(ended[0]["payload"]["tokens"], 1720 + 3500 + 2 + 10);
    assert_eq!(ended[0]["payload"]["usage_missing"], false);
    Ok(())
}

#[test]
fn only_a_guard_session_reports_its_own_usage() -> TestResult {
    let s = TestServer::start()?;
    let report = serde_json::json!({"charges": [{"model": "claude-sonnet-4-5",
        "input_tokens": 10, "output_tokens": 0, "micros": 0}], "estimate": true});
    // A `gov run` run is metered by its runner: its own token cannot.
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &serde_json::json!({"agent_id": "researcher"}),
    )?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (run, token) = (r.text("run_id"), r.text("agent_token"));
    let own = s.post(&format!("/runs/{run}/usage"), Some(&token), &report)?;
    assert_eq!(own.status, 403, "{:?}", own.body);
    assert_eq!(
        own.body["detail"],
        format!("run `{run}` is metered by its runner: only a `gov guard` session reports its own usage")
    );
    // A guard session's token speaks for its own run only.
    let folder = tempfile::tempdir()?;
    let g = s.post(
        "/runs",
        Some(&s.runner),
        &serde_json::json!({"agent_id": "researcher", "folder": std::fs::canonicalize(folder.path())?}),
    )?;
    let (guard_run, guard_token) = (g.text("run_id"), g.text("agent_token"));
    let other = s.post(&format!("/runs/{run}/usage"), Some(&guard_token), &report)?;
    assert_eq!(other.status, 403, "{:?}", other.body);
    let ok = s.post(
        &format!("/runs/{guard_run}/usage"),
        Some(&guard_token),
        &report,
    )?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["run"]["tokens_spent"], 10);
    assert_eq!(ok.body["stop"], false);
    // Past its reservation (50,000 tokens) the session may make no call,
    // though the agent's cap (200,000) is not reached.
    let big = serde_json::json!({"charges": [{"model": "claude-sonnet-4-5",
        "input_tokens": 49990, "output_tokens": 0, "micros": 0}]});
    let spent = s.post(
        &format!("/runs/{guard_run}/usage"),
        Some(&guard_token),
        &big,
    )?;
    assert_eq!(spent.body["stop"], true, "{:?}", spent.body);
    assert_eq!(spent.body["stop_reason"], "reservation_exhausted");
    let call = s.post(
        "/tools/evaluate",
        Some(&guard_token),
        &serde_json::json!({"agent_id": "researcher", "run_id": guard_run, "tool_name": "Read",
                            "tool_input": {"file_path": "a"}, "cwd": std::fs::canonicalize(folder.path())?}),
    )?;
    assert_eq!(call.body["decision"], "deny", "{:?}", call.body);
    // Priced by gov init's `[prices]`: claude-sonnet-4 input at $3 per
    // million tokens.
    assert_eq!(
        call.body["reason"],
        "this session has spent its run's reservation: 50000 of 50000 tokens, $0.15 of $5.00"
    );
    Ok(())
}

#[test]
fn a_guard_hook_whose_server_hangs_while_metering_denies_in_time() -> TestResult {
    use std::io::Write;
    let url = crate::tools::silent_server()?;
    let dir = tempfile::tempdir()?;
    let session = dir.path().join("r1.session.json");
    std::fs::write(
        &session,
        serde_json::json!({"url": url, "agent_id": "researcher", "run_id": "r1",
                           "agent_token": "t", "approval_wait_seconds": 2})
        .to_string(),
    )?;
    let transcript = dir.path().join("s.jsonl");
    std::fs::write(
        &transcript,
        "{\"type\":\"assistant\",\"message\":{\"id\":\"m1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n",
    )?;
    let started = std::time::Instant::now();
    let mut child = Command::new(gov_bin())
        .args(["hook", "pre-tool-use"])
        .env_clear()
        .env("GOV_SESSION_FILE", &session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(
        serde_json::json!({"hook_event_name": "PreToolUse", "tool_name": "Read",
                           "tool_input": {"file_path": "a"}, "transcript_path": transcript})
        .to_string()
        .as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let spec = &v["hookSpecificOutput"];
    assert_eq!(spec["permissionDecision"], "deny", "{v}");
    assert_eq!(
        spec["permissionDecisionReason"],
        format!(
            "gov: tool call denied because the policy check could not be completed: the session's usage could not be metered: the usage could not be recorded: the gov server at `{url}/runs/r1/usage` did not answer in time"
        )
    );
    let deadline = gov::runner::hook::guard_hook_deadline(std::time::Duration::from_secs(2));
    let timeout = gov::runner::claude::hook_timeout_seconds(deadline);
    assert!(took < std::time::Duration::from_secs(timeout), "{took:?}");
    // What was read stays to be reported.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r1.meter.json"))?)?;
    assert_eq!(state["seen"]["claude-sonnet-4-5"]["input_tokens"], 5);
    assert!(state["charged"].as_object().is_some_and(|c| c.is_empty()));
    Ok(())
}

/// The keys of `v` that `allowed` (a list in the settings fixture) lacks.
fn unknown_keys(v: &Value, allowed: &Value) -> Vec<String> {
    let allowed: Vec<&str> = allowed
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    v.as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !allowed.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_else(|| vec!["(not an object)".into()])
}

#[test]
fn printed_managed_settings_use_claude_codes_field_names_and_their_hook_works() -> TestResult {
    let s = TestServer::start()?;
    let out = gov_guard(
        &s,
        &[
            "--print-managed-settings",
            "--session-file",
            "~/gov/session.json",
        ],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let managed: Value = serde_json::from_slice(&out.stdout)?;
    let types: Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/settings/claude-agent-sdk-0.3.332.json"),
    )?)?;
    // Every field is one the published settings types name, at its place.
    assert_eq!(
        unknown_keys(&managed, &types["settings"]),
        Vec::<String>::new()
    );
    assert_eq!(
        unknown_keys(&managed["permissions"], &types["permissions"]),
        Vec::<String>::new()
    );
    assert_eq!(
        unknown_keys(&managed["hooks"], &types["hook_events"]),
        Vec::<String>::new()
    );
    assert_eq!(managed["allowManagedHooksOnly"], true);
    assert!(managed.get("disableAllHooks").is_none());
    assert!(types["values"]["permissions.disableBypassPermissionsMode"]
        .as_array()
        .is_some_and(|v| v.contains(&managed["permissions"]["disableBypassPermissionsMode"])));
    let mut commands = Vec::new();
    for (event, entries) in managed["hooks"].as_object().ok_or("no hooks")? {
        for entry in entries.as_array().ok_or("not a list")? {
            assert_eq!(
                unknown_keys(entry, &types["hook_matcher"]),
                Vec::<String>::new()
            );
            for hook in entry["hooks"].as_array().ok_or("no hooks")? {
                assert_eq!(
                    unknown_keys(hook, &types["command_hook"]),
                    Vec::<String>::new()
                );
                assert_eq!(hook["type"], "command");
                assert!(hook["timeout"].as_u64().is_some_and(|t| t > 0));
                commands.push((event.clone(), hook.clone()));
            }
        }
    }
    let events: Vec<&str> = commands.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(events, ["PreToolUse", "Stop", "SessionEnd"]);
    let check = &commands[0].1;
    assert_eq!(check["onFailure"], "block");
    assert!(types["values"]["hooks.command.onFailure"]
        .as_array()
        .is_some_and(|v| v.contains(&check["onFailure"])));
    let deadline = gov::runner::hook::guard_hook_deadline(std::time::Duration::ZERO);
    assert!(check["timeout"]
        .as_u64()
        .is_some_and(|t| t > deadline.as_secs()));

    // The printed command runs gov's hook with each user's session file.
    let home = tempfile::tempdir()?;
    let project = tempfile::tempdir()?;
    let project_dir = std::fs::canonicalize(project.path())?;
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &serde_json::json!({"agent_id": "researcher", "folder": project_dir}),
    )?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    std::fs::create_dir_all(home.path().join("gov"))?;
    std::fs::write(
        home.path().join("gov/session.json"),
        serde_json::json!({"url": s.base, "agent_id": "researcher", "run_id": r.text("run_id"),
                           "agent_token": r.text("agent_token")})
        .to_string(),
    )?;
    let transcript = project_dir.join("t.jsonl");
    std::fs::write(
        &transcript,
        "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n",
    )?;
    std::fs::write(project_dir.join("notes.md"), "x")?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(check["command"].as_str().ok_or("no command")?)
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().ok_or("no stdin")?,
        serde_json::json!({"hook_event_name": "PreToolUse", "tool_name": "Read", "cwd": project_dir,
                           "tool_input": {"file_path": "notes.md"}, "transcript_path": transcript})
        .to_string()
        .as_bytes(),
    )?;
    let answer: Value = serde_json::from_slice(&child.wait_with_output()?.stdout)?;
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "allow",
        "{answer}"
    );
    Ok(())
}

#[test]
fn hooks_metering_one_session_at_once_charge_each_message_once() -> TestResult {
    let s = TestServer::start()?;
    let project = tempfile::tempdir()?;
    let folder = std::fs::canonicalize(project.path())?;
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &serde_json::json!({"agent_id": "researcher", "folder": folder}),
    )?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let dir = tempfile::tempdir()?;
    let session = dir.path().join("r.session.json");
    std::fs::write(
        &session,
        serde_json::json!({"url": s.base, "agent_id": "researcher", "run_id": r.text("run_id"),
                           "agent_token": r.text("agent_token")})
        .to_string(),
    )?;
    let transcript = dir.path().join("s.jsonl");
    let mut lines = String::new();
    for i in 0..50 {
        // Each message twice, as a message written in two blocks is.
        for output in [1, 3] {
            lines.push_str(&format!(
                "{{\"type\":\"assistant\",\"message\":{{\"id\":\"msg_{i}\",\"model\":\"claude-sonnet-4-5\",\"usage\":{{\"input_tokens\":10,\"output_tokens\":{output}}}}}}}\n"
            ));
        }
    }
    std::fs::write(&transcript, lines)?;
    let input =
        serde_json::json!({"hook_event_name": "Stop", "transcript_path": transcript}).to_string();
    let children: Vec<_> = (0..6)
        .map(|_| -> TestResult<std::process::Child> {
            let mut c = Command::new(gov_bin())
                .args(["hook", "meter"])
                .env_clear()
                .env("GOV_SESSION_FILE", &session)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            std::io::Write::write_all(&mut c.stdin.take().ok_or("no stdin")?, input.as_bytes())?;
            Ok(c)
        })
        .collect::<TestResult<_>>()?;
    for c in children {
        let out = c.wait_with_output()?;
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text(&out.stderr), "");
    }
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 50 * 13, "{:?}", b.body);
    Ok(())
}
