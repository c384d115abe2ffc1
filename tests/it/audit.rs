//! The audit chain: signed commits stock git accepts, `gov audit verify`
//! catching each way of tampering, concurrent writers, the index rebuilt.

use git2::Oid;
use gov::app::governance::Governance;
use gov::app::governance::Role;
use gov::domain::audit::{Actor, AuditEntry, Event, NewEntry};
use gov::domain::event::EventKind;
use gov::testkit::audit::entries_from;
use gov::testkit::git::{cas_ref, signed_commit};
use gov::testkit::keys::SigningKey;

use crate::support::repo::{require_program, OutputText, TestRepo, TestResult};

const AUDIT_REF: &str = "refs/heads/gov/audit";

fn append(t: &TestRepo, role: Role, n: usize) -> TestResult<Vec<AuditEntry>> {
    let gov = Governance::open(&t.settings, role)?;
    let entries = (0..n)
        .map(|i| {
            let event = Event::other("tool_call", serde_json::json!({"i": i}))?;
            Ok(NewEntry::new(Actor::server(), event).agent("noop"))
        })
        .collect::<TestResult<Vec<_>>>()?;
    Ok(gov.append(entries)?)
}

/// Runs `gov audit verify` and returns its exit code and output.
fn verify(t: &TestRepo) -> TestResult<(i32, String)> {
    let o = t.gov(&["audit", "verify"])?;
    let text = format!("{}{}", o.stdout_text(), String::from_utf8_lossy(&o.stderr));
    Ok((o.status.code().unwrap_or(-1), text))
}

/// How a forger re-writes commits.
enum Forger {
    Unsigned,
    Key(Box<SigningKey>),
    /// Keeps each original commit's signature on the edited content.
    OriginalSignature,
}

/// Rewrites the chain from entry `from` on as a forger would: `edit` may
/// change an entry or drop it (`false`); the ref is then forced.
fn rewrite(
    t: &TestRepo,
    from: u64,
    forger: &Forger,
    edit: impl Fn(&mut AuditEntry) -> bool,
) -> TestResult {
    let repo = t.repo()?;
    let all: Vec<_> = entries_from(&repo, AUDIT_REF, 1)?.collect::<Result<_, _>>()?;
    let mut parent: Option<Oid> = all
        .iter()
        .find(|e| e.entry.seq == from - 1)
        .map(|e| e.commit);
    let who = git2::Signature::now("gov server", "server@gov")?;
    for e in all.iter().filter(|e| e.entry.seq >= from) {
        let mut entry = e.entry.clone();
        if !edit(&mut entry) {
            continue;
        }
        let old = repo.find_commit(e.commit)?;
        let tree = old.tree()?;
        let parent_commit = parent.map(|p| repo.find_commit(p)).transpose()?;
        let parents: Vec<&git2::Commit<'_>> = parent_commit.iter().collect();
        let msg = entry.commit_message();
        let oid = match forger {
            Forger::Unsigned => repo.commit(None, &who, &who, &msg, &tree, &parents)?,
            Forger::Key(k) => signed_commit(&repo, k, &who, &tree, &parents, &msg)?,
            Forger::OriginalSignature => {
                let (sig, _) = repo.extract_signature(&e.commit, Some("gpgsig"))?;
                let buf = repo.commit_create_buffer(&who, &who, &msg, &tree, &parents)?;
                repo.commit_signed(
                    buf.as_str().unwrap_or_default(),
                    sig.as_str().unwrap_or_default(),
                    Some("gpgsig"),
                )?
            }
        };
        parent = Some(oid);
    }
    let tip = parent.ok_or("nothing left")?;
    repo.reference(AUDIT_REF, tip, true, "forged")?;
    Ok(())
}

fn edit_payload(from: u64) -> impl Fn(&mut AuditEntry) -> bool {
    move |e| {
        if e.seq == from {
            if let Ok(forged) = Event::other("tool_call", serde_json::json!({"i": "forged"})) {
                e.entry.event = forged;
            }
        }
        true
    }
}

fn assert_tampered(t: &TestRepo, needles: &[&str]) -> TestResult {
    let (code, out) = verify(t)?;
    assert_eq!(code, 3, "{out}");
    for n in needles {
        assert!(out.contains(n), "expected `{n}` in:\n{out}");
    }
    Ok(())
}

