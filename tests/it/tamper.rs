//! Issue 9: the governed cannot break or forge the governance. Each test is
//! one finding of the review: hostile input that would have made an entry
//! unreadable, entries forged or removed behind the server's back, an index
//! edited by hand, unauthenticated writes, tokens without a life.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use git2::Oid;
use gov::domain::audit::{Actor, Event, NewEntry};
use serde_json::{json, Value};

use crate::support::repo::{OutputText, TestResult};
use crate::support::server::{proposal, Reply, TestServer};

/// An event of type `name` with `payload`, as a forger or a test writes it.
fn event(name: &str, payload: Value) -> Event {
    Event::from_parts(name.into(), payload)
}

/// `{"a":{"a":…1…}}` nested `depth` levels.
fn deep(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn assert_422(r: &Reply, field: &str) {
    assert_eq!(r.status, 422, "{:?}", r.body);
    let loc = &r.body["detail"][0]["loc"];
    assert_eq!(
        loc[loc.as_array().map_or(0, Vec::len) - 1],
        field,
        "{:?}",
        r.body
    );
}

/// The chain still reads back everywhere: pauses answer, verify and
/// reindex pass.
fn assert_chain_readable(s: &TestServer) -> TestResult {
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post("/admin/pause-all", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    let o = s.repo.gov(&["reindex"])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    Ok(())
}

#[test]
fn hostile_values_in_every_field_are_422_and_the_chain_stays_readable() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let before = gov::app::audit::verify(s.settings())?.entries;

    // POST /audit: the event type, ids and payload.
    for (body, field) in [
        (json!({"event_type": "note\n\n{\"x\":1}"}), "event_type"),
        (json!({"event_type": "note\u{0}"}), "event_type"),
        (
            json!({"event_type": "note", "task_id": "t\u{0}1"}),
            "task_id",
        ),
        (json!({"event_type": "note", "task_id": "t\n1"}), "task_id"),
        (
            json!({"event_type": "note", "proposal_id": "p\n1"}),
            "proposal_id",
        ),
    ] {
        assert_422(&s.post("/audit", Some(&tok), &body)?, field);
    }
    let raw = format!("{{\"event_type\":\"note\",\"payload\":{}}}", deep(124));
    assert_422(&s.send_raw("POST", "/audit", Some(&tok), &raw)?, "payload");

    // POST /proposals: a deep payload, NUL bytes, a time in the year 10000.
    let mut p = proposal("noop", "send_email");
    let raw = p
        .to_string()
        .replace("{\"title\":\"hello\",\"n\":1}", &deep(124));
    assert!(raw.contains("\"a\""), "the payload was replaced");
    assert_422(
        &s.send_raw("POST", "/proposals", Some(&tok), &raw)?,
        "payload",
    );
    p["action_type"] = json!("send\u{0}email");
    assert_422(&s.post("/proposals", Some(&tok), &p)?, "action_type");
    let mut p = proposal("noop", "send_email");
    p["submitted_at"] = json!("9999-12-31T23:59:59-23:59");
    assert_422(&s.post("/proposals", Some(&tok), &p)?, "submitted_at");
    let mut p = proposal("noop", "send_email");
    p["expires_at"] = json!("9999-12-31T23:59:59-23:59");
    assert_422(&s.post("/proposals", Some(&tok), &p)?, "expires_at");

    // A decision note with a NUL byte.
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.text("proposal_id");
    let r = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve", "note": "ok\u{0}"}),
    )?;
    assert_422(&r, "note");

    // A WebFetch call whose deep input would need a person.
    let (_, run_tok) = {
        let r = s.post("/runs", Some(&s.runner), &json!({"agent_id": "noop"}))?;
        assert_eq!(r.status, 201, "{:?}", r.body);
        (r.text("run_id"), r.text("agent_token"))
    };
    let raw = format!(
        "{{\"agent_id\":\"noop\",\"tool_name\":\"WebFetch\",\"tool_input\":{{\"url\":\"https://example.com\",\"x\":{}}}}}",
        deep(124)
    );
    assert_422(
        &s.send_raw("POST", "/tools/evaluate", Some(&run_tok), &raw)?,
        "tool_input",
    );

    // Nothing hostile was written: the submission, the run and the run's
    // token are the only new entries.
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries, before + 2, "{:?}", report.tip);
    assert_chain_readable(&s)
}

