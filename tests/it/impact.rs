//! `gov policy impact` and `gov policy diff` over decisions a real server
//! recorded (issue 11 items 3-5), and shadow policies on live traffic.

use serde_json::{json, Value};

use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{commit_to_main, proposal, TestServer};

const BAN: &str = "@id(\"ban-noop-research\")\n@reason(\"noop does no research\")\nforbid (principal == Agent::\"noop\", action == Action::\"propose\", resource == ActionType::\"research_only\");\n";

pub(crate) fn submit(s: &TestServer, agent: &str, action_type: &str, n: usize) -> TestResult {
    let tok = s.agent_token(agent)?;
    for _ in 0..n {
        let mut body = proposal(agent, action_type);
        body["requires_approval"] = json!(false);
        let r = s.post("/proposals", Some(&tok), &body)?;
        assert!(r.status == 200 || r.status == 400, "{:?}", r.body);
    }
    Ok(())
}

/// The status of a `research_only` proposal by researcher that asks for
/// no person (200 auto-approved, 403 forbidden).
pub(crate) fn research(s: &TestServer) -> TestResult<u16> {
    let tok = s.agent_token("researcher")?;
    let mut body = proposal("researcher", "research_only");
    body["requires_approval"] = json!(false);
    Ok(s.post("/proposals", Some(&tok), &body)?.status)
}

/// The line `gov policy propose` prints about the proposal, and its id.
pub(crate) fn proposal_line(out: &str) -> TestResult<(&str, String)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("proposed policy change "))
        .ok_or("no proposal line")?;
    let id = line
        .trim_start_matches("proposed policy change ")
        .split(' ')
        .next()
        .ok_or("no id")?;
    Ok((line, id.to_string()))
}

/// Puts `files` on a new branch on top of main (not on main).
fn branch_with(s: &TestServer, branch: &str, files: &[(&str, String)]) -> TestResult {
    let git = s.repo.repo()?;
    let tip = git.refname_to_id(&s.repo.settings.main_refname())?;
    let key = s.repo.key(gov::app::governance::Role::Approver)?;
    let who = git2::Signature::now("operator", "operator@approver.gov")?;
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
        .collect();
    gov::testkit::git::commit_files(
        &git,
        &key,
        &who,
        &format!("refs/heads/{branch}"),
        Some(tip),
        &files,
        "policy change",
    )?;
    Ok(())
}

fn proposals_with(s: &TestServer, extra: &str) -> TestResult<String> {
    let mut text = std::fs::read_to_string(s.repo.root().join("policies/proposals.cedar"))?;
    text.push('\n');
    text.push_str(extra);
    Ok(text)
}

fn gov(s: &TestServer, args: &[&str]) -> TestResult<(i32, String, String)> {
    let out = s.repo.gov(args)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn impact_counts_exactly_the_recorded_decisions_that_flip() -> TestResult {
    let s = TestServer::start()?;
    submit(&s, "noop", "research_only", 120)?;
    submit(&s, "researcher", "research_only", 60)?;
    submit(&s, "noop", "publish_content", 60)?;
    branch_with(
        &s,
        "gov/policy/ban",
        &[("policies/proposals.cedar", proposals_with(&s, BAN)?)],
    )?;

    let (code, out, err) = gov(
        &s,
        &["policy", "impact", "gov/policy/ban", "--format", "json"],
    )?;
    assert_eq!(code, 3, "{out}{err}");
    let r: Value = serde_json::from_str(&out)?;
    // 180 submissions and 60 self-approval flags (publish_content with
    // requires_approval false), each a recorded decision.
    assert_eq!(r["replayed"], 240, "{out}");
    assert_eq!(r["changed"], 120);
    assert_eq!(r["transitions"], json!({"auto → forbidden": 120}));
    assert_eq!(r["groups"][0]["policies"], json!(["ban-noop-research"]));
    assert_eq!(r["groups"][0]["count"], 120);
    assert_eq!(r["groups"][0]["examples"].as_array().map(Vec::len), Some(3));
    assert_eq!(r["failing"], json!([]));

    let (code, out, _) = gov(
        &s,
        &[
            "policy",
            "impact",
            "gov/policy/ban",
            "--agent",
            "researcher",
        ],
    )?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("impact of `gov/policy/ban` (policy version "),
        "{out}"
    );
    assert!(
        out.contains("on 60 recorded decisions: 0 change, 60 unchanged"),
        "{out}"
    );

    let (code, md, _) = gov(
        &s,
        &["policy", "impact", "gov/policy/ban", "--format", "markdown"],
    )?;
    assert_eq!(code, 3);
    assert!(md.contains("**120** would change"), "{md}");
    assert!(
        md.contains("| auto | forbidden | `ban-noop-research` | 120 | #"),
        "{md}"
    );

    let (code, out, _) = gov(
        &s,
        &[
            "policy",
            "impact",
            "gov/policy/ban",
            "--since",
            "2999-01-01",
        ],
    )?;
    assert_eq!(code, 0);
    assert!(out.contains("on 0 recorded decisions"), "{out}");

    let (code, out, _) = gov(&s, &["policy", "diff", "gov/policy/ban"])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("policies: 1 added, 0 removed, 0 changed"),
        "{out}"
    );
    assert!(
        out.contains(
            "  + ban-noop-research (forbid) policies/proposals.cedar: noop does no research"
        ),
        "{out}"
    );
    Ok(())
}

