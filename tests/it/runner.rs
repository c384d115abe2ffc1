//! `gov run` and `gov hook pre-tool-use`, without the real server: a canned
//! HTTP stub answering with the API's own types (`gov::wire`) stands in for
//! it, and `tests/fake-claude` for Claude Code. Each runs in a repository
//! made by `gov init`, its agents committed to `main`, so the runner's
//! check of an agent against `main` runs too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gov::domain::proposal::ProposalStatus;
use gov::domain::request::PolicyCitation;
use gov::runner::process::{own_process_group, supervise, Ending, Supervision};
use gov::runner::stream_json::StreamSummary;
use gov::wire;
use serde_json::{json, Value};

use crate::support::repo::TestRepo;
use crate::support::server::{commit_agent, commit_to_main};
use crate::support::{fixture, gov_bin, text, SYSTEM_PATH};

// ---------------------------------------------------------------- harness

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    auth: String,
    body: Value,
}

type Route = dyn Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1:0 answering canned JSON.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn start(route: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let rec = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (rec, route) = (Arc::clone(&rec), Arc::clone(&route));
                std::thread::spawn(move || serve_one(stream, &rec, &*route));
            }
        });
        Stub { url, seen }
    }

    fn seen(&self, path_prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }
}

fn serve_one(stream: TcpStream, rec: &Mutex<Vec<Seen>>, route: &Route) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut auth) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    rec.lock().expect("lock").push(Seen {
        method: method.clone(),
        path: path.clone(),
        auth,
        body: body.clone(),
    });
    let (code, answer) = route(&method, &path, &body);
    let text = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// A reply body built from the API's own type, so the stand-in answers what
/// the server answers.
fn wire_json(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or_default()
}

/// The usual server: runs open, finish, tool calls answered by tool name.
fn normal_route(method: &str, path: &str, body: &Value) -> (u16, Value) {
    match (method, path) {
        ("POST", "/runs") => (
            201,
            wire_json(&wire::RunOpened {
                run_id: "run-1".into(),
                agent_id: body["agent_id"].as_str().unwrap_or_default().into(),
                agent_token: "agent-secret".into(),
                reservation: Some(wire::RunReservation {
                    tokens: 50_000,
                    dollars: 5.0,
                    hold_until: 0,
                }),
            }),
        ),
        ("POST", p) if p.starts_with("/runs/") && p.ends_with("/finish") => {
            // The server records the runner's end (it would fail a run with
            // an undecided tool call; none of these has one).
            let end: wire::RunFinish = match serde_json::from_value(body.clone()) {
                Ok(end) => end,
                Err(e) => return (422, json!({"detail": e.to_string()})),
            };
            (
                200,
                wire_json(&wire::RunFinished {
                    status: end.status,
                    reason: end.reason,
                    budget: stub_budget(),
                    run: wire::RunSpend {
                        tokens_reserved: 50_000,
                        dollars_reserved: 5.0,
                        tokens_spent: 5540,
                        dollars_spent: 0.0831,
                    },
                }),
            )
        }
        ("POST", p) if p.starts_with("/runs/") && p.ends_with("/usage") => (
            200,
            wire_json(&wire::RunCharged {
                budget: stub_budget(),
                run: wire::RunSpend {
                    tokens_reserved: 50_000,
                    dollars_reserved: 5.0,
                    tokens_spent: 0,
                    dollars_spent: 0.0,
                },
                stop: false,
                stop_reason: None,
            }),
        ),
        ("POST", "/tools/evaluate") => {
            let verdict = |decision, reason: &str, policy: &str, proposal_id: Option<&str>| {
                wire_json(&wire::ToolVerdict {
                    decision,
                    reason: reason.into(),
                    policies: vec![PolicyCitation {
                        id: policy.into(),
                        reason: String::new(),
                        effect: None,
                    }],
                    proposal_id: proposal_id.map(str::to_string),
                })
            };
            let answer = match body["tool_name"].as_str() {
                Some("Read") => verdict(
                    wire::ToolDecision::Allow,
                    "reading is fine",
                    "tools-read",
                    None,
                ),
                Some("WebFetch") => verdict(
                    wire::ToolDecision::NeedsPerson,
                    "network access",
                    "tools-web",
                    Some("p-7"),
                ),
                _ => verdict(
                    wire::ToolDecision::Deny,
                    "no shell for researchers",
                    "tools-default-deny",
                    None,
                ),
            };
            (200, answer)
        }
        _ => (404, json!({"error": "not_found"})),
    }
}

