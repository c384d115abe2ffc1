//! Replay benchmark (not a test): records N decisions (real requests,
//! decided by the default policy set, each its own signed audit commit,
//! appended 1,000 per group commit) in a temporary governance repository,
//! packs the repository as the server's maintenance does, then times `gov
//! audit verify --replay`'s replay of all of them RUNS times (median,
//! minimum, maximum) and reports the load average around it. Run via
//! `scripts/bench-replay.sh [N] [RUNS]` (default 100,000 and 5). Prints a
//! table and one JSON line.

use std::time::Instant;

use gov::app::governance::Governance;
use gov::app::governance::Role;
use gov::config::Settings;
use gov::domain::audit::{Actor, NewEntry};
use gov::domain::event::Event;
use gov::domain::request::{CedarRequest, DecisionRecord, EntityData, EntityRef};
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
        tags: Default::default(),
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

/// The 1, 5 and 15 minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Res {
    let arg = |i: usize, default: u64| -> Res<u64> {
        Ok(std::env::args()
            .nth(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let n = arg(1, 100_000)?;
    let runs = arg(2, 5)?.max(1);
    let dir = tempfile::tempdir()?;
    gov::app::init::init(&gov::app::init::InitOptions {
        dir: dir.path().to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })?;
    let settings = Settings::load(dir.path())?;
    let repo = git2::Repository::open(dir.path())?;
    let main = repo.refname_to_id(&settings.main_refname())?;
    let set = gov::testkit::policies::load_commit(&repo, main)?;
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
    gov.maintain()?;
    let maintain_s = t.elapsed().as_secs_f64();
    let load_before = load();
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = gov::app::replay::replay(&settings)?;
        times.push(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let load_after = load();
    let report = report.ok_or("no run")?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let rate = report.decisions as f64 / median.max(1e-9);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| decisions recorded | {} (in {record_s:.1} s; packed in {maintain_s:.1} s) |",
        report.decisions
    );
    println!(
        "| replay of all of them, median of {runs} | {median:.2} s (min {:.2}, max {:.2}) |",
        times[0],
        times[times.len() - 1]
    );
    println!("| replayed per second | {rate:.0} |");
    println!("| policy versions cited | {} |", report.versions);
    println!("| problems found | {} |", report.problems.len());
    println!("| load average before / after | {load_before} / {load_after} |");
    println!(
        "{}",
        json!({"decisions": report.decisions, "record_seconds": record_s,
            "replay_seconds_median": median, "replay_seconds": times,
            "per_second": rate as u64, "problems": report.problems.len(),
            "load_before": load_before, "load_after": load_after})
    );
    if !report.problems.is_empty() {
        return Err(format!("replay found {} problems", report.problems.len()).into());
    }
    Ok(())
}
