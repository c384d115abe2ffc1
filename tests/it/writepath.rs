//! The write path: group commit gives the serial outcomes, `main` moves
//! only through review, acknowledged writes survive SIGKILL, maintenance
//! runs alongside writers without losing anything.

use std::sync::{Arc, Barrier};

use gov::app::agents::{self, ChargeInput};
use gov::app::proposals::{decide, DecisionInput};
use gov::app::service::Service;
use gov::domain::audit::Actor;
use gov::domain::proposal::Verdict;
use serde_json::json;
use sha2::Digest;

use crate::support::repo::{require_program, OutputText, TestRepo, TestResult};
use crate::support::server::{add_policies_and_agents, hold_batch, proposal, TestServer};

fn service() -> TestResult<(TestRepo, Arc<Service>)> {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    let svc = Arc::new(Service::open(&repo.settings)?);
    Ok((repo, svc))
}

/// Runs `f(i)` on `n` threads released together; the answers in order.
fn together<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    })
}

fn submission(agent: &str, action: &str) -> TestResult<gov::app::proposals::Submission> {
    Ok(serde_json::from_value(proposal(agent, action))?)
}

/// The index's `action_executed` entries, newest first.
fn executed(svc: &Service) -> TestResult<Vec<gov::app::audit::IndexedEntry>> {
    Ok(svc
        .governance()
        .index()?
        .query(&gov::app::audit::AuditFilter {
            event_type: Some("action_executed".into()),
            ..Default::default()
        })?)
}

