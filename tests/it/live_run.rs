//! `gov run` with `tests/fake-claude` against the real server: usage charged
//! into the ledger, every tool call through the policy set, a call a person
//! approves from another process allowed once, the wall clock, a paused
//! agent, and the server gone at the end of a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{commit_agent, TestServer};
use crate::support::{fixture, gov_bin, text};

/// Makes `id` a claude agent of the research group in the working tree
/// (where the runner and the server read agent settings).
fn claude_agent(repo: &TestRepo, id: &str, wallclock: u64) -> TestResult {
    let dir = repo.root().join("agents").join(id);
    commit_agent(
        repo,
        id,
        &format!("kind = \"claude\"\ngroup = \"research\"\nwallclock_seconds = {wallclock}\n"),
    )?;
    std::fs::create_dir_all(dir.join("tasks"))?;
    std::fs::write(dir.join("tasks/t.md"), "Do the task.\n")?;
    std::fs::write(dir.join("notes.md"), "notes\n")?;
    Ok(())
}

/// In the agent's folder: the only place the confined agent may write that
/// outlives its run.
fn log_path(repo: &TestRepo, scenario: &str) -> PathBuf {
    repo.root()
        .join("agents/researcher")
        .join(format!("fake-claude-{scenario}.log"))
}

fn gov_run(s: &TestServer, agent: &str, scenario: &str) -> Command {
    let mut cmd = Command::new(gov_bin());
    cmd.arg("--repo")
        .arg(s.repo.root())
        .args(["run", agent, "t"])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .env(
            "CLAUDE_BIN",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude"),
        )
        .env("FAKE_CLAUDE_SCENARIO", fixture(scenario))
        .env("FAKE_CLAUDE_LOG", log_path(&s.repo, scenario))
        .env("GOV_KILL_GRACE_MS", "300")
        .env("PATH", crate::support::SYSTEM_PATH)
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> TestResult<Output> {
    Ok(cmd.output()?)
}

/// The tool decisions fake-claude logged: (tool, decision, reason).
fn calls(repo: &TestRepo, scenario: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(log_path(repo, scenario))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("tool_name").is_some())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("tool_name"), s("decision"), s("reason"))
        })
        .collect()
}

