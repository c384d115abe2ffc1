//! The root of trust for what is in force (issue 11 item 1): a commit on
//! `main` that changes governed paths counts only when an approver signed it
//! (or it is an approver-signed or forge-recorded merge), checked under the
//! `allowed_signers` in force before it. The server, the watchdog and
//! `gov run` all apply the rule; `gov audit verify` names what is refused.

use gov::app::error::AppError;
use gov::app::governance::Role;
use gov::app::proposals::{submit, Submission};
use gov::app::service::Service;
use gov::domain::proposal::ProposalStatus;
use gov::testkit::keys::{AllowedSigners, SigningKey};
use serde_json::Value;

use crate::support::repo::TestRepo;
use crate::support::repo::TestResult;
use crate::support::server::{
    add_policies_and_agents, commit_to_main, commit_to_main_as, hold_batch, proposal, TestServer,
};

/// A forbid that, once in force, makes `research_only` forbidden (it is
/// auto-approved by the default set).
const BAN: &str = "\n@id(\"ban-research\")\n@reason(\"research is banned\")\nforbid (principal, action == Action::\"propose\", resource == ActionType::\"research_only\");\n";

fn with_ban(srv: &TestServer) -> TestResult<Vec<(String, Vec<u8>)>> {
    let path = srv.repo.root().join("policies/proposals.cedar");
    let mut text = std::fs::read_to_string(path)?;
    text.push_str(BAN);
    Ok(vec![("policies/proposals.cedar".into(), text.into_bytes())])
}

fn status(srv: &TestServer) -> TestResult<Value> {
    let r = srv.get("/status", Some(&srv.operator))?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    Ok(r.body)
}

fn research_outcome(srv: &TestServer) -> TestResult<(u16, String)> {
    let token = srv.agent_token("noop")?;
    let mut body = proposal("noop", "research_only");
    body["requires_approval"] = Value::Bool(false);
    let r = srv.post("/proposals", Some(&token), &body)?;
    Ok((r.status, r.text("status")))
}

fn git(srv: &TestServer, args: &[&str]) -> TestResult<String> {
    let out = srv.repo.git(args)?;
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn refused_commits(status: &Value) -> Vec<String> {
    status["policy_refused"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["commit"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn verify(srv: &TestServer) -> TestResult<(i32, String)> {
    let out = srv.repo.gov(&["audit", "verify"])?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn an_unsigned_policy_commit_is_refused_until_an_approver_adopts_it() -> TestResult {
    let srv = TestServer::start()?;
    let before = status(&srv)?["policy_version"].clone();
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));

    // As the issue measured it: stock git, no signature.
    let files = with_ban(&srv)?;
    std::fs::write(srv.repo.root().join(&files[0].0), &files[0].1)?;
    git(
        &srv,
        &[
            "-c",
            "user.name=someone",
            "-c",
            "user.email=someone@example.com",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-qam",
            "ban research",
        ],
    )?;
    let sneaky = git(&srv, &["rev-parse", "HEAD"])?;

    let s = status(&srv)?;
    assert_eq!(s["policy_version"], before, "the last authorized set stays");
    assert_eq!(refused_commits(&s), std::slice::from_ref(&sneaky));
    assert_eq!(
        s["policy_refused"][0]["reason"],
        "it changes `policies/` but it is not signed"
    );
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));
    let _ = status(&srv)?;
    let recorded = srv.audit("policy_change_refused")?;
    assert_eq!(
        recorded.len(),
        1,
        "one entry per refused commit: {recorded:?}"
    );
    assert_eq!(recorded[0]["payload"]["commit"], sneaky.as_str());

    let (code, out) = verify(&srv)?;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "commit {}: not in force on `main`: it changes `policies/` but it is not signed",
            &sneaky[..12]
        )),
        "{out}"
    );

    // The operator adopts it with the approver key: it comes into force.
    let approver = srv.repo.key(Role::Approver)?;
    let adopted = commit_to_main_as(&srv.repo, &approver, &[], "adopt the research ban")?;
    let s = status(&srv)?;
    assert_eq!(s["policy_version"], adopted.to_string().as_str());
    assert!(refused_commits(&s).is_empty(), "{s}");
    assert_eq!(research_outcome(&srv)?.0, 403);
    let (code, out) = verify(&srv)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("was refused"), "{out}");
    assert_eq!(srv.audit("policy_change_refused")?.len(), 1);
    Ok(())
}

