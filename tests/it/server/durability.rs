//! What survives a restart or a killed writer.

use super::*;

#[test]
fn the_index_is_a_projection_rebuilt_from_git() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let id = submit(&s, &tok, &proposal("noop", "publish_content"))?.text("proposal_id");
    s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": "approve"}),
    )?;
    s.post(
        "/budget/noop/charge",
        Some(&s.runner),
        &json!({"tokens": 500, "tool": "x"}),
    )?;
    s.post("/admin/pause-all", Some(&s.operator), &json!({}))?;
    s.stop();
    let index = s.settings().index_path();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", index.display()));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    let settings = s.settings().clone();
    let svc = gov::app::service::Service::open(&settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    assert_eq!(Some(p.status.as_str().to_string()), Some("approved".into()));
    let b = gov::app::agents::budget(&svc, "noop", 0)?;
    assert_eq!(b.tokens_consumed, 500);
    assert_eq!(b.status.as_str(), "paused");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A write whose index rows were lost (the index's commit failed after
/// the entries were durable in Git) is seen by the very next read: the
/// proposal, and the agent that is known only through it.
#[test]
fn a_read_after_a_write_whose_index_commit_failed_sees_it() -> TestResult {
    use gov::testkit::fault::{arm, is_armed, Fault};
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let git_dir = s.repo.root().join(".git");
    arm(&git_dir, Fault::IndexCommit);
    let r = s.post("/proposals", None, &proposal("newbie", "publish_content"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!is_armed(&git_dir, Fault::IndexCommit), "the fault fired");
    let id = r.text("proposal_id");
    let got = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["status"], "pending");
    let me = s.get("/status/me?agent_id=newbie", None)?;
    assert_eq!(me.body["status"], "ok", "{}: {:?}", me.status, me.body);
    Ok(())
}

#[test]
fn a_broken_policy_set_on_main_is_not_loaded() -> TestResult {
    let s = TestServer::start()?;
    let before = s.get("/status", Some(&s.operator))?.body["policy_version"].clone();
    assert!(before.is_string());
    let repo = s.repo.repo()?;
    let tip = repo.refname_to_id("refs/heads/main")?;
    // Authorized (an approver signed it), but it does not validate.
    let key = s.repo.key(gov::app::governance::Role::Approver)?;
    let who = git2::Signature::now("someone", "someone@example.com")?;
    gov::testkit::git::commit_files(
        &repo,
        &key,
        &who,
        "refs/heads/main",
        Some(tip),
        &[(
            "policies/broken.cedar".into(),
            b"permit (principal, action, resource) when { context.nope };".to_vec(),
        )],
        "a broken policy",
    )?;
    the_last_good_set_decides(&s, &before)?;

    // A server started on the broken main finds the last good set in
    // main's history instead of refusing everything or loading the bad one.
    let mut s = s;
    s.restart()?;
    the_last_good_set_decides(&s, &before)?;

    // A good change is loaded.
    let tip = repo.refname_to_id("refs/heads/main")?;
    gov::testkit::git::commit_files(
        &repo,
        &key,
        &who,
        "refs/heads/main",
        Some(tip),
        &[("policies/broken.cedar".into(), b"// fixed\n".to_vec())],
        "fix",
    )?;
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(
        st.body["policy_version"].as_str(),
        Some(tip_after(&repo)?.as_str())
    );
    assert!(st.body["policy_error"].is_null());
    Ok(())
}

/// The server names the broken file and goes on deciding with the last set
/// that loaded (`before`, its version).
fn the_last_good_set_decides(s: &TestServer, before: &Value) -> TestResult {
    let st = s.get("/status", Some(&s.operator))?;
    assert_eq!(
        &st.body["policy_version"], before,
        "the last good set stays: {:?}",
        st.body
    );
    assert!(
        st.body["policy_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.cedar")),
        "{:?}",
        st.body
    );
    let tok = s.agent_token("noop")?;
    let r = s.submit_pending(&tok)?;
    assert_eq!(&r.body["policy_version"], before);
    Ok(())
}

fn tip_after(repo: &git2::Repository) -> TestResult<String> {
    Ok(repo.refname_to_id("refs/heads/main")?.to_string())
}
