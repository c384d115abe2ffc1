//! Property tests (issue 9 item 8): whatever a client or a file says, gov
//! answers with a 4xx or a clear error, never a panic or a 5xx. HTTP bodies
//! and query strings go to a real server; `gov.toml`, `agent.toml`, policy
//! files and hook input go to their parsers.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::TestServer;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Text that likes the characters that broke gov before.
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => any::<char>(),
        1 => Just('\0'),
        1 => Just('\n'),
        1 => Just('"'),
        1 => Just('{'),
        1 => Just('-'),
        2 => proptest::char::range('a', 'z'),
    ];
    proptest::collection::vec(ch, 0..24).prop_map(String::from_iter)
}

const FIELDS: &[&str] = &[
    "agent_id",
    "event_type",
    "proposal_id",
    "task_id",
    "payload",
    "action_type",
    "expected_outcome",
    "submitted_at",
    "expires_at",
    "wave",
    "reversible",
    "requires_approval",
    "decision",
    "note",
    "final",
    "scope",
    "ttl_seconds",
    "token",
    "tokens",
    "tool",
    "dollars",
    "tool_name",
    "tool_input",
    "reason",
    "expected_cost_tokens",
    "expected_cost_dollars",
    "links",
    "rationale",
    "run_id",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        text().prop_map(Value::from),
        Just(json!("9999-12-31T23:59:59-23:59")),
        Just(json!("2026-01-01T00:00:00+00:00")),
        Just(json!("noop")),
        Just(json!("approve")),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An object with real field names and arbitrary values.
fn body() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => proptest::collection::vec((proptest::sample::select(FIELDS), json_value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => json_value(),
    ]
}

const WRITE_PATHS: &[&str] = &[
    "/audit",
    "/proposals",
    "/proposals/p-1/decision",
    "/credentials/issue",
    "/credentials/redeem",
    "/tools/evaluate",
    "/budget/noop/charge",
    "/agents/noop/pause",
    "/runs",
    "/tokens/revoke",
];

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

#[test]
fn http_bodies_never_get_a_5xx() -> TestResult {
    let s = TestServer::start()?;
    let tok = s.agent_token("noop")?;
    let strategy = (
        proptest::sample::select(WRITE_PATHS),
        body(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    );
    runner(160)
        .run(&strategy, |(path, body, as_agent, raw, send_raw)| {
            let token = if as_agent { &tok } else { &s.operator };
            let text = if send_raw {
                String::from_utf8_lossy(&raw).into_owned()
            } else {
                body.to_string()
            };
            let r = s.send_raw("POST", path, Some(token), &text).map_err(fail)?;
            prop_assert!(
                r.status < 500,
                "POST {path} {text} -> {} {:?}",
                r.status,
                r.body
            );
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let report = gov::app::audit::verify(s.settings())?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn query_strings_never_get_a_5xx() -> TestResult {
    let s = TestServer::start()?;
    const PATHS: &[&str] = &[
        "/proposals",
        "/audit",
        "/budget/noop",
        "/status/me",
        "/scoreboard",
        "/proposals/x",
    ];
    const KEYS: &[&str] = &[
        "status",
        "limit",
        "agent_id",
        "event_type",
        "proposal_id",
        "wave",
    ];
    let strategy = (
        proptest::sample::select(PATHS),
        proptest::collection::vec((proptest::sample::select(KEYS), text()), 0..4),
    );
    runner(96)
        .run(&strategy, |(path, pairs)| {
            let q: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", percent(v)))
                .collect();
            let url = format!("{path}?{}", q.join("&"));
            let r = s.get(&url, Some(&s.operator)).map_err(fail)?;
            prop_assert!(r.status < 500, "GET {url} -> {} {:?}", r.status, r.body);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn config_and_policy_files_never_panic() -> TestResult {
    let repo = TestRepo::new()?;
    let root = repo.root().to_path_buf();
    let path = root.join("gov.toml");
    let settings = repo.settings.clone();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let schema = gov::domain::policy::PolicySource {
        path: "policies/schema.cedarschema".into(),
        text: std::fs::read_to_string(src.join("schema.cedarschema"))?,
    };
    let default_policy = std::fs::read_to_string(src.join("proposals.cedar")).unwrap_or_default();
    let toml_line = (
        proptest::sample::select(
            &[
                "[server]",
                "[budget]",
                "[watchdog]",
                "[repo]",
                "[signers]",
                "[remote]",
                "[command]",
                "[claude]",
                "",
            ][..],
        ),
        proptest::sample::select(
            &[
                "port",
                "agent_auth",
                "tokens_cap",
                "dollars_cap",
                "main_branch",
                "audit_ref",
                "kind",
                "program",
                "args",
                "group",
                "wall_clock_seconds",
                "agent_token_ttl_hours",
            ][..],
        ),
        json_value(),
    )
        .prop_map(|(section, key, v)| format!("{section}\n{key} = {v}\n"));
    let strategy = (
        proptest::collection::vec(toml_line, 0..5).prop_map(|l| l.concat()),
        text(),
        0usize..4000,
        0usize..64,
    );
    runner(200)
        .run(&strategy, |(toml_text, junk, cut, len)| {
            for t in [toml_text.as_str(), junk.as_str()] {
                let _ = gov::config::Settings::from_toml(&root, &path, t);
                let _ = gov::config::AgentSettings::parse(&settings, "noop", t, &path);
            }
            // A policy file with a slice cut out, or junk appended.
            let mut p = default_policy.clone();
            let start = cut.min(p.len());
            let end = (start + len).min(p.len());
            if p.is_char_boundary(start) && p.is_char_boundary(end) {
                p.replace_range(start..end, "");
            }
            for text in [p, format!("{default_policy}\n{junk}"), junk.clone()] {
                let files = [gov::domain::policy::PolicySource {
                    path: "policies/x.cedar".into(),
                    text,
                }];
                let _ = gov::domain::policy::PolicySet::load(&schema, &files, None, "v");
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn hook_input_never_panics_and_fails_closed() -> TestResult {
    let env = |k: &str| match k {
        "GOV_URL" => Some("http://127.0.0.1:1".to_string()),
        "GOV_AGENT_ID" => Some("noop".to_string()),
        "GOV_RUN_ID" => Some("r1".to_string()),
        "GOV_AGENT_TOKEN" => Some("t".to_string()),
        _ => None,
    };
    let strategy = (
        body(),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    );
    runner(200)
        .run(&strategy, |(v, raw, use_raw)| {
            let stdin = if use_raw {
                String::from_utf8_lossy(&raw).into_owned()
            } else {
                v.to_string()
            };
            // Nobody listens on port 1: whatever the input, the answer is a
            // deny, never an allow.
            let out = gov::runner::hook::run(&stdin, env);
            prop_assert!(!out.is_allow(), "{stdin} was allowed");
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