#[test]
fn commits_signed_by_the_server_or_watchdog_key_are_refused_everywhere() -> TestResult {
    let srv = TestServer::start()?;
    let before = status(&srv)?["policy_version"].clone();
    let server = srv.repo.key(Role::Server)?;
    let watchdog = srv.repo.key(Role::Watchdog)?;
    let by_server = commit_to_main_as(&srv.repo, &server, &with_ban(&srv)?, "ban research")?;
    let sneaky_agent = (
        "agents/sneaky/agent.toml".to_string(),
        b"kind = \"command\"\n[command]\nprogram = \"true\"\n".to_vec(),
    );
    let by_watchdog = commit_to_main_as(&srv.repo, &watchdog, &[sneaky_agent], "add an agent")?;

    let s = status(&srv)?;
    assert_eq!(s["policy_version"], before);
    assert_eq!(
        refused_commits(&s),
        [by_server.to_string(), by_watchdog.to_string()]
    );
    assert_eq!(
        s["policy_refused"][0]["reason"],
        "it changes `policies/` but it is signed by `gov@server.gov`, which is not an approver"
    );
    assert_eq!(
        s["policy_refused"][1]["reason"],
        "it changes `agents/sneaky/agent.toml` but it is signed by `gov@watchdog.gov`, which is not an approver"
    );
    assert!(!s["known_agents"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a == "sneaky"));
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));

    // The watchdog's process sees the same state in force.
    let wd = Service::open_as(srv.settings(), Role::Watchdog)?;
    let wd_status = wd.policy_status();
    assert_eq!(
        wd_status.version.as_deref(),
        before.as_str(),
        "{:?}",
        wd_status
    );
    assert_eq!(wd_status.refused.len(), 2);
    assert!(wd.agent_settings("sneaky").is_none());
    assert_eq!(srv.audit("policy_change_refused")?.len(), 2);

    // `gov run` does not run an agent that is not in force.
    let out = srv.repo.gov(&["run", "sneaky"])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent `sneaky` is not in force on `main`"),
        "{err}"
    );

    let (code, out) = verify(&srv)?;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&by_server.to_string()[..12]), "{out}");
    assert!(out.contains("(1 more problems after it)"), "{out}");
    Ok(())
}

#[test]
fn an_allowed_signers_change_signed_by_the_key_it_adds_is_refused() -> TestResult {
    let srv = TestServer::start()?;
    let before = status(&srv)?["policy_version"].clone();
    let mallory = SigningKey::generate("mallory")?;
    let mut signers = std::fs::read_to_string(srv.repo.allowed_signers())?;
    signers.push_str(&AllowedSigners::line_for(
        Role::Approver,
        "mallory",
        &mallory,
    ));
    signers.push('\n');
    let added = commit_to_main_as(
        &srv.repo,
        &mallory,
        &[("policies/allowed_signers".into(), signers.into_bytes())],
        "add an approver",
    )?;
    // Now in main's allowed_signers, but not in the file in force.
    let then = commit_to_main_as(&srv.repo, &mallory, &with_ban(&srv)?, "ban research")?;

    let s = status(&srv)?;
    assert_eq!(s["policy_version"], before);
    assert_eq!(refused_commits(&s), [added.to_string(), then.to_string()]);
    assert_eq!(
        s["policy_refused"][0]["reason"],
        "it changes `policies/` but its signature does not count under the `allowed_signers` in force: signed by a key that is not in allowed_signers"
    );
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));
    let (code, out) = verify(&srv)?;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&added.to_string()[..12]), "{out}");
    Ok(())
}

/// A change that landed since the server last loaded its policy set is
/// seen by the very next submission, with nothing else reading the set in
/// between.
#[test]
fn a_submission_right_after_a_policy_change_is_decided_by_the_new_set() -> TestResult {
    let srv = TestServer::start()?;
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));
    // Nothing reads the policy set between the change and the submission.
    commit_to_main(&srv.repo, &with_ban(&srv)?, "ban research")?;
    assert_eq!(research_outcome(&srv)?.0, 403);
    let forbidden = srv.audit("proposal_forbidden")?;
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    assert_eq!(
        forbidden[0]["decision"]["policies"][0]["id"],
        "ban-research"
    );
    let tip = srv
        .repo
        .repo()?
        .refname_to_id(&srv.settings().main_refname())?;
    assert_eq!(
        forbidden[0]["decision"]["policy_version"],
        tip.to_string().as_str()
    );
    Ok(())
}

