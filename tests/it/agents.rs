//! The agents in force are those on main: an `agent.toml` edited only in
//! the working tree changes neither the caps the server enforces nor what
//! `gov run` runs.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::gov_bin;
use crate::support::repo::TestResult;
use crate::support::server::{commit_agent, TestServer};

const CAPPED: &str = "kind = \"command\"\n[command]\nprogram = \"true\"\n[budget]\ntokens_cap = 1000\ndollars_cap = 1\n";
const CAPPED_MORE: &str = "kind = \"command\"\n[command]\nprogram = \"true\"\n[budget]\ntokens_cap = 5000\ndollars_cap = 1\n";

fn tokens_cap(s: &TestServer, agent: &str) -> TestResult<serde_json::Value> {
    let b = s.get(&format!("/budget/{agent}"), Some(&s.operator))?;
    assert_eq!(b.status, 200, "{:?}", b.body);
    Ok(b.body["tokens_cap"].clone())
}

fn gov_run(s: &TestServer, agent: &str) -> TestResult<std::process::Output> {
    Ok(Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["run", agent])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn caps_come_from_main_not_the_working_tree() -> TestResult {
    let s = TestServer::start()?;
    assert_eq!(tokens_cap(&s, "capped")?, 1000);

    // Edited in the working tree only: nothing changes.
    let file = s.repo.root().join("agents/capped/agent.toml");
    std::fs::write(&file, CAPPED_MORE)?;
    assert_eq!(tokens_cap(&s, "capped")?, 1000);
    let c = s.post(
        "/budget/capped/charge",
        Some(&s.runner),
        &json!({"tokens": 2000, "tool": "x"}),
    )?;
    assert_eq!(c.body["status"], "paused", "over main's cap: {:?}", c.body);

    // An agent only in the working tree is not in force.
    let ghost = s.repo.root().join("agents/ghost/agent.toml");
    std::fs::create_dir_all(ghost.parent().ok_or("parent")?)?;
    std::fs::write(&ghost, CAPPED)?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(
        st.body["known_agents"],
        json!(["capped", "noop", "researcher"])
    );
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &json!({"agent_id": "ghost", "task_id": null}),
    )?;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // The same edit committed to main is in force.
    commit_agent(&s.repo, "capped", CAPPED_MORE)?;
    assert_eq!(tokens_cap(&s, "capped")?, 5000);
    Ok(())
}

#[test]
fn an_agent_invalid_on_main_does_not_run() -> TestResult {
    let s = TestServer::start()?;
    commit_agent(&s.repo, "capped", "kind = \"command\"\n")?;
    let st = s.get("/status", Some(&s.operator))?;
    let why = st.body["agent_errors"]["capped"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("[command]"), "{:?}", st.body);
    assert!(st.body["known_agents"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("capped"))));
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &json!({"agent_id": "capped", "task_id": null}),
    )?;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body.to_string().contains("not in force"), "{:?}", r.body);
    // Fail closed: no caps to spend.
    assert_eq!(tokens_cap(&s, "capped")?, 0);
    // The watchdog leaves it alone (its zero caps are not "over the cap").
    let svc =
        gov::app::service::Service::open_as(s.settings(), gov::app::governance::Role::Watchdog)?;
    let report = gov::app::watchdog::pass(&svc, chrono::Utc::now())?;
    assert!(report.paused.is_empty(), "{:?}", report.paused);
    Ok(())
}

#[test]
fn gov_run_refuses_an_agent_toml_that_differs_from_main() -> TestResult {
    let s = TestServer::start()?;
    let out = gov_run(&s, "capped")?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(s.repo.root().join("agents/capped/agent.toml"), CAPPED_MORE)?;
    let out = gov_run(&s, "capped")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err,
        "error: agent `capped`: the working tree's `agents/capped/agent.toml` differs from `main`'s; \
         commit it to main through review first (or restore it: `git checkout main -- agents/capped/agent.toml`)\n"
    );

    let ghost = s.repo.root().join("agents/ghost/agent.toml");
    std::fs::create_dir_all(ghost.parent().ok_or("parent")?)?;
    std::fs::write(&ghost, CAPPED)?;
    let out = gov_run(&s, "ghost")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err,
        "error: agent `ghost` is not in force on `main`: `agents/ghost/agent.toml` is only in the \
         working tree or in a change that is not authorized; commit it to main through review first \
         (agents here: capped, noop, researcher)\n"
    );

    // Committed to main, it runs.
    commit_agent(&s.repo, "capped", CAPPED_MORE)?;
    let out = gov_run(&s, "capped")?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Pausing or resuming an agent gov does not know is "not found" (exit 6),
/// and the message names the agent as it was typed.
#[test]
fn pausing_an_unknown_agent_names_it_and_exits_6() -> TestResult {
    use crate::support::repo::{OutputText, TestRepo};
    let repo = TestRepo::new()?;
    for verb in ["pause", "resume"] {
        let o = repo.gov(&[verb, "nobody"])?;
        assert_eq!(o.status.code(), Some(6), "{verb}");
        assert_eq!(o.stderr_text(), "error: unknown agent `nobody`\n", "{verb}");
        assert_eq!(o.stdout_text(), "", "{verb}");
    }
    Ok(())
}
