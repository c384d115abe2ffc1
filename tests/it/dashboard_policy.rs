//! The dashboard and policy review (issue 11): a `policy_change` proposal
//! shown with its diff and impact report on the pending and detail pages
//! and approved there, and shadow policies' would-be effects in the audit
//! views; in headless Chromium against a real server.

use std::sync::Arc;

use serde_json::json;

use crate::dashboard::served::Served;
use crate::impact::{commit_shipped_tests, proposal_line, research, submit};
use crate::support::browser::Browser;
use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{commit_to_main, TestServer};

pub(crate) const BAN: &str = "@id(\"ban-researcher-research\")\n@reason(\"researcher does no research\")\nforbid (principal == Agent::\"researcher\", action == Action::\"propose\", resource == ActionType::\"research_only\");\n";
const WATCH: &str = "@id(\"watch-noop-drafts\")\n@mode(\"shadow\")\n@reason(\"noop's drafts are watched\")\nforbid (principal == Agent::\"noop\", action == Action::\"propose\", resource == ActionType::\"draft_content\");\n";

fn with_appended(s: &TestServer, extra: &str) -> TestResult<String> {
    let mut text = std::fs::read_to_string(s.repo.root().join("policies/proposals.cedar"))?;
    text.push('\n');
    text.push_str(extra);
    Ok(text)
}

/// Runs `gov policy propose` and returns the proposal's id.
pub(crate) fn propose(repo: &TestRepo, message: &str) -> TestResult<String> {
    let out = repo.gov(&["policy", "propose", "-m", message])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(proposal_line(&stdout)?.1)
}

/// The two rows `rows` selects (noop's drafts) show what the shadow
/// policy would have done.
fn each_row_shows_the_shadow(browser: &Browser, rows: &str) {
    let rows = browser.find_all(rows);
    assert_eq!(rows.len(), 2);
    for row in rows {
        let text = row.text();
        assert!(
            text.contains("shadow: would be forbidden by watch-noop-drafts (decided auto)"),
            "{text}"
        );
    }
}