#[test]
fn an_approver_signed_change_comes_into_force_at_once() -> TestResult {
    let srv = TestServer::start()?;
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));
    commit_to_main(&srv.repo, &with_ban(&srv)?, "ban research")?;
    let tip = srv
        .repo
        .repo()?
        .refname_to_id(&srv.settings().main_refname())?;
    let s = status(&srv)?;
    assert_eq!(s["policy_version"], tip.to_string().as_str());
    assert!(refused_commits(&s).is_empty());
    assert_eq!(research_outcome(&srv)?.0, 403);
    assert!(srv.audit("policy_change_refused")?.is_empty());
    assert_eq!(verify(&srv)?.0, 0);
    Ok(())
}

/// A submission is decided by Cedar before its batch opens, outside the
/// writer lock. One decided before a policy change landed, and staged after
/// it, is asked again: the set in force when it is filed decides.
#[test]
fn a_submission_decided_before_a_policy_change_landed_is_decided_again() -> TestResult {
    let t = TestRepo::new()?;
    add_policies_and_agents(&t)?;
    let svc = Service::open(&t.settings)?;
    let mut ban = std::fs::read_to_string(t.root().join("policies/proposals.cedar"))?;
    ban.push_str(BAN);
    let change = [("policies/proposals.cedar".into(), ban.into_bytes())];
    let filed = research_decided_while_main_moves(&t, &svc, &change, "ban research")?;
    assert_forbidden_by(filed, "ban-research");
    Ok(())
}

/// A forbid for the agents of group `quarantine`.
const QUARANTINE: &str = "\n@id(\"quarantine\")\n@reason(\"quarantined agents propose nothing\")\nforbid (principal, action == Action::\"propose\", resource) when { principal.group == \"quarantine\" };\n";

/// The same for the agent's group: read at the tip the set is read at.
#[test]
fn a_submission_decided_before_its_agent_changed_group_is_decided_again() -> TestResult {
    let t = TestRepo::new()?;
    add_policies_and_agents(&t)?;
    let mut rules = std::fs::read_to_string(t.root().join("policies/proposals.cedar"))?;
    rules.push_str(QUARANTINE);
    commit_to_main(
        &t,
        &[("policies/proposals.cedar".into(), rules.into_bytes())],
        "quarantine",
    )?;
    let svc = Service::open(&t.settings)?;
    let quarantined = "kind = \"command\"\ngroup = \"quarantine\"\n[command]\nprogram = \"true\"\n";
    let change = [("agents/noop/agent.toml".into(), quarantined.into())];
    let filed = research_decided_while_main_moves(&t, &svc, &change, "quarantine noop")?;
    assert_forbidden_by(filed, "quarantine");
    // And the next submission, decided ahead at the new tip.
    assert_forbidden_by(submit(&svc, research()?), "quarantine");
    Ok(())
}

/// An auto-approvable `research_only` submission by `noop`.
fn research() -> Result<Submission, serde_json::Error> {
    let mut body = proposal("noop", "research_only");
    body["requires_approval"] = Value::Bool(false);
    serde_json::from_value(body)
}