/// An agent's budget as the stand-in answers it: 97% left.
fn stub_budget() -> wire::Budget {
    wire::Budget {
        agent_id: "res".into(),
        wave: 0,
        tokens_consumed: 5540,
        tokens_cap: 1_000_000,
        dollars_consumed: 0.3,
        dollars_cap: 10.0,
        status: wire::AgentStatus::Ok,
        remaining_pct: 97.0,
        period: "lifetime".into(),
        paused_reason: None,
        tokens_reserved: None,
        dollars_reserved: None,
    }
}

/// A governance repository made by `gov init` (`app::init`) in a temp dir,
/// with one claude agent (`res`) and one command agent (`cmd`) committed
/// to `main` by the operator, so `gov run` checks each agent against main.
struct Repo {
    repo: TestRepo,
}

impl Repo {
    fn new(claude_wallclock: u64) -> Repo {
        let repo = TestRepo::new().expect("gov init");
        let root = repo.root().to_path_buf();
        // No server of this repository listens on port 1.
        let toml_path = root.join("gov.toml");
        let toml = std::fs::read_to_string(&toml_path).expect("gov.toml");
        assert!(toml.contains("\n# port = 8005\n"), "gov init's gov.toml");
        // And no `[prices]`: every token at the flat rate, as the charges
        // below are computed.
        let mut in_prices = false;
        let kept: Vec<&str> = toml
            .lines()
            .filter(|l| {
                if l.starts_with('[') {
                    in_prices = l.starts_with("[prices.");
                }
                !in_prices
            })
            .collect();
        let toml = kept.join("\n").replace("\n# port = 8005\n", "\nport = 1\n");
        std::fs::write(&toml_path, toml).expect("write gov.toml");
        std::fs::write(root.join(".gov/runner-token"), "runner-secret\n").expect("token");
        let files = [
            (
                "agents/res/agent.toml".to_string(),
                format!(
                    "kind = \"claude\"\ngroup = \"research\"\nwallclock_seconds = {claude_wallclock}\n\
                     [claude]\nmodel = \"claude-sonnet-4-5\"\nmax_budget_usd = 1.5\n"
                ),
            ),
            ("agents/res/CLAUDE.md".into(), "Propose before acting.\n".into()),
            ("agents/res/tasks/t.md".into(), "Do the task.\n".into()),
            (
                "agents/cmd/agent.toml".into(),
                "kind = \"command\"\nwallclock_seconds = 30\n[command]\nprogram = \"./agent.sh\"\nargs = [\"one\"]\n".into(),
            ),
        ];
        let files: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .map(|(p, t)| (p, t.into_bytes()))
            .collect();
        commit_to_main(&repo, &files, "runner test agents").expect("commit agents");
        executable(
            &root.join("agents/cmd/agent.sh"),
            "#!/bin/sh\npwd > ran.txt\necho \"$1\" >> ran.txt\nenv >> ran.txt\nexit ${CMD_EXIT:-0}\n",
        );
        Repo { repo }
    }

    fn root(&self) -> &Path {
        self.repo.root()
    }

    /// Commits an agent's `agent.toml` onto main and into the working tree.
    fn commit_agent(&self, id: &str, agent_toml: &str) {
        commit_agent(&self.repo, id, agent_toml).expect("commit agent");
    }

    /// In the claude agent's folder: under the sandbox, the agent writes
    /// nowhere else that outlives the run.
    fn log(&self) -> PathBuf {
        self.root().join("agents/res/fake-claude.log")
    }

    /// The lines fake-claude logged: its argv and env first, then tool calls.
    fn fake_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }

    fn gov(&self, url: &str, scenario: &str) -> Command {
        let mut cmd = Command::new(gov_bin());
        cmd.current_dir(self.root())
            .env("GOV_REPO", self.root())
            .env("GOV_URL", url)
            .env("CLAUDE_BIN", fake_claude())
            .env("FAKE_CLAUDE_SCENARIO", fixture(scenario))
            .env("FAKE_CLAUDE_LOG", self.log())
            .env("GOV_KILL_GRACE_MS", "300")
            .env("GOV_OPERATOR_TOKEN", "operator-secret")
            .env("SOME_API_KEY", "leak-me-not")
            .env("CLAUDE_CODE_SIMPLE", "1")
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null());
        cmd
    }
}

fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-claude")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run gov")
}

/// A port on which nothing listens.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    format!("http://127.0.0.1:{port}")
}

