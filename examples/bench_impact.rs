//! `gov policy impact` speed (not a test): records N decisions (default
//! 100,000) in the audit chain of a fresh governance repository, each
//! decided by the shipped policy set, then replays them all against a
//! changed set on a branch. Prints the time to read the chain alone, the
//! time of the whole replay, and one JSON line. Run via
//! `scripts/bench-impact.sh [N]`.
//!
//! The decisions are a mix of what gov records: proposal submissions (auto
//! and needing a person), tool calls (allowed and denied), watchdog
//! `continue` checks and approvals, over 50 agents.

use std::time::Instant;

use gov::app::governance::Governance;
use gov::app::governance::Role;
use gov::app::replay::{impact, ImpactFilter};
use gov::config::Settings;
use gov::domain::audit::NewEntry;
use gov::domain::policy::PolicySet;
use gov::domain::request::{CedarRequest, DecisionRecord, EntityData, EntityRef};
use serde_json::{json, Map, Value};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The change replayed against: no research for agents of group
/// `bench-3`, which flips their auto-approved `research_only` proposals.
const CHANGE: &str = "\n@id(\"bench-no-research\")\n@reason(\"group bench-3 does no research\")\n\
forbid (principal, action == Action::\"propose\", resource == ActionType::\"research_only\")\n\
when { principal.group == \"bench-3\" };\n";

/// How many of the first `n` requests [`CHANGE`] flips: the
/// `research_only` proposals (`i % 8` is 0 or 1) of group `bench-3`.
fn expected_flips(n: u64) -> u64 {
    (0..n).filter(|i| i % 8 < 2 && i % 7 == 3).count() as u64
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn agent(i: u64) -> EntityData {
    EntityData {
        uid: EntityRef::new("Agent", format!("agent{}", i % 50)),
        attrs: object(json!({"group": format!("bench-{}", i % 7)})),
        parents: Vec::new(),
        tags: Map::new(),
    }
}

/// The `i`th recorded request and the event that recorded it.
fn request(i: u64) -> (&'static str, CedarRequest) {
    let a = agent(i);
    let me = a.uid.clone();
    let (event, action, resource, context) = match i % 8 {
        0 | 1 => (
            "proposal_submitted",
            "propose",
            EntityRef::new("ActionType", "research_only"),
            json!({"reversible": true, "requires_approval": false,
                "expected_cost_tokens": i % 1000, "expected_cost_micros": 0,
                "payload_hash": format!("h{i}")}),
        ),
        2 => (
            "proposal_submitted",
            "propose",
            EntityRef::new("ActionType", "publish_content"),
            json!({"reversible": true, "requires_approval": true,
                "expected_cost_tokens": 10, "expected_cost_micros": 0,
                "payload_hash": format!("h{i}")}),
        ),
        3 => (
            "tool_decision",
            "use_tool",
            EntityRef::new("Tool", "Read"),
            json!({"path": format!("agents/{}/memory.md", me.id), "inside_agent_dir": true}),
        ),
        4 => (
            "tool_decision",
            "use_tool",
            EntityRef::new("Tool", "Bash"),
            json!({"command": "bash smoke.sh", "path": format!("agents/{}", me.id),
                "inside_agent_dir": true}),
        ),
        5 => (
            "tool_decision",
            "use_tool",
            EntityRef::new("Tool", "Write"),
            json!({"path": "etc/passwd", "inside_agent_dir": false}),
        ),
        6 => (
            "watchdog_observed",
            "continue",
            me.clone(),
            json!({"tokens_consumed": i % 5000, "tokens_cap": 4000,
                "micros_consumed": 0, "micros_cap": 1_000_000,
                "oldest_open_approval_minutes": 0, "stuck_after_minutes": 60,
                "same_payload_streak": 1, "repeat_payload_limit": 5,
                "expired_pending": 0, "minutes_since_activity": 1}),
        ),
        _ => {
            let approver = EntityData {
                uid: EntityRef::new("Approver", "operator"),
                attrs: object(json!({"name": "operator"})),
                parents: Vec::new(),
                tags: Map::new(),
            };
            return (
                "proposal_decided",
                CedarRequest {
                    principal: approver.uid.clone(),
                    action: "approve".into(),
                    resource: EntityRef::new("ActionType", "publish_content"),
                    context: Map::new(),
                    entities: vec![approver],
                },
            );
        }
    };
    (
        event,
        CedarRequest {
            principal: me,
            action: action.into(),
            resource,
            context: object(context),
            entities: vec![a],
        },
    )
}

/// An entry recording the decision `set` makes on the `i`th request. Built
/// from JSON, as entries are read, so that it carries no payload of its
/// own beyond a counter.
fn entry(set: &PolicySet, i: u64) -> Res<NewEntry> {
    let (event, request) = request(i);
    let record = DecisionRecord {
        decision: set.decide(&request),
        request,
    };
    let agent = (event != "proposal_decided").then(|| format!("agent{}", i % 50));
    Ok(serde_json::from_value(json!({
        "actor": "server",
        "event_type": format!("bench_{event}"),
        "agent_id": agent,
        "payload": {"i": i},
        "decision": record,
    }))?)
}

fn main() -> Res {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: root.to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    let settings = Settings::load(root)?;
    let repo = git2::Repository::open(root)?;
    let main = repo.refname_to_id(&settings.main_refname())?;
    let current = gov::testkit::policies::load_commit(&repo, main)?;

    let gov = Governance::open(&settings, Role::Server)?;
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 1000).min(n))
            .map(|i| entry(&current, i))
            .collect::<Res<Vec<_>>>()?;
        i += batch.len() as u64;
        gov.append(batch)?;
    }
    let record_s = t.elapsed().as_secs_f64();

    // The change, on a branch as `gov policy propose` would make it.
    let path = "policies/proposals.cedar";
    let mut text = std::fs::read_to_string(root.join(path))?;
    text.push_str(CHANGE);
    let key = gov::testkit::keys::SigningKey::load(&settings.server_key)?;
    let who = git2::Signature::now("bench", "bench@example.com")?;
    let branch = gov::testkit::git::commit_files(
        &repo,
        &key,
        &who,
        "refs/heads/bench/change",
        Some(main),
        &[(path.to_string(), text.into_bytes())],
        "bench change",
    )?;
    let changed = gov::testkit::policies::load_commit(&repo, branch)?;

    // The chain alone: read and parse every entry.
    let t = Instant::now();
    let mut read = 0u64;
    for e in gov::testkit::audit::entries_from(&repo, &settings.audit_refname(), 1)? {
        read += u64::from(e?.entry.entry.decision.is_some());
    }
    let read_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let report = impact(&settings, &changed, &ImpactFilter::default())?;
    let impact_s = t.elapsed().as_secs_f64();

    println!("decisions recorded       {n:>9} in {record_s:.1} s");
    println!("read the chain           {read:>9} in {read_s:.2} s");
    println!(
        "replay (gov policy impact) {:>7} in {impact_s:.2} s ({:.0} decisions/s)",
        report.replayed,
        report.replayed as f64 / impact_s.max(1e-9)
    );
    println!(
        "changed                  {:>9} ({})",
        report.changed,
        report
            .transitions
            .iter()
            .map(|(t, c)| format!("{t}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{}",
        json!({"bench": "impact", "decisions": report.replayed, "changed": report.changed,
            "read_s": read_s, "impact_s": impact_s})
    );
    if report.replayed != n || report.changed != expected_flips(n) {
        return Err(format!(
            "replayed {} of {n} decisions, {} changed where {} should",
            report.replayed,
            report.changed,
            expected_flips(n)
        )
        .into());
    }
    Ok(())
}
