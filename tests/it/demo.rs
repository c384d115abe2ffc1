//! `gov demo`: the newcomer's first command, checked end to end.

use std::process::Command;

use crate::support::gov;

const STEPS: &[&str] = &[
    "Blocked: HTTP 400 self_approve_blocked.",
    "Policy: reserved-for-person (this action type is reserved for a person",
    ": pending.",
    "It waits on branch gov/proposal/",
    "Why a person: reserved-for-person",
    "approved: merge commit ",
    "status approved.",
    "Posted action_executed and agent_stop.",
    "audit_flag_self_approve_attempt",
    "proposal_submitted",
    "proposal_decided",
    "gov audit verify: ok, 6 entries, 1 approval merge(s) checked.",
];

#[test]
fn demo_tells_the_whole_story_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let out = Command::new(crate::support::gov_bin())
        .arg("demo")
        .env("TMPDIR", &scratch)
        .env_remove("GOV_REPO")
        .current_dir(tmp.path())
        .output()
        .expect("gov demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut last = 0;
    for step in STEPS {
        let at = text[last..].find(step).map(|i| i + last);
        assert!(
            at.is_some(),
            "demo output lacks {step:?} after byte {last}:\n{text}"
        );
        last = at.unwrap_or(last);
    }
    assert_eq!(
        text.matches("good signature by gov@server.gov").count(),
        6,
        "{text}"
    );
    assert!(!text.contains("BAD SIGNATURE") && !text.contains("NO SIGNATURE"));
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .expect("read")
        .flatten()
        .collect();
    assert!(left.is_empty(), "demo left files behind: {left:?}");
}

#[test]
fn demo_keep_leaves_a_repository_that_stock_git_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("kept");
    let out = gov(
        &["demo", "--keep", dir.to_str().expect("utf-8")],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("The repository is kept in"));
    let git = |args: &[&str]| crate::support::git_checked(&dir, args);
    // The approval is a merge commit on main, signed by the operator.
    let parents = git(&["rev-list", "--parents", "-n", "1", "main"]);
    assert_eq!(
        String::from_utf8_lossy(&parents.stdout)
            .split_whitespace()
            .count(),
        3
    );
    let v = git(&["verify-commit", "main"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stderr)
        .contains("Good \"git\" signature for operator@approver.gov"));
    // Every audit entry verifies with stock git.
    let log = git(&["log", "--show-signature", "--format=%H", "gov/audit"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert_eq!(
        text.matches("Good \"git\" signature for gov@server.gov")
            .count(),
        6,
        "{text}"
    );
    // And gov agrees.
    let verify = gov(&["audit", "verify"], &dir);
    assert!(verify.status.success(), "{}", verify.stderr_text());

    // A second demo into the same folder refuses, as gov init does.
    let again = gov(
        &["demo", "--keep", dir.to_str().expect("utf-8")],
        tmp.path(),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(again.stderr_text().contains("refusing to overwrite"));
}