fn hook(stdin: &str, env: &[(&str, &str)]) -> (Output, Value) {
    let mut child = Command::new(gov_bin())
        .args(["hook", "pre-tool-use"])
        .env_remove("GOV_URL")
        .env_remove("GOV_AGENT_ID")
        .env_remove("GOV_RUN_ID")
        .env_remove("GOV_AGENT_TOKEN")
        .env_remove("GOV_SESSION_FILE")
        .env_remove("GOV_APPROVAL_WAIT_SECONDS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("hook output");
    let v: Value = serde_json::from_slice(&out.stdout).expect("hook prints JSON");
    (out, v)
}

const HOOK_INPUT: &str = r#"{"session_id":"s","transcript_path":"/t","cwd":"/w","hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"ls"}}"#;

fn decision(v: &Value) -> (&str, &str) {
    let o = &v["hookSpecificOutput"];
    assert_eq!(o["hookEventName"], "PreToolUse");
    (
        o["permissionDecision"].as_str().expect("decision"),
        o["permissionDecisionReason"].as_str().expect("reason"),
    )
}

// ---------------------------------------------------------------- the hook

#[test]
fn hook_with_no_server_denies_and_exits_zero() {
    let url = dead_url();
    let (out, v) = hook(
        HOOK_INPUT,
        &[
            ("GOV_URL", &url),
            ("GOV_AGENT_ID", "a"),
            ("GOV_RUN_ID", "r"),
            ("GOV_AGENT_TOKEN", "t"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let (d, why) = decision(&v);
    assert_eq!(d, "deny");
    assert!(why.contains("cannot reach"), "{why}");
}

#[test]
fn hook_without_its_environment_denies() {
    let (out, v) = hook(HOOK_INPUT, &[]);
    assert_eq!(out.status.code(), Some(0));
    let (d, why) = decision(&v);
    assert_eq!(d, "deny");
    assert!(why.contains("GOV_URL"), "{why}");
}

#[test]
fn hook_with_bad_input_or_answer_denies() {
    let stub = Stub::start(|_, _, _| (200, json!({"decision": "perhaps"})));
    let env = [
        ("GOV_URL", stub.url.as_str()),
        ("GOV_AGENT_ID", "a"),
        ("GOV_RUN_ID", "r"),
        ("GOV_AGENT_TOKEN", "t"),
    ];
    let (_, v) = hook("not json", &env);
    assert_eq!(decision(&v).0, "deny");
    let (_, v) = hook(HOOK_INPUT, &env);
    let (d, why) = decision(&v);
    assert_eq!(d, "deny");
    assert!(why.contains("not what was expected"), "{why}");
    let stub = Stub::start(|_, _, _| (500, json!({"error": "internal"})));
    let env = [
        ("GOV_URL", stub.url.as_str()),
        ("GOV_AGENT_ID", "a"),
        ("GOV_RUN_ID", "r"),
        ("GOV_AGENT_TOKEN", "t"),
    ];
    let (_, v) = hook(HOOK_INPUT, &env);
    assert_eq!(decision(&v).0, "deny");
}

#[test]
fn hook_asks_with_the_agent_token() {
    let stub = Stub::start(normal_route);
    let env = [
        ("GOV_URL", stub.url.as_str()),
        ("GOV_AGENT_ID", "res"),
        ("GOV_RUN_ID", "run-9"),
        ("GOV_AGENT_TOKEN", "tok-9"),
        ("PATH", "/usr/bin:/bin"),
    ];
    let (_, v) = hook(&HOOK_INPUT.replace("Bash", "Read"), &env);
    assert_eq!(decision(&v).0, "allow");
    let seen = stub.seen("/tools/evaluate");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].auth, "Bearer tok-9");
    assert_eq!(
        seen[0].body,
        json!({"agent_id": "res", "run_id": "run-9", "tool_name": "Read", "tool_input": {"command": "ls"}, "cwd": "/w",
               "path_var": "/usr/bin:/bin"})
    );
}

// ---------------------------------------------------------------- stream-json

#[test]
fn usage_is_summed_from_the_fixtures() {
    let read =
        |n: &str| StreamSummary::from_text(&std::fs::read_to_string(fixture(n)).expect("fixture"));
    let ok = read("success.jsonl").result.expect("result");
    assert!(ok.succeeded());
    assert_eq!(ok.usage.total(), 1200 + 300 + 4000 + 40);
    assert_eq!(ok.total_cost_usd, Some(0.0123));
    let err = read("error.jsonl").result.expect("result");
    assert!(!err.succeeded());
    assert_eq!(err.error_reason(), "error_result: error_max_turns");
    assert_eq!(err.usage.total(), 10_000);
    assert!(read("no-result.jsonl").result.is_none());
}

// ---------------------------------------------------------------- supervision

fn sh(script: &str) -> std::process::Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    own_process_group(&mut cmd).spawn().expect("spawn")
}

#[test]
fn a_child_past_its_wall_clock_is_terminated() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = sh("sleep 30");
    let sup = Supervision::new(Duration::from_millis(200), Duration::from_secs(5));
    let started = Instant::now();
    let out = supervise(&mut child, &sup, &AtomicBool::new(false)).expect("supervise");
    assert_eq!(out.ending, Ending::WallClock);
    assert!(!out.killed, "SIGTERM was enough");
    assert_eq!(out.status.signal(), Some(15));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_child_that_ignores_sigterm_is_killed() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = sh("trap '' TERM; sleep 30");
    let sup = Supervision::new(Duration::from_millis(200), Duration::from_millis(300));
    let started = Instant::now();
    let out = supervise(&mut child, &sup, &AtomicBool::new(false)).expect("supervise");
    assert_eq!(out.ending, Ending::WallClock);
    assert!(out.killed);
    assert_eq!(out.status.signal(), Some(9));
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------- gov run

#[test]
fn run_of_an_unknown_agent_is_not_found() {
    let repo = Repo::new(60);
    let out = run(repo
        .gov(&dead_url(), "success.jsonl")
        .args(["run", "nobody"]));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(
        err,
        format!(
            "error: unknown agent `nobody`: no `{}` (agents here: cmd, noop, res, researcher)\n",
            repo.root().join("agents/nobody/agent.toml").display()
        )
    );
}

#[test]
fn claude_agents_need_an_existing_task() {
    let repo = Repo::new(60);
    let out = run(repo.gov(&dead_url(), "success.jsonl").args(["run", "res"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(repo
        .gov(&dead_url(), "success.jsonl")
        .args(["run", "res", "nope"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: no task `nope`: cannot read `{}`\n",
            repo.root().join("agents/res/tasks/nope.md").display()
        )
    );
}

#[test]
fn run_with_the_server_down_starts_nothing() {
    let repo = Repo::new(60);
    let out = run(repo.gov(&dead_url(), "success.jsonl").args(["run", "cmd"]));
    assert_eq!(out.status.code(), Some(8));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: cannot start a run, nothing was run: cannot reach the gov server at `")
            && err.ends_with("; is `gov serve` running for this repository? (the server is `GOV_URL`, else the one `.gov/server.json` names, else `[server] port`)\n"),
        "{err}"
    );
    assert!(!repo.root().join("agents/cmd/ran.txt").exists());
    let out = run(repo
        .gov(&dead_url(), "success.jsonl")
        .args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(8));
    assert!(!repo.log().exists(), "claude never started");
}

#[test]
fn a_paused_agent_is_skipped() {
    let repo = Repo::new(60);
    let stub = Stub::start(|_, _, _| {
        (
            423,
            json!({"error": "agent_paused", "detail": "over budget", "policies": [{"id": "budget-cap", "reason": ""}]}),
        )
    });
    let out = run(repo
        .gov(&stub.url, "success.jsonl")
        .args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "skipped: agent `res` did not run: the agent is paused: over budget (policies: budget-cap)\n"
    );
    assert!(!repo.log().exists());
    assert!(stub.seen("/runs/").is_empty(), "nothing to finish");
}

#[test]
fn a_claude_run_is_charged_its_usage() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let out = run(repo
        .gov(&stub.url, "success.jsonl")
        .args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // One line: the outcome, the spend, what is left, where the log is.
    let said = text(&out.stdout);
    let log = said
        .strip_prefix(
            "complete: run `run-1` of agent `res` (5540 tokens, $0.0831; 97% of the budget left; log `",
        )
        .and_then(|rest| rest.strip_suffix("`)\n"))
        .unwrap_or_else(|| panic!("the run's line: {said}"));
    assert!(std::path::Path::new(log).is_file(), "{said}");

    let open = stub.seen("/runs");
    assert_eq!(open[0].auth, "Bearer runner-secret");
    assert_eq!(open[0].body, json!({"agent_id": "res", "task_id": "t"}));
    // The assistant message is charged as it streams (no `[prices]` here:
    // the flat $0.015 per 1,000 tokens), the result adds nothing more.
    let usage = stub.seen("/runs/run-1/usage");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].auth, "Bearer runner-secret");
    assert_eq!(
        usage[0].body,
        json!({"charges": [{"model": "claude-sonnet-4-5-20250929", "input_tokens": 1200,
                            "output_tokens": 40, "cache_creation_input_tokens": 300,
                            "cache_read_input_tokens": 4000, "micros": 83_100}],
               "estimate": true})
    );
    let finish = stub.seen("/runs/run-1/finish");
    assert_eq!(finish[0].auth, "Bearer runner-secret");
    assert_eq!(
        finish[0].body,
        json!({"status": "complete", "reason": null, "usage_missing": false, "charges": [],
               "estimate": false, "claude_cost_usd": 0.0123})
    );

    let log = repo.fake_log();
    let argv: Vec<&str> = log[0]["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--strict-mcp-config",
        "--settings",
        "--session-id",
        "--append-system-prompt",
        "--setting-sources=",
    ] {
        assert!(argv.contains(&flag), "{flag} in {argv:?}");
    }
    assert_eq!(argv[1], "Do the task.\n");
    let after = |f: &str| argv[argv.iter().position(|a| *a == f).expect(f) + 1];
    assert_eq!(after("--model"), "claude-sonnet-4-5");
    assert_eq!(after("--max-budget-usd"), "1.5");
    assert_eq!(after("--permission-mode"), "dontAsk");
    let env: Vec<&str> = log[0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for var in [
        "GOV_URL",
        "GOV_AGENT_ID",
        "GOV_RUN_ID",
        "GOV_AGENT_TOKEN",
        "GOV_TASK_ID",
        "GOV_REPO",
    ] {
        assert!(env.contains(&var), "{var}");
    }
    for gone in ["GOV_OPERATOR_TOKEN", "SOME_API_KEY", "CLAUDE_CODE_SIMPLE"] {
        assert!(!env.contains(&gone), "{gone} in {env:?}");
    }
    assert!(log[0]["cwd"].as_str().expect("cwd").ends_with("agents/res"));

    let saved =
        std::fs::read_to_string(repo.root().join(".gov/runs/run-1.jsonl")).expect("run log");
    assert_eq!(saved.lines().count(), 3);
    assert!(saved
        .lines()
        .last()
        .expect("line")
        .contains("\"type\":\"result\""));
}

#[test]
fn tool_calls_go_through_the_policy_set() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let out = run(repo.gov(&stub.url, "tools.jsonl").args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let calls: Vec<(String, String, String)> = repo.fake_log()[1..]
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().expect(k).to_string();
            (s("tool_name"), s("decision"), s("reason"))
        })
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        (calls[0].0.as_str(), calls[0].1.as_str()),
        ("Read", "allow")
    );
    assert_eq!((calls[1].0.as_str(), calls[1].1.as_str()), ("Bash", "deny"));
    assert!(
        calls[1].2.contains("no shell for researchers"),
        "{}",
        calls[1].2
    );
    assert_eq!(
        (calls[2].0.as_str(), calls[2].1.as_str()),
        ("WebFetch", "deny")
    );
    assert!(
        calls[2].2.contains("p-7") && calls[2].2.contains("identical call"),
        "{}",
        calls[2].2
    );

    let asked = stub.seen("/tools/evaluate");
    assert_eq!(asked.len(), 3);
    assert!(asked
        .iter()
        .all(|s| s.auth == "Bearer agent-secret" && s.body["run_id"] == "run-1"));
    assert_eq!(
        asked[1].body["tool_input"]["command"],
        "curl https://example.com"
    );
    // Three tool-call messages (2 tokens each) and the last message (4,080)
    // charged as they streamed: more than the result's main-loop `usage`,
    // so nothing is left for the end.
    let streamed: u64 = stub
        .seen("/runs/run-1/usage")
        .iter()
        .flat_map(|u| u.body["charges"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            [
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ]
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(0))
            .sum::<u64>()
        })
        .sum();
    assert_eq!(streamed, 4086);
    let finish = stub.seen("/runs/run-1/finish");
    assert_eq!(finish[0].body["charges"], json!([]));
}

