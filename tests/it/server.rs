//! The proposal-gate server over a real socket: the HTTP contract (rows and
//! errors), Git as the record, auth, browser safety and races, one file per
//! area under `server/`; here, the check that every reply is its type from
//! `gov::wire`.

use serde_json::{json, Value};

use crate::support::repo::{require_program, TestResult};
use crate::support::server::{proposal, Reply, TestServer};

fn submit(s: &TestServer, token: &str, body: &Value) -> TestResult<crate::support::server::Reply> {
    s.post("/proposals", Some(token), body)
}

mod auth;
mod budgets;
mod credentials;
mod durability;
mod proposals;
mod races;
mod runs;

// ------------------------------------------------------------ wire types

/// `body` read as `T` and written back is `body` again: every field the
/// server sends is one `T` knows, under the same name, and none is missing.
fn agrees<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, body: &Value) {
    let typed: T = match serde_json::from_value(body.clone()) {
        Ok(t) => t,
        Err(e) => panic!("{what}: the client's type cannot read the server's reply: {e}: {body}"),
    };
    let back = serde_json::to_value(&typed).unwrap_or_default();
    assert_eq!(
        &back, body,
        "{what}: the server's reply and the client's type disagree"
    );
}

#[test]
fn wire_types_are_what_the_server_sends() -> TestResult {
    use gov::wire;
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    agrees::<wire::ProposalFiled>("POST /proposals", &r.body);
    let id = r.text("proposal_id");
    let decision = wire::DecisionRequest {
        decision: gov::domain::proposal::Verdict::Reject,
        final_: false,
        note: Some("no".into()),
        wait_for_checkout: false,
    };
    let r = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &serde_json::to_value(&decision)?,
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    agrees::<wire::ProposalDecided>("POST /proposals/{id}/decision", &r.body);
    let post = wire::AuditPost {
        agent_id: Some("noop".into()),
        event_type: "action_executed".into(),
        proposal_id: None,
        task_id: None,
        payload: serde_json::Map::new(),
    };
    let r = s.post("/audit", Some(&tok), &serde_json::to_value(&post)?)?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    agrees::<wire::AuditPosted>("POST /audit", &r.body);
    let r = s.get("/status", Some(&s.operator))?;
    agrees::<wire::Status>("GET /status", &r.body);
    let open = wire::RunOpen {
        agent_id: "noop".into(),
        task_id: None,
        folder: None,
    };
    let r = s.post("/runs", Some(&s.runner), &serde_json::to_value(&open)?)?;
    assert_eq!(r.status, 201, "{:?}", r.body);
    agrees::<wire::RunOpened>("POST /runs", &r.body);
    let r = s.post(
        "/agents/noop/pause",
        Some(&s.operator),
        &json!({"reason": "r"}),
    )?;
    agrees::<wire::AgentState>("POST /agents/{id}/pause", &r.body);
    let r = s.post("/runs", Some(&s.runner), &serde_json::to_value(&open)?)?;
    assert_eq!(r.status, 423, "{:?}", r.body);
    agrees::<wire::RunSkipped>("POST /runs (423)", &r.body);
    let r = s.post("/dashboard/login-codes", Some(&s.operator), &json!({}))?;
    agrees::<wire::LoginLink>("POST /dashboard/login-codes", &r.body);
    Ok(())
}