fn verify_ok(repo: &TestRepo) -> TestResult {
    let report = gov::app::audit::verify(&repo.settings)?;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let o = repo.git_with_signers(&["verify-commit", "gov/audit"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

#[test]
fn concurrent_deciders_redeemers_and_charges_get_the_serial_outcomes() -> TestResult {
    let (repo, svc) = service()?;
    let (batches0, writers0) = svc.governance().batch_stats();
    for round in 0..4 {
        // 8 deciders of one proposal: exactly one decides it.
        let p = gov::app::proposals::submit(&svc, submission("noop", "publish_content")?)?;
        let id = p.proposal.proposal_id;
        let answers = together(8, |i| {
            let input = DecisionInput {
                verdict: if i % 2 == 0 {
                    Verdict::Approve
                } else {
                    Verdict::Reject
                },
                note: None,
                final_: false,
            };
            decide(&svc, &id, &input, "operator")
        });
        let ok: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "round {round}: {answers:?}");
        for a in answers.iter().filter_map(|a| a.as_ref().err()) {
            assert!(a.to_string().contains("already decided"), "{a}");
        }
        let decided = svc
            .governance()
            .index()?
            .query(&gov::app::audit::AuditFilter {
                event_type: Some("proposal_decided".into()),
                proposal_id: Some(id.clone()),
                ..Default::default()
            })?;
        assert_eq!(decided.len(), 1);

        // 8 redeemers of one token: exactly one redeems it.
        let issued = gov::app::credentials::issue(&svc, "noop", "scope", 60)?;
        let answers = together(8, |_| {
            gov::app::credentials::redeem(
                &svc,
                &issued.token,
                &gov::app::credentials::Redeemer::Trusted,
            )
        });
        assert_eq!(
            answers.iter().filter(|a| a.is_ok()).count(),
            1,
            "{answers:?}"
        );
    }
    let (batches, writers) = svc.governance().batch_stats();
    assert!(
        writers - writers0 > batches - batches0,
        "no batch carried more than one writer: {batches} batches, {writers} writers"
    );
    verify_ok(&repo)
}

/// Submissions made while approvals move `main`, in the same batches: a
/// pending proposal's branch (named by an id the server drew, staged
/// without a look on disk) holds one commit signed by the server, on a
/// commit of `main`, with its file as submitted.
#[test]
fn submissions_without_ids_while_main_moves_get_signed_branches_on_main() -> TestResult {
    let (repo, svc) = service()?;
    let git = repo.repo()?;
    let mut filed = Vec::new();
    for round in 0..3 {
        let to_approve: Vec<String> = (0..4)
            .map(|_| {
                let s = gov::app::proposals::submit(&svc, submission("noop", "publish_content")?)?;
                Ok(s.proposal.proposal_id)
            })
            .collect::<TestResult<_>>()?;
        let answers = together(
            12,
            |i| -> Result<Option<gov::domain::proposal::Proposal>, String> {
                match to_approve.get(i) {
                    Some(id) => {
                        let input = DecisionInput {
                            verdict: Verdict::Approve,
                            note: None,
                            final_: false,
                        };
                        decide(&svc, id, &input, "operator").map_err(|e| e.to_string())?;
                        Ok(None)
                    }
                    None => {
                        let sub =
                            submission("noop", "publish_content").map_err(|e| e.to_string())?;
                        let s =
                            gov::app::proposals::submit(&svc, sub).map_err(|e| e.to_string())?;
                        Ok(Some(s.proposal))
                    }
                }
            },
        );
        for a in answers {
            if let Some(p) = a.map_err(|e| format!("round {round}: {e}"))? {
                filed.push(p);
            }
        }
    }
    assert_eq!(filed.len(), 24);
    let main = git.refname_to_id("refs/heads/main")?;
    for p in &filed {
        let branch = p.branch.as_deref().ok_or("no branch")?;
        let commit = git2::Oid::from_str(p.commit.as_deref().ok_or("no commit")?)?;
        assert_eq!(git.refname_to_id(&format!("refs/heads/{branch}"))?, commit);
        let c = git.find_commit(commit)?;
        assert_eq!(c.parent_count(), 1);
        let parent = c.parent_id(0)?;
        assert!(
            parent == main || git.graph_descendant_of(main, parent)?,
            "{branch} is not on a commit of main"
        );
        let blob = c.tree()?.get_path(std::path::Path::new(&p.file_path()))?;
        assert_eq!(
            git.find_blob(blob.id())?.content(),
            p.to_file().as_bytes(),
            "{branch}"
        );
        let o = repo.git_with_signers(&["verify-commit", branch])?;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    verify_ok(&repo)
}

/// A submission that waits for a person is decided and its commit made
/// ahead, on `main`'s tip. An approval ahead of it in its batch moves
/// `main`: it is filed on the new tip instead, and its entry records the
/// commit it was filed on, not the one made ahead.
#[test]
fn a_submission_behind_an_approval_in_its_batch_records_the_commit_it_was_filed_on() -> TestResult {
    use gov::app::proposals::submit;
    use gov::domain::audit::Event;
    let (repo, svc) = service()?;
    let first = submit(&svc, submission("noop", "publish_content")?)?;
    let first = first.proposal.proposal_id;
    let pause = std::time::Duration::from_millis(300);
    let filed = std::thread::scope(|s| -> TestResult<gov::domain::proposal::Proposal> {
        // A writer holds the batch open...
        let held = hold_batch(s, &svc)?;
        // ...while an approval queues, and behind it a submission decided
        // ahead on main's tip before the approval.
        let approver = s.spawn(|| {
            let input = DecisionInput {
                verdict: Verdict::Approve,
                note: None,
                final_: false,
            };
            decide(&svc, &first, &input, "operator").map(|_| ())
        });
        std::thread::sleep(pause);
        let submitter = s.spawn(|| {
            let sub = submission("noop", "publish_content").map_err(|e| e.to_string())?;
            submit(&svc, sub).map_err(|e| e.to_string())
        });
        std::thread::sleep(pause);
        held.release()?;
        approver.join().map_err(|_| "the approver panicked")??;
        Ok(submitter
            .join()
            .map_err(|_| "the submitter panicked")??
            .proposal)
    })?;
    let git = repo.repo()?;
    let main = git.refname_to_id("refs/heads/main")?;
    let commit = git2::Oid::from_str(filed.commit.as_deref().ok_or("no commit")?)?;
    assert_eq!(
        git.find_commit(commit)?.parent_id(0)?,
        main,
        "filed on the approval's merge"
    );
    let branch = filed.branch.as_deref().ok_or("no branch")?;
    assert_eq!(git.refname_to_id(&format!("refs/heads/{branch}"))?, commit);
    let entries = svc
        .governance()
        .index()?
        .query(&gov::app::audit::AuditFilter {
            event_type: Some("proposal_submitted".into()),
            proposal_id: Some(filed.proposal_id.clone()),
            ..Default::default()
        })?;
    let [entry] = entries.as_slice() else {
        return Err(format!("expected one entry, got {}", entries.len()).into());
    };
    let Event::ProposalSubmitted(recorded) = &entry.entry.entry.event else {
        return Err("not a proposal_submitted entry".into());
    };
    assert_eq!(recorded.commit, filed.commit);
    assert_eq!(recorded.proposal.commit, filed.commit);
    assert_eq!(recorded.branch, filed.branch);
    verify_ok(&repo)
}

/// `/status` counts the batches the server flushed and the writers they
/// carried: submissions sent together share flushes.
#[test]
fn status_counts_batches_and_the_writers_they_carried() -> TestResult {
    let s = TestServer::start()?;
    let counts = |s: &TestServer| -> TestResult<(u64, u64)> {
        let st = s.get("/status", Some(&s.operator))?.body;
        let n = |k: &str| {
            st["batches"][k]
                .as_u64()
                .ok_or(format!("no batches.{k}: {st}"))
        };
        Ok((n("flushed")?, n("writers")?))
    };
    let (flushed0, writers0) = counts(&s)?;
    assert!(
        writers0 >= flushed0,
        "{flushed0} batches, {writers0} writers"
    );
    let answers = together(16, |_| {
        s.post(
            "/proposals",
            Some(&s.runner),
            &proposal("noop", "research_only"),
        )
        .map(|r| r.status)
        .map_err(|e| e.to_string())
    });
    for a in answers {
        assert_eq!(a?, 200);
    }
    let (flushed, writers) = counts(&s)?;
    let (flushed, writers) = (flushed - flushed0, writers - writers0);
    assert!(writers >= 16, "{writers} writers for 16 submissions");
    assert!(
        (1..=writers).contains(&flushed),
        "{flushed} batches for {writers} writers"
    );
    Ok(())
}

/// Charges of `capped` (1,000 tokens): the same sequence serially and
/// concurrently ends with the same spend, the same number of refusals and
/// the same pause state.
#[test]
fn charges_at_the_cap_match_the_serial_outcome() -> TestResult {
    let input = ChargeInput {
        tokens: 150,
        dollars: Some(0.01),
        tool: "t".into(),
        task_id: None,
        ..ChargeInput::default()
    };
    let outcome = |svc: &Service, answers: Vec<bool>| -> TestResult<(usize, i64, &'static str)> {
        let b = agents::budget(svc, "capped", 0)?;
        Ok((
            answers.iter().filter(|ok| **ok).count(),
            b.tokens_consumed,
            b.status.as_str(),
        ))
    };
    let (_serial_repo, serial) = service()?;
    let answers: Vec<bool> = (0..12)
        .map(|_| agents::charge(&serial, "capped", &input, Actor::runner()).is_ok())
        .collect();
    let want = outcome(&serial, answers)?;
    for _ in 0..3 {
        let (repo, svc) = service()?;
        let answers = together(12, |_| {
            agents::charge(&svc, "capped", &input, Actor::runner()).is_ok()
        });
        assert_eq!(outcome(&svc, answers)?, want);
        verify_ok(&repo)?;
    }
    Ok(())
}

/// A charge racing a pause: the outcome is that of one of the two serial
/// orders, as the chain records it. A charge records money already spent,
/// so it is recorded either way; what it answers (the agent paused or
/// not) must match where the chain put it.
#[test]
fn a_charge_racing_a_pause_is_one_serial_order() -> TestResult {
    let input = ChargeInput {
        tokens: 10,
        dollars: None,
        tool: "t".into(),
        task_id: None,
        ..ChargeInput::default()
    };
    for _ in 0..4 {
        let (_repo, svc) = service()?;
        let answers = together(2, |i| {
            if i == 0 {
                agents::pause(&svc, "noop", "stop", Actor::operator("operator")).map(|_| None)
            } else {
                agents::charge(&svc, "noop", &input, Actor::runner()).map(|b| Some(b.status))
            }
        });
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
        let index = svc.governance().index()?;
        let seq_of = |event: &str| -> TestResult<Option<u64>> {
            Ok(index
                .query(&gov::app::audit::AuditFilter {
                    event_type: Some(event.into()),
                    agent_id: Some("noop".into()),
                    ..Default::default()
                })?
                .first()
                .map(|e| e.entry.seq))
        };
        let paused = seq_of("agent_paused")?.ok_or("no pause recorded")?;
        let charged = seq_of("budget_charge")?.ok_or("charge not recorded")?;
        let status = match &answers[1] {
            Ok(Some(status)) => status.as_str(),
            other => return Err(format!("the charge was not recorded: {other:?}").into()),
        };
        if charged < paused {
            assert_ne!(
                status, "paused",
                "a charge before the pause answered paused"
            );
        } else {
            assert_eq!(status, "paused", "a charge after the pause did not see it");
        }
    }
    Ok(())
}

#[test]
fn auto_approvals_leave_main_alone_and_an_approval_is_one_signed_merge() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let repo = s.repo.repo()?;
    let main0 = repo.refname_to_id("refs/heads/main")?;
    let mut auto_body = proposal("researcher", "research_only");
    auto_body["requires_approval"] = json!(false);
    let r = s.post("/proposals", None, &auto_body)?;
    assert_eq!(r.body["status"], "auto-approved", "{:?}", r.body);
    let auto = r.text("proposal_id");
    assert_eq!(repo.refname_to_id("refs/heads/main")?, main0);

    // The audit entry is its record, named by the API and the CLI.
    let g = s.get(&format!("/proposals/{auto}"), Some(&s.operator))?;
    let audit_commit = g.text("audit_commit");
    let c = repo.find_commit(git2::Oid::from_str(&audit_commit)?)?;
    assert!(c.message().unwrap_or("").contains(&auto));
    assert!(
        repo.graph_descendant_of(repo.refname_to_id("refs/heads/gov/audit")?, c.id())?
            || repo.refname_to_id("refs/heads/gov/audit")? == c.id()
    );
    let out = s.repo.gov(&["proposals", "show", &auto])?;
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("audit commit     {audit_commit}\n")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let body = proposal("noop", "publish_content");
    let r = s.post("/proposals", None, &body)?;
    assert_eq!(r.body["status"], "pending", "{:?}", r.body);
    let id = r.text("proposal_id");
    assert_eq!(repo.refname_to_id("refs/heads/main")?, main0);
    s.approve(&id)?;
    let main1 = repo.refname_to_id("refs/heads/main")?;
    let merge = repo.find_commit(main1)?;
    assert_eq!(merge.parent_count(), 2);
    assert_eq!(
        merge.parent_id(0)?,
        main0,
        "main moved by more than one commit"
    );
    let submitted: chrono::DateTime<chrono::Utc> = body["submitted_at"]
        .as_str()
        .ok_or("no submitted_at")?
        .parse()?;
    // The month it was submitted, and its bucket: the first two hex digits
    // of the SHA-256 of its id.
    let bucket = format!("{:02x}", sha2::Sha256::digest(id.as_bytes())[0]);
    let path = format!("proposals/{}/{bucket}/{id}.toml", submitted.format("%Y/%m"));
    assert!(
        merge.tree()?.get_path(std::path::Path::new(&path)).is_ok(),
        "{path}"
    );
    let o = s.repo.git_with_signers(&["verify-commit", "main"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

/// The server signs its audit entries with nonces made ahead
/// (`store::keys`): more entries than its pool holds, so that it is taken
/// down and filled again, and stock `git` finds every signature good.
#[test]
fn entries_signed_with_nonces_made_ahead_verify_with_stock_git() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    for _ in 0..300 {
        let mut body = proposal("researcher", "research_only");
        body["requires_approval"] = json!(false);
        let r = s.post("/proposals", None, &body)?;
        assert_eq!(r.body["status"], "auto-approved", "{:?}", r.body);
    }
    verify_ok(&s.repo)?;
    let entries: usize = s
        .repo
        .git(&["rev-list", "--count", "gov/audit"])?
        .stdout_text()
        .trim()
        .parse()?;
    assert!(entries >= 300, "{entries} entries");
    require_program("ssh-keygen")?;
    let o = s
        .repo
        .git_with_signers(&["log", "--show-signature", "--format=%H", "gov/audit"])?;
    let out = o.stdout_text();
    assert_eq!(
        out.matches("Good \"git\" signature").count(),
        entries,
        "{out}"
    );
    Ok(())
}

/// Approvals made at once (so that batches carry several) each put their
/// file into the checked-out `main`'s working tree and Git index: stock
/// `git status` stays clean. One that asks (`wait_for_checkout`, as `gov
/// approve` does) is answered once its file is there; one that does not
/// (the dashboard's, the API's by default) finds it there a moment later,
/// the server putting many approvals' files there at a time.
#[test]
fn approvals_at_once_leave_the_checkout_clean() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let ids = (0..6)
        .map(|_| -> TestResult<String> {
            let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
            assert_eq!(r.body["status"], "pending", "{:?}", r.body);
            Ok(r.text("proposal_id"))
        })
        .collect::<TestResult<Vec<_>>>()?;
    let start = Barrier::new(ids.len());
    std::thread::scope(|scope| -> TestResult {
        let approvals: Vec<_> = ids
            .iter()
            .map(|id| {
                let (s, start) = (&s, &start);
                scope.spawn(move || -> Result<u16, String> {
                    start.wait();
                    let d = s
                        .post(
                            &format!("/proposals/{id}/decision"),
                            Some(&s.operator),
                            &json!({"decision": "approve", "wait_for_checkout": true}),
                        )
                        .map_err(|e| e.to_string())?;
                    // Answered once its file is in the checkout, though
                    // another writer's sync may have put it there.
                    match in_checkout(s, id) {
                        Ok(true) => Ok(d.status),
                        Ok(false) => Err(format!("{id} answered before it was checked out")),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        for a in approvals {
            assert_eq!(a.join().map_err(|_| "an approval panicked")??, 200);
        }
        Ok(())
    })?;
    let o = s.repo.git(&["status", "--porcelain"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "git status is not clean"
    );
    for id in &ids {
        assert!(in_checkout(&s, id)?, "{id} is not in the checkout's index");
    }
    // A file the operator stages with stock `git` between two approvals
    // stays staged: the Git index gov keeps loaded is read again.
    std::fs::write(s.repo.root().join("notes.txt"), "mine\n")?;
    let o = s.repo.git(&["add", "notes.txt"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
    let id = r.text("proposal_id");
    s.approve(&id)?;
    reaches_checkout(&s, &id)?;
    let o = s.repo.git(&["status", "--porcelain"])?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "A  notes.txt\n");
    Ok(())
}

/// A `git` command holding the checkout's Git index (`index.lock`, as
/// `git status` does for a moment) when the server puts an approval's
/// file there does not keep it out for good: the server tries again, and
/// the file reaches the Git index once the lock is gone. Left out, `git
/// status` would show it deleted, and the operator's next `git commit`
/// would delete it from `main`.
#[test]
fn an_approval_s_file_reaches_the_checkout_after_git_lets_go_of_its_index() -> TestResult {
    let s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
    let id = r.text("proposal_id");
    let lock = IndexLockHeld::take(&s)?;
    s.approve(&id)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let held = in_checkout(&s, &id);
    let record = s.repo.root().join(".git/gov-checkout");
    let recorded = std::fs::read_to_string(&record)?;
    drop(lock);
    assert!(!held?, "{id} indexed through git's lock");
    reaches_checkout(&s, &id)?;
    let o = s.repo.git(&["status", "--porcelain"])?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    // The record of the commit the checkout is up to stayed behind while
    // the file was kept out, and names the approval's merge once it is in.
    let main = s.repo.repo()?.refname_to_id("refs/heads/main")?;
    assert_ne!(recorded, format!("refs/heads/main {main}\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&record)? != format!("refs/heads/main {main}\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "the record stayed behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// `gov approve` while a `git` command holds the Git index says that the
/// approved files are not in the checkout yet and what puts them there:
/// through a server, the server once the lock is gone; without one, the
/// next `gov serve`, which does.
#[test]
fn gov_approve_says_when_git_keeps_the_approved_files_out_of_the_checkout() -> TestResult {
    let mut s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let ids = (0..2)
        .map(|_| -> TestResult<String> {
            let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
            Ok(r.text("proposal_id"))
        })
        .collect::<TestResult<Vec<_>>>()?;
    s.stop();
    let (mut child, _, _) = crate::serve::spawn_serve_with_rest(&s.repo)?;
    let lock = IndexLockHeld::take(&s)?;
    let through_server = s.repo.gov(&["approve", &ids[0]]);
    let _ = child.kill();
    let _ = child.wait();
    let alone = s.repo.gov(&["approve", &ids[1]]);
    drop(lock);
    let said = |out: std::process::Output, id: &str, then: &str| -> TestResult {
        let o = s
            .repo
            .git(&["log", "-1", "--format=%H", &format!("--grep={id}"), "main"])?;
        let merge = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            out.stdout_text(),
            format!(
                "proposal `{id}` approved: merged into main as {merge}\nnote: a `git` command holds the Git index (`.git/index.lock`), so the approved files are not in the checkout yet (`git status` shows them undone until then); {then}\n"
            )
        );
        Ok(())
    };
    said(
        through_server?,
        &ids[0],
        "the server puts them there once it lets go",
    )?;
    said(
        alone?,
        &ids[1],
        "`gov serve` puts them there as it starts, once the `git` command is done",
    )?;

    let note = crate::serve::lines_after_start(&s.repo, 1)?;
    assert!(
        note[0].starts_with("note: the checkout lacked `main`'s approved version of 2 files"),
        "{note:?}"
    );
    let status = s.repo.git(&["status", "--porcelain"])?;
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");
    Ok(())
}

/// The record of the commit the checkout was brought up to never reaches
/// the disk ahead of the Git index it speaks for: the Git index, the Git
/// folder and the record's content are flushed after the Git index's
/// rename and before the record's (on a file system that keeps no order
/// between renames, the record could otherwise outlive a power cut the
/// Git index did not, and the next start would skip files the checkout
/// lost). No test can cut the power here: the system calls of a real
/// `gov approve` are watched through `strace`, each flush taken as done
/// where the kernel returned from it.
#[test]
fn the_checkout_s_record_reaches_the_disk_after_the_git_index() -> TestResult {
    require_program("strace")?;
    let mut s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
    let id = r.text("proposal_id");
    s.stop();
    let log = s.repo.dir.path().join("strace.log");
    let o = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(crate::support::gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["approve", &id])
        .output()?;
    assert!(o.status.success(), "{}", o.stderr_text());
    let calls = traced_calls(&std::fs::read_to_string(&log)?);
    let git_dir = s.repo.root().join(".git");
    // The first flush of `path` (a file or folder) after position `after`.
    let flush_of = |path: &std::path::Path, after: usize| -> TestResult<&TracedCall> {
        let fd = format!("<{}>", path.display());
        calls
            .iter()
            .find(|c| c.name == "fsync" && c.args.ends_with(&fd) && c.started > after)
            .ok_or_else(|| format!("no flush of {} in {calls:#?}", path.display()).into())
    };
    // The rename that put a file in place as `path`.
    let rename_to = |path: &std::path::Path| -> TestResult<&TracedCall> {
        let to = format!("\"{}\"", path.display());
        calls
            .iter()
            .find(|c| c.name.starts_with("rename") && c.args.ends_with(&to))
            .ok_or_else(|| format!("no rename to {} in {calls:#?}", path.display()).into())
    };
    let index_renamed = rename_to(&git_dir.join("index"))?;
    let record_renamed = rename_to(&git_dir.join("gov-checkout"))?;
    let index_flushed = flush_of(&git_dir.join("index"), index_renamed.done)?;
    let folder_flushed = flush_of(&git_dir, index_renamed.done)?;
    let content_flushed = flush_of(&git_dir.join("gov-checkout.new"), 0)?;
    for flushed in [index_flushed, folder_flushed, content_flushed] {
        assert!(flushed.done < record_renamed.started, "{calls:#?}");
    }
    Ok(())
}

/// One system call in an `strace -f` log: its name and arguments, and the
/// positions in the log where it started and where the kernel returned
/// (the same line unless another thread's call came in between).
#[derive(Debug)]
struct TracedCall {
    name: String,
    args: String,
    started: usize,
    done: usize,
}

fn traced_calls(log: &str) -> Vec<TracedCall> {
    let mut calls = Vec::new();
    let mut open: std::collections::HashMap<&str, TracedCall> = Default::default();
    for (n, line) in log.lines().enumerate() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<...") {
            if let Some(mut call) = open.remove(tid) {
                call.done = n;
                calls.push(call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let unfinished = args.ends_with("<unfinished ...>");
        let args = args.trim_end_matches("<unfinished ...>").trim_end();
        // Without the result (` = 0`, after padding) and the closing
        // parenthesis.
        let args = match args.rsplit_once(" = ") {
            Some((a, _)) => a.trim_end().trim_end_matches(')'),
            None => args,
        }
        .to_string();
        let call = TracedCall {
            name: name.to_string(),
            args,
            started: n,
            done: n,
        };
        match unfinished {
            true => {
                open.insert(tid, call);
            }
            false => calls.push(call),
        }
    }
    calls
}

/// A server or command killed between an approval's durable commit and
/// its file reaching the checkout leaves `main` holding the file and the
/// checkout's Git index without it (`git status` shows it deleted; the
/// next `git commit` would delete it from `main`). The next `gov serve`
/// puts such files back as it starts, says which, and keeps a file the
/// operator wrote there.
#[test]
fn a_server_starting_puts_back_approvals_a_killed_one_left_out() -> TestResult {
    let (s, _, paths) = approvals_a_killed_server_left_out(3)?;
    // The first never written; the second written, not indexed (killed
    // during the sync); the third written by the operator.
    assert!(!s.repo.root().join(&paths[0]).exists());
    let shown = s.repo.git(&["show", &format!("main:{}", paths[1])])?;
    let write = |path: &str, content: &[u8]| -> TestResult {
        let file = s.repo.root().join(path);
        std::fs::create_dir_all(file.parent().ok_or("no folder")?)?;
        Ok(std::fs::write(file, content)?)
    };
    write(&paths[1], &shown.stdout)?;
    write(&paths[2], b"mine\n")?;
    let status = s.repo.git(&["status", "--porcelain"])?;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("D  {}", paths[0])),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    let said = crate::serve::lines_after_start(&s.repo, 2)?;
    let (note, warning) = (&said[0], &said[1]);
    let mut put_back = paths[..2].to_vec();
    put_back.sort();
    assert_eq!(
        *note,
        format!(
            "note: the checkout lacked `main`'s approved version of 2 files (gov could not put them there: a server or command stopped, or a `git` command held the Git index); brought up to date: `{}`, `{}`",
            put_back[0], put_back[1]
        )
    );
    assert_eq!(
        *warning,
        format!(
            "warning: the working tree holds other content where `main` has approved changes; it is kept, and `git status` shows it as changes to `main`'s: `{}`",
            paths[2]
        )
    );
    // The operator's file is kept, indexed as `main` has it: a change,
    // not a deletion.
    let status = s
        .repo
        .git(&["status", "--porcelain", "--untracked-files=all"])?;
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        format!(" M {}\n", paths[2])
    );
    assert_eq!(std::fs::read(s.repo.root().join(&paths[2]))?, b"mine\n");
    let shown = s.repo.git(&["show", &format!("main:{}", paths[0])])?;
    assert_eq!(
        std::fs::read(s.repo.root().join(&paths[0]))?,
        shown.stdout,
        "the file put back is not main's"
    );
    Ok(())
}

/// The catch-up of a starting server meets a `git` command holding the
/// Git index: it says so, and the file follows once the lock is gone.
#[test]
fn a_starting_server_puts_back_a_left_out_file_once_git_lets_go() -> TestResult {
    let (s, ids, paths) = approvals_a_killed_server_left_out(1)?;
    let (id, path) = (&ids[0], &paths[0]);
    assert!(!s.repo.root().join(path).exists());
    let lock = IndexLockHeld::take(&s)?;
    let started = crate::serve::spawn_serve_with_rest(&s.repo);
    let said = started
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|(_, _, rest)| {
            rest.recv_timeout(std::time::Duration::from_secs(30))
                .map_err(|_| "no line after the start-up lines".to_string())
        });
    let held = in_checkout(&s, id);
    drop(lock);
    let (mut child, _, _) = started?;
    let reached = reaches_checkout(&s, id);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        said?,
        format!(
            "note: the checkout lacked `main`'s approved version of 1 file (gov could not put it there: a server or command stopped, or a `git` command held the Git index); a `git` command holds the Git index (`.git/index.lock`); it will be brought up to date once it lets go: `{path}`"
        )
    );
    assert!(!held?, "{id} indexed through git's lock");
    reached?;
    let status = s.repo.git(&["status", "--porcelain"])?;
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");
    Ok(())
}

/// `n` approvals whose files are on `main` but neither in the working
/// tree nor in the checkout's Git index: each `gov approve` killed once
/// its approval was durable, before it put the file there. The proposals
/// are filed through a server, and a `gov serve` started and stopped
/// before the approvals records the commit the checkout was up to, as
/// any server's start does. The stopped server, the proposals' ids and
/// their files' paths.
fn approvals_a_killed_server_left_out(
    n: usize,
) -> TestResult<(TestServer, Vec<String>, Vec<String>)> {
    let mut s = TestServer::start_with(TestServer::set_agent_auth_optional)?;
    let ids = (0..n)
        .map(|_| -> TestResult<String> {
            let r = s.post("/proposals", None, &proposal("noop", "publish_content"))?;
            Ok(r.text("proposal_id"))
        })
        .collect::<TestResult<Vec<_>>>()?;
    s.stop();
    crate::serve::served_once(&s.repo)?;
    for id in &ids {
        s.repo
            .gov_killed_at(gov::testkit::fault::Fault::BeforeCheckout, &["approve", id])?;
    }
    let paths = ids
        .iter()
        .map(|id| main_path(&s, id))
        .collect::<TestResult<Vec<_>>>()?;
    Ok((s, ids, paths))
}

/// The checkout's `.git/index.lock`, held open by another process as a
/// live `git` command holds it (so gov does not take it for one a killed
/// process left); let go of, and removed, when dropped.
struct IndexLockHeld {
    path: std::path::PathBuf,
    holder: std::process::Child,
}

impl IndexLockHeld {
    fn take(s: &TestServer) -> TestResult<Self> {
        let path = s.repo.root().join(".git/index.lock");
        std::fs::File::create(&path)?;
        let holder = std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::fs::File::open(&path)?)
            .spawn()?;
        Ok(IndexLockHeld { path, holder })
    }
}

impl Drop for IndexLockHeld {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Waits (up to 10 s) for proposal `id`'s file to reach the checkout's
/// Git index, which a server does a moment after the approval's answer.
fn reaches_checkout(s: &TestServer, id: &str) -> TestResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !in_checkout(s, id)? {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never reached the checkout's Git index"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Whether proposal `id`'s file is in the checkout's Git index.
fn in_checkout(s: &TestServer, id: &str) -> TestResult<bool> {
    Ok(indexed_path(s, id)?.is_some())
}

/// Where proposal `id`'s file is in the checkout's Git index, if it is.
fn indexed_path(s: &TestServer, id: &str) -> TestResult<Option<String>> {
    listed_path(s, &["ls-files", "proposals"], id)
}

/// Where proposal `id`'s file is on `main`; it must be there.
pub(crate) fn main_path(s: &TestServer, id: &str) -> TestResult<String> {
    let listed = listed_path(
        s,
        &["ls-tree", "-r", "--name-only", "main", "proposals"],
        id,
    )?;
    Ok(listed.ok_or_else(|| format!("{id} not on main"))?)
}

/// The path among those `git args…` lists that is proposal `id`'s file.
fn listed_path(s: &TestServer, args: &[&str], id: &str) -> TestResult<Option<String>> {
    let o = s.repo.git(args)?;
    let listed = String::from_utf8_lossy(&o.stdout);
    let path = listed.lines().find(|l| l.ends_with(&format!("/{id}.toml")));
    Ok(path.map(str::to_string))
}

#[test]
fn maintenance_while_writers_run_loses_nothing() -> TestResult {
    let (repo, svc) = service()?;
    // A backlog of loose objects, as an older gov or `git` leaves them.
    let git = repo.repo()?;
    for i in 0..300 {
        git.blob(format!("loose {i}").as_bytes())?;
    }
    let files_before = gov::testkit::maintain::file_count(&repo.root().join(".git"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|s| -> TestResult<usize> {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (svc, stop) = (&svc, &stop);
                s.spawn(move || -> usize {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                        let e = gov::domain::audit::NewEntry::new(
                            Actor::server(),
                            gov::domain::audit::Event::from_parts(
                                "action_executed".into(),
                                json!({"n": n}),
                            ),
                        )
                        .agent(format!("w{w}"));
                        if svc.governance().append(vec![e]).is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        for _ in 0..5 {
            svc.governance().maintain()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(writers.into_iter().map(|h| h.join().unwrap_or(0)).sum())
    })?;
    let r = svc.governance().maintain()?;
    assert_eq!(r.loose_after, 0, "{r:?}");
    // No size tier is left full (a few hundred KB: three tiers, at most
    // three packs each).
    assert!(
        !gov::testkit::maintain::merge_due(
            &repo.root().join(".git"),
            &gov::testkit::maintain::LongLane::default()
        ),
        "{r:?}"
    );
    assert!(r.packs_after <= 9, "{r:?}");
    let files_after = gov::testkit::maintain::file_count(&repo.root().join(".git"));
    assert!(
        files_after < files_before,
        "{files_before} -> {files_after}"
    );
    assert_eq!(executed(&svc)?.len(), written);
    let o = repo.git(&["fsck", "--connectivity-only", "--no-dangling"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    verify_ok(&repo)
}

#[test]
fn acknowledged_writes_survive_sigkill_mid_batch() -> TestResult {
    let repo = TestRepo::new()?;
    add_policies_and_agents(&repo)?;
    // What is in force is what is on main: commit the setting there.
    crate::support::server::commit_to_main(
        &repo,
        &[(
            "gov.toml".into(),
            b"[server]\nagent_auth = \"optional\"\n".to_vec(),
        )],
        "agent_auth optional",
    )?;
    let mut child = std::process::Command::new(crate::support::gov_bin())
        .args(["serve", "--port", "0"])
        .current_dir(repo.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut reader = std::io::BufReader::new(out);
    std::io::BufRead::read_line(&mut reader, &mut line)?;
    let url = line
        .trim()
        .strip_prefix("gov serve: listening on ")
        .ok_or_else(|| format!("server said `{line}`"))?
        .trim_end_matches('/')
        .to_string();
    let acked = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let (url, acked) = (&url, &acked);
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(std::time::Duration::from_secs(10))
                    .build();
                for n in 0..200 {
                    let body = json!({"agent_id": format!("k{t}"), "event_type": "action_executed", "payload": {"t": t, "n": n}});
                    match agent.post(&format!("{url}/audit")).send_json(body) {
                        Ok(r) if r.status() == 201 || r.status() == 200 => {
                            if let Ok(mut a) = acked.lock() {
                                a.push((t, n));
                            }
                        }
                        _ => break,
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
        let _ = child.kill();
    });
    let _ = child.wait();
    let acked = acked.into_inner()?;
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the kill"
    );
    // Restart: every acknowledged entry is in the chain; verify passes.
    let svc = Service::open(&repo.settings)?;
    let rows = executed(&svc)?;
    let have: std::collections::BTreeSet<(u64, u64)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.entry.entry.payload().get("t")?.as_u64()?,
                r.entry.entry.payload().get("n")?.as_u64()?,
            ))
        })
        .collect();
    for (t, n) in &acked {
        assert!(
            have.contains(&(*t as u64, *n as u64)),
            "acknowledged write {t}/{n} lost"
        );
    }
    verify_ok(&repo)
}

/// `gov maintain` says what it packed in one line. Run on a new repository
/// it packs every loose object and ref, leaving one pack (its loose
/// objects' pack, written again with a delta search); run again, it has
/// nothing left to do. Only the size is not pinned.
#[test]
fn gov_maintain_says_what_it_packed() -> TestResult {
    use crate::support::repo::OutputText;
    let repo = TestRepo::new()?;
    let size = |said: &str| -> TestResult<String> {
        let (sentence, kib) = said
            .strip_suffix(" KiB\n")
            .and_then(|s| s.rsplit_once(" objects take "))
            .ok_or_else(|| format!("maintain said: {said}"))?;
        kib.parse::<u64>()?;
        Ok(sentence.to_string())
    };
    let first = repo.gov(&["maintain"])?;
    assert!(first.status.success(), "{}", first.stderr_text());
    let sentence = size(&first.stdout_text())?;
    let loose: u64 = sentence
        .strip_prefix("packed ")
        .and_then(|s| s.split_once(' '))
        .ok_or_else(|| format!("maintain said: {sentence}"))?
        .0
        .parse()?;
    assert!(loose > 0, "{sentence}");
    assert_eq!(
        sentence,
        format!(
            "packed {loose} loose objects (0 left), merged 1 of 1 packs (1 now), packed 1 loose refs;"
        )
    );
    let again = repo.gov(&["maintain"])?;
    assert!(again.status.success(), "{}", again.stderr_text());
    assert_eq!(
        size(&again.stdout_text())?,
        "packed 0 loose objects (0 left), merged 0 of 1 packs (1 now), packed 0 loose refs;"
    );
    Ok(())
}

/// Maintenance packs the branch an approved proposal keeps, so that the
/// loose ref files (which every listing opens) are as many as the
/// proposals waiting, and leaves a waiting proposal's branch loose. Stock
/// git reads both, and the waiting one is still decided as before.
#[test]
fn maintenance_packs_an_approved_proposals_branch_and_leaves_a_waiting_one_loose() -> TestResult {
    use crate::support::repo::OutputText;
    let (repo, svc) = service()?;
    let filed = |svc: &Service| -> TestResult<String> {
        let s = gov::app::proposals::submit(svc, submission("noop", "publish_content")?)?;
        Ok(s.proposal.proposal_id)
    };
    let (approved, waiting) = (filed(&svc)?, filed(&svc)?);
    let verdict = |verdict| DecisionInput {
        verdict,
        note: None,
        final_: false,
    };
    decide(&svc, &approved, &verdict(Verdict::Approve), "operator")?;
    let out = repo.gov(&["maintain"])?;
    assert!(out.status.success(), "{}", out.stderr_text());
    let loose = |id: &str| repo.root().join(".git/refs/heads/gov/proposal").join(id);
    assert!(!loose(&approved).exists(), "the approved branch is packed");
    assert!(loose(&waiting).exists(), "the waiting branch stays loose");
    for id in [&approved, &waiting] {
        let o = repo.git(&["rev-parse", "--verify", &format!("gov/proposal/{id}")])?;
        assert!(o.status.success(), "{}", o.stderr_text());
    }
    decide(&svc, &waiting, &verdict(Verdict::Reject), "operator")?;
    assert!(!loose(&waiting).exists(), "a rejection renames the branch");
    let o = repo.git(&["rev-parse", "--verify", &format!("gov/rejected/{waiting}")])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    verify_ok(&repo)
}

/// The connection reads go through keeps a page cache of 512 KiB, not
/// SQLite's 2,000 KiB: it held about 4 MiB at the server's peak on a
/// grown history.
#[test]
fn the_readers_connection_keeps_a_small_page_cache() -> TestResult {
    let (_repo, svc) = service()?;
    let cache: i64 = svc
        .governance()
        .index()?
        .conn()
        .query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    assert_eq!(cache, -512);
    Ok(())
}

/// The server leaves the index's checkpoints to its background pass: the
/// batches' commits let the write-ahead log grow past SQLite's default
/// of 1,000 pages without copying it into the database, and one passive
/// checkpoint then copies all of it, while a reader holds the index.
#[test]
fn index_checkpoints_are_left_to_the_background() -> TestResult {
    let (_repo, svc) = service()?;
    svc.governance().defer_index_checkpoints()?;
    let db = svc.settings().index_path();
    let in_database_file = || -> TestResult<i64> {
        // The database file alone, without its log.
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join("copy.sqlite");
        std::fs::copy(&db, &copy)?;
        let conn = rusqlite::Connection::open(&copy)?;
        Ok(conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?)
    };
    // What the service wrote on opening, schema included, into the file.
    svc.governance().checkpoint_index()?;
    let before = in_database_file()?;
    let mut frames = 0;
    let mut written = 0;
    while frames <= 1_000 && written < 2_000 {
        for _ in 0..50 {
            let e = gov::domain::audit::NewEntry::new(
                Actor::server(),
                gov::domain::audit::Event::from_parts(
                    "action_executed".into(),
                    json!({"n": written}),
                ),
            )
            .agent("a");
            svc.governance().append(vec![e])?;
            written += 1;
        }
        let wal = std::fs::metadata(db.with_extension("sqlite-wal"))?.len();
        frames = wal / 4_120;
    }
    assert!(
        frames > 1_000,
        "the log holds {frames} pages after {written} writes"
    );
    assert_eq!(in_database_file()?, before, "a commit checkpointed the log");
    // Through a connection of its own: a reader holding the index does
    // not keep the checkpoint out (nor is it kept waiting by it).
    let reading = svc.governance().index()?;
    let (log, done) = svc
        .governance()
        .checkpoint_index()?
        .ok_or("no checkpoint while a reader held the index")?;
    drop(reading);
    assert!(
        log > 1_000 && done == log,
        "{done} of {log} frames checkpointed"
    );
    assert_eq!(in_database_file()?, before + written);
    Ok(())
}
