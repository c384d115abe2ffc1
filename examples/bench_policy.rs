//! Cedar decision latency (not a test): `PolicySet::decide` for the default
//! policy set and for the default set plus 500 generated policies (per
//! agent, per tool and per action type, as operators write them). Prints a
//! table of median and p99 and one JSON line. Run via
//! `scripts/bench-policy.sh`.
//!
//! The "new agent each time" row gives every request a principal the set
//! has not seen, so nothing built for an earlier request is reused.

use std::path::Path;
use std::time::{Duration, Instant};

use gov::domain::policy::{PolicySet, PolicySource};
use gov::domain::request::{CedarRequest, EntityData, EntityRef};
use serde_json::json;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ROUNDS: usize = 20_000;

fn sources(extra: usize) -> Res<(PolicySource, Vec<PolicySource>, PolicySource)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let read = |name: &str| -> Res<PolicySource> {
        Ok(PolicySource::new(
            format!("policies/{name}"),
            std::fs::read_to_string(dir.join(name))?,
        ))
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cedar"))
        .collect();
    names.sort();
    let mut policies = names.iter().map(|n| read(n)).collect::<Res<Vec<_>>>()?;
    // Operator-written rules of realistic shapes: per agent and file, per
    // tool, per action type.
    let mut text = String::new();
    for i in 0..extra {
        let rule = match i % 3 {
            0 => format!(
                "permit (principal == Agent::\"agent{i}\", action == Action::\"use_tool\", resource in ToolGroup::\"read\")\n\
                 when {{ context has path && context.path like \"agents/agent{i}/*\" }};"
            ),
            1 => format!(
                "forbid (principal, action == Action::\"use_tool\", resource == Tool::\"mcp__bench__tool{i}\")\n\
                 when {{ principal.group == \"g{i}\" }};"
            ),
            _ => format!(
                "forbid (principal, action == Action::\"propose\", resource == ActionType::\"bench_type{i}\")\n\
                 when {{ context.expected_cost_tokens > {i} }} unless {{ context.human_approved }};"
            ),
        };
        text.push_str(&format!(
            "@id(\"bench-{i}\")\n@reason(\"generated rule {i}\")\n{rule}\n\n"
        ));
    }
    if extra > 0 {
        policies.push(PolicySource::new("policies/bench.cedar", text));
    }
    Ok((
        read("schema.cedarschema")?,
        policies,
        read("entities.json")?,
    ))
}

fn agent(id: &str, group: &str) -> EntityData {
    let mut attrs = serde_json::Map::new();
    attrs.insert("group".into(), json!(group));
    EntityData {
        uid: EntityRef::new("Agent", id),
        attrs,
        parents: vec![],
        tags: Default::default(),
    }
}

fn requests() -> Vec<(&'static str, CedarRequest)> {
    let ctx = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    vec![
        (
            "propose (auto)",
            CedarRequest {
                principal: EntityRef::new("Agent", "noop"),
                action: "propose".into(),
                resource: EntityRef::new("ActionType", "research_only"),
                context: ctx(json!({"reversible": true, "requires_approval": false,
                    "expected_cost_tokens": 10, "expected_cost_micros": 0, "payload_hash": "x"})),
                entities: vec![agent("noop", "smoke")],
            },
        ),
        (
            "propose (person)",
            CedarRequest {
                principal: EntityRef::new("Agent", "noop"),
                action: "propose".into(),
                resource: EntityRef::new("ActionType", "publish_content"),
                context: ctx(json!({"reversible": true, "requires_approval": true,
                    "expected_cost_tokens": 10, "expected_cost_micros": 0, "payload_hash": "x"})),
                entities: vec![agent("noop", "smoke")],
            },
        ),
        (
            "use_tool (allowed)",
            CedarRequest {
                principal: EntityRef::new("Agent", "noop"),
                action: "use_tool".into(),
                resource: EntityRef::new("Tool", "Write"),
                context: ctx(json!({"path": "agents/noop/memory.md", "inside_agent_dir": true})),
                entities: vec![agent("noop", "smoke")],
            },
        ),
        (
            // One simple command of a Bash line, as the guard asks it.
            "use_tool (Bash command)",
            CedarRequest {
                principal: EntityRef::new("Agent", "researcher"),
                action: "use_tool".into(),
                resource: EntityRef::new("Tool", "Bash"),
                context: ctx(json!({
                    "command": "git status -s | head -5",
                    "cwd": "agents/researcher",
                    "shell": {"program": "git", "program_path": "/usr/bin/git",
                        "args": "status -s", "arg1": "status", "argc": 2, "wrapper": false,
                        "args_inside_agent_dir": true, "redirects_inside_agent_dir": true},
                    "line": {"commands": 2, "joiners": ["pipe"], "reducible": true,
                        "dynamic": [], "writes": [], "assignments": []},
                })),
                entities: vec![agent("researcher", "example")],
            },
        ),
        (
            "use_tool (denied)",
            CedarRequest {
                principal: EntityRef::new("Agent", "noop"),
                action: "use_tool".into(),
                resource: EntityRef::new("Tool", "Write"),
                context: ctx(json!({"path": "etc/passwd", "inside_agent_dir": false})),
                entities: vec![agent("noop", "smoke")],
            },
        ),
    ]
}

fn measure(set: &PolicySet, req: &CedarRequest, fresh_agent: bool) -> (Duration, Duration) {
    let mut reqs: Vec<CedarRequest> = Vec::new();
    if fresh_agent {
        for i in 0..(ROUNDS + 500) {
            let mut r = req.clone();
            let id = format!("fresh{i}");
            r.principal = EntityRef::new("Agent", id.clone());
            r.entities = vec![agent(&id, "smoke")];
            reqs.push(r);
        }
    }
    let pick = |i: usize| if fresh_agent { &reqs[i] } else { req };
    for i in 0..500 {
        std::hint::black_box(set.decide(pick(i)));
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let r = pick(500 + i);
        let t = Instant::now();
        std::hint::black_box(set.decide(r));
        times.push(t.elapsed());
    }
    times.sort();
    (times[ROUNDS / 2], times[ROUNDS * 99 / 100])
}

fn main() -> Res {
    println!("| policy set | policies | request | median | p99 |");
    println!("|---|---|---|---|---|");
    let mut json = Vec::new();
    for extra in [0, 500] {
        let (schema, policies, entities) = sources(extra)?;
        let set = PolicySet::load(&schema, &policies, Some(&entities), "bench")?;
        let n = set.policies().len();
        let label = if extra == 0 {
            "default".to_string()
        } else {
            format!("default + {extra}")
        };
        let mut rows: Vec<(String, CedarRequest, bool)> = requests()
            .into_iter()
            .map(|(name, req)| (name.to_string(), req, false))
            .collect();
        if let Some((_, first, _)) = rows.first().cloned() {
            rows.push(("propose (auto), new agent each time".into(), first, true));
        }
        for (name, req, fresh) in rows {
            let (p50, p99) = measure(&set, &req, fresh);
            println!("| {label} | {n} | {name} | {p50:?} | {p99:?} |");
            json.push(json!({"set": label, "policies": n, "request": name,
                "median_ns": p50.as_nanos() as u64, "p99_ns": p99.as_nanos() as u64}));
        }
    }
    println!("{}", serde_json::Value::Array(json));
    Ok(())
}
