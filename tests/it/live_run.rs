//! `gov run` with `tests/fake-claude` against the real server: usage charged
//! into the ledger, every tool call through the policy set, a call a person
//! approves from another process allowed once, the wall clock, a paused
//! agent, and the server gone at the end of a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gov::store::index::{AuditFilter, IndexedEntry};
use serde_json::Value;

use crate::support::gov_bin;
use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{commit_agent, TestServer};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stream-json")
        .join(name)
}

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

fn entries(repo: &TestRepo, event_type: &str) -> TestResult<Vec<IndexedEntry>> {
    let (_git, index) = gov::app::governance::open_index(&repo.settings)?;
    Ok(index.query(&AuditFilter {
        event_type: Some(event_type.into()),
        ..AuditFilter::default()
    })?)
}

#[test]
fn a_claude_run_against_the_real_server() -> TestResult {
    let s = TestServer::start()?;
    claude_agent(&s.repo, "researcher", 60)?;

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
    assert!(
        c[1].2
            .contains("agents of the research group may not run commands"),
        "{}",
        c[1].2
    );
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

    // Usage from the result event is in the ledger.
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 4080, "{:?}", b.body);
    assert_eq!(b.body["dollars_consumed"], 0.031, "{:?}", b.body);
    let decisions = entries(&s.repo, "tool_decision")?;
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
    assert_eq!(entries(&s.repo, "agent_run_complete")?.len(), 1);

    // A person approves the network call from another process...
    let pending = s.get("/proposals?status=pending", Some(&s.operator))?;
    let id = pending.body[0]["proposal_id"]
        .as_str()
        .ok_or("no pending proposal")?
        .to_string();
    assert_eq!(pending.body[0]["action_type"], "use_tool:WebFetch");
    let approve = s.repo.gov(&["approve", &id])?;
    assert!(approve.status.success(), "{}", text(&approve.stderr));

    // ...and the identical call is allowed once, not twice.
    let out = run(&mut gov_run(&s, "researcher", "live-retry.jsonl"))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c = calls(&s.repo, "live-retry.jsonl");
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0].1, "allow", "{c:?}");
    assert!(c[0].2.contains(&id), "{}", c[0].2);
    assert_eq!(c[1].1, "deny", "{c:?}");
    assert_eq!(entries(&s.repo, "tool_approval_used")?.len(), 1);

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
    let failed = entries(&s.repo, "agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].entry.entry.payload()["reason"], "wallclock");
    assert_eq!(failed[0].entry.entry.payload()["usage_missing"], true);

    let pause = s.repo.gov(&["pause", "researcher", "--reason", "lunch"])?;
    assert!(pause.status.success(), "{}", text(&pause.stderr));
    let out = run(&mut gov_run(&s, "researcher", "success.jsonl"))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("skipped"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !log_path(&s.repo, "success.jsonl").exists(),
        "claude never ran"
    );
    let skipped = entries(&s.repo, "agent_run_skipped")?;
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
    let failed = entries(&s.repo, "agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    let e = &failed[0];
    assert_eq!(
        e.entry.entry.payload()["reason"],
        "server_unreachable_at_finish"
    );
    assert_eq!(e.entry.entry.payload()["tokens"], 5540);
    assert_eq!(e.entry.entry.actor.0, "runner");
    assert_eq!(e.signer_role.as_deref(), Some("server"));
    assert_eq!(entries(&s.repo, "budget_charge")?.len(), 1);
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
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
    let failed = entries(&s.repo, "agent_run_failed")?;
    assert_eq!(failed.len(), 1);
    let payload = failed[0].entry.entry.payload();
    assert_eq!(
        payload["undecided_tool_uses"],
        serde_json::json!([{"id": "toolu_unhooked_1", "name": "Bash"}])
    );
    assert!(entries(&s.repo, "agent_run_complete")?.is_empty());
    // The usage is charged all the same.
    let b = s.get("/budget/researcher", Some(&s.operator))?;
    assert_eq!(b.body["tokens_consumed"], 1100, "{:?}", b.body);
    Ok(())
}
