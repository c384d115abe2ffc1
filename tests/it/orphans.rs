//! Issue 9, item 7: a Git change never outlives its entry. Each test makes
//! a real write fail (or a real `gov` process die) after its Git refs moved
//! and before the audit ref did, with the fault points of
//! `gov::testkit::fault` (debug builds only), then checks that `gov audit
//! verify` names the orphan and that the next writer or start-up repairs
//! it.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use git2::Oid;
use gov::testkit::fault::{self, Fault};
use serde_json::json;

use crate::support::gov_bin;
use crate::support::repo::{OutputText, TestResult};
use crate::support::server::{proposal, Reply, TestServer};

fn pending_proposal(s: &TestServer, tok: &str) -> TestResult<(String, Oid)> {
    let r = s.post("/proposals", Some(tok), &proposal("noop", "send_email"))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending", "{:?}", r.body);
    let id = r.text("proposal_id");
    let repo = s.repo.repo()?;
    let commit = repo.refname_to_id(&format!("refs/heads/gov/proposal/{id}"))?;
    Ok((id, commit))
}

fn problems(s: &TestServer) -> TestResult<Vec<String>> {
    let report = gov::app::audit::verify(s.settings())?;
    Ok(report.problems.iter().map(|p| p.reason.clone()).collect())
}

fn assert_verifies(s: &TestServer) -> TestResult {
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

fn ref_of(s: &TestServer, name: &str) -> TestResult<Option<Oid>> {
    Ok(s.repo.repo()?.refname_to_id(name).ok())
}

fn arm(s: &TestServer) {
    fault::arm(&s.repo.root().join(".git"), Fault::AfterGitRefs);
}

fn decide(s: &TestServer, id: &str, decision: &str) -> TestResult<Reply> {
    s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &json!({"decision": decision, "note": "looked at it"}),
    )
}

#[test]
fn an_approval_merge_whose_entry_died_is_recorded_at_the_next_start() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let (id, submitted) = pending_proposal(&s, &tok)?;
    s.stop();
    let main_before = ref_of(&s, "refs/heads/main")?;
    s.repo
        .gov_killed_at(Fault::AfterGitRefs, &["approve", &id, "--note", "ship it"])?;

    // The merge landed on main; no entry records it.
    let repo = s.repo.repo()?;
    let merge = repo.refname_to_id("refs/heads/main")?;
    assert_ne!(Some(merge), main_before);
    assert_eq!(repo.find_commit(merge)?.parent_id(1)?, submitted);
    let found = problems(&s)?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(&format!(
            "orphan: merge {} on `main` by `",
            &merge.to_string()[..12]
        )) && found[0].contains(&format!(
            "approves proposal `{id}`, which no `proposal_decided` entry records"
        )),
        "{found:?}"
    );

    s.restart()?;
    let r = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(r.body["status"], "approved", "{:?}", r.body);
    assert_eq!(r.body["decision"], "ship it", "{:?}", r.body);
    let decided = s.audit("proposal_decided")?;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["payload"]["merge_commit"], merge.to_string());
    assert!(
        decided[0]["payload"]["repaired"]
            .as_str()
            .is_some_and(|r| r.contains("approver-signed merge")),
        "{decided:?}"
    );
    assert_eq!(ref_of(&s, "refs/heads/main")?, Some(merge), "main stays");
    assert_verifies(&s)?;
    // Deciding again is refused as for any approved proposal.
    let r = decide(&s, &id, "approve")?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    Ok(())
}

#[test]
fn a_rejection_whose_entry_died_is_rolled_back_at_the_next_start() -> TestResult {
    let mut s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let (id, submitted) = pending_proposal(&s, &tok)?;
    s.stop();
    s.repo
        .gov_killed_at(Fault::AfterGitRefs, &["reject", &id])?;
    let rejected = format!("refs/heads/gov/rejected/{id}");
    let branch = format!("refs/heads/gov/proposal/{id}");
    assert_eq!(ref_of(&s, &rejected)?, Some(submitted));
    assert_eq!(ref_of(&s, &branch)?, None, "the rename removed the branch");
    let found = problems(&s)?;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|p| p.contains(&format!(
        "orphan: branch `gov/rejected/{id}` renames proposal `{id}`, which no entry decided"
    ))));
    assert!(found.iter().any(|p| p.contains(&format!(
        "orphan: pending proposal `{id}` has lost its branch `gov/proposal/{id}`"
    ))));

    s.restart()?;
    assert_eq!(ref_of(&s, &branch)?, Some(submitted), "put back");
    assert_eq!(ref_of(&s, &rejected)?, None);
    assert_eq!(
        ref_of(&s, &format!("refs/gov/orphaned/gov/rejected/{id}"))?,
        Some(submitted),
        "kept, not deleted"
    );
    assert_eq!(s.audit("proposal_branch_restored")?.len(), 1);
    assert_eq!(s.audit("proposal_orphan_set_aside")?.len(), 1);
    assert!(s.audit("proposal_decided")?.is_empty());
    assert_verifies(&s)?;
    // The proposal is still pending and can be decided.
    let r = decide(&s, &id, "reject")?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(ref_of(&s, &rejected)?, Some(submitted));
    assert_verifies(&s)?;
    Ok(())
}

#[test]
fn a_failed_approval_flush_is_repaired_by_the_writer_at_once() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let (id, _) = pending_proposal(&s, &tok)?;
    arm(&s);
    let r = decide(&s, &id, "approve")?;
    assert_eq!(r.status, 500, "{:?}", r.body);
    // The merge landed before the failure: the entry it proves is written
    // by the same writer right after, so the approval stands.
    let r = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(r.body["status"], "approved", "{:?}", r.body);
    assert_eq!(s.audit("proposal_decided")?.len(), 1);
    assert_verifies(&s)?;
    Ok(())
}

