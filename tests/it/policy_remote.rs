//! A policy change reviewed through a Git remote (issue 11): `gov policy
//! propose`, `gov sync`, a merge made on the bare remote with stock `git`
//! as a forge makes it, `gov sync` again: the change is in force for the
//! server, the watchdog and `gov run`; with a forge configured the change
//! is a pull request carrying its diff and impact report.

use std::process::{Command, Stdio};

use gov::app::governance::Role;
use gov::app::service::Service;
use gov::domain::proposal::ProposalStatus;
use serde_json::json;

use crate::dashboard_policy::{propose, BAN};
use crate::impact::{commit_shipped_tests, research};
use crate::remote::{assert_synced_approval, entries, local_rev, team, text, Forge};
use crate::support::github::GitHub;
use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::TestServer;

/// A new agent the change brings in.
const HELPER: &str = "kind = \"command\"\ngroup = \"smoke\"\n[command]\nprogram = \"true\"\n";

/// A team repository (remote `origin`, a bare repository) with the shipped
/// policy tests on main and a proposed change in review: a ban on
/// researcher's research and a new agent `helper`. Returns the id.
fn team_with_a_policy_change() -> TestResult<(TestRepo, Forge, String)> {
    let (t, forge) = team()?;
    commit_shipped_tests(&t)?;
    let file = t.root().join("policies/proposals.cedar");
    let mut cedar = std::fs::read_to_string(&file)?;
    cedar.push('\n');
    cedar.push_str(BAN);
    std::fs::write(&file, cedar)?;
    std::fs::create_dir_all(t.root().join("agents/helper"))?;
    std::fs::write(t.root().join("agents/helper/agent.toml"), HELPER)?;
    let id = propose(&t, "ban researcher's research, add helper")?;
    Ok((t, forge, id))
}

#[test]
fn a_policy_change_merged_on_the_remote_comes_into_force_everywhere() -> TestResult {
    let (t, forge, id) = team_with_a_policy_change()?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let branch = format!("refs/heads/gov/proposal/{id}");
    assert_eq!(forge.rev(&branch), Some(local_rev(&t, &branch)?));

    // A person with merge rights merges it on the remote, as a forge does.
    let merge = forge.merge_pull_request(&id, &[])?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_synced_approval(&out, &id, &merge);
    assert_eq!(local_rev(&t, "refs/heads/main")?, merge, "fast-forwarded");
    // The checkout has the merge's files in its Git index too, not staged
    // the other way round.
    let status = t.git(&["status", "--porcelain"])?;
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");
    let svc = Service::open(&t.settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    assert_eq!(p.status, ProposalStatus::Approved);
    assert_eq!(p.merge_commit.as_deref(), Some(merge.as_str()));
    let decided = entries(&t, "proposal_decided")?;
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["via"], "forge");
    drop(svc);

    // The watchdog's process: the merge is in force, helper with it.
    let wd = Service::open_as(&t.settings, Role::Watchdog)?;
    let st = wd.policy_status();
    assert_eq!(st.version.as_deref(), Some(merge.as_str()), "{st:?}");
    assert!(st.refused.is_empty(), "{st:?}");
    assert!(wd.agent_settings("helper").is_some());
    drop(wd);
    let out = t.gov(&["audit", "verify"])?;
    assert!(out.status.success(), "{}", text(&out));

    // The server: the ban holds.
    let s = TestServer::start_on(t)?;
    let st = s.get("/status", Some(&s.operator))?.body;
    assert_eq!(st["policy_version"], merge.as_str(), "{st}");
    assert_eq!(st["policy_refused"], json!([]), "{st}");
    assert_eq!(research(&s)?, 403, "the reviewed ban is in force");

    // `gov run`: the new agent runs.
    let out = Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["run", "helper"])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

#[test]
fn with_a_forge_a_policy_change_is_a_pull_request_with_its_review() -> TestResult {
    let (t, forge, id) = team_with_a_policy_change()?;
    let gh = GitHub::start("acme", "test-token", forge.bare())?;
    std::fs::write(
        t.root().join("gov.toml"),
        format!(
            "[remote]\nname = \"origin\"\n\n[remote.forge]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/gov\"\n",
            gh.url
        ),
    )?;
    let out = Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(t.root())
        .arg("sync")
        .env_remove("GOV_URL")
        .env("GOV_FORGE_TOKEN", "test-token")
        .output()?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1, "{said}");
    let pr = &pulls[0];
    assert_eq!(pr.head, format!("gov/proposal/{id}"));
    assert_eq!(pr.base, "main");
    assert_eq!(
        pr.title,
        format!("gov: `policy_change` by `operator` ({id})")
    );
    for part in [
        "### Policy change",
        // gov.toml too: `team` wrote its `[remote]` into the working tree.
        "- changed: `agents/helper/agent.toml`, `gov.toml`, `policies/proposals.cedar`",
        "  + ban-researcher-research (forbid) policies/proposals.cedar: researcher does no research",
        "### gov policy impact: ",
    ] {
        assert!(pr.body.contains(part), "{part} missing from\n{}", pr.body);
    }
    assert_eq!(entries(&t, "pull_request_opened")?.len(), 1);
    Ok(())
}

#[test]
fn a_policy_change_merged_with_something_more_is_refused() -> TestResult {
    let (t, forge, id) = team_with_a_policy_change()?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let main_before = local_rev(&t, "refs/heads/main")?;
    let evil = "@id(\"evil\")\npermit (principal, action, resource);\n";
    forge.merge_pull_request(&id, &[("policies/evil.cedar", evil)])?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!("`{id}`")) && said.contains("also changes `policies/evil.cedar`"),
        "{said}"
    );
    assert_eq!(local_rev(&t, "refs/heads/main")?, main_before, "main kept");
    let flags = entries(&t, "audit_flag_proposal_tampered")?;
    assert_eq!(flags.len(), 1);
    Ok(())
}