#[test]
fn an_error_result_fails_the_run_and_still_charges() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let out = run(repo.gov(&stub.url, "error.jsonl").args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("error_max_turns"));
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    // The result's main-loop usage (no `modelUsage`) beyond what streamed.
    assert_eq!(
        *body,
        json!({"status": "failed", "reason": "error_result: error_max_turns", "usage_missing": false,
               "charges": [{"model": "claude-sonnet-4-5-20250929", "input_tokens": 8100,
                            "output_tokens": 688, "cache_creation_input_tokens": 100,
                            "cache_read_input_tokens": 200, "micros": 136_320}],
               "estimate": false, "claude_cost_usd": 0.0456})
    );
}

#[test]
fn no_result_event_is_usage_missing() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let out = run(repo
        .gov(&stub.url, "no-result.jsonl")
        .args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(1));
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    // Charged as it streamed; no result: an estimate, nothing more to charge.
    assert_eq!(stub.seen("/runs/run-1/usage").len(), 1);
    assert_eq!(
        *body,
        json!({"status": "failed", "reason": "no_result_event", "usage_missing": true,
               "charges": [], "estimate": true, "claude_cost_usd": null})
    );
}

#[test]
fn the_wall_clock_stops_a_slow_run() {
    let repo = Repo::new(1);
    let stub = Stub::start(normal_route);
    let started = Instant::now();
    let out = run(repo.gov(&stub.url, "slow.jsonl").args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        text(&out.stderr).contains("wall clock"),
        "{}",
        text(&out.stderr)
    );
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    assert_eq!(body["reason"], "wallclock");
    assert_eq!(body["usage_missing"], true);
}