#[test]
fn a_policy_change_is_reviewed_with_its_diff_and_impact_and_approved_on_the_dashboard() -> TestResult
{
    let served = Served::start();
    let s = &served.server;
    commit_shipped_tests(&s.repo)?;
    // A shadow policy in force, then traffic: 4 research requests by
    // researcher and 2 drafts by noop, each auto-approved (the shadow
    // policy changes no outcome but is recorded).
    commit_to_main(
        &s.repo,
        &[(
            "policies/proposals.cedar".into(),
            with_appended(s, WATCH)?.into_bytes(),
        )],
        "watch noop's drafts",
    )?;
    submit(s, "researcher", "research_only", 4)?;
    submit(s, "noop", "draft_content", 2)?;

    // The change: a ban on researcher's research, proposed for review.
    std::fs::write(
        s.repo.root().join("policies/proposals.cedar"),
        with_appended(s, BAN)?,
    )?;
    let id = propose(&s.repo, "ban researcher's research")?;

    let browser = Browser::start();
    browser.goto(&served.login);
    browser.wait_for_text(&id);
    let card = format!("#proposal-{id}");
    let review = browser.find(&format!("{card} .policy-review")).text();
    // The impact replays the recorded decisions with the shadow policy
    // enforced: the 4 the ban flips and the 2 the shadow policy would.
    assert!(
        review.contains("6 recorded decisions would change"),
        "{review}"
    );
    assert!(
        review.contains(&format!("gov/policy/{id}")),
        "the branch is named: {review}"
    );
    assert!(
        review.contains("changed policies/proposals.cedar"),
        "{review}"
    );
    let diff = browser.find(&format!("{card} .policy-diff")).text();
    assert!(
        diff.contains("policies: 1 added, 0 removed, 0 changed"),
        "{diff}"
    );
    assert!(
        diff.contains(
            "+ ban-researcher-research (forbid) policies/proposals.cedar: researcher does no research"
        ),
        "{diff}"
    );
    let impact = browser.find(&format!("{card} .policy-impact")).text();
    // Seven decisions: the six above and the policy change's own
    // submission (a person is needed before and after).
    assert!(
        impact.contains("on 7 recorded decisions: 6 change, 1 unchanged"),
        "{impact}"
    );
    assert!(
        impact.contains("auto → forbidden by `ban-researcher-research`: 4"),
        "{impact}"
    );
    assert!(
        impact.contains("auto → forbidden by `watch-noop-drafts`: 2"),
        "{impact}"
    );
    browser.full_page_screenshot("policy-01-pending-change", 1280);

    // The detail page shows the same review.
    browser.goto(&served.url(&format!("/dashboard/proposals/{id}")));
    browser.wait_for_text("What changes, by policy id");
    assert_eq!(browser.find(".policy-diff").text(), diff);
    assert_eq!(browser.find(".policy-impact").text(), impact);
    browser.full_page_screenshot("policy-02-change-detail", 1280);

    // The review is computed once per proposal head: the same one comes
    // back while the branch does not move, even as traffic is recorded.
    // Pages that ask at the same time share one computation.
    let svc = gov::app::service::Service::open(&s.repo.settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    let reviews: Vec<_> = std::thread::scope(|scope| {
        let asks: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| gov::app::policy_change::review(&svc, &p)))
            .collect();
        asks.into_iter()
            .map(|a| a.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut first = None;
    for r in reviews {
        let r = r?.ok_or("no review")?;
        let first = first.get_or_insert_with(|| r.clone());
        assert!(Arc::ptr_eq(first, &r));
    }
    let first = first.ok_or("no review")?;
    submit(s, "researcher", "research_only", 1)?;
    let again = gov::app::policy_change::review(&svc, &p)?.ok_or("no review")?;
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(first.changes, Some(6));

    // Approving it on the dashboard is the signed merge: in force at once.
    browser.goto(&served.url("/"));
    browser.wait_for_text(&id);
    browser.find(&format!("{card} button.approve")).click();
    browser.wait_for_text(&format!("approved `{id}`: merged into main as "));
    let (_, st) = served.api("GET", "/status", None);
    let tip = s.repo.repo()?.refname_to_id("refs/heads/main")?;
    assert_eq!(st["policy_version"], tip.to_string().as_str(), "{st}");
    assert_eq!(st["policy_refused"], json!([]), "{st}");
    assert_eq!(research(s)?, 403, "the approved ban is in force");
    let out = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The shadow policy's would-be effect, in the audit trail and on the
    // detail page of a decision it watched.
    browser.goto(&served.url("/dashboard/audit?agent=noop&event=proposal_submitted"));
    browser.wait_for_text("proposal_submitted");
    each_row_shows_the_shadow(&browser, "table.audit tbody tr");
    browser.full_page_screenshot("policy-03-audit-shadow", 1280);
    let drafts = s.audit("proposal_submitted")?;
    let draft = drafts
        .iter()
        .find(|e| e["agent_id"] == "noop")
        .and_then(|e| e["proposal_id"].as_str())
        .ok_or("no draft proposal")?;
    browser.goto(&served.url(&format!("/dashboard/proposals/{draft}")));
    browser.wait_for_text("Audit entries");
    assert!(
        browser
            .body_text()
            .contains("shadow: would be forbidden by watch-noop-drafts (decided auto)"),
        "{}",
        browser.body_text()
    );
    // And in the proposals' history.
    browser.goto(&served.url("/dashboard/proposals?agent=noop"));
    browser.wait_for_text("draft_content");
    each_row_shows_the_shadow(&browser, "table.proposals tbody tr");
    // Research requests are not watched: no shadow line for them.
    browser.goto(&served.url("/dashboard/audit?agent=researcher&event=proposal_submitted"));
    browser.wait_for_text("proposal_submitted");
    assert!(!browser.body_text().contains("shadow:"));
    Ok(())
}