#[test]
fn the_writer_refuses_an_entry_that_would_not_read_back() -> TestResult {
    let s = TestServer::start()?;
    let gov = s.repo.settings.clone();
    let g = gov::app::governance::Governance::open(&gov, gov::app::governance::Role::Server)?;
    let deep_value: Value = serde_json::from_str(&deep(100))?;
    for (entry, field) in [
        (
            NewEntry::new(Actor::server(), event("note\n\n{}", json!({}))),
            "event_type",
        ),
        (
            NewEntry::new(Actor::server(), event("note", json!({}))).agent("a\u{0}"),
            "agent_id",
        ),
        (
            NewEntry::new(Actor("x\ny".into()), event("note", json!({}))),
            "actor",
        ),
        (
            NewEntry::new(Actor::server(), event("note", deep_value)),
            "payload",
        ),
    ] {
        let err = g.append(vec![entry]).err().ok_or("the entry was written")?;
        let text = gov::domain::errors::error_chain(&err);
        assert!(
            text.starts_with(&format!("refusing to write an entry: {field}:")),
            "{text}"
        );
    }
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

// ------------------------------------------------------------ tampering

const AUDIT_REF: &str = "refs/heads/gov/audit";

/// Appends an entry to the chain as another process with no key would: an
/// unsigned commit carrying a well-formed entry.
fn forge_entry(s: &TestServer, entry: NewEntry) -> TestResult<Oid> {
    let repo = s.repo.repo()?;
    let tip = repo.find_commit(repo.refname_to_id(AUDIT_REF)?)?;
    let seq = gov::testkit::audit::read_entry(&tip)?.entry.seq + 1;
    let placed = entry.place(seq, chrono::Utc::now());
    let who = git2::Signature::now("gov server", "server@gov")?;
    let tree = tip.tree()?;
    let oid = repo.commit(None, &who, &who, &placed.commit_message(), &tree, &[&tip])?;
    repo.reference(AUDIT_REF, oid, true, "forged")?;
    Ok(oid)
}

/// A command failed with `code` and said `needle` on stderr.
fn assert_fails(o: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", o.stderr_text());
    assert!(o.stderr_text().contains(needle), "{}", o.stderr_text());
}

fn assert_writes_refused(s: &TestServer, tok: &str) -> TestResult {
    let r = s.post("/audit", Some(tok), &json!({"event_type": "note"}))?;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(
        r.body["detail"]["error"], "audit_chain_tampered",
        "{:?}",
        r.body
    );
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(st.body["audit_ok"], false, "{:?}", st.body);
    assert!(st.body["audit_tampered"].is_string(), "{:?}", st.body);
    Ok(())
}

#[test]
fn an_unsigned_decision_appended_by_another_process_changes_nothing() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    let id = r.text("proposal_id");
    let mut approved = s.get(&format!("/proposals/{id}"), Some(&s.operator))?.body;
    assert_eq!(approved["status"], "pending");
    approved["status"] = json!("approved");
    let forged = forge_entry(
        &s,
        NewEntry::new(
            Actor::server(),
            event(
                "proposal_decided",
                json!({"decision": "approve", "final": true, "note": null, "status": "approved",
                       "decided_by": "eve", "merge_commit": null, "branch": null, "proposal": approved}),
            ),
        )
        .agent("noop")
        .proposal(&id),
    )?;
    assert_writes_refused(&s, &tok)?;
    let p = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(p.body["status"], "pending", "{:?}", p.body);
    // Nothing was signed on top of the forged entry.
    let repo = s.repo.repo()?;
    assert_eq!(repo.refname_to_id(AUDIT_REF)?, forged);
    let report = gov::app::audit::verify(s.settings())?;
    assert!(!report.is_ok());
    Ok(())
}

#[test]
fn an_unsigned_resume_added_while_stopped_does_not_unpause() -> TestResult {
    let mut s = TestServer::start()?;
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.stop();
    forge_entry(
        &s,
        NewEntry::new(
            Actor::operator("eve"),
            event("agent_resumed", json!({"was_paused_for": null})),
        )
        .agent("noop"),
    )?;
    s.restart()?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(st.body["agents_paused"], json!(["noop"]), "{:?}", st.body);
    assert_writes_refused(&s, &s.operator.clone())?;
    Ok(())
}