#[test]
fn an_invalid_set_is_reported_as_invalid_with_the_reason() -> TestResult {
    let s = TestServer::start()?;
    submit(&s, "noop", "research_only", 3)?;
    branch_with(
        &s,
        "gov/policy/broken",
        &[("policies/schema.cedarschema", "entity ;".to_string())],
    )?;
    let (code, out, err) = gov(&s, &["policy", "impact", "gov/policy/broken"])?;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("error: `policies/schema.cedarschema` line 1: invalid schema"),
        "{err}"
    );
    assert!(
        err.contains("the policy set at `gov/policy/broken` is invalid"),
        "{err}"
    );
    let (code, _, err) = gov(&s, &["policy", "impact", "no-such-branch"])?;
    assert_eq!(code, 2);
    assert!(
        err.contains("no revision `no-such-branch` in the repository"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_shadow_policy_changes_no_outcome_is_recorded_and_counts_in_impact() -> TestResult {
    let s = TestServer::start()?;
    submit(&s, "noop", "research_only", 5)?;
    let shadow = BAN.replace("@reason(", "@mode(\"shadow\")\n@reason(");
    commit_to_main(
        &s.repo,
        &[(
            "policies/proposals.cedar".into(),
            proposals_with(&s, &shadow)?.into_bytes(),
        )],
        "watch noop's research",
    )?;
    let tok = s.agent_token("noop")?;
    let mut body = proposal("noop", "research_only");
    body["requires_approval"] = json!(false);
    let r = s.post("/proposals", Some(&tok), &body)?;
    assert_eq!((r.status, r.text("status")), (200, "auto-approved".into()));
    let entries = s.audit("proposal_submitted")?;
    let newest = &entries[0]["decision"];
    assert_eq!(newest["outcome"], "auto");
    assert_eq!(newest["shadow"]["outcome"], "forbidden");
    assert_eq!(newest["shadow"]["policies"][0]["id"], "ban-noop-research");

    let (_, log, _) = gov(
        &s,
        &[
            "audit",
            "log",
            "--event",
            "proposal_submitted",
            "--limit",
            "1",
        ],
    )?;
    assert!(
        log.contains("    shadow: would be forbidden by ban-noop-research (decided auto)"),
        "{log}"
    );
    // Impact treats the shadow policy as enforced: all six flip.
    let (code, out, _) = gov(&s, &["policy", "impact", "main", "--format", "json"])?;
    assert_eq!(code, 3, "{out}");
    let r: Value = serde_json::from_str(&out)?;
    assert_eq!(r["changed"], 6, "{out}");
    assert_eq!(r["groups"][0]["policies"], json!(["ban-noop-research"]));
    Ok(())
}

/// Commits the shipped policy test cases (which `gov policy test` runs)
/// onto main, signed by the approver.
pub(crate) fn commit_shipped_tests(repo: &TestRepo) -> TestResult {
    let tests_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tests");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(&tests_dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        files.push((format!("policies/tests/{name}"), std::fs::read(&p)?));
    }
    commit_to_main(repo, &files, "policy tests")
}

/// Runs docs/ci/gov-policy-ci.sh in the repository with `gov` on PATH.
fn ci_script(s: &TestServer, base: &str, head: &str) -> TestResult<(i32, String, String)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci/gov-policy-ci.sh");
    let bin_dir = crate::support::gov_bin()
        .parent()
        .ok_or("no bin dir")?
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let report = s.repo.root().join(".gov/impact.md");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args([base, head])
        .arg(&report)
        .current_dir(s.repo.root())
        .env("PATH", path)
        .env_remove("GOV_REPO")
        .output()?;
    let md = std::fs::read_to_string(&report).unwrap_or_default();
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        md,
    ))
}

