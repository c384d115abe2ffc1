//! Regression tests from the security review: each test is one way an agent
//! (or a token-less caller, or a foreign page) tried to get more than the
//! policy set grants.

use serde_json::{json, Value};

use crate::support::repo::TestResult;
use crate::support::server::TestServer;

/// Starts a run for `agent` and returns its run id and agent token.
fn run_token(s: &TestServer, agent: &str) -> TestResult<(String, String)> {
    let r = s.post("/runs", Some(&s.runner), &json!({"agent_id": agent}))?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let field = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
    Ok((field("run_id"), field("agent_token")))
}

fn tool_decision(
    s: &TestServer,
    tok: &str,
    agent: &str,
    tool: &str,
    input: Value,
) -> TestResult<String> {
    let r = s.post(
        "/tools/evaluate",
        Some(tok),
        &json!({"agent_id": agent, "tool_name": tool, "tool_input": input}),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(r.text("decision"))
}

// ------------------------------------------------------------ tool paths

#[test]
fn tool_paths_that_leave_the_agent_folder_by_any_key_are_denied() -> TestResult {
    let s = TestServer::start()?;
    let (_, tok) = run_token(&s, "noop")?;
    let d = |tool: &str, input: Value| tool_decision(&s, &tok, "noop", tool, input);
    // Still allowed: a plain read inside its folder.
    assert_eq!(d("Read", json!({"file_path": "memory.md"}))?, "allow");
    assert_eq!(
        d("Glob", json!({"pattern": "*.md", "path": "workspace"}))?,
        "allow"
    );
    // `~` is the home directory to the tool, not a folder named `~`.
    for input in [
        json!({"file_path": "~/.ssh/id_ed25519"}),
        json!({"file_path": "~"}),
        json!({"file_path": "~root/.bashrc"}),
        // A second path key that points outside.
        json!({"file_path": "memory.md", "notebook_path": "/etc/passwd"}),
        json!({"file_path": "memory.md", "path": "../../../etc"}),
        // A path key that is not a string must not be skipped.
        json!({"file_path": ["/etc/passwd"], "path": "memory.md"}),
        json!({"file_path": {"p": "/etc/passwd"}}),
    ] {
        assert_ne!(d("Read", input.clone())?, "allow", "{input}");
    }
    // Glob patterns and Grep's file filter are paths too.
    for (tool, input) in [
        ("Glob", json!({"pattern": "/etc/*", "path": "workspace"})),
        (
            "Glob",
            json!({"pattern": "../../../../etc/*", "path": "workspace"}),
        ),
        (
            "Glob",
            json!({"pattern": "**/../../../*", "path": "workspace"}),
        ),
        ("Glob", json!({"pattern": "~/.ssh/*", "path": "workspace"})),
        (
            "Grep",
            json!({"pattern": "root", "path": "workspace", "glob": "../../../../etc/*"}),
        ),
        (
            "Grep",
            json!({"pattern": "root", "path": "workspace", "glob": "/etc/*"}),
        ),
    ] {
        assert_ne!(d(tool, input.clone())?, "allow", "{tool} {input}");
    }
    Ok(())
}

// ------------------------------------------------- tool approvals, forged

#[test]
fn an_agent_cannot_file_its_own_tool_approval_as_a_proposal() -> TestResult {
    let s = TestServer::start()?;
    let (_, tok) = run_token(&s, "researcher")?;
    let input = json!({"url": "https://example.com", "prompt": "p"});
    // The same action type and payload gov files for a WebFetch call.
    let forged = json!({
        "agent_id": "researcher",
        "action_type": "use_tool:WebFetch",
        "payload": {"tool_name": "WebFetch", "tool_input": input},
        "expected_outcome": "routine research",
        "reversible": true,
        "requires_approval": false,
    });
    let r = s.post("/proposals", Some(&tok), &forged)?;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "action_type"]));
    assert_eq!(
        tool_decision(&s, &tok, "researcher", "WebFetch", input)?,
        "needs_person"
    );
    Ok(())
}

// ------------------------------------------------------ agent ids, audit

#[test]
fn posted_audit_entries_must_name_a_valid_agent_and_proposal() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let long = "a".repeat(5000);
    for (agent, field) in [
        ("../../etc", "agent_id"),
        ("noop\n", "agent_id"),
        ("Agent::\"noop\"", "agent_id"),
        ("", "agent_id"),
        (long.as_str(), "agent_id"),
    ] {
        for token in [None, Some(s.runner.as_str())] {
            let r = s.post(
                "/audit",
                token,
                &json!({"agent_id": agent, "event_type": "note"}),
            )?;
            assert_eq!(r.status, 422, "{agent:?}: {:?}", r.body);
            assert_eq!(r.body["detail"][0]["loc"], json!(["body", field]));
        }
    }
    let r = s.post(
        "/audit",
        None,
        &json!({"agent_id": "noop", "event_type": "note", "proposal_id": "../x"}),
    )?;
    assert_eq!(r.status, 422, "{:?}", r.body);
    // Nothing of it became an agent.
    let known = s.get("/scoreboard", None)?;
    let ids: Vec<&str> = known
        .body
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["agent_id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.iter().all(|id| gov::config::valid_agent_id(id)),
        "{ids:?}"
    );
    let ok = s.post(
        "/audit",
        None,
        &json!({"agent_id": "noop", "event_type": "note"}),
    )?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    Ok(())
}

// ------------------------------------------------------------ proposal ids

#[test]
fn a_proposal_id_git_cannot_name_a_branch_after_is_a_422() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    for id in ["x.", "a.lock", "a..b", ".a", "a/b", "a@{1}", "a\\b"] {
        let mut body = crate::support::server::proposal("noop", "publish_content");
        body["proposal_id"] = json!(id);
        let r = s.post("/proposals", Some(&tok), &body)?;
        assert_eq!(r.status, 422, "{id}: {:?}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], json!(["body", "proposal_id"]));
    }
    Ok(())
}

// ------------------------------------------------------------------ runs

#[test]
fn a_run_token_records_tool_calls_under_its_own_run_only() -> TestResult {
    let s = TestServer::start()?;
    let (run_a, tok_a) = run_token(&s, "noop")?;
    let (run_b, _) = run_token(&s, "noop")?;
    let r = s.post(
        "/tools/evaluate",
        Some(&tok_a),
        &json!({"agent_id": "noop", "run_id": run_b, "tool_name": "Read",
                "tool_input": {"file_path": "memory.md"}}),
    )?;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = s.post(
        "/tools/evaluate",
        Some(&tok_a),
        &json!({"agent_id": "noop", "tool_name": "Read",
                "tool_input": {"file_path": "memory.md"}}),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let decisions = s.audit("tool_decision")?;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["payload"]["run_id"], run_a.as_str());
    Ok(())
}