/// Moves the audit ref back by one entry.
fn move_back(s: &TestServer) -> TestResult<Oid> {
    let repo = s.repo.repo()?;
    let tip = repo.find_commit(repo.refname_to_id(AUDIT_REF)?)?;
    let parent = tip.parent_id(0)?;
    repo.reference(AUDIT_REF, parent, true, "moved back")?;
    Ok(tip.id())
}

#[test]
fn a_chain_moved_back_while_running_cannot_redeem_twice() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post(
        "/credentials/issue",
        Some(&tok),
        &json!({"agent_id": "noop", "scope": "s3:read"}),
    )?;
    let cred = r.text("token");
    let redeem =
        |s: &TestServer| s.post("/credentials/redeem", Some(&tok), &json!({"token": cred}));
    assert_eq!(redeem(&s)?.status, 200);
    move_back(&s)?;
    let again = redeem(&s)?;
    assert_eq!(again.status, 503, "{:?}", again.body);
    // The index is kept as evidence: it still shows the redemption.
    assert_eq!(s.audit("credentials_redeemed")?.len(), 1);
    let report = gov::app::audit::verify(s.settings())?;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("moved back")),
        "{:?}",
        report.problems
    );
    // reindex refuses to rebuild from the shorter chain.
    let o = s.repo.gov(&["reindex"])?;
    assert_fails(&o, 3, "no longer on the audit chain");
    Ok(())
}

#[test]
fn a_chain_moved_back_behind_the_verified_tip_refuses_writes_at_start() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/audit", Some(&tok), &json!({"event_type": "note"}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(gov::app::audit::verify(s.settings())?.is_ok());
    s.stop();
    move_back(&s)?;
    std::fs::remove_file(s.settings().index_path())?;
    s.restart()?;
    assert_writes_refused(&s, &s.operator.clone())?;
    let _ = tok;
    Ok(())
}

