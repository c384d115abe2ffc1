//! Agents confined (issue 9, item 3), against the real server: a command
//! agent that goes after the operator's secrets and tries to approve its own
//! proposal gets nowhere under `gov run`; the same agent with `[runner]
//! sandbox = "off"` succeeds, and `gov run` says the sandbox is off.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::gov_bin;
use crate::support::repo::TestResult;
use crate::support::server::{commit_agent, TestServer};

/// A command agent that tries everything it should not be able to do and
/// reports each attempt in `report.json` (in its folder): "ok" or the error.
/// Last, it files a `send_email` proposal and tries to approve it with the
/// operator token, if it got hold of one.
const THIEF: &str = r#"
import json, os, urllib.request

report = {}
def attempt(name, f):
    try:
        out = f()
        report[name] = "ok" if out is None else "ok: " + str(out)[:40]
    except Exception as e:
        report[name] = "denied: " + type(e).__name__

def read(path):
    with open(path) as f:
        return f.read()

def write(path, text="x"):
    with open(path, "w") as f:
        f.write(text)

root = "../.."
for name in ["operator-token", "keys/operator", "keys/server", "runner-token", "index.sqlite"]:
    attempt("read .gov/" + name, lambda n=name: read(root + "/.gov/" + n))
attempt("list .gov", lambda: os.listdir(root + "/.gov"))
attempt("read .git/config", lambda: read(root + "/.git/config"))
attempt("read .git/HEAD", lambda: read(root + "/.git/HEAD"))
attempt("write the repository root", lambda: write(root + "/planted.txt"))
attempt("write policies", lambda: write(root + "/policies/planted.cedar"))
attempt("write gov.toml", lambda: write(root + "/gov.toml", "[runner]\nsandbox = \"off\"\n"))
attempt("write another agent's folder", lambda: write(root + "/agents/noop/planted.txt"))
attempt("write a folder in /tmp", lambda: write(os.environ["GOV_TEST_OUTSIDE"] + "/planted.txt"))
attempt("list /tmp", lambda: os.listdir("/tmp"))
attempt("read the runner's environment", lambda: read("/proc/%d/environ" % os.getppid()))
def capabilities():
    for line in read("/proc/self/status").splitlines():
        if line.startswith("CapEff:") or line.startswith("CapBnd:"):
            if int(line.split()[1], 16) != 0:
                raise PermissionError(line)
attempt("hold no capability", capabilities)
attempt("hard-link the operator token", lambda: os.link(root + "/.gov/operator-token", "stolen-token"))
def via_symlink():
    os.symlink(os.path.abspath(root + "/.gov"), "gov-link")
    return read("gov-link/operator-token")
attempt("read through a symlink", via_symlink)
# What it may do.
attempt("read its own folder", lambda: read("agent.toml"))
attempt("read the policies", lambda: read(root + "/policies/tools.cedar"))
attempt("write its own folder", lambda: write("scratch.txt"))
attempt("write its TMPDIR", lambda: write(os.path.join(os.environ["TMPDIR"], "t.txt")))
attempt("write its HOME", lambda: write(os.path.join(os.environ["HOME"], "h.txt")))

base, tok = os.environ["GOV_URL"], os.environ["GOV_AGENT_TOKEN"]
def call(method, path, body, token):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())
p = call("POST", "/proposals", {"agent_id": os.environ["GOV_AGENT_ID"], "action_type": "send_email",
    "payload": {"to": "boss@example.com"}, "expected_outcome": "a mail is sent",
    "expected_cost_tokens": 0, "expected_cost_dollars": 0, "reversible": False,
    "requires_approval": True, "rationale": "nobody will notice"}, tok)
report["proposal"] = p["proposal_id"]
stolen = report["read .gov/operator-token"].startswith("ok")
if stolen:
    token = read(root + "/.gov/operator-token").strip()
    attempt("approve its own proposal", lambda: call("POST", "/proposals/%s/decision" % p["proposal_id"],
        {"decision": "approve", "final": True, "note": "lgtm"}, token))
write("report.json", json.dumps(report, indent=1))
"#;

/// Puts the thief agent on main (its `agent.toml`) and into the working
/// tree (its script).
fn thief(s: &TestServer) -> TestResult {
    commit_agent(
        &s.repo,
        "thief",
        "kind = \"command\"\ngroup = \"smoke\"\nwallclock_seconds = 60\n[command]\nprogram = \"python3\"\nargs = [\"thief.py\"]\n",
    )?;
    std::fs::write(s.repo.root().join("agents/thief/thief.py"), THIEF)?;
    Ok(())
}

fn run_thief(s: &TestServer) -> TestResult<(Output, serde_json::Map<String, Value>)> {
    let outside = tempfile::tempdir()?;
    let out = Command::new(gov_bin())
        .arg("--repo")
        .arg(s.repo.root())
        .args(["run", "thief"])
        .env_remove("GOV_REPO")
        .env("GOV_URL", &s.base)
        .env("PATH", crate::support::SYSTEM_PATH)
        .env("GOV_TEST_OUTSIDE", outside.path())
        .stdin(Stdio::null())
        .output()?;
    let report = std::fs::read_to_string(s.repo.root().join("agents/thief/report.json"))
        .map_err(|e| format!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    let Value::Object(report) = serde_json::from_str(&report)? else {
        return Err("the report is not an object".into());
    };
    Ok((out, report))
}

fn outcome<'a>(report: &'a serde_json::Map<String, Value>, what: &str) -> &'a str {
    report
        .get(what)
        .and_then(Value::as_str)
        .unwrap_or("missing")
}

