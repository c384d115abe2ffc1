//! `gov policy check|test|eval` against temporary copies of the shipped
//! `policies/` folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::gov_bin;
use crate::support::repo::OutputText;

/// A temporary copy of the shipped policy folder.
struct Policies {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Policies {
    fn shipped() -> Policies {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("policies");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            &dir,
        );
        Policies { _tmp: tmp, dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).expect("write");
    }

    fn gov(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(gov_bin());
        cmd.args(["policy"])
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(self.dir.parent().expect("parent"))
            .env_remove("GOV_REPO");
        cmd.output().expect("run gov")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

const NOOP_READ: &[&str] = &[
    "--principal",
    r#"Agent::"noop""#,
    "--action",
    "use_tool",
    "--resource",
    r#"Tool::"Read""#,
];

#[test]
fn shipped_cases_pass_and_cover_every_policy() {
    let p = Policies::shipped();
    let out = p.gov(&["test"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    let text = out.stdout_text();
    let cases = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(cases > 0, "{text}");
    assert!(
        text.ends_with(&format!(
            "\n\nevery policy is exercised by a case\n{cases} passed, 0 failed\n"
        )),
        "{text}"
    );

    let check = p.gov(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", check.stderr_text());
    let text = check.stdout_text();
    let listed: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        text.lines().next(),
        Some(format!("{} policies valid (version working-tree)", listed.len()).as_str())
    );
    // One line per policy: its effect, its id and where it is.
    assert!(listed.iter().all(|l| l.len() == 3), "{text}");
    assert!(
        listed
            .iter()
            .any(|l| l[..2] == ["forbid", "reserved-for-person"]
                && l[2].starts_with(&format!("{}/proposals.cedar:", p.dir.display()))),
        "{text}"
    );
}

#[test]
fn a_mismatching_case_fails_with_exit_3() {
    let p = Policies::shipped();
    p.write(
        "tests/zz_wrong.toml",
        r#"
[[case]]
name = "send_email is auto (wrong)"
principal = 'Agent::"noop"'
action = "propose"
resource = 'ActionType::"send_email"'
context = { reversible = true, requires_approval = false, expected_cost_tokens = 0, expected_cost_micros = 0, payload_hash = "h" }
expect = "auto"
"#,
    );
    let out = p.gov(&["test"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stdout_text());
    assert!(
        out.stdout_text()
            .contains("FAIL  send_email is auto (wrong)"),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stderr_text()
            .contains("expected auto, got needs_person"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn wrong_expected_policies_fail() {
    let p = Policies::shipped();
    p.write(
        "tests/zz_wrong.toml",
        r#"
[[case]]
name = "healthy"
principal = 'Agent::"noop"'
action = "continue"
resource = 'Agent::"noop"'
context = { tokens_consumed = 1, tokens_cap = 10, micros_consumed = 1, micros_cap = 10, oldest_open_approval_minutes = 0, stuck_after_minutes = 30, same_payload_streak = 1, repeat_payload_limit = 3, expired_pending = 0, minutes_since_activity = 0 }
expect = "auto"
expect_policies = ["watchdog-stuck"]
"#,
    );
    let out = p.gov(&["test"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stdout_text());
}

#[test]
fn an_invalid_case_file_exits_2() {
    let p = Policies::shipped();
    p.write(
        "tests/zz_bad.toml",
        "[[case]]\nname = \"x\"\nprincipal = 'noop'\naction = \"propose\"\nresource = 'ActionType::\"a\"'\nexpect = \"auto\"\n",
    );
    let out = p.gov(&["test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr_text().contains("zz_bad.toml"),
        "{}",
        out.stderr_text()
    );
    assert!(
        out.stderr_text().contains("`noop`"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let p = Policies::shipped();
    p.write(
        "zz.cedar",
        "@id(\"x\")\n@reason(\"y\")\nforbid (principal, action, resource)\nwhen { 1 + };\n",
    );
    for cmd in ["check", "test"] {
        let out = p.gov(&[cmd]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = out.stderr_text();
        assert!(err.contains("zz.cedar` line 4: syntax error"), "{err}");
    }
}

#[test]
fn a_type_error_names_file_line_and_policy() {
    let p = Policies::shipped();
    p.write(
        "zz.cedar",
        "// a rule\n@id(\"uses-nonexistent\")\n@reason(\"y\")\nforbid (principal, action == Action::\"use_tool\", resource)\nwhen { context.nonexistent };\n",
    );
    let out = p.gov(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = out.stderr_text();
    assert!(
        err.contains("zz.cedar` line 5: policy `uses-nonexistent`:"),
        "{err}"
    );
    assert!(err.contains("nonexistent"), "{err}");
}

#[test]
fn a_missing_id_names_file_and_line() {
    let p = Policies::shipped();
    p.write(
        "zz.cedar",
        "\n\n@reason(\"y\")\npermit (principal, action == Action::\"approve\", resource);\n",
    );
    let out = p.gov(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = out.stderr_text();
    assert!(
        err.contains("zz.cedar` line 3: policy has no `@id(\"...\")` annotation"),
        "{err}"
    );
}

#[test]
fn a_missing_schema_is_a_clear_error() {
    let p = Policies::shipped();
    std::fs::remove_file(p.dir.join("schema.cedarschema")).expect("rm");
    let out = p.gov(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = out.stderr_text();
    assert!(err.contains("no policy schema"), "{err}");
    assert!(err.contains("schema.cedarschema` is missing"), "{err}");
}

#[test]
fn eval_exit_codes_follow_the_outcome() {
    let p = Policies::shipped();
    let ctx = |reversible: bool| {
        format!(
            r#"{{"reversible": {reversible}, "requires_approval": false, "expected_cost_tokens": 0, "expected_cost_micros": 0, "payload_hash": "h"}}"#
        )
    };
    let propose = |resource: &str, context: &str| {
        p.gov(&[
            "eval",
            "--principal",
            r#"Agent::"noop""#,
            "--action",
            "propose",
            "--resource",
            resource,
            "--context",
            context,
        ])
    };
    let auto = propose(r#"ActionType::"research_only""#, &ctx(true));
    assert_eq!(auto.status.code(), Some(0), "{}", auto.stderr_text());
    const ALLOWED: &str = "  permit proposals-allowed: an agent may propose any action type; \
                           the rules below decide whether a person must approve\n";
    assert_eq!(
        auto.stdout_text(),
        format!("auto\n{ALLOWED}policy version: working-tree\n")
    );

    let person = propose(r#"ActionType::"send_email""#, &ctx(true));
    assert_eq!(person.status.code(), Some(4));
    assert_eq!(
        person.stdout_text(),
        format!(
            "needs_person\n{ALLOWED}  forbid reserved-for-person: this action type is reserved \
             for a person: it always needs a human approval\n  reserved for a person: an agent \
             may not skip the approval\npolicy version: working-tree\n"
        )
    );

    let mut args = NOOP_READ.to_vec();
    args.extend([
        "--context",
        r#"{"path": "/etc/passwd", "inside_agent_dir": false}"#,
    ]);
    args.push("eval");
    args.rotate_right(1);
    let denied = p.gov(&args);
    assert_eq!(denied.status.code(), Some(5), "{}", denied.stderr_text());
    assert_eq!(
        denied.stdout_text(),
        "forbidden\n  forbid tools-outside-agent-dir: an agent may not touch a path outside \
         its own folder\npolicy version: working-tree\n"
    );

    let mut args = vec!["eval", "--json", "--group", "research"];
    args.extend([
        "--principal",
        r#"Agent::"researcher""#,
        "--action",
        "use_tool",
        "--resource",
        r#"Tool::"Bash""#,
        "--context",
        r#"{"command": "ls"}"#,
    ]);
    let json = p.gov(&args);
    assert_eq!(json.status.code(), Some(5));
    let d: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json decision");
    assert_eq!(d["outcome"], "forbidden");
    // A Bash question without its `shell` record matches no permit.
    assert_eq!(d["policies"], serde_json::json!([]));
}

#[test]
fn eval_reads_a_request_file() {
    let p = Policies::shipped();
    let req = p.dir.join("req.json");
    std::fs::write(
        &req,
        r#"{"principal": {"type": "Agent", "id": "noop"}, "action": "use_tool",
            "resource": {"type": "Tool", "id": "Bash"}, "context": {"command": "bash smoke.sh"},
            "entities": [{"uid": {"type": "Agent", "id": "noop"}, "attrs": {"group": "smoke"}}]}"#,
    )
    .expect("write");
    let out = p.gov(&["eval", "--request", req.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
    assert_eq!(
        out.stdout_text(),
        "auto\n  permit noop-run-smoke: noop may run exactly `bash smoke.sh`\n\
         policy version: working-tree\n"
    );

    let bad = p.gov(&["eval", "--request", "/nonexistent/req.json"]);
    assert_eq!(bad.status.code(), Some(2));
}