#[test]
fn honest_chain_verifies_in_gov_and_in_stock_git() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 4)?;
    let last = append(&t, Role::Watchdog, 2)?;
    assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    let (code, out) = verify(&t)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "ok: 6 entries, signatures good, chain linear\n");

    let log = t.gov(&["audit", "log", "--limit", "3"])?.stdout_text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].starts_with("#6 ")
            && lines[0].contains("watchdog")
            && lines[0].contains("signature good"),
        "{log}"
    );
    let export = t.gov(&["audit", "export"])?.stdout_text();
    let first: serde_json::Value =
        serde_json::from_str(export.lines().next().ok_or("empty export")?)?;
    assert_eq!(first["audit_id"], 1);
    assert_eq!(first["event_type"], "tool_call");
    assert_eq!(export.lines().count(), 6);

    require_program("ssh-keygen")?;
    let tip = last[1].seq;
    let o = t.git_with_signers(&["verify-commit", "gov/audit"])?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("Good \"git\" signature"),
        "entry #{tip}: {err}"
    );
    let o = t.git_with_signers(&["log", "--show-signature", "gov/audit"])?;
    let out = o.stdout_text();
    assert_eq!(out.matches("Good \"git\" signature").count(), 6, "{out}");
    // The committer names the role, dated at the entry's time in UTC.
    let committer = t
        .git(&[
            "log",
            "-1",
            "--format=%cn <%ce> %ct %cd",
            "--date=format:%z",
            "gov/audit",
        ])?
        .stdout_text();
    assert_eq!(
        committer,
        format!(
            "gov watchdog <watchdog@gov> {} +0000\n",
            last[1].ts.0.timestamp()
        )
    );
    let o = t.git_with_signers(&["verify-commit", "main"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = t.git(&["status", "--porcelain"])?.stdout_text();
    assert_eq!(status, "", "the first commit leaves a clean working tree");
    Ok(())
}

#[test]
fn an_edited_unsigned_entry_is_named() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 6)?;
    rewrite(&t, 3, &Forger::Unsigned, edit_payload(3))?;
    assert_tampered(&t, &["tampered: entry #3", "not signed"])
}

#[test]
fn an_edited_entry_signed_by_an_unknown_key_is_named() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 6)?;
    rewrite(
        &t,
        3,
        &Forger::Key(Box::new(SigningKey::generate("intruder")?)),
        edit_payload(3),
    )?;
    assert_tampered(&t, &["tampered: entry #3", "not in allowed_signers"])
}

#[test]
fn an_edited_entry_keeping_its_signature_is_named() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 6)?;
    rewrite(&t, 3, &Forger::OriginalSignature, edit_payload(3))?;
    assert_tampered(&t, &["tampered: entry #3", "does not verify"])
}

#[test]
fn an_entry_removed_from_the_middle_is_named() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 6)?;
    // Even with the server's own key, the gap shows.
    rewrite(&t, 3, &Forger::Key(Box::new(t.key(Role::Server)?)), |e| {
        e.seq != 3
    })?;
    assert_tampered(&t, &["tampered: entry #4", "follows entry #2, expected #3"])
}

#[test]
fn an_entry_signed_by_an_approver_key_is_named() -> TestResult {
    let t = TestRepo::new()?;
    append(&t, Role::Server, 5)?;
    rewrite(
        &t,
        4,
        &Forger::Key(Box::new(t.key(Role::Approver)?)),
        |_| true,
    )?;
    assert_tampered(
        &t,
        &[
            "tampered: entry #4",
            "operator@approver.gov",
            "which has no server or watchdog role",
        ],
    )
}

#[test]
fn an_appended_foreign_entry_is_named() -> TestResult {
    let t = TestRepo::new()?;
    let written = append(&t, Role::Server, 3)?;
    let repo = t.repo()?;
    let intruder = SigningKey::generate("intruder")?;
    let parent = repo.find_commit(repo.refname_to_id(AUDIT_REF)?)?;
    let entry = NewEntry::new(
        Actor::server(),
        Event::other("forged", serde_json::json!({}))?,
    )
    .place(4, written[2].ts.0);
    let who = git2::Signature::now("gov server", "server@gov")?;
    let oid = signed_commit(
        &repo,
        &intruder,
        &who,
        &parent.tree()?,
        &[&parent],
        &entry.commit_message(),
    )?;
    cas_ref(&repo, AUDIT_REF, oid, Some(parent.id()), "forged")?;
    assert_tampered(&t, &["tampered: entry #4", "not in allowed_signers"])
}

