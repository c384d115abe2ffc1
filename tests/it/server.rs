//! The proposal-gate server over a real socket: the HTTP contract (rows and
//! errors), Git as the record, auth, browser safety and races.

use serde_json::{json, Value};

use crate::support::repo::{require_program, TestResult};
use crate::support::server::{proposal, Reply, TestServer};

fn submit(s: &TestServer, token: &str, body: &Value) -> TestResult<crate::support::server::Reply> {
    s.post("/proposals", Some(token), body)
}

// ------------------------------------------------------------- proposals

#[test]
fn auto_approvable_stays_off_main_and_needs_person_waits_on_a_branch() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut auto = proposal("noop", "research_only");
    auto["requires_approval"] = json!(false);
    let r = submit(&s, &tok, &auto)?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "auto-approved");
    let id = r.text("proposal_id");
    assert_eq!(id.len(), 36, "server-generated uuid");
    assert!(r.body["review_url"]
        .as_str()
        .unwrap_or_default()
        .contains(&id));
    // `main` moves only through review: the auto-approval is recorded by
    // its audit entry alone.
    let repo = s.repo.repo()?;
    let main = repo.find_commit(repo.refname_to_id("refs/heads/main")?)?;
    assert!(main
        .message()
        .unwrap_or("")
        .starts_with("policies and agents"));
    let got = s.get(&format!("/proposals/{id}"), Some(&tok))?;
    assert_eq!(got.body["status"], "auto-approved");
    assert!(got.body["audit_commit"].is_string(), "{:?}", got.body);

    let r = submit(&s, &tok, &proposal("noop", "publish_content"))?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "pending");
    let pid = r.text("proposal_id");
    let branch = repo.refname_to_id(&format!("refs/heads/gov/proposal/{pid}"))?;
    let c = repo.find_commit(branch)?;
    assert_eq!(c.parent_id(0)?, main.id(), "one commit on top of main");
    assert!(c.header_field_bytes("gpgsig").is_ok(), "signed");

    let got = s.get(&format!("/proposals/{pid}"), Some(&tok))?;
    assert_eq!(got.status, 200);
    for field in [
        "proposal_id",
        "agent_id",
        "wave",
        "submitted_at",
        "action_type",
        "payload",
        "payload_hash",
        "expected_outcome",
        "expected_cost_tokens",
        "expected_cost_dollars",
        "reversible",
        "requires_approval",
        "expires_at",
        "rationale",
        "links",
        "status",
        "decision",
        "decided_by",
        "decided_at",
        "decision_final",
    ] {
        assert!(got.body.get(field).is_some(), "missing {field}");
    }
    assert!(got.body["submitted_at"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    assert!(!got.body["policies"]
        .as_array()
        .map(Vec::is_empty)
        .unwrap_or(true));

    let list = s.get("/proposals?status=pending", Some(&tok))?;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
    let all = s.get("/proposals?limit=1", Some(&tok))?;
    assert_eq!(all.body.as_array().map(Vec::len), Some(1));
    assert_eq!(s.get("/proposals/nope", Some(&tok))?.status, 404);

    let submitted = s.audit("proposal_submitted")?;
    assert_eq!(submitted.len(), 2);
    assert!(submitted[0]["decision"]["policy_version"].is_string());
    Ok(())
}

#[test]
fn duplicate_ids_conflict_and_malformed_bodies_name_the_field() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut p = proposal("noop", "publish_content");
    p["proposal_id"] = json!("fixed-1");
    assert_eq!(submit(&s, &tok, &p)?.status, 200);
    let dup = submit(&s, &tok, &p)?;
    assert_eq!(dup.status, 409);
    assert!(dup.body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("already exists"));

    let mut missing = proposal("noop", "publish_content");
    missing.as_object_mut().map(|o| o.remove("action_type"));
    let r = submit(&s, &tok, &missing)?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "action_type"]));

    let mut wrong = proposal("noop", "publish_content");
    wrong["wave"] = json!("one");
    let r = submit(&s, &tok, &wrong)?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "wave"]));

    let r = s.send_raw("POST", "/proposals", Some(&tok), "{not json")?;
    assert_eq!(r.status, 422);
    assert!(r.body["detail"].is_array());

    let mut empty = proposal("noop", "publish_content");
    empty["agent_id"] = json!("  ");
    let r = s.post("/proposals", Some(&s.operator), &empty)?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "agent_id"]));

    let r = s.get("/proposals?limit=0", Some(&tok))?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["query", "limit"]));
    let r = s.get("/proposals?status=bogus", Some(&tok))?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["query", "status"]));
    assert_eq!(
        r.body["detail"][0]["msg"],
        "`bogus` is not a status (pending, approved, auto-approved, rejected, expired, all)"
    );
    let r = s.get("/proposals/no-such-id", Some(&tok))?;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["detail"], "proposal `no-such-id` not found");
    assert_eq!(s.get("/nowhere", Some(&tok))?.status, 404);
    Ok(())
}