#[test]
fn a_failed_expiry_flush_puts_the_branch_back() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut body = proposal("noop", "send_email");
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    body["expires_at"] = json!(past.to_rfc3339());
    let r = s.post("/proposals", Some(&tok), &body)?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.text("proposal_id");
    let branch = format!("refs/heads/gov/proposal/{id}");
    let submitted = ref_of(&s, &branch)?;
    arm(&s);
    // Deciding an expired proposal expires it: that write fails.
    let r = decide(&s, &id, "approve")?;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(ref_of(&s, &branch)?, submitted, "put back");
    assert_eq!(ref_of(&s, &format!("refs/heads/gov/expired/{id}"))?, None);
    assert!(s.audit("proposal_expired")?.is_empty());
    assert_verifies(&s)?;
    let r = decide(&s, &id, "approve")?;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["detail"]["error"], "proposal_expired");
    assert_eq!(s.audit("proposal_expired")?.len(), 1);
    assert_verifies(&s)?;
    Ok(())
}

#[test]
fn a_failed_submission_flush_sets_the_branch_aside() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    arm(&s);
    let mut body = proposal("noop", "send_email");
    body["proposal_id"] = json!("p-orphan");
    let r = s.post("/proposals", Some(&tok), &body)?;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(ref_of(&s, "refs/heads/gov/proposal/p-orphan")?, None);
    assert!(ref_of(&s, "refs/gov/orphaned/gov/proposal/p-orphan")?.is_some());
    assert_eq!(s.audit("proposal_orphan_set_aside")?.len(), 1);
    assert_verifies(&s)?;
    // The id is free again.
    let r = s.post("/proposals", Some(&tok), &body)?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_verifies(&s)?;
    Ok(())
}

#[test]
fn a_policy_change_whose_entry_died_is_set_aside_at_the_next_start() -> TestResult {
    let mut s = TestServer::start()?;
    s.stop();
    std::fs::create_dir_all(s.repo.root().join("policies/tests"))?;
    std::fs::write(
        s.repo.root().join("policies/tests/approvers.toml"),
        "[[case]]\nname = \"an agent may not approve\"\nprincipal = 'Agent::\"noop\"'\naction = \"approve\"\nresource = 'ActionType::\"purchase\"'\nexpect = \"forbidden\"\n",
    )?;
    let cedar = s.repo.root().join("policies/extra.cedar");
    std::fs::write(
        &cedar,
        "@id(\"extra\")\n@reason(\"test\")\nforbid (principal, action == Action::\"propose\", resource == ActionType::\"nothing\");\n",
    )?;
    s.repo.gov_killed_at(
        Fault::AfterGitRefs,
        &["policy", "propose", "-m", "one more ban"],
    )?;
    let repo = s.repo.repo()?;
    let policy_branches: Vec<String> = repo
        .references_glob("refs/heads/gov/policy/*")?
        .filter_map(|r| r.ok().and_then(|r| r.name().map(str::to_string)))
        .collect();
    assert_eq!(policy_branches.len(), 1, "{policy_branches:?}");
    let found = problems(&s)?;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .all(|p| p.contains("has no `proposal_submitted` entry")));

    s.restart()?;
    assert_eq!(ref_of(&s, &policy_branches[0])?, None);
    assert_eq!(s.audit("proposal_orphan_set_aside")?.len(), 2);
    assert_verifies(&s)?;
    let o = s.repo.gov(&["audit", "verify"])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    Ok(())
}

#[test]
fn forge_merges_a_sync_took_without_entries_are_moved_back_and_taken_again() -> TestResult {
    use crate::remote::{entries, local_rev, submit_pending, team, text};
    let (t, forge) = team()?;
    let id = submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let main_before = local_rev(&t, "refs/heads/main")?;
    let merge = forge.merge_pull_request(&id, &[])?;
    // The sync moves local main to the merge and dies before its entry.
    let o = Command::new(gov_bin())
        .arg("--repo")
        .arg(t.root())
        .arg("sync")
        .env("GOV_FAULT", Fault::AfterGitRefs.name())
        .output()?;
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{}", text(&o));
    assert_eq!(local_rev(&t, "refs/heads/main")?, merge);
    let report = gov::app::audit::verify(&t.settings)?;
    assert!(
        report.problems.iter().any(|p| p.reason.starts_with(&format!(
            "orphan: merge {} on `main` of proposal `{id}` has no `proposal_decided` entry and is not signed",
            &merge[..12]
        ))),
        "{:?}",
        report.problems
    );
    // The next process that opens the repository moves main back (the
    // remote still has the merge) and records it...
    let o = t.gov(&["audit", "verify"])?;
    assert_eq!(o.status.code(), Some(3), "verify itself repairs nothing");
    let out = t.gov(&["proposals"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(local_rev(&t, "refs/heads/main")?, main_before);
    let rolled = entries(&t, "main_rolled_back")?;
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    assert_eq!(rolled[0]["from"], merge.as_str());
    assert_eq!(
        local_rev(&t, &format!("refs/gov/orphaned/main/{merge}"))?,
        merge,
        "kept"
    );
    // ...and the next sync takes the merge again, as an approval.
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("approved `{id}`")),
        "{}",
        text(&out)
    );
    assert_eq!(local_rev(&t, "refs/heads/main")?, merge);
    let report = gov::app::audit::verify(&t.settings)?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}