#[test]
fn the_ref_moved_back_is_caught() -> TestResult {
    let t = TestRepo::new()?;
    let written = append(&t, Role::Server, 6)?;
    assert_eq!(verify(&t)?.0, 0);
    let repo = t.repo()?;
    let four = entries_from(&repo, AUDIT_REF, 4)?.next().ok_or("no #4")??;
    assert_eq!(four.entry, written[3]);
    repo.reference(AUDIT_REF, four.commit, true, "moved back")?;
    assert_tampered(&t, &["moved back", "last verified tip #6"])?;
    // Without the record of the last verification, the index still knows.
    std::fs::remove_file(gov::app::audit::verified_tip_path(&t.settings))?;
    assert_tampered(&t, &["moved back", "index's last entry #6"])
}

#[test]
fn merges_on_main_must_be_signed_by_an_approver() -> TestResult {
    let t = TestRepo::new()?;
    let repo = t.repo()?;
    let main = repo.find_commit(repo.refname_to_id("refs/heads/main")?)?;
    let side_files = vec![("proposals/p-1.toml".to_string(), b"id = \"p-1\"\n".to_vec())];
    let who = git2::Signature::now("operator", "operator@gov")?;
    let side = gov::testkit::git::commit_files(
        &repo,
        &t.key(Role::Server)?,
        &who,
        // Not a proposal branch: no entry records it (verify would name a
        // `gov/proposal/` branch without one as an orphan).
        "refs/heads/side/p-1",
        Some(main.id()),
        &side_files,
        "proposal p-1",
    )?;
    let side = repo.find_commit(side)?;
    let merge = |key: &SigningKey, msg: &str, parent: &git2::Commit<'_>| -> TestResult<Oid> {
        let oid = signed_commit(&repo, key, &who, &side.tree()?, &[parent, &side], msg)?;
        repo.reference("refs/heads/main", oid, true, "merge")?;
        Ok(oid)
    };
    let good = merge(&t.key(Role::Approver)?, "approve p-1", &main)?;
    let (code, out) = verify(&t)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "note: no index yet (it is built on the next open)\n\
         ok: 0 entries, signatures good, chain linear\n\
         ok: 1 approval merges on `main` signed by approvers\n"
    );
    let good = repo.find_commit(good)?;
    merge(&t.key(Role::Server)?, "merge p-1 again", &good)?;
    assert_tampered(&t, &["merge on `main`", "which has no approver role"])?;
    // Saying it was merged on the forge is not enough: a forge merge must
    // merge a submitted proposal commit (see tests/it/remote.rs).
    merge(
        &t.key(Role::Server)?,
        "merged on the forge\n\nGov-Forge-Merge: true\n",
        &good,
    )?;
    assert_tampered(
        &t,
        &[
            "merge on `main`",
            "not a forge merge of a submitted proposal",
        ],
    )?;
    Ok(())
}

#[test]
fn verify_without_a_repository_could_not_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let o = std::process::Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(dir.path())
        .args(["audit", "verify"])
        .output()?;
    assert_ne!(o.status.code(), Some(0));
    assert_ne!(o.status.code(), Some(3));
    Ok(())
}

#[test]
fn two_processes_appending_at_once_lose_nothing() -> TestResult {
    let t = TestRepo::new()?;
    let spawn = |extra: &[&str]| {
        std::process::Command::new(crate::support::gov_bin())
            .arg("--repo")
            .arg(t.root())
            .args(["audit", "append-test", "--count", "1000"])
            .args(extra)
            .spawn()
    };
    let mut a = spawn(&[])?;
    let mut b = spawn(&["--watchdog"])?;
    assert!(a.wait()?.success());
    assert!(b.wait()?.success());
    let repo = t.repo()?;
    let seqs: Vec<u64> = entries_from(&repo, AUDIT_REF, 1)?
        .map(|e| e.map(|e| e.entry.seq))
        .collect::<Result<_, _>>()?;
    assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());
    let (code, out) = verify(&t)?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "ok: 2000 entries, signatures good, chain linear\n");
    Ok(())
}