/// Submits `research()` once (it must be auto-approved), then once more
/// while a writer holds the batch open: that one is decided ahead, then
/// `change` lands on `main`, then the batch is let go. How the second
/// was filed (its status) or refused.
fn research_decided_while_main_moves(
    t: &TestRepo,
    svc: &Service,
    change: &[(String, Vec<u8>)],
    message: &str,
) -> TestResult<Result<String, AppError>> {
    let auto = submit(svc, research()?)?.proposal;
    assert_eq!(auto.status, ProposalStatus::AutoApproved);
    std::thread::scope(|s| -> TestResult<Result<String, AppError>> {
        // A writer holds the batch open...
        let held = hold_batch(s, svc)?;
        // ...while a submission is decided (before the change) and waits
        // for it.
        let submitter = s.spawn(move || {
            let sub = research().map_err(|e| AppError::internal(e.to_string()))?;
            submit(svc, sub).map(|s| s.proposal.status.to_string())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        commit_to_main(t, change, message)?;
        held.release()?;
        submitter
            .join()
            .map_err(|_| "the submitter panicked".into())
    })
}

/// `filed` was refused, forbidden first by the policy `id`.
fn assert_forbidden_by<T: std::fmt::Debug>(filed: Result<T, AppError>, id: &str) {
    match filed {
        Err(AppError::ForbiddenByPolicy { policies }) => assert_eq!(policies[0].id, id),
        other => panic!("expected `{id}` to forbid it, got {other:?}"),
    }
}

/// A forge-recorded merge is authorized because gov recorded it from the
/// forge's signed evidence. An agent that could post such a record itself
/// could bring in any change it commits to `main`.
#[test]
fn an_agent_cannot_record_a_forge_approval_for_its_own_commit() -> TestResult {
    let mut srv = TestServer::start()?;
    let before = status(&srv)?["policy_version"].clone();
    let files = with_ban(&srv)?;
    std::fs::write(srv.repo.root().join(&files[0].0), &files[0].1)?;
    git(&srv, &["add", &files[0].0])?;
    let tree = git(&srv, &["write-tree"])?;
    let sneaky = git(
        &srv,
        &[
            "-c",
            "user.name=someone",
            "-c",
            "user.email=someone@example.com",
            "commit-tree",
            &tree,
            "-p",
            "HEAD",
            "-m",
            "ban research (squash merge of a reviewed pull request, says nobody)",
        ],
    )?;
    let token = srv.agent_token("noop")?;
    let forged = serde_json::json!({
        "event_type": "forge_merge_recorded",
        "payload": {
            "via": "forge",
            "merge_commit": sneaky,
            "merged_by": "@reviewer",
            "kind": "squash",
            "paths": ["policies/proposals.cedar"],
            "evidence": {"pull_request": 7, "head_ref": "ban-research", "head_sha": sneaky,
                         "base_ref": "main", "merge_commit": sneaky, "merged_by": "reviewer"}
        }
    });
    let r = srv.post("/audit", Some(&token), &forged)?;
    assert_eq!(
        (r.status, r.body["detail"][0]["msg"].clone()),
        (
            422,
            Value::String(
                "`forge_merge_recorded` is recorded by gov itself and cannot be posted".into()
            )
        ),
        "{:?}",
        r.body
    );
    // A chain from before the API refused it may hold one an agent posted:
    // written here as that server wrote it, it must not count either.
    let gov = gov::app::governance::Governance::open(&srv.repo.settings, Role::Server)?;
    let posted = gov::domain::audit::NewEntry::new(
        gov::domain::audit::Actor::agent("noop"),
        gov::domain::audit::Event::from_parts(
            "forge_merge_recorded".into(),
            forged["payload"].clone(),
        ),
    )
    .agent("noop");
    assert!(matches!(
        posted.event,
        gov::domain::audit::Event::ForgeMergeRecorded(_)
    ));
    // And a refusal it recorded ahead, which would have kept gov from
    // recording its own.
    let refusal = gov::domain::audit::NewEntry::new(
        gov::domain::audit::Actor::agent("noop"),
        gov::domain::audit::Event::from_parts(
            "policy_change_refused".into(),
            serde_json::json!({"commit": sneaky, "reason": "none", "summary": "",
                               "in_force": before, "branch": "main"}),
        ),
    )
    .agent("noop");
    assert!(matches!(
        refusal.event,
        gov::domain::audit::Event::PolicyChangeRefused(_)
    ));
    gov.append(vec![posted, refusal])?;
    drop(gov);
    git(&srv, &["update-ref", "refs/heads/main", &sneaky])?;
    let s = status(&srv)?;
    assert_eq!(s["policy_version"], before, "the last authorized set stays");
    assert_eq!(refused_commits(&s), std::slice::from_ref(&sneaky));
    assert_eq!(research_outcome(&srv)?, (200, "auto-approved".into()));
    let recorded: Vec<(Value, Value)> = srv
        .audit("policy_change_refused")?
        .into_iter()
        .map(|e| (e["actor"].clone(), e["payload"]["commit"].clone()))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (Value::from("server"), Value::from(sneaky.as_str())),
            (Value::from("agent:noop"), Value::from(sneaky.as_str())),
        ]
    );
    // `gov audit verify` counts the posted record for nothing as well, and
    // lists both for the operator.
    let (code, out) = verify(&srv)?;
    assert_eq!(code, 3, "{out}");
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("a record gov writes itself"))
        .map(|l| l.split_once("): ").map_or(l, |(_, rest)| rest))
        .collect();
    assert_eq!(
        listed,
        [
            "`agent:noop` posted `forge_merge_recorded`, a record gov writes itself (refused since 2026-12-04); it counts for nothing",
            "`agent:noop` posted `policy_change_refused`, a record gov writes itself (refused since 2026-12-04); it counts for nothing",
        ],
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "commit {}: not in force on `main`: it changes `policies/` but it is not signed",
            &sneaky[..12]
        )),
        "{out}"
    );
    // A server started on such a chain says so once, after its start-up
    // lines.
    srv.stop();
    let said = crate::serve::lines_after_start(&srv.repo, 1)?;
    assert_eq!(
        said[0],
        "warning: agents posted 2 audit entries of a type gov writes itself, before gov refused them (2026-12-04); they count for nothing, and `gov audit verify` names each"
    );
    Ok(())
}