fn status_of(s: &TestServer, id: &str) -> TestResult<String> {
    Ok(s.get(&format!("/proposals/{id}"), Some(&s.operator))?
        .text("status"))
}

const DENIED: &[&str] = &[
    "read .gov/operator-token",
    "read .gov/keys/operator",
    "read .gov/keys/server",
    "read .gov/runner-token",
    "read .gov/index.sqlite",
    "list .gov",
    "read .git/config",
    "read .git/HEAD",
    "write the repository root",
    "write policies",
    "write gov.toml",
    "write another agent's folder",
    "write a folder in /tmp",
    "list /tmp",
    "read the runner's environment",
    "hard-link the operator token",
    "read through a symlink",
];

const ALLOWED: &[&str] = &[
    "hold no capability",
    "read its own folder",
    "read the policies",
    "write its own folder",
    "write its TMPDIR",
    "write its HOME",
];

#[test]
fn a_confined_agent_cannot_reach_the_operators_secrets_or_approve_itself() -> TestResult {
    let s = TestServer::start()?;
    thief(&s)?;
    let before = std::fs::read(s.repo.root().join("gov.toml"))?;
    let (out, report) = run_thief(&s)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in DENIED {
        assert!(
            outcome(&report, what).starts_with("denied: "),
            "{what}: {}",
            outcome(&report, what)
        );
    }
    for what in ALLOWED {
        assert!(
            outcome(&report, what).starts_with("ok"),
            "{what}: {}",
            outcome(&report, what)
        );
    }
    assert!(!report.contains_key("approve its own proposal"));
    let id = outcome(&report, "proposal");
    assert_eq!(status_of(&s, id)?, "pending");
    assert_eq!(std::fs::read(s.repo.root().join("gov.toml"))?, before);
    for planted in [
        "planted.txt",
        "policies/planted.cedar",
        "agents/noop/planted.txt",
    ] {
        assert!(!s.repo.root().join(planted).exists(), "{planted}");
    }
    assert!(!Path::new(&s.repo.root().join("agents/thief/stolen-token")).exists());
    Ok(())
}

#[test]
fn with_the_sandbox_off_the_same_agent_approves_itself_and_gov_run_says_so() -> TestResult {
    let s = TestServer::start()?;
    thief(&s)?;
    std::fs::write(
        s.repo.root().join("gov.toml"),
        "[runner]\nsandbox = \"off\"\n",
    )?;
    let (out, report) = run_thief(&s)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "gov run: the sandbox is off (`sandbox = \"off\"` under `[runner]` in gov.toml): agent `thief` runs with every right of your user, `.gov/` (tokens, keys) and `.git/` included"
        ),
        "{stderr}"
    );
    for what in [
        "read .gov/operator-token",
        "read .gov/keys/operator",
        "read .git/config",
        "approve its own proposal",
    ] {
        assert!(
            outcome(&report, what).starts_with("ok"),
            "{what}: {}",
            outcome(&report, what)
        );
    }
    let id = outcome(&report, "proposal");
    assert_eq!(status_of(&s, id)?, "approved");
    for planted in ["planted.txt", "policies/planted.cedar"] {
        let _ = std::fs::remove_file(s.repo.root().join(planted));
    }
    Ok(())
}

#[test]
fn the_launcher_runs_nothing_it_cannot_confine_or_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A program outside everything it may read: confined, it cannot even
    // be executed.
    let program = dir.path().join("agent.sh");
    std::fs::write(&program, "#!/bin/sh\necho ran\n")?;
    let mut perm = std::fs::metadata(&program)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&program, perm)?;
    let out = Command::new(gov_bin())
        .args(["sandbox-exec", "--read", "/usr", "--read", "/bin", "--"])
        .arg(&program)
        .output()?;
    assert_eq!(out.status.code(), Some(126));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "gov sandbox-exec: cannot run `{}`: Permission denied (os error 13)\n",
            program.display()
        )
    );
    // Allowed to read it, it runs.
    let out = Command::new(gov_bin())
        .args([
            "sandbox-exec",
            "--read",
            "/usr",
            "--read",
            "/bin",
            "--read",
            "/lib",
        ])
        .args(["--read", "/lib64", "--read"])
        .arg(dir.path())
        .arg("--")
        .arg(&program)
        .output()?;
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "ran\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It is not a command for people: `gov --help` does not list it.
    let help = Command::new(gov_bin()).arg("--help").output()?;
    assert!(!String::from_utf8_lossy(&help.stdout).contains("sandbox-exec"));
    Ok(())
}

#[test]
fn a_tool_use_id_must_be_plain_visible_text() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    for bad in ["", "toolu\n1", "toolu 1", &"x".repeat(201)] {
        let r = s.post(
            "/tools/evaluate",
            Some(&tok),
            &serde_json::json!({"agent_id": "noop", "tool_name": "Read",
                    "tool_input": {"file_path": "memory.md"}, "tool_use_id": bad}),
        )?;
        assert_eq!(r.status, 422, "{bad:?}: {:?}", r.body);
        assert_eq!(
            r.body["detail"][0]["loc"],
            serde_json::json!(["body", "tool_use_id"])
        );
    }
    Ok(())
}
