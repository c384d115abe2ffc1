//! Runs and tool-call evaluation over the API.

use super::*;

#[test]
fn runs_mint_tokens_charge_on_finish_and_revoke() -> TestResult {
    let s = TestServer::start()?;
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &json!({"agent_id": "noop", "task_id": "t1"}),
    )?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let run = r.text("run_id");
    let tok = r.text("agent_token");
    assert_eq!(s.get("/status/me?agent_id=noop", Some(&tok))?.status, 200);
    assert_eq!(
        s.post("/runs", Some(&tok), &json!({"agent_id": "noop"}))?
            .status,
        403
    );
    assert_eq!(
        s.post("/runs", Some(&s.runner), &json!({"agent_id": "ghost"}))?
            .status,
        404
    );

    let f = s.post(
        &format!("/runs/{run}/finish"),
        Some(&s.runner),
        &json!({"status": "complete", "reason": "done", "tokens": 2000}),
    )?;
    assert_eq!(f.status, 200, "{:?}", f.body);
    assert_eq!(f.body["budget"]["tokens_consumed"], 2000);
    assert_eq!(s.audit("agent_run_complete")?.len(), 1);
    assert_eq!(
        s.get("/status/me?agent_id=noop", Some(&tok))?.status,
        401,
        "revoked"
    );
    assert_eq!(
        s.post(
            &format!("/runs/{run}/finish"),
            Some(&s.runner),
            &json!({"status": "failed"})
        )?
        .status,
        409
    );

    s.post(
        "/agents/noop/pause",
        Some(&s.operator),
        &json!({"reason": "hold"}),
    )?;
    let r = s.post("/runs", Some(&s.runner), &json!({"agent_id": "noop"}))?;
    assert_eq!(r.status, 423);
    assert_eq!(r.body["error"], "agent_paused");
    assert!(r.body["policies"].is_array());
    assert_eq!(s.audit("agent_run_skipped")?.len(), 1);
    Ok(())
}

#[test]
fn tool_calls_are_evaluated_and_a_person_approves_one_use() -> TestResult {
    let s = TestServer::start()?;
    let r = s.post("/runs", Some(&s.runner), &json!({"agent_id": "noop"}))?;
    let run = r.text("run_id");
    let tok = r.text("agent_token");
    let call = |tool: &str, input: Value| json!({"agent_id": "noop", "run_id": run, "tool_name": tool, "tool_input": input, "cwd": "."});
    let read = s.post(
        "/tools/evaluate",
        Some(&tok),
        &call("Read", json!({"file_path": "notes.md"})),
    )?;
    assert_eq!(read.status, 200, "{:?}", read.body);
    let outcomes: Vec<String> = [
        call("Read", json!({"file_path": "notes.md"})),
        call("Read", json!({"file_path": "../../../etc/passwd"})),
        call("Bash", json!({"command": "rm -rf /"})),
        call("mcp__unknown__tool", json!({})),
    ]
    .iter()
    .map(|c| {
        s.post("/tools/evaluate", Some(&tok), c)
            .map(|r| r.text("decision"))
            .unwrap_or_default()
    })
    .collect();
    assert!(
        outcomes
            .iter()
            .all(|d| ["allow", "deny", "needs_person"].contains(&d.as_str())),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0], "allow", "{outcomes:?}");
    assert_ne!(outcomes[1], "allow", "{outcomes:?}");
    assert!(!s.audit("tool_decision")?.is_empty());

    // The researcher's web fetch needs a person: approve it, use it once.
    let r = s.post("/runs", Some(&s.runner), &json!({"agent_id": "researcher"}))?;
    let tok = r.text("agent_token");
    let c = json!({"agent_id": "researcher", "tool_name": "WebFetch",
                   "tool_input": {"url": "https://example.com", "prompt": "summarise"}});
    let first = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(first.body["decision"], "needs_person", "{:?}", first.body);
    let pid = first.text("proposal_id");
    let p = s.get(&format!("/proposals/{pid}"), Some(&tok))?;
    assert_eq!(p.body["action_type"], "use_tool:WebFetch");
    assert_eq!(p.body["payload"]["tool_name"], "WebFetch");
    let again = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(
        again.body["proposal_id"],
        pid.as_str(),
        "no second proposal while it waits"
    );
    s.approve(&pid)?;
    let once = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(once.body["decision"], "allow", "{:?}", once.body);
    let twice = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(twice.body["decision"], "needs_person");
    assert_eq!(s.audit("tool_approval_used")?.len(), 1);
    Ok(())
}