#[test]
fn sigterm_to_the_runner_stops_the_agent_and_records_it() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let child = repo
        .gov(&stub.url, "slow.jsonl")
        .args(["run", "res", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while repo.fake_log().is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15));
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    assert_eq!(body["reason"], "interrupted");
}

#[test]
fn a_command_agent_runs_in_its_folder_with_the_run_environment() {
    let repo = Repo::new(60);
    let stub = Stub::start(normal_route);
    let out = run(repo.gov(&stub.url, "success.jsonl").args(["run", "cmd"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ran = std::fs::read_to_string(repo.root().join("agents/cmd/ran.txt")).expect("ran");
    let mut lines = ran.lines();
    assert!(lines.next().expect("pwd").ends_with("agents/cmd"));
    assert_eq!(lines.next(), Some("one"));
    assert!(ran.contains("GOV_AGENT_TOKEN=agent-secret") && ran.contains("GOV_RUN_ID=run-1"));
    assert!(ran.lines().any(|l| l == "GOV_TASK_ID="), "no task: empty");
    assert!(!ran.contains("operator-secret") && !ran.contains("leak-me-not"));
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    assert_eq!(
        *body,
        json!({"status": "complete", "reason": null, "usage_missing": false, "charges": [],
               "estimate": false, "claude_cost_usd": null})
    );

    let out = run(repo
        .gov(&stub.url, "success.jsonl")
        .env("CMD_EXIT", "7")
        .args(["run", "cmd"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stub.seen("/runs/run-1/finish")[1].body["reason"],
        "exit_status: 7"
    );
}

// ---------------------------------------------------------------- bundled agents

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn noop_route(
    decision: ProposalStatus,
) -> impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync {
    let polls = std::sync::atomic::AtomicUsize::new(0);
    move |method, path, body| match (method, path) {
        ("POST", "/proposals") => (
            200,
            wire_json(&wire::ProposalFiled {
                proposal_id: "p-1".into(),
                status: ProposalStatus::Pending,
                review_url: "http://127.0.0.1:1/#proposal-p-1".into(),
                policies: vec![],
                policy_version: "v".into(),
                branch: Some("gov/proposal/p-1".into()),
                commit: None,
            }),
        ),
        ("GET", "/proposals/p-1") => {
            let n = polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let now = gov::domain::audit::Timestamp(chrono::Utc::now());
            let mut p = gov::domain::proposal::Proposal::pending(
                "p-1".into(),
                gov::domain::proposal::Proposed::new(
                    "noop".into(),
                    "publish_content".into(),
                    serde_json::Map::new(),
                ),
                now,
                now,
            );
            if n >= 2 {
                p.status = decision;
            }
            let view = wire::ProposalView {
                proposal: p,
                audit_commit: None,
            };
            (200, wire_json(&view))
        }
        ("POST", "/audit") => (
            200,
            wire_json(&wire::AuditPosted {
                audit_id: 1,
                ts: gov::domain::audit::Timestamp(chrono::Utc::now()),
            }),
        ),
        _ => normal_route(method, path, body),
    }
}

#[test]
fn the_bundled_noop_agent_runs_the_whole_loop() {
    for (decision, executed) in [
        (ProposalStatus::Approved, true),
        (ProposalStatus::Rejected, false),
    ] {
        let repo = Repo::new(60);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/noop"),
            &repo.root().join("agents/noop"),
        );
        let stub = Stub::start(noop_route(decision));
        let out = run(repo
            .gov(&stub.url, "success.jsonl")
            .env("GOV_NOOP_POLL", "0.05")
            .args(["run", "noop", "smoke"]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );

        let proposal = &stub.seen("/proposals")[0];
        assert_eq!(proposal.auth, "Bearer agent-secret");
        assert_eq!(proposal.body["action_type"], "publish_content");
        assert_eq!(proposal.body["requires_approval"], true);
        let events: Vec<String> = stub
            .seen("/audit")
            .iter()
            .map(|s| s.body["event_type"].as_str().expect("event").to_string())
            .collect();
        if executed {
            assert_eq!(events, ["action_executed", "agent_stop"]);
            let exec = &stub.seen("/audit")[0].body;
            assert_eq!(exec["proposal_id"], "p-1");
            assert_eq!(exec["task_id"], "smoke");
            assert!(exec["payload"]["output"]
                .as_str()
                .expect("output")
                .starts_with("noop smoke: hello"));
        } else {
            assert_eq!(events, ["agent_stop"]);
        }
        let memory =
            std::fs::read_to_string(repo.root().join("agents/noop/memory.md")).expect("memory");
        assert!(
            memory
                .lines()
                .last()
                .expect("line")
                .contains(&format!("proposal p-1 {decision}")),
            "{memory}"
        );
        assert_eq!(
            stub.seen("/runs/run-1/finish")[0].body["status"],
            "complete"
        );
    }
}

#[test]
fn noop_gives_up_without_a_decision() {
    let repo = Repo::new(60);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/noop"),
        &repo.root().join("agents/noop"),
    );
    let stub = Stub::start(noop_route(ProposalStatus::Pending));
    let out = run(repo
        .gov(&stub.url, "success.jsonl")
        .env("GOV_NOOP_POLL", "0.05")
        .env("GOV_NOOP_TIMEOUT", "0.3")
        .args(["run", "noop"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no decision on proposal p-1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        stub.seen("/runs/run-1/finish")[0].body["reason"],
        "exit_status: 1"
    );
}

#[test]
fn the_bundled_agents_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings =
        gov::config::Settings::from_toml(root, &root.join("gov.toml"), "").expect("settings");
    let noop = gov::config::AgentSettings::load(&settings, "noop").expect("noop");
    assert_eq!(noop.kind, gov::config::AgentKind::Command);
    assert_eq!(noop.group, "smoke");
    let researcher = gov::config::AgentSettings::load(&settings, "researcher").expect("researcher");
    assert_eq!(researcher.kind, gov::config::AgentKind::Claude);
    assert_eq!(researcher.group, "research");
    assert!(researcher.claude_max_budget.is_some());
    assert!(root
        .join("agents/researcher")
        .join(&researcher.claude_prompt_file)
        .is_file());
}

// ---------------------------------------------------------------- Claude Code settings

/// Runs fake-claude once, outside `gov run`, in `cwd` with `args`, on a
/// scenario of one Bash call; returns its logged decision and reason.
fn one_call(cwd: &Path, args: &[&str]) -> (String, String) {
    let scenario = cwd.join("one-call.jsonl");
    std::fs::write(
        &scenario,
        "{\"fake\":\"tool\",\"tool_name\":\"Bash\",\"tool_input\":{\"command\":\"ls\"}}\n",
    )
    .expect("scenario");
    let log = cwd.join("one-call.log");
    let _ = std::fs::remove_file(&log);
    let out = Command::new(fake_claude())
        .args(["-p", "task", "--output-format", "stream-json"])
        .args(args)
        .current_dir(cwd)
        .env("FAKE_CLAUDE_SCENARIO", &scenario)
        .env("FAKE_CLAUDE_LOG", &log)
        .env("HOME", cwd)
        .env_remove("CLAUDE_CONFIG_DIR")
        .env_remove("CLAUDE_CODE_SIMPLE")
        .output()
        .expect("fake-claude runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let call = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|v| v.get("tool_name").is_some())
        .expect("a tool call");
    let s = |k: &str| call[k].as_str().expect(k).to_string();
    (s("decision"), s("reason"))
}

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).expect("write");
    let mut perm = std::fs::metadata(path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(path, perm).expect("chmod");
}

#[test]
fn a_hook_that_fails_under_govs_settings_blocks_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let deadline = gov::runner::hook::HOOK_DEADLINE;
    for (name, script, timeout) in [
        ("crashes", "#!/bin/sh\necho boom >&2\nexit 1\n", None),
        (
            "garbles",
            "#!/bin/sh\necho '{\"hookSpecificOutput\": '\n",
            None,
        ),
        // Claude Code's timeout is what gov writes (25 s); a shorter one
        // keeps this test fast: what blocks is `onFailure`, whatever the
        // timeout.
        ("hangs", "#!/bin/sh\nsleep 30\n", Some(1)),
        ("is missing", "", None),
    ] {
        let program = d.join(name.replace(' ', "-"));
        if !script.is_empty() {
            executable(&program, script);
        }
        let mut settings = gov::runner::claude::hook_settings(&program, deadline);
        if let Some(t) = timeout {
            settings["hooks"]["PreToolUse"][0]["hooks"][0]["timeout"] = json!(t);
        }
        let path = d.join("settings.json");
        std::fs::write(&path, settings.to_string()).expect("settings");
        let flags = [
            "--setting-sources=",
            "--settings",
            path.to_str().expect("utf-8"),
        ];
        let (decision, reason) = one_call(d, &flags);
        assert_eq!(decision, "deny", "a hook that {name}: {reason}");
        assert!(reason.contains("onFailure: block"), "{name}: {reason}");

        // Without `onFailure`, Claude Code's default lets the call run: the
        // settings are what makes the difference.
        let hook = &mut settings["hooks"]["PreToolUse"][0]["hooks"][0];
        hook.as_object_mut().expect("hook").remove("onFailure");
        std::fs::write(&path, settings.to_string()).expect("settings");
        let (decision, reason) = one_call(d, &flags);
        assert_eq!(decision, "allow", "{name} without onFailure: {reason}");
    }
}

#[test]
fn fake_claude_honours_disable_all_hooks_where_it_reads_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let deny = d.join("deny.sh");
    executable(&deny, "#!/bin/sh\necho 'no' >&2\nexit 2\n");
    let settings = gov::runner::claude::hook_settings(&deny, gov::runner::hook::HOOK_DEADLINE);
    let path = d.join("gov-settings.json");
    std::fs::write(&path, settings.to_string()).expect("settings");
    std::fs::create_dir_all(d.join(".claude")).expect("mkdir");
    std::fs::write(
        d.join(".claude/settings.json"),
        r#"{"disableAllHooks": true}"#,
    )
    .expect("write");
    let settings_arg = path.to_str().expect("utf-8");
    // What gov passed before: the project's settings are read, and the
    // agent's `disableAllHooks` switches the hook off.
    let (decision, reason) = one_call(
        d,
        &["--setting-sources", "project", "--settings", settings_arg],
    );
    assert_eq!(
        (decision.as_str(), reason.as_str()),
        ("allow", "hooks are off")
    );
    // What gov passes now: no settings source the agent can write.
    let (decision, _) = one_call(d, &["--setting-sources=", "--settings", settings_arg]);
    assert_eq!(decision, "deny");
}

#[test]
fn settings_an_agent_writes_do_not_switch_gov_off() {
    let repo = Repo::new(60);
    // Left by an earlier run, in the agent's own folder...
    let claude_dir = repo.root().join("agents/res/.claude");
    std::fs::create_dir_all(&claude_dir).expect("mkdir");
    std::fs::write(
        claude_dir.join("settings.json"),
        r#"{"disableAllHooks": true}"#,
    )
    .expect("write");
    let stub = Stub::start(normal_route);
    // ...and written during the run, in its folder and its home.
    let out = run(repo
        .gov(&stub.url, "disable-hooks.jsonl")
        .args(["run", "res", "t"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = repo.fake_log();
    let writes: Vec<(&str, bool)> = log
        .iter()
        .filter_map(|e| Some((e["write"].as_str()?, e["ok"].as_bool()?)))
        .collect();
    assert_eq!(
        writes,
        [
            ("~/.claude/settings.json", true),
            (".claude/settings.local.json", true)
        ]
    );
    let call = log
        .iter()
        .find(|e| e.get("tool_name").is_some())
        .expect("the Bash call");
    assert_eq!(call["decision"], "deny", "{call}");
    assert!(
        call["reason"]
            .as_str()
            .expect("reason")
            .contains("no shell for researchers"),
        "{call}"
    );
    let asked = stub.seen("/tools/evaluate");
    assert_eq!(asked.len(), 1, "gov's hook was asked");
    assert_eq!(asked[0].body["tool_use_id"], "toolu_fake_1");
    assert_eq!(asked[0].body["tool_name"], "Bash");
}

#[test]
fn a_program_that_is_not_there_fails_the_run_as_spawn_failed() {
    let repo = Repo::new(60);
    let dir = repo.root().join("agents/gone");
    repo.commit_agent(
        "gone",
        "kind = \"command\"\n[command]\nprogram = \"./missing.sh\"\n",
    );
    let stub = Stub::start(normal_route);
    let out = run(repo.gov(&stub.url, "success.jsonl").args(["run", "gone"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let body = &stub.seen("/runs/run-1/finish")[0].body;
    let program = dir.join("./missing.sh");
    assert_eq!(
        body["reason"],
        format!("spawn_failed: {}: not found", program.display())
    );
}