#[test]
fn self_approval_of_a_reserved_action_is_blocked_and_flagged() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut p = proposal("noop", "publish_content");
    p["requires_approval"] = json!(false);
    let r = submit(&s, &tok, &p)?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["detail"]["error"], "self_approve_blocked");
    assert_eq!(r.body["detail"]["action_type"], "publish_content");
    assert_eq!(r.body["detail"]["audit_flagged"], true);
    let flags = s.audit("audit_flag_self_approve_attempt")?;
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["agent_id"], "noop");
    assert!(s
        .get("/proposals", Some(&tok))?
        .body
        .as_array()
        .is_some_and(Vec::is_empty));

    // An irreversible auto-approvable action waits for a person.
    let mut irrev = proposal("noop", "research_only");
    irrev["requires_approval"] = json!(false);
    irrev["reversible"] = json!(false);
    let r = submit(&s, &tok, &irrev)?;
    assert_eq!(r.body["status"], "pending");
    Ok(())
}

#[test]
fn approval_is_a_signed_merge_that_stock_git_verifies() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = submit(&s, &tok, &proposal("noop", "publish_content"))?;
    let id = r.text("proposal_id");
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve", "note": "ship it", "final": true}),
    )?;
    assert_eq!(d.status, 200, "{:?}", d.body);
    assert_eq!(d.body["status"], "approved");
    assert!(d.body["decided_at"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    let repo = s.repo.repo()?;
    let main = repo.find_commit(repo.refname_to_id("refs/heads/main")?)?;
    assert_eq!(main.parent_count(), 2, "a merge, never a fast-forward");
    assert_eq!(
        main.parent_id(1)?.to_string(),
        r.body["commit"].as_str().unwrap_or_default()
    );
    assert!(main.message().unwrap_or_default().contains("ship it"));

    let p = s.get(&format!("/proposals/{id}"), Some(&tok))?;
    assert_eq!(p.body["status"], "approved");
    assert_eq!(p.body["decision"], "ship it");
    assert_eq!(p.body["decision_final"], true);
    assert_eq!(p.body["decided_by"], "operator");

    let again = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "reject"}),
    )?;
    assert_eq!(again.status, 400);
    let decided = s.audit("proposal_decided")?;
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["decision"]["request"]["action"], "approve");

    require_program("ssh-keygen")?;
    {
        let signers = s.repo.allowed_signers();
        let out = s.repo.git(&[
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
            "verify-commit",
            "main",
        ])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn rejection_keeps_the_branch_under_rejected_and_expired_cannot_be_approved() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "send_email"))?.text("proposal_id");
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "reject", "note": "no"}),
    )?;
    assert_eq!(d.body["status"], "rejected");
    let repo = s.repo.repo()?;
    assert!(repo
        .refname_to_id(&format!("refs/heads/gov/rejected/{id}"))
        .is_ok());
    assert!(repo
        .refname_to_id(&format!("refs/heads/gov/proposal/{id}"))
        .is_err());

    let mut old = proposal("noop", "send_email");
    old["expires_at"] = json!("2020-01-01T00:00:00+00:00");
    let id = submit(&s, &tok, &old)?.text("proposal_id");
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 409, "{:?}", d.body);
    assert_eq!(
        s.get(&format!("/proposals/{id}"), Some(&tok))?.body["status"],
        "expired"
    );
    assert!(repo
        .refname_to_id(&format!("refs/heads/gov/expired/{id}"))
        .is_ok());
    assert_eq!(
        s.post(
            "/proposals/nope/decision",
            Some(&s.operator),
            &json!({"decision": "approve"})
        )?
        .status,
        404
    );
    let bad = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "maybe"}),
    )?;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["detail"][0]["loc"], json!(["body", "decision"]));
    Ok(())
}