#[test]
fn recover_sets_the_forged_part_aside_and_resumes() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let forged = forge_entry(
        &s,
        NewEntry::new(
            Actor::operator("eve"),
            event("agent_resumed", json!({"was_paused_for": null})),
        )
        .agent("noop"),
    )?;
    assert_writes_refused(&s, &tok)?;
    s.stop();
    let o = s
        .repo
        .gov(&["audit", "recover", "--reason", "forged entry found"])?;
    assert!(o.status.success(), "{}{}", o.stdout_text(), o.stderr_text());
    let out = o.stdout_text();
    assert!(out.contains("set aside: the audit ref"), "{out}");
    assert!(out.contains("recovered: resumed from entry #"), "{out}");
    // The forged commit is kept under its own ref.
    let repo = s.repo.repo()?;
    let kept: Vec<Oid> = repo
        .references_glob("refs/gov/set-aside/*")?
        .filter_map(|r| r.ok().and_then(|r| r.target()))
        .collect();
    assert_eq!(kept, vec![forged]);
    // The recovery entry is signed by the operator's approver key.
    let tip = repo.find_commit(repo.refname_to_id(AUDIT_REF)?)?;
    let e = gov::testkit::audit::read_entry(&tip)?;
    assert_eq!(e.entry.entry.event_type(), "audit_recovered");
    assert_eq!(e.entry.entry.payload()["reason"], "forged entry found");
    assert_eq!(
        e.entry.entry.payload()["set_aside"][0]["commit"],
        forged.to_string()
    );
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    // Writes resume after a restart.
    s.restart()?;
    let r = s.post("/audit", Some(&tok), &json!({"event_type": "note"}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

#[test]
fn recover_refuses_while_a_server_or_watchdog_has_the_repository_open() -> TestResult {
    use std::io::BufRead;
    let mut s = TestServer::start()?;
    s.agent_token("noop")?;
    forge_entry(
        &s,
        NewEntry::new(Actor::operator("eve"), event("note", json!({}))).agent("noop"),
    )?;
    let expected = "has this repository open: stop it first, then recover";
    let recover = |s: &TestServer| s.repo.gov(&["audit", "recover", "--reason", "forged"]);
    assert_fails(&recover(&s)?, 7, expected);
    s.stop();
    let mut watchdog = std::process::Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["watchdog", "--interval", "3600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut first = String::new();
    if let Some(out) = watchdog.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut first)?;
    }
    assert!(first.starts_with("gov watchdog: watching"), "{first}");
    let refused = recover(&s)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(watchdog.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    watchdog.wait()?;
    assert_fails(&refused, 7, expected);
    // Nothing was set aside or written while they ran; now it recovers.
    let o = recover(&s)?;
    assert!(o.status.success(), "{}{}", o.stdout_text(), o.stderr_text());
    Ok(())
}

#[test]
fn recover_restores_a_chain_that_was_moved_back() -> TestResult {
    let mut s = TestServer::start()?;
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tok = s.agent_token("noop")?;
    s.stop();
    let lost = move_back(&s)?;
    let o = s
        .repo
        .gov(&["audit", "recover", "--reason", "ref moved back"])?;
    assert!(o.status.success(), "{}{}", o.stdout_text(), o.stderr_text());
    let repo = s.repo.repo()?;
    let tip = repo.find_commit(repo.refname_to_id(AUDIT_REF)?)?;
    assert_eq!(
        tip.parent_id(0)?,
        lost,
        "the lost entry is back on the chain"
    );
    s.restart()?;
    // The token minted in the lost entry works again.
    let r = s.post("/audit", Some(&tok), &json!({"event_type": "note"}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

#[test]
fn nothing_to_recover_on_a_sound_chain() -> TestResult {
    let mut s = TestServer::start()?;
    s.agent_token("noop")?;
    s.stop();
    let o = s
        .repo
        .gov(&["audit", "recover", "--reason", "just checking"])?;
    assert_fails(&o, 2, "nothing to recover");
    Ok(())
}

#[test]
fn an_index_edited_by_hand_fails_verify() -> TestResult {
    let mut s = TestServer::start()?;
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200);
    s.stop();
    assert!(gov::app::audit::verify(s.settings())?.is_ok());
    let conn = rusqlite::Connection::open(s.settings().index_path())?;
    conn.execute("UPDATE agents SET paused = 0 WHERE agent_id = 'noop'", [])?;
    drop(conn);
    let o = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(o.status.code(), Some(3), "{}", o.stdout_text());
    assert!(
        o.stdout_text()
            .contains("the index was changed outside gov: table `agents` differs from the chain"),
        "{}",
        o.stdout_text()
    );
    Ok(())
}

#[test]
fn verify_reads_the_chain_itself_when_the_index_lists_other_commits() -> TestResult {
    // Verify takes the chain's commits from the index, checking each link;
    // an index that lists other commits (or none at all) only makes it
    // walk the chain, and the edit is reported like any other.
    let mut s = TestServer::start()?;
    for action in ["pause", "resume", "pause"] {
        let r = s.post(
            &format!("/agents/noop/{action}"),
            Some(&s.operator),
            &json!({}),
        )?;
        assert_eq!(r.status, 200);
    }
    s.stop();
    let sound = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(sound.status.code(), Some(0), "{}", sound.stdout_text());
    let conn = rusqlite::Connection::open(s.settings().index_path())?;
    let third: String = conn.query_row("SELECT commit_id FROM audit WHERE seq = 3", [], |r| {
        r.get(0)
    })?;
    for listed in [third.as_str(), "0123456789012345678901234567890123456789"] {
        conn.execute("UPDATE audit SET commit_id = ?1 WHERE seq = 2", [listed])?;
        let o = s.repo.gov(&["audit", "verify"])?;
        assert_eq!(o.status.code(), Some(3), "{}", o.stdout_text());
        // The one problem is the edited row: the chain itself read sound
        // (a commit read out of place would be a problem of the chain).
        let out = o.stdout_text();
        let expected = format!(
            "tampered: the index was changed outside gov: table `audit` differs from the chain: \
             it holds a row the chain does not give: (Integer(2), Text(\"{listed}\")"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with(&expected), "{out}");
    }
    Ok(())
}

#[test]
fn an_index_edited_while_the_server_runs_is_rebuilt_from_the_chain_and_recorded() -> TestResult {
    let (s, tok) = server_with_noop_paused()?;
    let paused = || -> TestResult<bool> {
        let st = s.get("/status", Some(&s.operator))?;
        Ok(st.body["agents_paused"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "noop")))
    };
    // A write finds the edit before it decides anything.
    unpause_in_the_index(&s)?;
    let rebuilt = refused_after_one_rebuild(&s, &tok)?;
    let kept = rebuilt["payload"]["kept_as"].as_str().unwrap_or_default();
    let evidence = rusqlite::Connection::open(kept)?;
    let edited: i64 = evidence.query_row(
        "SELECT paused FROM agents WHERE agent_id = 'noop'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(edited, 0, "the edited index is kept as it was");
    // With no write, the server finds it within seconds.
    unpause_in_the_index(&s)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.audit("index_rebuilt")?.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.audit("index_rebuilt")?.len(), 2);
    assert!(paused()?, "served from the chain again");
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

#[test]
fn reindex_moves_an_unreadable_index_aside_and_rebuilds() -> TestResult {
    let mut s = TestServer::start()?;
    s.stop();
    let path = s.settings().index_path();
    std::fs::write(&path, [0x5a_u8; 8192])?;
    let _ = std::fs::remove_file(path.with_extension("sqlite-wal"));
    let _ = std::fs::remove_file(path.with_extension("sqlite-shm"));
    let o = s.repo.gov(&["reindex"])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(path.parent().ok_or("no parent")?)?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("index.sqlite.unreadable-")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(aside.len(), 1);
    let entries = gov::app::audit::verify(s.settings())?.entries;
    assert_eq!(
        o.stdout_text(),
        format!(
            "the index was unreadable; moved it to `{}`\nreindexed {entries} entries\n",
            aside[0].display()
        )
    );
    assert!(gov::app::audit::verify(s.settings())?.is_ok());
    Ok(())
}

// ------------------------------------------------- credentials, tokens

#[test]
fn unknown_token_redemptions_are_counted_not_written_one_by_one() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let before = gov::app::audit::verify(s.settings())?.entries;
    for i in 0..50 {
        let r = s.post(
            "/credentials/redeem",
            None,
            &json!({"token": format!("gov_cred_x{i}")}),
        )?;
        assert_eq!(r.status, 401, "{:?}", r.body);
    }
    let after = gov::app::audit::verify(s.settings())?.entries;
    assert_eq!(after, before + 1, "one entry records the first window");
    let e = s.audit("credentials_unknown")?;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["payload"]["count"], 1);
    Ok(())
}

#[test]
fn replayed_and_expired_redemptions_of_a_known_token_are_counted_not_written_one_by_one(
) -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let issue = |ttl: i64| -> TestResult<String> {
        let r = s.post(
            "/credentials/issue",
            Some(&tok),
            &json!({"agent_id": "noop", "scope": "s3:read", "ttl_seconds": ttl}),
        )?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Ok(r.text("token"))
    };
    let used = issue(600)?;
    let expiring = issue(1)?;
    let r = s.post("/credentials/redeem", Some(&tok), &json!({"token": used}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The short token's second passes on the server's clock (no sleep).
    s.clock.advance(chrono::Duration::seconds(2));
    let before = gov::app::audit::verify(s.settings())?.entries;
    for _ in 0..30 {
        for (token, why) in [(&used, "token already used"), (&expiring, "token expired")] {
            let r = s.post("/credentials/redeem", Some(&tok), &json!({"token": token}))?;
            assert_eq!(r.status, 401, "{:?}", r.body);
            assert!(r.body.to_string().contains(why), "{:?}", r.body);
        }
    }
    let after = gov::app::audit::verify(s.settings())?.entries;
    assert_eq!(after, before + 2, "one entry per token in the first minute");
    assert_eq!(s.audit("credentials_replay_blocked")?.len(), 1);
    assert_eq!(s.audit("credentials_expired")?.len(), 1);
    Ok(())
}

#[test]
fn redemption_needs_the_agents_token_and_an_unpaused_agent() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let other = s.agent_token("researcher")?;
    let issue = || -> TestResult<String> {
        let r = s.post(
            "/credentials/issue",
            Some(&tok),
            &json!({"agent_id": "noop", "scope": "s3:read"}),
        )?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Ok(r.text("token"))
    };
    let cred = issue()?;
    let before = gov::app::audit::verify(s.settings())?.entries;
    // No token: refused before anything is written.
    let r = s.post("/credentials/redeem", None, &json!({"token": cred}))?;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(gov::app::audit::verify(s.settings())?.entries, before);
    // Another agent's token: refused and flagged.
    let r = s.post("/credentials/redeem", Some(&other), &json!({"token": cred}))?;
    assert_eq!(r.status, 403, "{:?}", r.body);
    // A paused agent's credential: 423.
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200);
    let r = s.post("/credentials/redeem", Some(&tok), &json!({"token": cred}))?;
    assert_eq!(r.status, 423, "{:?}", r.body);
    assert_eq!(r.body["error"], "agent_paused");
    let r = s.post("/agents/noop/resume", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200);
    let r = s.post("/credentials/redeem", Some(&tok), &json!({"token": cred}))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

#[test]
fn operator_minted_tokens_expire_and_can_be_revoked() -> TestResult {
    let s = TestServer::start_with(|st| st.agent_token_ttl_hours = 0)?;
    let expired = s.agent_token("noop")?;
    let r = s.get("/status/me?agent_id=noop", Some(&expired))?;
    assert_eq!(r.status, 401, "{:?}", r.body);
    drop(s);

    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    assert_eq!(s.get("/status/me?agent_id=noop", Some(&tok))?.status, 200);
    let r = s.post("/tokens/revoke", Some(&tok), &json!({"token": tok}))?;
    assert_eq!(r.status, 403, "an agent cannot revoke: {:?}", r.body);
    let o = s.repo.gov(&["token", "revoke", &tok])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    assert_eq!(o.stdout_text(), "revoked a token of agent `noop`\n");
    assert_eq!(s.get("/status/me?agent_id=noop", Some(&tok))?.status, 401);
    assert_eq!(s.audit("agent_token_revoked")?.len(), 1);
    let o = s.repo.gov(&["token", "revoke", &tok])?;
    assert_eq!(o.status.code(), Some(6), "not found: {}", o.stderr_text());
    Ok(())
}

// ------------------------------------------------------------- timeouts

#[test]
fn idle_and_slow_connections_are_closed() -> TestResult {
    let s = TestServer::start_with(|st| st.header_read_timeout = Duration::from_secs(1))?;
    let start = Instant::now();
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", s.port))?;
    idle.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 64];
    assert_eq!(
        idle.read(&mut buf)?,
        0,
        "the server closed the idle connection"
    );
    assert!(start.elapsed() < Duration::from_secs(8));

    // A request head that never ends.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", s.port))?;
    slow.set_read_timeout(Some(Duration::from_secs(10)))?;
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
    let mut got = Vec::new();
    let _ = slow.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    // The server still answers others.
    assert_eq!(s.get("/status", Some(&s.operator))?.status, 200);
    Ok(())
}

#[test]
fn a_body_trickled_slower_than_the_body_timeout_gets_408_and_writes_nothing() -> TestResult {
    let s = TestServer::start_with(|st| st.body_read_timeout = Duration::from_secs(1))?;
    s.agent_token("noop")?;
    let before = gov::app::audit::verify(s.settings())?.entries;
    let body = br#"{"event_type": "slow_note", "agent_id": "noop"}"#;
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", s.port))?;
    slow.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "POST /audit HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.port,
        s.operator,
        body.len()
    );
    slow.write_all(head.as_bytes())?;
    let start = Instant::now();
    // One byte every 200 ms: the whole body would take 10 s.
    let mut sent = 0;
    while sent < body.len() && start.elapsed() < Duration::from_secs(3) {
        if slow.write_all(&body[sent..=sent]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut got = Vec::new();
    let _ = slow.read_to_end(&mut got);
    let answer = String::from_utf8_lossy(&got);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer} after {sent} bytes"
    );
    assert!(
        answer.contains("the request body did not arrive in time"),
        "{answer}"
    );
    assert!(sent < body.len(), "closed before the body was complete");
    assert_eq!(gov::app::audit::verify(s.settings())?.entries, before);
    assert!(s.audit("slow_note")?.is_empty());
    // A body sent at once still goes through.
    let r = s.post(
        "/audit",
        Some(&s.operator),
        &json!({"event_type": "slow_note", "agent_id": "noop"}),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

#[test]
fn a_ref_lock_left_by_a_killed_writer_does_not_block_writes_after_restart() -> TestResult {
    let mut s = TestServer::start()?;
    s.agent_token("noop")?;
    s.stop();
    // What a writer killed between taking a ref's lock and renaming it
    // leaves: the audit ref's lock file, and one of a proposal branch.
    let git_dir = s.repo.root().join(".git");
    let audit_lock = git_dir.join("refs/heads/gov/audit.lock");
    std::fs::write(&audit_lock, "0000000000000000000000000000000000000000\n")?;
    std::fs::create_dir_all(git_dir.join("refs/heads/gov/proposal"))?;
    let branch_lock = git_dir.join("refs/heads/gov/proposal/x.lock");
    std::fs::write(&branch_lock, "")?;
    s.restart()?;
    let r = s.post(
        "/audit",
        Some(&s.operator),
        &json!({"event_type": "after_restart", "agent_id": "noop"}),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!audit_lock.exists());
    assert!(!branch_lock.exists());
    Ok(())
}

#[test]
fn stale_locks_of_main_packed_refs_and_the_git_index_do_not_block_writers() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/proposals", Some(&tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.text("proposal_id");
    s.stop();
    // What a gov writer killed between taking these locks and renaming
    // them into place leaves behind.
    let git_dir = s.repo.root().join(".git");
    let locks = [
        git_dir.join("refs/heads/main.lock"),
        git_dir.join("packed-refs.lock"),
        git_dir.join("index.lock"),
    ];
    // While a `git` command runs in the repository, its locks may be live:
    // they are left alone, and the approval fails rather than break it.
    let mut git = std::process::Command::new("git")
        .arg("-C")
        .arg(s.repo.root())
        .args(["hash-object", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // `spawn` can return before the kernel has renamed the child to `git`
    // (the name is set a moment after the parent resumes): wait until the
    // process is visibly the git command, as an operator's would be.
    let comm = format!("/proc/{}/comm", git.id());
    let started = Instant::now();
    while std::fs::read_to_string(&comm)?.trim() != "git" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "git never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for lock in &locks {
        std::fs::write(lock, "")?;
    }
    s.restart()?;
    let approve = |s: &TestServer| {
        s.post(
            &format!("/proposals/{id}/decision"),
            Some(&s.operator),
            &json!({"decision": "approve"}),
        )
    };
    let r = approve(&s)?;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert!(locks.iter().all(|l| l.exists()), "a live git's locks stay");
    drop(git.stdin.take());
    git.wait()?;
    // Once no git runs, the next writer removes them and goes through.
    let r = approve(&s)?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for lock in &locks {
        assert!(!lock.exists(), "{} was removed", lock.display());
    }
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

/// The record of an index rebuild is not lost when its own append fails:
/// the server's background check rebuilds the edited index, the batch that
/// records it fails (a fault injected before the audit ref moves), and the
/// next write records it before it is answered.
#[test]
fn a_rebuild_whose_record_failed_is_recorded_by_the_next_write() -> TestResult {
    use gov::testkit::fault::{arm, is_armed, Fault};
    let (s, tok) = server_with_noop_paused()?;
    let git_dir = s.repo.root().join(".git");
    arm(&git_dir, Fault::BeforeAuditRef);
    unpause_in_the_index(&s)?;
    // The background check (twenty times a second) finds the edit, rebuilds
    // the index and tries to record it: the fault fails that batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_armed(&git_dir, Fault::BeforeAuditRef) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !is_armed(&git_dir, Fault::BeforeAuditRef),
        "no write was tried"
    );
    assert_eq!(s.audit("index_rebuilt")?.len(), 0);
    // The next write is decided on the rebuilt index (still paused) and
    // answered once the rebuild's record is durable.
    refused_after_one_rebuild(&s, &tok)?;
    Ok(())
}

/// A server with an agent token for `noop`, which the operator paused.
fn server_with_noop_paused() -> TestResult<(TestServer, String)> {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let r = s.post("/agents/noop/pause", Some(&s.operator), &json!({}))?;
    assert_eq!(r.status, 200);
    Ok((s, tok))
}

/// Edits the index behind gov's back: `noop` no longer paused.
fn unpause_in_the_index(s: &TestServer) -> TestResult {
    let conn = rusqlite::Connection::open(s.settings().index_path())?;
    conn.execute("UPDATE agents SET paused = 0 WHERE agent_id = 'noop'", [])?;
    Ok(())
}

/// Submits a proposal as `noop`, paused in the chain but not in the edited
/// index: refused (423, still paused), and by the answer the chain holds
/// exactly one `index_rebuilt` entry, for the `agents` table. Returns it.
fn refused_after_one_rebuild(s: &TestServer, tok: &str) -> TestResult<Value> {
    let r = s.post("/proposals", Some(tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 423, "still paused: {:?}", r.body);
    let mut rebuilt = s.audit("index_rebuilt")?;
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    let entry = rebuilt.remove(0);
    let reason = entry["payload"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("table `agents` differs from the chain"),
        "{reason}"
    );
    Ok(entry)
}
