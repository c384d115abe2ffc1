//! Budgets and pauses over the API.

use super::*;

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
