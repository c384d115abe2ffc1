//! Concurrent clients: one decision, one redemption.

use super::*;

#[test]
fn eight_clients_deciding_one_proposal_make_one_decision() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    let codes = s.post_at_once(
        (0..8)
            .map(|i| {
                let verdict = if i % 2 == 0 { "approve" } else { "reject" };
                let path = format!("/proposals/{id}/decision");
                (path, Some(s.operator.clone()), json!({"decision": verdict}))
            })
            .collect(),
    );
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 400).count(), 7, "{codes:?}");
    assert_eq!(s.audit("proposal_decided")?.len(), 1);
    Ok(())
}

#[test]
fn sixteen_first_requests_from_a_new_agent_all_succeed() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let codes = s.post_at_once(
        (0..16)
            .map(|_| {
                (
                    "/proposals".to_string(),
                    None,
                    proposal("fresh", "draft_content"),
                )
            })
            .collect(),
    );
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
