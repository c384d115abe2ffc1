//! `gov watchdog`: the default `continue` rules on constructed histories, a
//! custom rule, idempotent pauses signed by the watchdog, a watchdog and a
//! server appending at once, and a watchdog that works while the server is
//! down.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gov::app::governance::Role;
use gov::app::service::Service;
use serde_json::{json, Value};

use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{commit_agent, proposal, TestServer};
use crate::support::{gov_bin, packs_held, text};

fn charge(s: &TestServer, agent: &str, tokens: i64, dollars: Option<f64>) -> TestResult {
    let r = s.post(
        &format!("/budget/{agent}/charge"),
        Some(&s.runner),
        &json!({"tokens": tokens, "dollars": dollars, "tool": "test"}),
    )?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(())
}

fn submit(s: &TestServer, token: &str, body: &Value) -> TestResult<String> {
    let r = s.post("/proposals", Some(token), body)?;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.body);
    Ok(r.text("proposal_id"))
}

fn once(repo: &TestRepo) -> TestResult<String> {
    let out = repo.gov(&["watchdog", "--once"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    Ok(text(&out.stdout))
}

fn add_agent(repo: &TestRepo, id: &str) -> TestResult {
    commit_agent(
        repo,
        id,
        "kind = \"command\"\n[command]\nprogram = \"true\"\n",
    )
}

#[test]
fn default_rules_fire_on_their_history_and_not_on_a_healthy_one() -> TestResult {
    let s = TestServer::start()?;
    add_agent(&s.repo, "healthy")?;
    // capped: exactly at its token cap (1000); researcher: at the $50 cap.
    charge(&s, "capped", 1000, None)?;
    charge(&s, "researcher", 0, Some(50.0))?;
    charge(&s, "healthy", 10, None)?;
    // noop proposes one payload three times running; healthy twice.
    let noop = s.agent_token("noop")?;
    let healthy = s.agent_token("healthy")?;
    for _ in 0..3 {
        submit(&s, &noop, &proposal("noop", "research_only"))?;
    }
    for _ in 0..2 {
        submit(&s, &healthy, &proposal("healthy", "research_only"))?;
    }

    let said = once(&s.repo)?;
    assert!(said.contains("checked 4 agent(s)"), "{said}");
    assert!(
        said.contains("paused `capped`: watchdog-over-token-cap"),
        "{said}"
    );
    assert!(
        said.contains("paused `researcher`: watchdog-over-dollar-cap"),
        "{said}"
    );
    assert!(said.contains("paused `noop`: watchdog-looping"), "{said}");
    assert!(!said.contains("`healthy`"), "{said}");

    let pauses = s.repo.entries("watchdog_pause")?;
    assert_eq!(pauses.len(), 3);
    for p in &pauses {
        assert_eq!(p.signer_role.as_deref(), Some("watchdog"));
        assert_eq!(p.entry.entry.actor.0, "watchdog");
        let d = p.entry.entry.decision.as_ref().ok_or("no decision")?;
        assert_eq!(d.request.action, "continue");
        assert!(!d.decision.policies.is_empty());
        assert!(p.entry.entry.payload()["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("watchdog: watchdog-"));
    }

    // Idempotent: a second pass writes nothing.
    let again = once(&s.repo)?;
    assert!(
        again.contains("already paused: capped, noop, researcher"),
        "{again}"
    );
    assert!(!again.contains("paused `"), "{again}");
    assert_eq!(s.repo.entries("watchdog_pause")?.len(), 3);

    // The server sees the pause at once.
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &json!({"agent_id": "capped", "task_id": null}),
    )?;
    assert_eq!(r.status, 423, "{:?}", r.body);
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    Ok(())
}

#[test]
fn an_approval_with_no_terminal_event_is_stuck_after_the_threshold() -> TestResult {
    let s = TestServer::start()?;
    let approve = |id: &str| -> TestResult { s.approve(id).map(|_| ()) };
    // noop: approved, then silence.
    let noop = s.agent_token("noop")?;
    let stuck = submit(&s, &noop, &proposal("noop", "research_only"))?;
    approve(&stuck)?;
    // researcher: approved, then executed.
    let res = s.agent_token("researcher")?;
    let done = submit(&s, &res, &proposal("researcher", "research_only"))?;
    approve(&done)?;
    let r = s.post(
        "/audit",
        Some(&res),
        &json!({"agent_id": "researcher", "event_type": "action_executed", "proposal_id": done}),
    )?;
    assert!(r.status < 300, "{:?}", r.body);

    let svc = Service::open_as(&s.repo.settings, Role::Watchdog)?;
    let now = chrono::Utc::now();
    let first = gov::app::watchdog::pass(&svc, now)?;
    assert!(first.paused.is_empty(), "{first:?}");
    // 31 minutes later (the default threshold is 30).
    let later = gov::app::watchdog::pass(&svc, now + chrono::Duration::minutes(31))?;
    let ids: Vec<&str> = later.paused.iter().map(|p| p.agent_id.as_str()).collect();
    assert_eq!(ids, ["noop"], "{later:?}");
    assert_eq!(later.paused[0].policies[0].id, "watchdog-stuck");
    Ok(())
}

#[test]
fn a_custom_cedar_rule_on_main_fires() -> TestResult {
    let s = TestServer::start()?;
    let rule = r#"
@id("custom-research-curfew")
@reason("research agents rest tonight")
forbid (
  principal,
  action == Action::"continue",
  resource
)
when { principal.group == "research" };
"#;
    let git = s.repo.repo()?;
    let tip = git.refname_to_id(&s.repo.settings.main_refname())?;
    let key = s.repo.key(Role::Approver)?;
    let who = git2::Signature::now("operator", "operator@approver.gov")?;
    gov::testkit::git::commit_files(
        &git,
        &key,
        &who,
        &s.repo.settings.main_refname(),
        Some(tip),
        &[(
            "policies/custom.cedar".to_string(),
            rule.as_bytes().to_vec(),
        )],
        "a custom watchdog rule",
    )?;
    let said = once(&s.repo)?;
    assert!(
        said.contains("paused `researcher`: custom-research-curfew (research agents rest tonight)"),
        "{said}"
    );
    assert!(
        !said.contains("`noop`") && !said.contains("`capped`"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_watchdog_and_a_server_appending_at_once_leave_a_linear_verified_chain() -> TestResult {
    let s = TestServer::start()?;
    let mut dog = Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["watchdog", "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = dog.stdout.take().ok_or("no stdout")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Proposals that expire almost at once: the watchdog expires them while
    // the server keeps appending submissions and agent entries.
    let noop = s.agent_token("noop")?;
    let n = 24;
    let started = Instant::now();
    for i in 0..n {
        let mut body = proposal("noop", "research_only");
        body["payload"] = json!({"n": i});
        body["expires_at"] =
            json!((chrono::Utc::now() + chrono::Duration::milliseconds(200)).to_rfc3339());
        submit(&s, &noop, &body)?;
        let r = s.post(
            "/audit",
            Some(&noop),
            &json!({"agent_id": "noop", "event_type": "note", "payload": {"i": i}}),
        )?;
        assert!(r.status < 300, "{:?}", r.body);
        std::thread::sleep(Duration::from_millis(80));
    }
    // Let the watchdog make at least one more pass over the last ones.
    while started.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(dog.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = dog.wait()?;
    assert_eq!(status.code(), Some(0));
    let said = lines.join().map_err(|_| "reader panicked")?;
    assert_eq!(
        said.last().map(String::as_str),
        Some("gov watchdog: stopped")
    );
    // Whatever expired after its last pass.
    once(&s.repo)?;

    let expired = s.repo.entries("proposal_expired")?;
    let mut ids: Vec<&str> = expired
        .iter()
        .filter_map(|e| e.entry.entry.proposal_id.as_deref())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each proposal expired once");
    assert_eq!(expired.len(), n);
    assert!(expired
        .iter()
        .any(|e| e.signer_role.as_deref() == Some("watchdog")));
    assert_eq!(s.repo.entries("proposal_submitted")?.len(), n);
    assert_eq!(s.repo.entries("note")?.len(), n);
    let verify = s.repo.gov(&["audit", "verify"])?;
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    Ok(())
}

#[test]
fn the_watchdog_pauses_while_the_server_is_down_and_the_restarted_server_refuses() -> TestResult {
    let mut s = TestServer::start()?;
    charge(&s, "capped", 1000, None)?;
    let token = s.agent_token("capped")?;
    s.stop();
    let said = once(&s.repo)?;
    assert!(said.contains("paused `capped`"), "{said}");

    s.restart()?;
    let r = s.post(
        "/runs",
        Some(&s.runner),
        &json!({"agent_id": "capped", "task_id": null}),
    )?;
    assert_eq!(r.status, 423, "{:?}", r.body);
    assert_eq!(r.body["error"], "agent_paused");
    let r = s.post(
        "/proposals",
        Some(&token),
        &proposal("capped", "research_only"),
    )?;
    assert_eq!(r.status, 423, "{:?}", r.body);
    assert!(!s.audit("agent_run_skipped")?.is_empty());
    assert!(!s.audit("agent_request_refused")?.is_empty());

    // An operator resumes it (audited), and the watchdog, still seeing it
    // at its cap, pauses it again.
    let out = s.repo.gov(&["resume", "capped"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Resumed, but its budget is still at the cap: a warning, not `ok`.
    assert_eq!(text(&out.stdout), "agent capped: warning\n");
    assert_eq!(s.audit("agent_resumed")?.len(), 1);
    let said = once(&s.repo)?;
    assert!(said.contains("paused `capped`"), "{said}");
    assert_eq!(s.repo.entries("watchdog_pause")?.len(), 2);
    Ok(())
}

#[test]
fn watchdog_flags_are_checked() -> TestResult {
    let repo = TestRepo::new()?;
    let out = repo.gov(&["watchdog", "--interval", "0"])?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn a_broken_policy_set_on_main_fails_the_once_pass() -> TestResult {
    let s = TestServer::start()?;
    once(&s.repo)?;
    crate::support::server::commit_to_main(
        &s.repo,
        &[("policies/broken.cedar".into(), b"permit(".to_vec())],
        "a policy that does not parse",
    )?;
    let out = s.repo.gov(&["watchdog", "--once"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    // Before it, the diagnostic log's warning (GOV_LOG); the error is last.
    let err = stderr.lines().last().unwrap_or_default().to_string() + "\n";
    assert!(
        err.starts_with("error: the policy set on `main` does not load (")
            && err.ends_with("); the pass used the last good set\n"),
        "{err}"
    );
    // The pass itself ran, with the last good set.
    assert!(
        text(&out.stdout).starts_with("checked "),
        "{}",
        text(&out.stdout)
    );
    Ok(())
}

/// Between passes the watchdog holds no repository handle open, so a pack
/// that maintenance merges and deletes while it sleeps is not kept (its
/// descriptor, mapped index and disk space) until the next pass.
#[test]
fn the_watchdog_holds_no_deleted_pack_while_it_sleeps() -> TestResult {
    let mut s = TestServer::start()?;
    charge(&s, "capped", 1000, None)?;
    s.stop();
    let mut child = Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["watchdog", "--interval", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The first pass pauses `capped` (a write), and says so.
    let said = loop {
        match lines.next() {
            Some(line) => {
                let line = line?;
                if line.starts_with("paused `capped`") {
                    break line;
                }
            }
            None => break String::new(),
        }
    };
    let maintained = s.repo.gov(&["maintain"])?;
    let merged: u32 = text(&maintained.stdout)
        .split_once("merged ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    // Asked until none is deleted, for at most three seconds (the handles
    // are let go of just after the line above is printed).
    let (_, held) = packs_held(child.id(), s.repo.root(), Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        said.starts_with("paused `capped`"),
        "the watchdog said nothing"
    );
    assert!(merged > 0, "{}", text(&maintained.stdout));
    assert_eq!(held, Vec::<String>::new());
    Ok(())
}
