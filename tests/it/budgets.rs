//! Budgets over HTTP against the real server: the original's conformance
//! cases for charges (a charge records a fact; crossing a cap pauses once),
//! the ledger as the sum of its charges, admission with reservations (runs
//! racing for the budget left, approved proposals' expected cost), and the
//! three conformance fixes of issue 12 (self-approval before the
//! irreversible rule, proposals ordered by `submitted_at`, pause-all with a
//! body that is not an object).

use serde_json::{json, Value};

use crate::support::repo::TestResult;
use crate::support::server::{commit_agent, proposal, Reply, TestServer};

/// `capped`: 1,000 tokens and $1 (see `support::server::AGENTS`).
fn charge(s: &TestServer, agent: &str, body: Value) -> TestResult<Reply> {
    s.post(&format!("/budget/{agent}/charge"), Some(&s.runner), &body)
}

fn budget(s: &TestServer, agent: &str) -> TestResult<Value> {
    let b = s.get(&format!("/budget/{agent}"), Some(&s.operator))?;
    assert_eq!(b.status, 200, "{:?}", b.body);
    Ok(b.body)
}

/// The `budget_charge` entries of an agent: (tokens, micro-dollars).
fn ledger(s: &TestServer, agent: &str) -> TestResult<Vec<(i64, i64)>> {
    Ok(s.audit("budget_charge")?
        .iter()
        .filter(|e| e["agent_id"] == agent)
        .map(|e| {
            (
                e["payload"]["tokens"].as_i64().unwrap_or(-1),
                e["payload"]["micros"].as_i64().unwrap_or(-1),
            )
        })
        .collect())
}

fn pauses(s: &TestServer, agent: &str) -> TestResult<usize> {
    Ok(s.audit("budget_paused")?
        .iter()
        .filter(|e| e["agent_id"] == agent)
        .count())
}

#[test]
fn test_charge_over_dollar_cap_pauses() -> TestResult {
    let s = TestServer::start()?;
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 0, "tool": "x", "dollars": 0.6}),
    )?;
    assert_eq!((c.status, c.text("status")), (200, "ok".to_string()));
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 0, "tool": "x", "dollars": 0.6}),
    )?;
    assert_eq!(
        c.status, 200,
        "a charge over the cap is recorded: {:?}",
        c.body
    );
    assert_eq!(c.body["status"], "paused");
    assert_eq!(c.body["dollars_consumed"], 1.2);
    assert_eq!(c.body["paused_reason"], "budget_cap_exceeded");
    assert_eq!(ledger(&s, "capped")?, vec![(0, 600_000), (0, 600_000)]);
    assert_eq!(pauses(&s, "capped")?, 1);
    let b = budget(&s, "capped")?;
    assert_eq!(
        (b["status"].clone(), b["dollars_consumed"].clone()),
        (json!("paused"), json!(1.2))
    );
    assert_eq!(s.audit("budget_charge_refused")?.len(), 0);
    Ok(())
}

#[test]
fn test_charge_over_token_cap_pauses() -> TestResult {
    let s = TestServer::start()?;
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 600, "tool": "x", "dollars": 0}),
    )?;
    assert_eq!(c.body["status"], "ok");
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 600, "tool": "x", "dollars": 0}),
    )?;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["status"], "paused");
    assert_eq!(c.body["tokens_consumed"], 1200);
    assert_eq!(pauses(&s, "capped")?, 1);
    let paused = s.audit("budget_paused")?;
    assert_eq!(paused[0]["payload"]["tokens_over"], true);
    assert_eq!(paused[0]["payload"]["dollars_over"], false);
    Ok(())
}

#[test]
fn test_charge_exactly_at_dollar_cap_is_warning_not_paused() -> TestResult {
    let s = TestServer::start()?;
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 0, "tool": "x", "dollars": 1.0}),
    )?;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["status"], "warning");
    assert_eq!(c.body["remaining_pct"], 0.0);
    assert_eq!(pauses(&s, "capped")?, 0);
    assert_eq!(budget(&s, "capped")?["status"], "warning");
    Ok(())
}

#[test]
fn test_warning_below_25_percent_remaining() -> TestResult {
    let s = TestServer::start()?;
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 0, "tool": "x", "dollars": 0.75}),
    )?;
    assert_eq!(c.body["status"], "ok", "exactly 25% left is not a warning");
    assert_eq!(c.body["remaining_pct"], 25.0);
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 0, "tool": "x", "dollars": 0.01}),
    )?;
    assert_eq!(c.body["status"], "warning");
    assert_eq!(c.body["remaining_pct"], 24.0);
    Ok(())
}