#[test]
fn a_branch_changed_after_submission_cannot_be_approved() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = submit(&s, &tok, &proposal("noop", "publish_content"))?;
    let id = r.text("proposal_id");
    // Someone adds a commit to the proposal branch.
    let repo = s.repo.repo()?;
    let refname = format!("refs/heads/gov/proposal/{id}");
    let tip = repo.find_commit(repo.refname_to_id(&refname)?)?;
    let sig = git2::Signature::now("mallory", "m@example.com")?;
    let mut tb = git2::build::TreeUpdateBuilder::new();
    let blob = repo.blob(b"payload_json = \"{}\"\n")?;
    tb.upsert(format!("proposals/{id}.toml"), blob, git2::FileMode::Blob);
    let tree = repo.find_tree(tb.create_updated(&repo, &tip.tree()?)?)?;
    repo.commit(Some(&refname), &sig, &sig, "sneaky", &tree, &[&tip])?;
    let main_before = repo.refname_to_id("refs/heads/main")?;

    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 409, "{:?}", d.body);
    assert_eq!(d.body["detail"]["error"], "proposal_tampered");
    assert_eq!(repo.refname_to_id("refs/heads/main")?, main_before);
    assert_eq!(s.audit("audit_flag_proposal_tampered")?.len(), 1);
    assert_eq!(
        s.get(&format!("/proposals/{id}"), Some(&tok))?.body["status"],
        "pending"
    );
    Ok(())
}

// ------------------------------------------------------------------ auth

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
    assert_eq!(
        s.get("/status/me?agent_id=newbie", None)?.body["status"],
        "ok"
    );
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

// ------------------------------------------------------- budgets, pauses

#[test]
fn budgets_charge_atomically_and_pause_once_over_the_cap() -> TestResult {
    let s = TestServer::start()?;
    let b = s.get("/budget/noop", Some(&s.operator))?;
    assert_eq!(b.status, 200);
    assert_eq!(b.body["tokens_cap"], 200_000);
    assert_eq!(b.body["dollars_cap"], 50.0);
    assert_eq!(b.body["status"], "ok");
    assert_eq!(b.body["remaining_pct"], 100.0);
    assert_eq!(s.get("/budget/ghost", Some(&s.operator))?.status, 404);

    let c = s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &json!({"tokens": 1000, "tool": "claude"}),
    )?;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(
        c.body["dollars_consumed"], 0.015,
        "default $0.015 per 1k tokens"
    );
    let c = s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &json!({"tokens": 0, "tool": "x", "dollars": 40}),
    )?;
    assert_eq!(c.body["status"], "warning");
    for bad in [
        json!({"tokens": -1, "tool": "x"}),
        json!({"tokens": 1, "tool": "x", "dollars": -2.0}),
        json!({"tokens": 1e12, "tool": "x"}),
        json!({"tool": "x"}),
    ] {
        let r = s.post("/budget/noop/charge", Some(&s.runner), &bad)?;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
    }

    // Over `capped`'s cap (1000 tokens): recorded, and the agent paused
    // (racing charges: `budgets::the_ledger_is_the_sum_of_every_charge…`).
    let c = s.post(
        "/budget/capped/charge",
        Some(&s.runner),
        &json!({"tokens": 1200, "tool": "x", "dollars": 0}),
    )?;
    assert_eq!((c.status, c.text("status")), (200, "paused".to_string()));
    let b = s.get("/budget/capped", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 1200);
    assert_eq!(b.body["status"], "paused");
    assert_eq!(s.audit("budget_paused")?.len(), 1);

    // A pause holds until the operator resumes.
    let p = s.post(
        "/proposals",
        Some(&s.operator),
        &proposal("capped", "research_only"),
    )?;
    assert_eq!(p.status, 423, "{:?}", p.body);
    assert_eq!(p.body["error"], "agent_paused");
    let r = s.post("/agents/capped/resume", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200);
    assert_eq!(s.audit("agent_resumed")?.len(), 1);
    assert_eq!(
        s.get("/status/me?agent_id=capped", Some(&s.operator))?.body["status"],
        "warning"
    );
    Ok(())
}