#[test]
fn the_ci_script_checks_tests_and_writes_the_impact_report() -> TestResult {
    let s = TestServer::start()?;
    commit_shipped_tests(&s.repo)?;
    submit(&s, "noop", "research_only", 4)?;
    branch_with(
        &s,
        "gov/policy/ban",
        &[("policies/proposals.cedar", proposals_with(&s, BAN)?)],
    )?;
    let (code, out, md) = ci_script(&s, "main", "gov/policy/ban")?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("+ ban-noop-research (forbid)"), "{out}");
    assert!(
        out.contains("impact: some recorded decisions change"),
        "{out}"
    );
    assert!(
        md.contains("| auto | forbidden | `ban-noop-research` | 4 |"),
        "{md}"
    );

    branch_with(
        &s,
        "gov/policy/broken",
        &[("policies/schema.cedarschema", "entity ;".to_string())],
    )?;
    let (code, out, _) = ci_script(&s, "main", "gov/policy/broken")?;
    assert_eq!(code, 1, "an invalid set fails the job: {out}");
    Ok(())
}

#[test]
fn diff_and_impact_read_the_working_tree() -> TestResult {
    let s = TestServer::start()?;
    submit(&s, "noop", "research_only", 20)?;
    submit(&s, "researcher", "research_only", 10)?;
    let policies = s.repo.root().join("policies");
    std::fs::write(policies.join("proposals.cedar"), proposals_with(&s, BAN)?)?;

    let (code, out, err) = gov(&s, &["policy", "diff", "--worktree"])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("policy set `main` ("), "{out}");
    assert!(
        out.ends_with(
            ") -> the working tree (working-tree)\n\
             policies: 1 added, 0 removed, 0 changed\n  \
             + ban-noop-research (forbid) policies/proposals.cedar: noop does no research\n"
        ),
        "{out}"
    );

    let (code, out, err) = gov(&s, &["policy", "impact", "--worktree"])?;
    assert_eq!(code, 3, "{out}{err}");
    let lines: Vec<&str> = out.lines().take(3).collect();
    assert_eq!(
        lines,
        [
            "impact of the working tree (policy version working-tree) on 30 recorded decisions: 20 change, 10 unchanged",
            "  auto → forbidden: 20",
            "auto → forbidden by `ban-noop-research`: 20",
        ],
        "{out}"
    );

    std::fs::write(policies.join("schema.cedarschema"), "entity ;")?;
    let (code, out, err) = gov(&s, &["policy", "impact", "--worktree"])?;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("error: `policies/schema.cedarschema` line 1: invalid schema"),
        "{err}"
    );
    assert!(
        err.ends_with("error: the policy set in the working tree is invalid\n"),
        "{err}"
    );
    let (code, _, err) = gov(&s, &["policy", "diff", "main", "--worktree"])?;
    assert_eq!(code, 2, "{err}");
    Ok(())
}

#[test]
fn policy_propose_then_approve_brings_the_change_into_force() -> TestResult {
    let s = TestServer::start()?;
    commit_shipped_tests(&s.repo)?;
    assert_eq!(research(&s)?, 200);
    let (code, out, err) = gov(&s, &["policy", "propose", "-m", "ban noop research"])?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "no change to `policies/`, `agents/*/agent.toml` or `gov.toml` in the working tree"
        ),
        "{err}"
    );

    // A change that breaks a policy test case is not proposed.
    let ban = proposals_with(&s, &BAN.replace("noop", "researcher"))?;
    std::fs::write(
        s.repo.root().join("policies/proposals.cedar"),
        proposals_with(&s, BAN)?,
    )?;
    let (code, out, err) = gov(&s, &["policy", "propose", "-m", "ban noop research"])?;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("error: a policy test fails: nothing was proposed"),
        "{err}"
    );

    std::fs::write(s.repo.root().join("policies/proposals.cedar"), ban)?;
    let (code, out, err) = gov(&s, &["policy", "propose", "-m", "ban researcher research"])?;
    assert_eq!(code, 0, "{out}{err}");
    let (line, id) = proposal_line(&out)?;
    assert!(line.ends_with("`policies/proposals.cedar`"), "{line}");
    // Waiting for a person: not in force yet.
    let p = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(p.body["status"], "pending", "{:?}", p.body);
    assert_eq!(p.body["action_type"], "policy_change");
    assert_eq!(research(&s)?, 200);
    let (code, out, _) = gov(&s, &["policy", "impact", &format!("gov/policy/{id}")])?;
    assert_eq!(code, 3, "{out}");

    let (code, out, err) = gov(&s, &["approve", &id])?;
    assert_eq!(code, 0, "{out}{err}");
    // The checkout has the change in its Git index too: not staged the
    // other way round, which the operator's next `git commit` would undo.
    assert_eq!(porcelain_status(&s)?, "");
    let st = s.get("/status", Some(&s.operator))?.body;
    let tip = s.repo.repo()?.refname_to_id("refs/heads/main")?;
    assert_eq!(st["policy_version"], tip.to_string().as_str(), "{st}");
    assert_eq!(st["policy_refused"], json!([]));
    assert_eq!(research(&s)?, 403, "the approved ban is in force");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// A `gov approve` of a policy change killed once the approval is