#[test]
fn a_claude_run_against_the_real_server() -> TestResult {
    let s = TestServer::start()?;
    claude_agent(&s.repo, "researcher", 60)?;
    // No `[prices]`: the runner prices every token at the flat rate.
    std::fs::write(s.repo.root().join("gov.toml"), "# all defaults\n")?;

    let out = run(&mut gov_run(&s, "researcher", "live-tools.jsonl"))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c = calls(&s.repo, "live-tools.jsonl");
    assert_eq!(c.len(), 5, "{c:?}");
    assert_eq!(
        (c[0].0.as_str(), c[0].1.as_str()),
        ("Read", "allow"),
        "{c:?}"
    );
    assert_eq!(c[1].1, "deny");
    assert!(c[1].2.contains("no policy permits `Bash`"), "{}", c[1].2);
    for (call, what) in [(&c[2], "`..`"), (&c[3], "absolute")] {
        assert_eq!(call.1, "deny", "{what}");
        assert!(
            call.2.contains("outside its own folder"),
            "{what}: {}",
            call.2
        );
    }
    assert_eq!(c[4].1, "deny");
    assert!(c[4].2.contains("identical call"), "{}", c[4].2);

    // Usage is in the ledger: the five tool-call messages (2 tokens each)
    // as they streamed, then at the end the result's `usage` (4,080; this
    // fixture has no `modelUsage`), at the flat $0.015 per 1,000 tokens (no
    // `[prices]` here). Claude Code's own $0.031 is reconciled, not charged.
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 4090, "{:?}", b.body);
    assert_eq!(b.body["dollars_consumed"], 0.06135, "{:?}", b.body);
    let decisions = s.repo.entries("tool_decision")?;
    let mut ids: Vec<String> = decisions
        .iter()
        .filter_map(|d| {
            d.entry.entry.payload()["tool_use_id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "toolu_fake_1",
            "toolu_fake_2",
            "toolu_fake_3",
            "toolu_fake_4",
            "toolu_fake_5"
        ]
    );
    let done = s.repo.entries("agent_run_complete")?;
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0].entry.entry.payload()["reconciliation"],
        serde_json::json!({"claude_total_cost_usd": 0.031, "claude_micros": 31_000,
                           "ledger_micros": 61_350, "difference_micros": -30_350})
    );

    // The approval of a call is bound to its run: with a wait configured,
    // the next run's hook waits on the call while a person approves it from
    // another process, and the call goes on.
    let pending = s.get("/proposals?status=pending", Some(&s.operator))?;
    let first = pending.body[0]["proposal_id"]
        .as_str()
        .ok_or("no pending proposal")?
        .to_string();
    assert_eq!(pending.body[0]["action_type"], "use_tool:WebFetch");
    let gov_toml = s.repo.root().join("gov.toml");
    std::fs::write(&gov_toml, "[hook]\napproval_wait_seconds = 60\n")?;
    let waiting = gov_run(&s, "researcher", "live-retry.jsonl")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let id = loop {
        let p = s.get("/proposals?status=pending", Some(&s.operator))?;
        let found = p.body.as_array().and_then(|a| {
            a.iter()
                .filter_map(|p| p["proposal_id"].as_str())
                .find(|id| *id != first)
                .map(str::to_string)
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hook filed nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let approve = s.repo.gov(&["approve", &id])?;
    assert!(approve.status.success(), "{}", text(&approve.stderr));
    assert_eq!(text(&approve.stdout), s.repo.approved_line(&id)?);
    let out = waiting.wait_with_output()?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c = calls(&s.repo, "live-retry.jsonl");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].1, "allow", "{c:?}");
    assert!(c[0].2.contains(&id), "{}", c[0].2);
    assert_eq!(s.repo.entries("tool_approval_used")?.len(), 1);

    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    Ok(())
}

#[test]
fn wall_clock_and_pause_against_the_real_server() -> TestResult {
    let s = TestServer::start()?;
    claude_agent(&s.repo, "researcher", 1)?;
    let started = Instant::now();
    let out = run(&mut gov_run(&s, "researcher", "slow.jsonl"))?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15));
    let failed = s.repo.entries("agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].entry.entry.payload()["reason"], "wallclock");
    assert_eq!(failed[0].entry.entry.payload()["usage_missing"], true);

    let pause = s.repo.gov(&["pause", "researcher", "--reason", "lunch"])?;
    assert!(pause.status.success(), "{}", text(&pause.stderr));
    assert_eq!(text(&pause.stdout), "agent researcher: paused\n");
    let out = run(&mut gov_run(&s, "researcher", "success.jsonl"))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "skipped: agent `researcher` did not run: the agent is paused: lunch\n"
    );
    assert!(
        !log_path(&s.repo, "success.jsonl").exists(),
        "claude never ran"
    );
    let skipped = s.repo.entries("agent_run_skipped")?;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].entry.entry.payload()["reason"], "agent_paused");
    Ok(())
}