#[test]
fn pause_all_holds_against_a_racing_charge() -> TestResult {
    let s = TestServer::start()?;
    let charges: Vec<_> = (0..8)
        .map(|_| {
            let base = s.base.clone();
            let runner = s.runner.clone();
            std::thread::spawn(move || {
                let _ = ureq::post(&format!("{base}/budget/noop/charge"))
                    .set("Authorization", &format!("Bearer {runner}"))
                    .send_json(json!({"tokens": 10, "tool": "x"}));
            })
        })
        .collect();
    let r = s.post(
        "/admin/pause-all",
        Some(&s.operator),
        &json!({"reason": "stop"}),
    )?;
    assert_eq!(r.status, 200);
    for h in charges {
        let _ = h.join();
    }
    assert!(r.body["paused_agents"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "noop")));
    let me = s.get("/status/me?agent_id=noop", Some(&s.operator))?;
    assert_eq!(me.body["status"], "paused");
    assert_eq!(me.body["paused_reason"], "stop");
    let c = s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &json!({"tokens": 10, "tool": "x"}),
    )?;
    // A paused agent's charge is recorded (spend that happened) and changes
    // nothing about the pause.
    assert_eq!((c.status, c.text("status")), (200, "paused".to_string()));
    assert_eq!(c.body["paused_reason"], "stop");
    let st = s.get("/status", Some(&s.operator))?;
    assert!(st.body["agents_paused"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "noop")));
    assert!(st.body["policy_version"].is_string());
    let board = s.get("/scoreboard", Some(&s.operator))?;
    assert!(board.body.as_array().is_some_and(|rows| rows
        .iter()
        .any(|r| r["agent_id"] == "noop" && r["status"] == "paused")));
    Ok(())
}

// ------------------------------------------------------------ credentials

#[test]
fn a_credential_is_redeemed_once_under_eight_concurrent_clients() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post(
        "/credentials/issue",
        Some(&tok),
        &json!({"agent_id": "noop", "scope": "github:read"}),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.text("token");
    assert!(r.body["expires_at"]
        .as_str()
        .unwrap_or_default()
        .ends_with("+00:00"));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let base = s.base.clone();
            let (t, agent) = (token.clone(), tok.clone());
            std::thread::spawn(move || {
                // Redemption needs the credential's agent's token.
                match ureq::post(&format!("{base}/credentials/redeem"))
                    .set("Authorization", &format!("Bearer {agent}"))
                    .send_json(json!({"token": t}))
                {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 7, "{codes:?}");
    assert_eq!(s.audit("credentials_redeemed")?.len(), 1);
    assert_eq!(s.audit("credentials_replay_blocked")?.len(), 7);
    let unknown = s.post("/credentials/redeem", Some(&tok), &json!({"token": "nope"}))?;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body["detail"], "unknown token");
    for bad in [0, -5, 10_000_000] {
        let r = s.post(
            "/credentials/issue",
            Some(&tok),
            &json!({"agent_id": "noop", "scope": "s", "ttl_seconds": bad}),
        )?;
        assert_eq!(r.status, 422);
        assert_eq!(r.body["detail"][0]["loc"], json!(["body", "ttl_seconds"]));
    }
    let other = s.post(
        "/credentials/issue",
        Some(&tok),
        &json!({"agent_id": "capped", "scope": "s"}),
    )?;
    assert_eq!(other.status, 403);
    Ok(())
}

#[test]
fn an_expired_credential_is_refused() -> TestResult {
    let s = TestServer::start()?;
    let r = s.post(
        "/credentials/issue",
        Some(&s.operator),
        &json!({"agent_id": "noop", "scope": "s", "ttl_seconds": 1}),
    )?;
    let token = r.text("token");
    // Two seconds pass on the server's clock (no sleep).
    s.clock.advance(chrono::Duration::seconds(2));
    let r = s.post(
        "/credentials/redeem",
        Some(&s.runner),
        &json!({"token": token}),
    )?;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["detail"], "token expired");
    assert_eq!(s.audit("credentials_expired")?.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------- races

#[test]
fn eight_clients_deciding_one_proposal_make_one_decision() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let base = s.base.clone();
            let op = s.operator.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let verdict = if i % 2 == 0 { "approve" } else { "reject" };
                match ureq::post(&format!("{base}/proposals/{id}/decision"))
                    .set("Authorization", &format!("Bearer {op}"))
                    .send_json(json!({"decision": verdict}))
                {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 400).count(), 7, "{codes:?}");
    assert_eq!(s.audit("proposal_decided")?.len(), 1);
    Ok(())
}

