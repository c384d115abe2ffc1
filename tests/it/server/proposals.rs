//! Proposals: submit, list, decide, the gate.

use super::*;

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
    // An id the agent chose is looked for in Git too: a branch of that
    // name made outside gov (a push) is not overwritten.
    let o = s.repo.git(&["branch", "gov/proposal/pushed-1", "main"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p["proposal_id"] = json!("pushed-1");
    let pushed = submit(&s, &tok, &p)?;
    assert_eq!(pushed.status, 409, "{:?}", pushed.body);
    assert_eq!(
        pushed.body["detail"],
        "proposal_id 'pushed-1' already exists"
    );

    let mut missing = proposal("noop", "publish_content");
    missing.as_object_mut().map(|o| o.remove("action_type"));
    let r = submit(&s, &tok, &missing)?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["detail"],
        json!([{"loc": ["body", "action_type"], "msg": "missing field `action_type`", "type": "missing"}])
    );

    let mut wrong = proposal("noop", "publish_content");
    wrong["wave"] = json!("one");
    let r = submit(&s, &tok, &wrong)?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["detail"],
        json!([{"loc": ["body", "wave"], "msg": "invalid type: string \"one\", expected i64", "type": "value_error"}])
    );
    let mut at = proposal("noop", "publish_content");
    at["submitted_at"] = json!(1);
    let r = submit(&s, &tok, &at)?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "submitted_at"]));

    // Text that is not JSON, JSON that is not an object, a field twice.
    for (body, msg, kind) in [
        ("{not json", "key must be a string", "json_invalid"),
        ("not json", "expected ident", "json_invalid"),
        (
            "[1, 2]",
            "invalid type: sequence, expected struct Submission",
            "value_error",
        ),
        (
            "  \"a\"",
            "invalid type: string \"a\", expected struct Submission",
            "value_error",
        ),
        (
            r#"{"agent_id": "noop", "agent_id": "other", "action_type": "a", "payload": {}, "expected_outcome": "o"}"#,
            "duplicate field `agent_id`",
            "value_error",
        ),
    ] {
        let r = s.send_raw("POST", "/proposals", Some(&tok), body)?;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(
            r.body["detail"],
            json!([{"loc": ["body"], "msg": msg, "type": kind}]),
            "{body}"
        );
    }

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