/// The rest of the API: every reply that is not covered above, each read
/// through its type from `gov::wire`, and the error replies.
#[test]
fn every_other_reply_is_its_wire_type() -> TestResult {
    use gov::wire;
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let ok = |what: &str, r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
    };
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    ok("POST /proposals", &r, 200);
    let id = r.text("proposal_id");
    let r = s.get("/proposals?status=all", Some(&tok))?;
    ok("GET /proposals", &r, 200);
    agrees::<Vec<gov::domain::proposal::Proposal>>("GET /proposals", &r.body);
    let r = s.get(&format!("/proposals/{id}"), Some(&tok))?;
    ok("GET /proposals/{id}", &r, 200);
    agrees::<wire::ProposalView>("GET /proposals/{id}", &r.body);

    let r = s.get("/budget/noop", Some(&tok))?;
    ok("GET /budget", &r, 200);
    agrees::<wire::Budget>("GET /budget/{agent}", &r.body);
    let charge = wire::ChargeRequest {
        tokens: 10,
        tool: "t".into(),
        task_id: None,
        dollars: Some(0.01),
        model: None,
        usage: None,
    };
    let r = s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &serde_json::to_value(&charge)?,
    )?;
    ok("POST /budget/{agent}/charge", &r, 200);
    agrees::<wire::Budget>("POST /budget/{agent}/charge", &r.body);
    let r = s.get("/scoreboard", Some(&tok))?;
    ok("GET /scoreboard", &r, 200);
    agrees::<Vec<wire::ScoreRow>>("GET /scoreboard", &r.body);
    let r = s.get("/audit?limit=500", Some(&tok))?;
    ok("GET /audit", &r, 200);
    agrees::<Vec<wire::AuditListed>>("GET /audit", &r.body);
    let r = s.get("/status/me?agent_id=noop", Some(&tok))?;
    ok("GET /status/me", &r, 200);
    agrees::<wire::AgentState>("GET /status/me", &r.body);

    let issue = wire::CredentialIssue {
        agent_id: "noop".into(),
        scope: "github:read".into(),
        ttl_seconds: 60,
    };
    let r = s.post(
        "/credentials/issue",
        Some(&tok),
        &serde_json::to_value(&issue)?,
    )?;
    ok("POST /credentials/issue", &r, 200);
    agrees::<wire::CredentialIssued>("POST /credentials/issue", &r.body);
    let redeem = wire::CredentialRedeem {
        token: r.text("token"),
    };
    let r = s.post(
        "/credentials/redeem",
        Some(&tok),
        &serde_json::to_value(&redeem)?,
    )?;
    ok("POST /credentials/redeem", &r, 200);
    agrees::<wire::CredentialRedeemed>("POST /credentials/redeem", &r.body);

    let r = s.post("/agents/researcher/tokens", Some(&s.operator), &json!({}))?;
    ok("POST /agents/{id}/tokens", &r, 201);
    agrees::<wire::TokenMinted>("POST /agents/{id}/tokens", &r.body);
    let revoke = wire::TokenRevoke {
        token: r.text("agent_token"),
    };
    let r = s.post(
        "/tokens/revoke",
        Some(&s.operator),
        &serde_json::to_value(&revoke)?,
    )?;
    ok("POST /tokens/revoke", &r, 200);
    agrees::<wire::TokenRevoked>("POST /tokens/revoke", &r.body);

    let open = wire::RunOpen {
        agent_id: "noop".into(),
        task_id: None,
        folder: None,
    };
    let r = s.post("/runs", Some(&s.runner), &serde_json::to_value(&open)?)?;
    ok("POST /runs", &r, 201);
    let opened: wire::RunOpened = serde_json::from_value(r.body)?;
    let mut input = serde_json::Map::new();
    input.insert("file_path".into(), json!("notes.md"));
    let call = wire::ToolCall {
        agent_id: "noop".into(),
        run_id: Some(opened.run_id.clone()),
        tool_name: "Read".into(),
        tool_input: input,
        cwd: Some(".".into()),
        tool_use_id: Some("toolu_1".into()),
        subagent_id: None,
        agent_type: None,
        permission_mode: None,
        path_var: None,
    };
    let r = s.post(
        "/tools/evaluate",
        Some(&opened.agent_token),
        &serde_json::to_value(&call)?,
    )?;
    ok("POST /tools/evaluate", &r, 200);
    agrees::<wire::ToolVerdict>("POST /tools/evaluate", &r.body);
    let usage = wire::UsageReport {
        charges: vec![gov::domain::pricing::ModelCharge {
            model: String::new(),
            usage: gov::domain::pricing::TokenUsage {
                input_tokens: 100,
                ..Default::default()
            },
            micros: 1_000,
        }],
        estimate: true,
    };
    let r = s.post(
        &format!("/runs/{}/usage", opened.run_id),
        Some(&s.runner),
        &serde_json::to_value(&usage)?,
    )?;
    ok("POST /runs/{id}/usage", &r, 200);
    agrees::<wire::RunCharged>("POST /runs/{id}/usage", &r.body);
    let finish = json!({"status": "complete", "tool_uses": [{"id": "toolu_1", "name": "Read"}]});
    let r = s.post(
        &format!("/runs/{}/finish", opened.run_id),
        Some(&s.runner),
        &finish,
    )?;
    ok("POST /runs/{id}/finish", &r, 200);
    agrees::<wire::RunFinished>("POST /runs/{id}/finish", &r.body);

    let r = s.post(
        "/admin/pause-all",
        Some(&s.operator),
        &json!({"reason": "r"}),
    )?;
    ok("POST /admin/pause-all", &r, 200);
    agrees::<wire::PausedAll>("POST /admin/pause-all", &r.body);
    let r = s.post("/agents/noop/resume", Some(&s.operator), &json!({}))?;
    ok("POST /agents/{id}/resume", &r, 200);
    agrees::<wire::AgentState>("POST /agents/{id}/resume", &r.body);

    // Errors: a message, a refusal with its code, malformed fields.
    let r = s.get("/proposals/no-such-id", Some(&tok))?;
    ok("GET /proposals/{missing}", &r, 404);
    agrees::<wire::ErrorReply>("404", &r.body);
    let mut own = proposal("noop", "publish_content");
    own["requires_approval"] = json!(false);
    let r = s.post("/proposals", Some(&tok), &own)?;
    ok("POST /proposals (self-approval)", &r, 400);
    agrees::<wire::ErrorReply>("400 self_approve_blocked", &r.body);
    let reply: wire::ErrorReply = serde_json::from_value(r.body)?;
    assert_eq!(reply.error(), Some("self_approve_blocked"));
    let r = s.post("/proposals", Some(&tok), &json!({"agent_id": "noop"}))?;
    ok("POST /proposals (malformed)", &r, 422);
    agrees::<wire::ErrorReply>("422", &r.body);
    Ok(())
}

/// `GET /status` counts the chain's entries: each write adds one, and the
/// count is the number the last entry was given (the chain numbers its
/// entries from 1).
#[test]
fn status_counts_the_entries_of_the_chain() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let entries = |s: &TestServer| -> TestResult<u64> {
        let r = s.get("/status", Some(&s.operator))?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Ok(r.body["audit_entries"].as_u64().ok_or("no audit_entries")?)
    };
    let before = entries(&s)?;
    assert!(before > 0, "gov init and the server's start write entries");
    let mut last = 0;
    for _ in 0..3 {
        let r = s.post(
            "/audit",
            Some(&tok),
            &json!({"agent_id": "noop", "event_type": "action_executed", "payload": {}}),
        )?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        last = r.body["audit_id"].as_u64().ok_or("no audit_id")?;
    }
    assert_eq!(entries(&s)?, before + 3);
    assert_eq!(entries(&s)?, last);
    Ok(())
}