#[test]
fn sixteen_first_requests_from_a_new_agent_all_succeed() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                match ureq::post(&format!("{base}/proposals"))
                    .send_json(proposal("fresh", "draft_content"))
                {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let board = s.get("/scoreboard", None)?;
    let row = board
        .body
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["agent_id"] == "fresh").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(row["proposals_submitted"], 16);
    Ok(())
}

// ----------------------------------------------------------- runs, tools

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
    let d = s.post(
        &format!("/proposals/{pid}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve"}),
    )?;
    assert_eq!(d.status, 200, "{:?}", d.body);
    let once = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(once.body["decision"], "allow", "{:?}", once.body);
    let twice = s.post("/tools/evaluate", Some(&tok), &c)?;
    assert_eq!(twice.body["decision"], "needs_person");
    assert_eq!(s.audit("tool_approval_used")?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------ durability

#[test]
fn the_index_is_a_projection_rebuilt_from_git() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve"}),
    )?;
    s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &json!({"tokens": 500, "tool": "x"}),
    )?;
    s.post("/admin/pause-all", Some(&s.operator), &json!({}))?;
    s.stop();
    let index = s.settings().index_path();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", index.display()));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    let settings = s.settings().clone();
    let svc = gov::app::service::Service::open(&settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    assert_eq!(Some(p.status.as_str().to_string()), Some("approved".into()));
    let b = gov::app::agents::budget(&svc, "noop", 0)?;
    assert_eq!(b.tokens_consumed, 500);
    assert_eq!(b.status.as_str(), "paused");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_broken_policy_set_on_main_is_not_loaded() -> TestResult {
    let s = TestServer::start()?;
    let before = s.get("/status", Some(&s.operator))?.body["policy_version"].clone();
    assert!(before.is_string());
    let repo = s.repo.repo()?;
    let tip = repo.refname_to_id("refs/heads/main")?;
    // Authorized (an approver signed it), but it does not validate.
    let key = s.repo.key(gov::store::keys::Role::Approver)?;
    let who = git2::Signature::now("someone", "someone@example.com")?;
    gov::store::git::commit_files(
        &repo,
        &key,
        &who,
        "refs/heads/main",
        Some(tip),
        &[(
            "policies/broken.cedar".into(),
            b"permit (principal, action, resource) when { context.nope };".to_vec(),
        )],
        "a broken policy",
    )?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(st.body["policy_version"], before, "the last good set stays");
    assert!(
        st.body["policy_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.cedar")),
        "{:?}",
        st.body
    );
    let tok = s.agent_token("noop")?;
    let r = s.post(
        "/proposals",
        Some(&tok),
        &proposal("noop", "publish_content"),
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["policy_version"], before);

    // A server started on the broken main finds the last good set in
    // main's history instead of refusing everything or loading the bad one.
    let mut s = s;
    s.restart()?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(st.body["policy_version"], before, "{:?}", st.body);
    assert!(
        st.body["policy_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.cedar")),
        "{:?}",
        st.body
    );
    let tok = s.agent_token("noop")?;
    let r = s.post(
        "/proposals",
        Some(&tok),
        &proposal("noop", "publish_content"),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["policy_version"], before);

    // A good change is loaded.
    let tip = repo.refname_to_id("refs/heads/main")?;
    gov::store::git::commit_files(
        &repo,
        &key,
        &who,
        "refs/heads/main",
        Some(tip),
        &[("policies/broken.cedar".into(), b"// fixed\n".to_vec())],
        "fix",
    )?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(
        st.body["policy_version"].as_str(),
        Some(tip_after(&repo)?.as_str())
    );
    assert!(st.body["policy_error"].is_null());
    Ok(())
}

fn tip_after(repo: &git2::Repository) -> TestResult<String> {
    Ok(repo.refname_to_id("refs/heads/main")?.to_string())
}

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