fn dump(path: &std::path::Path) -> TestResult<Vec<Vec<String>>> {
    let conn = rusqlite::Connection::open(path)?;
    let mut out = Vec::new();
    for sql in [
        "SELECT * FROM audit ORDER BY seq",
        "SELECT * FROM meta ORDER BY key",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

#[test]
fn the_index_rebuilt_from_git_equals_the_original() -> TestResult {
    let t = TestRepo::new()?;
    let gov = Governance::open(&t.settings, Role::Server)?;
    for i in 0..10 {
        let batch = (0..5)
            .map(|j| {
                let name = if j % 2 == 0 { "tool_call" } else { "charge" };
                let event = Event::other(name, serde_json::json!({"i": i, "j": j}))?;
                Ok(NewEntry::new(Actor::agent("a"), event)
                    .agent(format!("agent-{}", i % 3))
                    .proposal(format!("p-{i}")))
            })
            .collect::<TestResult<Vec<_>>>()?;
        gov.append(batch)?;
    }
    drop(gov);
    let path = t.settings.index_path();
    let before = dump(&path)?;
    assert_eq!(before.len(), 50 + 3);
    let filtered =
        gov::testkit::index::Index::open(&path)?.query(&gov::app::audit::AuditFilter {
            agent_id: Some("agent-1".into()),
            event_type: Some("charge".into()),
            ..Default::default()
        })?;
    assert_eq!(filtered.len(), 3 * 2);
    assert!(filtered.windows(2).all(|w| w[0].entry.seq > w[1].entry.seq));

    let o = t.gov(&["reindex"])?;
    assert!(o.status.success());
    assert_eq!(o.stdout_text(), "reindexed 50 entries\n");
    assert_eq!(dump(&path)?, before);
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    let o = t.gov(&["reindex"])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    assert_eq!(o.stdout_text(), "reindexed 50 entries\n");
    assert_eq!(dump(&path)?, before);
    // An index another version of gov wrote is rebuilt, and the user is
    // told why the command takes longer.
    rusqlite::Connection::open(&path)?.execute(
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
        [],
    )?;
    let o = t.gov(&["audit", "log", "--limit", "1"])?;
    assert!(o.status.success(), "{}", o.stderr_text());
    let warning = format!(
        "the index was written by another version of gov (schema 1, this one {}): rebuilding it from the audit chain, which reads every entry once\n",
        gov::testkit::index::SCHEMA_VERSION
    );
    assert!(o.stderr_text().ends_with(&warning), "{}", o.stderr_text());
    assert_eq!(dump(&path)?, before);
    let o = t.gov(&["audit", "log", "--limit", "1"])?;
    assert_eq!(o.stderr_text(), "");
    // Opening with the index gone catches it up too.
    std::fs::remove_file(&path)?;
    drop(Governance::open(&t.settings, Role::Server)?);
    assert_eq!(dump(&path)?, before);
    Ok(())
}

#[test]
fn transact_sees_the_caught_up_tip_and_writes_nothing_on_error() -> TestResult {
    let t = TestRepo::new()?;
    let gov = Governance::open(&t.settings, Role::Server)?;
    // Another writer (a second process in real life) appends meanwhile.
    append(&t, Role::Watchdog, 3)?;
    let decided = Event::other("decided", serde_json::json!({}))?;
    let (seen, written) = gov.transact(|tx| {
        let seen = (tx.tip_seq(), tx.index().count()?);
        Ok::<_, gov::app::governance::GovError>((
            seen,
            vec![NewEntry::new(Actor::server(), decided.clone())],
        ))
    })?;
    assert_eq!(seen, (Some(3), 3));
    assert_eq!(written[0].seq, 4);
    let failed: Result<((), _), gov::app::governance::GovError> =
        gov.transact(|_| Err(gov::app::governance::GovError::Poisoned));
    assert!(failed.is_err());
    let again = gov.append(vec![NewEntry::new(
        Actor::server(),
        Event::other("after", serde_json::json!({}))?,
    )])?;
    assert_eq!(again[0].seq, 5);
    assert_eq!(gov.index()?.count()?, 5);
    Ok(())
}

/// Decisions recorded by a real server: auto-approved, needing a person,
/// approved by the operator.
fn server_with_decisions() -> TestResult<crate::support::server::TestServer> {
    use crate::support::server::{proposal, TestServer};
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let mut auto = proposal("noop", "research_only");
    auto["requires_approval"] = serde_json::json!(false);
    assert_eq!(s.post("/proposals", Some(&tok), &auto)?.status, 200);
    let r = s.submit_pending(&tok)?;
    let id = r.text("proposal_id");
    let d = s.post(
        &format!("/proposals/{id}/decision"),
        Some(&s.operator),
        &serde_json::json!({"decision": "approve", "note": "fine"}),
    )?;
    assert_eq!(d.status, 200, "{:?}", d.body);
    Ok(s)
}

#[test]
fn replay_passes_on_an_honest_chain_and_names_an_altered_outcome() -> TestResult {
    let mut s = server_with_decisions()?;
    s.stop();
    let out = s.repo.gov(&["audit", "verify", "--replay"])?;
    let text = out.stdout_text();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok: 3 decisions replayed against 1 policy versions"),
        "{text}"
    );

    // Someone holding the server key makes the publish look auto-approved,
    // and moves another decision to a policy version that never existed.
    let repo = s.repo.repo()?;
    let entries: Vec<_> = entries_from(&repo, AUDIT_REF, 1)?.collect::<Result<_, _>>()?;
    let with_decision: Vec<u64> = entries
        .iter()
        .filter(|e| e.entry.entry.decision.is_some())
        .map(|e| e.entry.seq)
        .collect();
    let (first, person) = (with_decision[0], with_decision[1]);
    let server = || -> TestResult<Forger> { Ok(Forger::Key(Box::new(s.repo.key(Role::Server)?))) };
    rewrite(&s.repo, person, &server()?, |e| {
        if let (Some(d), true) = (e.entry.decision.as_mut(), e.seq == person) {
            d.decision.outcome = gov::domain::request::Outcome::Auto;
        }
        true
    })?;
    // The index and the last verified tip would name the rewrite first.
    let forget = || -> TestResult {
        let _ = std::fs::remove_file(s.repo.settings.index_path());
        let _ = std::fs::remove_file(gov::app::audit::verified_tip_path(&s.repo.settings));
        Ok(())
    };
    forget()?;
    let out = s.repo.gov(&["audit", "verify", "--replay"])?;
    let text = out.stdout_text();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("tampered: entry #{person} (commit ")),
        "{text}"
    );
    assert!(
        text.contains("the recorded decision `auto` (agent-asked-for-person, proposals-allowed, reserved-for-person) is not what policy version"),
        "{text}"
    );
    assert!(
        text.ends_with("decides: `needs_person` (agent-asked-for-person, proposals-allowed, reserved-for-person)\n"),
        "{text}"
    );

    let forged_version = "0123456789012345678901234567890123456789";
    rewrite(&s.repo, first, &server()?, |e| {
        if let (Some(d), true) = (e.entry.decision.as_mut(), e.seq == first) {
            d.decision.policy_version = forged_version.into();
        }
        true
    })?;
    forget()?;
    let out = s.repo.gov(&["audit", "verify", "--replay"])?;
    let text = out.stdout_text();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("tampered: entry #{first} (commit "))
            && text
                .contains("the decision cites policy version 012345678901, which does not exist"),
        "{text}"
    );
    assert!(text.contains("(1 more problems after it)"), "{text}");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --replay: {}",
        out.stdout_text()
    );
    Ok(())
}

