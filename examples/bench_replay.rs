//! Replay benchmark (not a test): records N decisions (real requests,
//! decided by the default policy set, each its own signed audit commit)
//! in a temporary governance repository, then times `gov audit verify
//! --replay`'s replay of all of them. Run via `scripts/bench-replay.sh [N]`
//! (default 100,000). Prints a table and one JSON line.

use std::time::Instant;

use gov::app::governance::Governance;
use gov::config::Settings;
use gov::domain::audit::{Actor, NewEntry};
use gov::domain::event::Event;
use gov::domain::request::{CedarRequest, DecisionRecord, EntityData, EntityRef};
use gov::store::keys::Role;
use serde_json::json;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn ctx(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// A request of one of four shapes, for one of 20 agents.
fn request(i: u64) -> CedarRequest {
    let agent = format!("agent{}", i % 20);
    let entities = vec![EntityData {
        uid: EntityRef::new("Agent", agent.clone()),
        attrs: ctx(json!({"group": "default"})),
        parents: vec![],
    }];
    let propose = |t: &str, reversible: bool| CedarRequest {
        principal: EntityRef::new("Agent", agent.clone()),
        action: "propose".into(),
        resource: EntityRef::new("ActionType", t),
        context: ctx(json!({"reversible": reversible, "requires_approval": false,
            "expected_cost_tokens": i % 1000, "expected_cost_micros": 0,
            "payload_hash": format!("h{i}")})),
        entities: entities.clone(),
    };
    match i % 4 {
        0 => propose("research_only", true),
        1 => propose("publish_content", true),
        2 => propose("draft_content", false),
        _ => CedarRequest {
            principal: EntityRef::new("Agent", agent.clone()),
            action: "use_tool".into(),
            resource: EntityRef::new("Tool", "Write"),
            context: ctx(
                json!({"path": format!("agents/{agent}/notes.md"), "inside_agent_dir": true}),
            ),
            entities,
        },
    }
}

fn main() -> Res {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: dir.path().to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    let settings = Settings::load(dir.path())?;
    let repo = git2::Repository::open(dir.path())?;
    let main = repo.refname_to_id(&settings.main_refname())?;
    let set = gov::store::policies::load_commit(&repo, main)?;
    let gov = Governance::open(&settings, Role::Server)?;
    let t = Instant::now();
    let batch = 1000;
    let mut i = 0;
    while i < n {
        let entries: Vec<NewEntry> = (i..(i + batch).min(n))
            .map(|k| {
                let req = request(k);
                let decision = set.decide(&req);
                // A fixed, valid name: `other` cannot refuse it.
                let event =
                    Event::other("bench_decision", json!({})).unwrap_or_else(|e| panic!("{e}"));
                NewEntry::new(Actor::server(), event)
                    .agent(req.principal.id.clone())
                    .decision(DecisionRecord {
                        decision,
                        request: req,
                    })
            })
            .collect();
        i += entries.len() as u64;
        gov.append(entries)?;
    }
    let record_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = gov::app::replay::replay(&settings)?;
    let replay_s = t.elapsed().as_secs_f64();
    let rate = report.decisions as f64 / replay_s.max(1e-9);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| decisions recorded | {} (in {record_s:.1} s) |",
        report.decisions
    );
    println!("| replay of all of them | {replay_s:.2} s |");
    println!("| replayed per second | {rate:.0} |");
    println!("| problems found | {} |", report.problems.len());
    println!(
        "{}",
        json!({"decisions": report.decisions, "replay_seconds": replay_s,
            "per_second": rate as u64, "problems": report.problems.len()})
    );
    if !report.problems.is_empty() {
        return Err(format!("replay found {} problems", report.problems.len()).into());
    }
    Ok(())
}