#[test]
fn test_paused_agent_still_accepts_charges() -> TestResult {
    let s = TestServer::start()?;
    let p = s.post(
        "/agents/capped/pause",
        Some(&s.operator),
        &json!({"reason": "look"}),
    )?;
    assert_eq!(p.status, 200);
    let c = charge(&s, "capped", json!({"tokens": 10, "tool": "x"}))?;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["status"], "paused");
    assert_eq!(c.body["paused_reason"], "look");
    // Over the cap while paused: recorded, and no second pause.
    let c = charge(
        &s,
        "capped",
        json!({"tokens": 5000, "tool": "x", "dollars": 3}),
    )?;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["tokens_consumed"], 5010);
    assert_eq!(pauses(&s, "capped")?, 0);
    assert_eq!(ledger(&s, "capped")?, vec![(5000, 3_000_000), (10, 150)]);
    Ok(())
}

#[test]
fn the_ledger_is_the_sum_of_every_charge_and_racing_charges_pause_once() -> TestResult {
    let s = TestServer::start()?;
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let base = s.base.clone();
            let runner = s.runner.clone();
            std::thread::spawn(move || {
                ureq::post(&format!("{base}/budget/capped/charge"))
                    .set("Authorization", &format!("Bearer {runner}"))
                    .send_json(json!({"tokens": 300, "tool": "x",
                                      "dollars": format!("0.1{i}").parse::<f64>().unwrap_or(0.0)}))
                    .map(|r| r.status())
                    .unwrap_or(0)
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    assert_eq!(codes, vec![200; 8], "every charge is recorded");
    let rows = ledger(&s, "capped")?;
    assert_eq!(rows.len(), 8);
    let (tokens, micros) = rows.iter().fold((0, 0), |(t, m), (a, b)| (t + a, m + b));
    assert_eq!((tokens, micros), (2400, 1_080_000));
    let b = budget(&s, "capped")?;
    assert_eq!(b["tokens_consumed"], tokens);
    assert_eq!(b["dollars_consumed"], 1.08);
    assert_eq!(b["status"], "paused");
    assert_eq!(pauses(&s, "capped")?, 1, "crossing a cap pauses once");
    Ok(())
}

/// `[prices."claude-sonnet-4"]` as the gov.toml that `gov init` writes.
pub fn sonnet_prices(settings: &mut gov::config::Settings) {
    let m = |d: &str| gov::domain::money::Micros::from_dollars_str(d).unwrap_or_default();
    settings.model_prices.insert(
        "claude-sonnet-4".into(),
        gov::domain::pricing::ModelPrice {
            input: m("3"),
            output: m("15"),
            cache_write: m("3.75"),
            cache_read: m("0.30"),
        },
    );
}

#[test]
fn a_charge_names_its_model_and_is_priced_by_gov_toml() -> TestResult {
    // $3 / $15 / $3.75 / $0.30 per million tokens.
    let s = TestServer::start_with(sonnet_prices)?;
    let c = charge(
        &s,
        "noop",
        json!({"tokens": 5540, "tool": "claude", "model": "claude-sonnet-4-5-20250929",
               "usage": {"input_tokens": 1200, "output_tokens": 40,
                         "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000}}),
    )?;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["dollars_consumed"], 0.006525);
    // No model: the original's flat $0.015 per 1,000 tokens.
    let c = charge(&s, "researcher", json!({"tokens": 1000, "tool": "x"}))?;
    assert_eq!(c.body["dollars_consumed"], 0.015);
    let bad = charge(
        &s,
        "noop",
        json!({"tokens": 1, "tool": "x", "model": "m", "usage": {"input_tokens": 2}}),
    )?;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(bad.body["detail"][0]["loc"], json!(["body", "tokens"]));
    Ok(())
}

// --------------------------------------------------------------- admission

const RACER: &str = "kind = \"command\"\n[command]\nprogram = \"true\"\n\
                     [budget]\ntokens_cap = 1000\ndollars_cap = 1\nrun_tokens = 600\nrun_dollars = \"0.6\"\n";

fn open_run(base: &str, runner: &str, agent: &str) -> (u16, Value) {
    match ureq::post(&format!("{base}/runs"))
        .set("Authorization", &format!("Bearer {runner}"))
        .send_json(json!({"agent_id": agent, "task_id": null}))
    {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

#[test]
fn two_runs_racing_for_the_budget_left_exactly_one_starts() -> TestResult {
    let s = TestServer::start()?;
    commit_agent(&s.repo, "racer", RACER)?;
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (base, runner) = (s.base.clone(), s.runner.clone());
            std::thread::spawn(move || open_run(&base, &runner, "racer"))
        })
        .collect();
    let answers: Vec<(u16, Value)> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or((0, Value::Null)))
        .collect();
    let started: Vec<&Value> = answers
        .iter()
        .filter(|a| a.0 == 201)
        .map(|a| &a.1)
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.0 == 423)
        .map(|a| &a.1)
        .collect();
    assert_eq!((started.len(), refused.len()), (1, 1), "{answers:?}");
    assert_eq!(refused[0]["error"], "budget_insufficient");
    assert_eq!(
        refused[0]["detail"],
        "agent `racer` has not enough budget left for a run: a run reserves 600 tokens and $0.60, but only 400 tokens and $0.40 are left (cap - spent - reserved)"
    );
    assert_eq!(started[0]["reservation"]["tokens"], 600);
    assert_eq!(started[0]["reservation"]["dollars"], 0.6);
    let skipped = s.audit("agent_run_skipped")?;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["payload"]["reason"], "budget_insufficient");
    let b = budget(&s, "racer")?;
    assert_eq!(
        (b["tokens_reserved"].clone(), b["dollars_reserved"].clone()),
        (json!(600), json!(0.6))
    );

    // Usage while it runs comes off its own reservation; the answer says
    // stop once the reservation is spent.
    let run_id = started[0]["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let usage = |tokens: u64, micros: i64| json!({"charges": [{"model": "", "input_tokens": tokens, "micros": micros}], "estimate": true});
    let u = s.post(
        &format!("/runs/{run_id}/usage"),
        Some(&s.runner),
        &usage(100, 100_000),
    )?;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(
        (
            u.body["stop"].clone(),
            u.body["run"]["tokens_spent"].clone()
        ),
        (json!(false), json!(100))
    );
    assert_eq!(budget(&s, "racer")?["tokens_reserved"], 500);
    let u = s.post(
        &format!("/runs/{run_id}/usage"),
        Some(&s.runner),
        &usage(500, 100_000),
    )?;
    assert_eq!(u.body["stop"], true);
    assert_eq!(u.body["stop_reason"], "reservation_exhausted");

    // Settled at the end: the rest charged, the reservation released.
    let f = s.post(
        &format!("/runs/{run_id}/finish"),
        Some(&s.runner),
        &json!({"status": "failed", "reason": "budget", "usage_missing": false,
                "charges": [{"model": "", "input_tokens": 50, "micros": 50_000}],
                "estimate": true, "claude_cost_usd": 0.3}),
    )?;
    assert_eq!(f.status, 200, "{:?}", f.body);
    assert_eq!(f.body["run"]["tokens_spent"], 650);
    assert_eq!(f.body["run"]["dollars_spent"], 0.25);
    let end = &s.audit("agent_run_failed")?[0]["payload"];
    assert_eq!(end["reason"], "budget");
    assert_eq!(end["estimate"], true);
    assert_eq!(end["reservation"]["released_tokens"], 0);
    assert_eq!(end["reservation"]["released_micros"], 350_000);
    assert_eq!(end["reconciliation"]["difference_micros"], 50_000);
    let b = budget(&s, "racer")?;
    assert_eq!(
        (b["tokens_reserved"].clone(), b["tokens_consumed"].clone()),
        (json!(0), json!(650))
    );
    // 350 tokens left: not enough for another run of 600.
    assert_eq!(open_run(&s.base, &s.runner, "racer").0, 423);
    let out = std::process::Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["run", "racer"])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .stdin(std::process::Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "skipped: agent `racer` did not run: its budget left cannot cover a run's reservation: \
         agent `racer` has not enough budget left for a run: a run reserves 600 tokens and $0.60, \
         but only 350 tokens and $0.75 are left (cap - spent - reserved)\n"
    );
    Ok(())
}

#[test]
fn an_approved_proposal_holds_its_expected_cost_until_it_is_executed() -> TestResult {
    let s = TestServer::start()?;
    commit_agent(&s.repo, "racer", RACER)?;
    let tok = s.agent_token("racer")?;
    let mut p = proposal("racer", "research_only");
    p["requires_approval"] = json!(false);
    p["reversible"] = json!(true);
    p["expected_cost_dollars"] = json!(0.5);
    let r = s.post("/proposals", Some(&tok), &p)?;
    assert_eq!(r.body["status"], "auto-approved", "{:?}", r.body);
    let id = r.text("proposal_id");
    assert_eq!(budget(&s, "racer")?["dollars_reserved"], 0.5);
    let (code, body) = open_run(&s.base, &s.runner, "racer");
    assert_eq!(
        (code, body["error"].clone()),
        (423, json!("budget_insufficient"))
    );
    let done = s.post(
        "/audit",
        Some(&tok),
        &json!({"event_type": "action_executed", "proposal_id": id, "payload": {}}),
    )?;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(budget(&s, "racer")?["dollars_reserved"], 0.0);
    assert_eq!(open_run(&s.base, &s.runner, "racer").0, 201);
    Ok(())
}

#[test]
fn a_crashed_runs_reservation_stops_holding_after_its_wall_clock() -> TestResult {
    let s = TestServer::start()?;
    commit_agent(
        &s.repo,
        "racer",
        &RACER.replace("[command]", "wallclock_seconds = 1\n[command]"),
    )?;
    let (code, body) = open_run(&s.base, &s.runner, "racer");
    assert_eq!(code, 201, "{body:?}");
    let until = body["reservation"]["hold_until"].as_i64().unwrap_or(0);
    let started = chrono::Utc::now().timestamp();
    assert!(
        (started + 1 + 119..=started + 1 + 121).contains(&until),
        "wall clock (1 s) + 120 s: {until} vs {started}"
    );
    // Never finished (its runner died): it holds until then, not after.
    let (_, index) = gov::app::governance::open_index(s.settings())?;
    let held = |now: i64| -> TestResult<usize> {
        Ok(gov::testkit::projection::open_runs(index.conn(), Some("racer"), now)?.len())
    };
    assert_eq!(held(until - 1)?, 1);
    assert_eq!(held(until)?, 0);
    Ok(())
}

// ------------------------------------------------------ conformance fixes

#[test]
fn self_approval_is_checked_before_the_irreversible_rule() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut p = proposal("noop", "deploy_service");
    p["requires_approval"] = json!(false);
    p["reversible"] = json!(false);
    let r = s.post("/proposals", Some(&tok), &p)?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["detail"]["error"], "self_approve_blocked");
    assert_eq!(r.body["detail"]["audit_flagged"], true);
    let flags = s.audit("audit_flag_self_approve_attempt")?;
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["payload"]["action_type"], "deploy_service");
    assert_eq!(s.audit("proposal_submitted")?.len(), 0);
    // Irreversible but asking for a person: it waits for one.
    p["requires_approval"] = json!(true);
    let r = s.post("/proposals", Some(&tok), &p)?;
    assert_eq!((r.status, r.text("status")), (200, "pending".to_string()));
    Ok(())
}