/// durable, before the checkout took it, leaves the policy staged the
/// other way round (the next `git commit` would undo it on `main`) and
/// the proposal's file out; the next `gov serve` brings both up to date.
#[test]
fn a_policy_change_a_killed_approval_left_out_reaches_the_checkout_at_the_next_start() -> TestResult
{
    let mut s = TestServer::start()?;
    commit_shipped_tests(&s.repo)?;
    let ban = proposals_with(&s, &BAN.replace("noop", "researcher"))?;
    std::fs::write(s.repo.root().join("policies/proposals.cedar"), ban)?;
    let (code, out, err) = gov(&s, &["policy", "propose", "-m", "ban researcher research"])?;
    assert_eq!(code, 0, "{out}{err}");
    let (_, id) = proposal_line(&out)?;
    s.stop();
    crate::serve::served_once(&s.repo)?;
    s.repo.gov_killed_at(
        gov::testkit::fault::Fault::BeforeCheckout,
        &["approve", &id],
    )?;
    let filed = crate::writepath::main_path(&s, &id)?;
    assert_eq!(
        porcelain_status(&s)?,
        format!("MM policies/proposals.cedar\nD  {filed}\n")
    );

    let said = crate::serve::lines_after_start(&s.repo, 1)?;
    assert_eq!(
        said[0],
        format!("note: the checkout lacked `main`'s approved version of 2 files (gov could not put them there: a server or command stopped, or a `git` command held the Git index); brought up to date: `policies/proposals.cedar`, `{filed}`")
    );
    assert_eq!(porcelain_status(&s)?, "");
    Ok(())
}

#[test]
fn policy_propose_commits_deleted_files_shows_them_and_approves_them() -> TestResult {
    let s = TestServer::start()?;
    commit_shipped_tests(&s.repo)?;
    let ban = BAN.replace("noop", "researcher");
    commit_to_main(
        &s.repo,
        &[("policies/extra.cedar".into(), ban.into_bytes())],
        "ban researcher's research",
    )?;
    for _ in 0..3 {
        assert_eq!(research(&s)?, 403);
    }

    // The operator deletes the ban's file and an agent, and proposes that.
    std::fs::remove_file(s.repo.root().join("policies/extra.cedar"))?;
    std::fs::remove_file(s.repo.root().join("agents/capped/agent.toml"))?;
    let (code, out, err) = gov(&s, &["policy", "propose", "-m", "lift the ban"])?;
    assert_eq!(code, 0, "{out}{err}");
    let (line, id) = proposal_line(&out)?;
    assert!(
        line.ends_with(": `agents/capped/agent.toml` (deleted), `policies/extra.cedar` (deleted)"),
        "{line}"
    );
    let branch = format!("gov/policy/{id}");
    let git = s.repo.repo()?;
    let tree = git.revparse_single(&branch)?.peel_to_commit()?.tree()?;
    for gone in ["policies/extra.cedar", "agents/capped/agent.toml"] {
        assert!(
            tree.get_path(std::path::Path::new(gone)).is_err(),
            "{gone} is deleted on {branch}"
        );
    }
    let p = s.get(&format!("/proposals/{id}"), Some(&s.operator))?;
    assert_eq!(
        p.body["payload"]["deleted"],
        json!(["agents/capped/agent.toml", "policies/extra.cedar"]),
        "{:?}",
        p.body
    );

    // The diff names the removed policy; the impact counts what it lifts.
    let (code, out, _) = gov(&s, &["policy", "diff", &branch])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("policies: 0 added, 1 removed, 0 changed\n  - ban-researcher-research (forbid) policies/extra.cedar\n"),
        "{out}"
    );
    let (code, out, _) = gov(&s, &["policy", "impact", &branch])?;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("\n  forbidden → auto: 3\n"), "{out}");

    // Approving it deletes them on main (and from the checkout's Git
    // index), and the ban is lifted.
    let (code, out, err) = gov(&s, &["approve", &id])?;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(porcelain_status(&s)?, "");
    let main = git.find_reference("refs/heads/main")?.peel_to_commit()?;
    assert_eq!(main.parent_count(), 2);
    for gone in ["policies/extra.cedar", "agents/capped/agent.toml"] {
        assert!(main.tree()?.get_path(std::path::Path::new(gone)).is_err());
    }
    let st = s.get("/status", Some(&s.operator))?.body;
    assert_eq!(st["policy_version"], main.id().to_string().as_str(), "{st}");
    assert_eq!(research(&s)?, 200, "the ban is lifted");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(out.status.code(), Some(0), "{}", crate::remote::text(&out));
    Ok(())
}

