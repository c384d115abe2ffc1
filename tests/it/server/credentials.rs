//! Credentials: issue, redeem once, expiry.

use super::*;

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
    // Redemption needs the credential's agent's token.
    let codes = s.post_at_once(
        (0..8)
            .map(|_| {
                let body = json!({"token": token});
                ("/credentials/redeem".to_string(), Some(tok.clone()), body)
            })
            .collect(),
    );
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 7, "{codes:?}");
    assert_eq!(s.audit("credentials_redeemed")?.len(), 1);
    // The replays are one entry: at most one a minute per token.
    assert_eq!(s.audit("credentials_replay_blocked")?.len(), 1);
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