#[test]
fn proposals_are_listed_by_submitted_at_newest_first() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    for (id, at) in [
        ("p-middle", "2026-01-02T00:00:00+00:00"),
        ("p-newest", "2026-01-03T00:00:00+00:00"),
        ("p-oldest", "2026-01-01T00:00:00+00:00"),
    ] {
        let mut p = proposal("noop", "publish_content");
        p["proposal_id"] = json!(id);
        p["submitted_at"] = json!(at);
        let r = s.post("/proposals", Some(&tok), &p)?;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let list = s.get("/proposals?status=pending", Some(&s.operator))?;
    let ids: Vec<&str> = list
        .body
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["proposal_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec!["p-newest", "p-middle", "p-oldest"]);
    let one = s.get("/proposals?limit=1", Some(&s.operator))?;
    assert_eq!(one.body[0]["proposal_id"], "p-newest");
    Ok(())
}

#[test]
fn pause_all_with_a_json_array_is_refused() -> TestResult {
    let s = TestServer::start()?;
    for raw in ["[]", "[\"stop\"]", "\"stop\"", "12"] {
        let r = s.send_raw("POST", "/admin/pause-all", Some(&s.operator), raw)?;
        assert_eq!(r.status, 422, "{raw}: {:?}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], json!(["body", "body"]), "{raw}");
    }
    assert_eq!(s.audit("admin_pause_all")?.len(), 0);
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(st.body["agents_paused"], json!([]));
    let r = s.send_raw("POST", "/admin/pause-all", Some(&s.operator), "{}")?;
    assert_eq!(r.status, 200, "an object (or nothing) is fine");
    Ok(())
}