/// `git status --porcelain` in the server's checkout.
fn porcelain_status(s: &TestServer) -> TestResult<String> {
    let o = s.repo.git(&["status", "--porcelain"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Records `n` decisions (`research_only` by noop, auto-approved by the set
/// in force) straight into the chain, as the replay benchmark does.
fn record_decisions(s: &TestServer, n: usize) -> TestResult {
    use gov::domain::audit::{Actor, NewEntry};
    use gov::domain::event::Event;
    use gov::domain::request::{CedarRequest, DecisionRecord, EntityData, EntityRef};
    let git = s.repo.repo()?;
    let main = git.refname_to_id(&s.repo.settings.main_refname())?;
    let set = gov::testkit::policies::load_commit(&git, main)?;
    let svc = gov::app::service::Service::open(&s.repo.settings)?;
    for chunk in 0..n.div_ceil(500) {
        let entries: Vec<NewEntry> = (chunk * 500..((chunk + 1) * 500).min(n))
            .map(|i| {
                let req = CedarRequest {
                    principal: EntityRef::new("Agent", "noop"),
                    action: "propose".into(),
                    resource: EntityRef::new("ActionType", "research_only"),
                    context: json!({"reversible": true, "requires_approval": false,
                        "expected_cost_tokens": i, "expected_cost_micros": 0,
                        "payload_hash": format!("h{i}")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                    entities: vec![EntityData {
                        uid: EntityRef::new("Agent", "noop"),
                        attrs: json!({"group": "smoke"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                        parents: vec![],
                        tags: Default::default(),
                    }],
                };
                let decision = set.decide(&req);
                NewEntry::new(
                    Actor::server(),
                    Event::other("recorded", json!({})).unwrap_or_else(|e| panic!("{e}")),
                )
                .agent("noop")
                .decision(DecisionRecord {
                    decision,
                    request: req,
                })
            })
            .collect();
        svc.governance().append(entries)?;
    }
    Ok(())
}

#[test]
fn replay_and_impact_over_several_chunks_keep_the_chain_order_and_can_be_bounded() -> TestResult {
    let s = TestServer::start()?;
    record_decisions(&s, 2_500)?;
    let out = s.repo.gov(&["audit", "verify", "--replay"])?;
    let said = crate::remote::text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("2500 decisions replayed"), "{said}");

    branch_with(
        &s,
        "gov/policy/ban",
        &[("policies/proposals.cedar", proposals_with(&s, BAN)?)],
    )?;
    let set = gov::app::replay::load_set(
        &s.repo.settings,
        &gov::app::replay::SetSource::Revision("gov/policy/ban".into()),
    )?;
    let all = gov::app::replay::impact(&s.repo.settings, &set, &Default::default())?;
    assert_eq!(
        (all.replayed, all.changed, all.cut_at),
        (2_500, 2_500, None)
    );
    // The examples are the newest decisions, newest first.
    let seqs: Vec<u64> = all.groups[0].examples.iter().map(|e| e.seq).collect();
    let tip = seqs[0];
    assert_eq!(seqs, [tip, tip - 1, tip - 2]);

    let bounded = gov::app::replay::impact(
        &s.repo.settings,
        &set,
        &gov::app::replay::ImpactFilter {
            max_entries: Some(1_100),
            ..Default::default()
        },
    )?;
    assert_eq!((bounded.replayed, bounded.cut_at), (1_100, Some(1_100)));
    assert_eq!(bounded.groups[0].examples[0].seq, tip);
    let text = gov::app::policy_report::impact_text(
        &bounded,
        &gov::app::replay::SetSource::Revision("gov/policy/ban".into()),
    );
    assert_eq!(
        text[1],
        "bounded: only the decisions among the newest 1100 audit entries were replayed, older ones were left out"
    );
    Ok(())
}