/// docs/AUDIT.md's table of event types is the table in
/// `domain::event`: a type renamed, misspelled or added on one side only
/// fails here.
#[test]
fn documented_event_types_are_the_ones_gov_writes() -> TestResult {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/AUDIT.md"),
    )?;
    let table = doc
        .split("## Event types")
        .nth(1)
        .ok_or("docs/AUDIT.md has no `## Event types` section")?
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let documented: Vec<(String, String)> = table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    let known: Vec<(String, String)> = Event::KNOWN
        .iter()
        .map(|(name, kind)| {
            let kind = match kind {
                EventKind::State => "state",
                EventKind::Record => "record",
            };
            (name.to_string(), kind.to_string())
        })
        .collect();
    assert_eq!(documented, known);
    Ok(())
}

/// The proposals table keeps what changes (status, decision, who and when,
/// branch, commits) in columns. An index written with the previous schema
/// (version 4: each proposal one `json` column) is rebuilt from Git when it
/// is opened, and every proposal reads back as the chain recorded it:
/// submitted, auto-approved, approved with a note, rejected.
#[test]
fn an_index_of_the_previous_schema_is_rebuilt_and_proposals_read_the_same() -> TestResult {
    use crate::support::server::{add_policies_and_agents, proposal};
    use gov::app::proposals::{decide, list, submit, DecisionInput, Submission};
    use gov::app::service::Service;
    use gov::domain::proposal::{Proposal, ProposalStatus, Verdict};

    let t = TestRepo::new()?;
    add_policies_and_agents(&t)?;
    let svc = Service::open(&t.settings)?;
    let mut auto = proposal("noop", "research_only");
    auto["requires_approval"] = serde_json::json!(false);
    let auto = submit(&svc, serde_json::from_value::<Submission>(auto)?)?.proposal;
    assert_eq!(auto.status, ProposalStatus::AutoApproved);
    let mut ids = Vec::new();
    for (verdict, note) in [(Verdict::Approve, Some("fine")), (Verdict::Reject, None)] {
        let sub: Submission = serde_json::from_value(proposal("noop", "publish_content"))?;
        let p = submit(&svc, sub)?.proposal;
        let input = DecisionInput {
            verdict,
            note: note.map(String::from),
            final_: true,
        };
        decide(&svc, &p.proposal_id, &input, "operator")?;
        ids.push(p.proposal_id);
    }
    let pending: Submission = serde_json::from_value(proposal("noop", "publish_content"))?;
    submit(&svc, pending)?;
    let before = list(&svc, None, 100)?;
    drop(svc);
    assert_eq!(before.len(), 4);
    let approved = before
        .iter()
        .find(|p| p.proposal_id == ids[0])
        .ok_or("the approved proposal is listed")?;
    assert_eq!(approved.status, ProposalStatus::Approved);
    assert_eq!(approved.decision.as_deref(), Some("fine"));
    assert!(approved.decision_final && approved.merge_commit.is_some());

    // Each listed proposal is the one the chain's newest entry about it holds.
    let chain: Vec<Proposal> = entries_from(&t.repo()?, &t.settings.audit_refname(), 1)?
        .map(|e| e.map(|e| e.entry.entry.event.proposal().cloned()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    for p in &before {
        let recorded = chain.iter().rev().find(|c| c.proposal_id == p.proposal_id);
        assert_eq!(recorded, Some(p));
    }

    let path = t.settings.index_path();
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "DROP TABLE proposals;
         CREATE TABLE proposals (proposal_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL,
             status TEXT NOT NULL, submitted_at TEXT NOT NULL, action_type TEXT NOT NULL,
             payload_hash TEXT NOT NULL, json TEXT NOT NULL, seq INTEGER NOT NULL,
             used_seq INTEGER);
         UPDATE meta SET value = '4' WHERE key = 'schema_version';",
    )?;
    drop(conn);

    let svc = Service::open(&t.settings)?;
    assert_eq!(list(&svc, None, 100)?, before);
    let conn = rusqlite::Connection::open(&path)?;
    let version: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(version, "7");
    // Since version 6 the lookups of tool calls' proposals by payload hash
    // have an index of those proposals alone (version 7 adds the indexes
    // of unfinished runs, unused approvals and run tokens).
    let tool_index: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE name = 'proposals_tool'",
        [],
        |r| r.get(0),
    )?;
    assert!(
        tool_index.ends_with("WHERE action_type GLOB 'use_tool:*'"),
        "{tool_index}"
    );
    let (status, decided_by, note): (String, String, String) = conn.query_row(
        "SELECT status, decided_by, decision FROM proposals WHERE proposal_id = ?1",
        [&ids[1]],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    assert_eq!(
        (status.as_str(), decided_by.as_str(), note.as_str()),
        ("rejected", "operator", "reject")
    );
    Ok(())
}