#[test]
fn the_end_of_a_run_is_recorded_on_the_chain_when_the_server_is_gone() -> TestResult {
    let mut s = TestServer::start()?;
    claude_agent(&s.repo, "researcher", 60)?;
    let scenario = "pause-then-succeed.jsonl";
    let child = gov_run(&s, "researcher", scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while !log_path(&s.repo, scenario).exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    s.stop();
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("server_unreachable_at_finish"),
        "{}",
        text(&out.stderr)
    );
    let failed = s.repo.entries("agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    let e = &failed[0];
    assert_eq!(
        e.entry.entry.payload()["reason"],
        "server_unreachable_at_finish"
    );
    assert_eq!(e.entry.entry.payload()["tokens"], 5540);
    assert_eq!(e.entry.entry.actor.0, "runner");
    assert_eq!(e.signer_role.as_deref(), Some("server"));
    assert_eq!(s.repo.entries("budget_charge")?.len(), 1);
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    Ok(())
}

/// `[prices]` for the models of the fixtures, as the repository's whole
/// gov.toml (the runner prices usage from it; everything else default).
fn write_prices(repo: &TestRepo) -> TestResult {
    let path = repo.root().join("gov.toml");
    let mut text = String::from("# all defaults but the prices\n");
    text.push_str(
        "\n[prices.\"claude-sonnet-4\"]\ninput = \"3\"\noutput = \"15\"\ncache_write = \"3.75\"\ncache_read = \"0.30\"\n\
         \n[prices.\"claude-haiku-4-5\"]\ninput = 1\noutput = 5\ncache_write = \"1.25\"\ncache_read = \"0.10\"\n",
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// The `budget_charge` entries of a run: (tokens, micros, estimate).
fn run_charges(repo: &TestRepo) -> TestResult<Vec<(i64, i64, bool)>> {
    let mut rows: Vec<(i64, i64, bool)> = repo
        .entries("budget_charge")?
        .iter()
        .map(|e| {
            let p = &e.entry.entry.payload();
            (
                p["tokens"].as_i64().unwrap_or(-1),
                p["micros"].as_i64().unwrap_or(-1),
                p["estimate"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    rows.reverse();
    Ok(rows)
}

#[test]
fn a_stream_that_crosses_the_cap_is_stopped_within_one_usage_report() -> TestResult {
    let s = TestServer::start()?;
    write_prices(&s.repo)?;
    claude_agent(&s.repo, "researcher", 60)?;
    commit_agent(
        &s.repo,
        "researcher",
        "kind = \"claude\"\ngroup = \"research\"\nwallclock_seconds = 60\n\
         [budget]\ntokens_cap = 5500\ndollars_cap = 1\nrun_tokens = 5500\nrun_dollars = 1\n",
    )?;
    // Each message of the stream: 1,000 input and 1,000 output tokens, its
    // usage reported twice (1,400, then 2,000), 0.6 s apart from the next.
    let started = Instant::now();
    let out = run(&mut gov_run(&s, "researcher", "budget-crossing.jsonl"))?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text(&out.stderr).contains("its budget is spent (agent_paused)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("failed: run"),
        "{}",
        text(&out.stdout)
    );
    // The third message crosses the cap (6,000 > 5,500): the run stops
    // there, the fourth is never charged.
    let charges = run_charges(&s.repo)?;
    assert_eq!(
        charges,
        vec![
            (1400, 9000, true),
            (600, 9000, true),
            (1400, 9000, true),
            (600, 9000, true),
            (1400, 9000, true),
            (600, 9000, true),
        ]
    );
    let failed = s.repo.entries("agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    let p = &failed[0].entry.entry.payload();
    assert_eq!(p["reason"], "budget");
    assert_eq!(
        (p["tokens"].clone(), p["micros"].clone()),
        (6000.into(), 54_000.into())
    );
    assert_eq!(
        p["estimate"], true,
        "no result event: what the stream showed"
    );
    assert_eq!(p["usage_missing"], true);
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 6000);
    assert_eq!(b.body["dollars_consumed"], 0.054);
    assert_eq!(b.body["status"], "paused");
    assert_eq!(b.body["tokens_reserved"], 0, "released at the end");
    assert_eq!(s.repo.entries("budget_paused")?.len(), 1);
    Ok(())
}

#[test]
fn model_usage_counts_the_subagents_tokens() -> TestResult {
    let s = TestServer::start()?;
    write_prices(&s.repo)?;
    claude_agent(&s.repo, "researcher", 60)?;
    let out = run(&mut gov_run(&s, "researcher", "subagent.jsonl"))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // modelUsage: sonnet 2,500 in / 90 out / 300 cache writes / 4,000 cache
    // reads = $0.011175; the subagent's haiku 800 in / 60 out = $0.0011.
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 6890 + 860, "{:?}", b.body);
    assert_eq!(b.body["dollars_consumed"], 0.012275);
    let done = s.repo.entries("agent_run_complete")?;
    let p = &done[0].entry.entry.payload();
    assert_eq!(p["estimate"], Value::Null);
    assert_eq!(p["reconciliation"]["claude_micros"], 12_200);
    assert_eq!(p["reconciliation"]["difference_micros"], -75);
    // What streamed was charged as it came (estimates), the rest at the end.
    let charges = run_charges(&s.repo)?;
    assert_eq!(charges.iter().map(|c| c.0).sum::<i64>(), 7750);
    assert_eq!(charges.iter().map(|c| c.1).sum::<i64>(), 12_275);
    assert!(charges[0].2 && !charges[charges.len() - 1].2, "{charges:?}");
    Ok(())
}

#[test]
fn a_command_agent_reporting_usage_is_stopped_at_its_reservation() -> TestResult {
    let s = TestServer::start()?;
    let dir = s.repo.root().join("agents/spender");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("spend.sh"),
        "#!/bin/sh\nfor i in 1 2 3 4 5 6; do\n  echo \"{\\\"tokens\\\": 2000}\" >> \"$GOV_USAGE_FILE\"\n  sleep 0.5\ndone\n",
    )?;
    let mut perm = std::fs::metadata(dir.join("spend.sh"))?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(dir.join("spend.sh"), perm)?;
    commit_agent(
        &s.repo,
        "spender",
        "kind = \"command\"\nwallclock_seconds = 60\n[command]\nprogram = \"./spend.sh\"\n\
         [budget]\nrun_tokens = 5000\n",
    )?;
    let out = Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["run", "spender"])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .env("GOV_KILL_GRACE_MS", "300")
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // 2,000 tokens a report at the flat rate: the third reaches the run's
    // 5,000; the run stops before a fourth.
    assert_eq!(
        run_charges(&s.repo)?,
        vec![
            (2000, 30_000, false),
            (2000, 30_000, false),
            (2000, 30_000, false)
        ]
    );
    let failed = s.repo.entries("agent_run_failed")?;
    assert_eq!(failed[0].entry.entry.payload()["reason"], "budget");
    let b = s.get("/budget/spender", Some(&s.operator))?;
    assert_eq!(
        b.body["status"], "ok",
        "its reservation, not a cap: not paused"
    );
    Ok(())
}

#[test]
fn a_tool_call_that_ran_without_a_decision_fails_the_run() -> TestResult {
    let s = TestServer::start()?;
    claude_agent(&s.repo, "researcher", 60)?;
    // The stream reports a call that never reached gov's hook (a Claude
    // Code whose hooks were off would do this), after one that did.
    let out = run(&mut gov_run(&s, "researcher", "unhooked.jsonl"))?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("failed: run `")
            && said.contains(
                ": tool_without_gov_decision: 1 tool call(s) ran without a decision from gov: toolu_unhooked_1 (Bash) ("
            ),
        "{said}"
    );
    let failed = s.repo.entries("agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    let payload = failed[0].entry.entry.payload();
    assert_eq!(
        payload["undecided_tool_uses"],
        serde_json::json!([{"id": "toolu_unhooked_1", "name": "Bash"}])
    );
    assert!(s.repo.entries("agent_run_complete")?.is_empty());
    // The usage is charged all the same: the hooked call's message (2
    // tokens, `claude-fake`) as it streamed, then the result's 1,100 (this
    // fixture has no `modelUsage`).
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 1102, "{:?}", b.body);
    Ok(())
}
