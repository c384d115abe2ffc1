//! Who may call what: tokens, roles, impersonation.

use super::*;

#[test]
fn agent_tokens_cannot_decide_charge_or_act_as_another_agent() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&tok),
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 403);
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        None,
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 401);
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.runner),
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 403);
    assert_eq!(
        s.get(&format!("/proposals/{id}"), Some(&tok))?.body["status"],
        "pending"
    );

    let c = s.post(
        "/budget/noop/charge",
        Some(&tok),
        &json!({"tokens": 10, "tool": "x"}),
    )?;
    assert_eq!(c.status, 403);
    assert_eq!(
        s.post("/admin/pause-all", Some(&tok), &json!({}))?.status,
        403
    );
    assert_eq!(
        s.post("/agents/noop/resume", Some(&tok), &json!({}))?
            .status,
        403
    );

    let other = submit(&s, &tok, &proposal("capped", "publish_content"))?;
    assert_eq!(other.status, 403);
    let flags = s.audit("audit_flag_impersonation")?;
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["payload"]["claimed_agent_id"], "capped");

    assert_eq!(
        submit(&s, "bogus", &proposal("noop", "publish_content"))?.status,
        401
    );
    let anon = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
    assert_eq!(anon.status, 401, "agent_auth = required by default");

    // An agent cannot post state-changing events to the audit log.
    let fake = s.post(
        "/audit",
        Some(&tok),
        &json!({"event_type": "agent_resumed", "agent_id": "noop"}),
    )?;
    assert_eq!(fake.status, 422);
    let ok = s.post(
        "/audit",
        Some(&tok),
        &json!({"event_type": "action_executed", "payload": {"x": 1}}),
    )?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert!(ok.body["audit_id"].is_u64());
    assert!(ok.body["ts"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    let mine = s.get(
        "/audit?agent_id=noop&event_type=action_executed",
        Some(&tok),
    )?;
    assert_eq!(mine.body[0]["agent_id"], "noop");
    Ok(())
}

#[test]
fn optional_agent_auth_accepts_token_less_agents() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let r = s.post("/proposals", None, &proposal("newbie", "publish_content"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let me = s.get("/status/me?agent_id=newbie", None)?;
    assert_eq!(me.body["status"], "ok", "{}: {:?}", me.status, me.body);
    // Decisions still need the operator.
    let id = r.body["proposal_id"].as_str().unwrap_or_default();
    assert_eq!(
        s.post(
            &format!("/proposals/{id}/decision"),
            None,
            &json!({"decision": "approve"})
        )?
        .status,
        401
    );
    Ok(())
}

#[test]
fn foreign_host_or_origin_changes_nothing() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    let body = json!({"decision": "approve"});
    let path = format!("/proposals/{id}/decision");
    let r = s.send(
        "POST",
        &path,
        Some(&s.operator),
        Some(&body),
        &[("Host", "evil.example")],
    )?;
    assert_eq!(r.status, 421);
    let host = format!("attacker.example:{}", s.port);
    let r = s.send(
        "POST",
        &path,
        Some(&s.operator),
        Some(&body),
        &[("Host", &host)],
    )?;
    assert_eq!(r.status, 421);
    let r = s.send(
        "POST",
        &path,
        Some(&s.operator),
        Some(&body),
        &[("Origin", "http://evil.example")],
    )?;
    assert_eq!(r.status, 403);
    let r = s.send(
        "POST",
        "/admin/pause-all",
        Some(&s.operator),
        Some(&json!({})),
        &[("Origin", "null")],
    )?;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.get(&format!("/proposals/{id}"), Some(&tok))?.body["status"],
        "pending"
    );
    assert!(s.audit("admin_pause_all")?.is_empty());
    let own = format!("http://127.0.0.1:{}", s.port);
    let r = s.send(
        "POST",
        &path,
        Some(&s.operator),
        Some(&body),
        &[("Origin", &own)],
    )?;
    assert_eq!(r.status, 200);
    Ok(())
}
