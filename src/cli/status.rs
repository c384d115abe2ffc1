//! `gov status` and `gov scoreboard`: live state from the running server.

use std::path::PathBuf;

use serde_json::Value;

use super::http::{detail, Client};
use super::{ExitCode, Failure};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {}

fn fetch(path: &str, repo: Option<PathBuf>) -> Result<Value, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let client = Client::new(&settings);
    client.require_server()?;
    let reply = client.get(path).map_err(|_| {
        Failure::new(
            ExitCode::Failure,
            format!(
                "no gov server answers at {}; start one with `gov serve`",
                client.base()
            ),
        )
    })?;
    if reply.status != 200 {
        return Err(Failure::new(ExitCode::Failure, detail(&reply.body)));
    }
    Ok(reply.body)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn run_status(_args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let s = fetch("/status", repo)?;
    println!(
        "server          http://{}:{}/",
        text(&s["host"]),
        text(&s["port"])
    );
    println!("started at      {}", text(&s["started_at"]));
    println!("policy version  {}", text(&s["policy_version"]));
    if !s["policy_error"].is_null() {
        println!(
            "policy error    {} (the last good set stays in force)",
            text(&s["policy_error"])
        );
    }
    println!("audit entries   {}", text(&s["audit_entries"]));
    println!("pending         {}", text(&s["pending_proposals"]));
    let paused: Vec<String> = s["agents_paused"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    println!(
        "paused agents   {}",
        if paused.is_empty() {
            "none".into()
        } else {
            paused.join(", ")
        }
    );
    print_remote(&s["remote"]);
    Ok(ExitCode::Ok)
}

/// The remote's lines: its last sync and what waits to be pushed.
fn print_remote(r: &Value) {
    if r.is_null() {
        return;
    }
    println!("remote          {} ({})", text(&r["name"]), text(&r["url"]));
    let last = &r["last_sync"];
    if last.is_null() {
        println!("last sync       never");
    } else if last["ok"] == Value::Bool(true) {
        println!("last sync       {}: ok", text(&last["at"]));
    } else {
        let why: Vec<String> = last["error"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .chain(
                ["refused", "forge_errors"]
                    .iter()
                    .flat_map(|k| last[*k].as_array().cloned().unwrap_or_default())
                    .map(|v| text(&v)),
            )
            .collect();
        println!(
            "last sync       {}: failed: {}",
            text(&last["at"]),
            why.join("; ")
        );
    }
    let w = &r["waiting"];
    let branches: Vec<String> = w["proposal_branches"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let main = w["main_commits"].as_u64().unwrap_or(0);
    let audit = w["audit_entries"].as_u64().unwrap_or(0);
    if main == 0 && audit == 0 && branches.is_empty() {
        println!("not yet pushed  nothing");
    } else {
        println!(
            "not yet pushed  {audit} audit entr{}, {main} commit(s) on main, {} proposal branch(es){}",
            if audit == 1 { "y" } else { "ies" },
            branches.len(),
            if branches.is_empty() {
                String::new()
            } else {
                format!(": {}", branches.join(", "))
            }
        );
    }
}

pub fn run_scoreboard(_args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let rows = fetch("/scoreboard", repo)?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no agents yet");
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<20} {:<8} {:>9} {:>9} {:>9} {:>10} {:>12} {:>5}",
        "agent", "status", "proposed", "approved", "rejected", "tokens", "dollars", "runs"
    );
    for r in rows {
        println!(
            "{:<20} {:<8} {:>9} {:>9} {:>9} {:>10} {:>12} {:>5}",
            text(&r["agent_id"]),
            text(&r["status"]),
            text(&r["proposals_submitted"]),
            text(&r["proposals_approved"]),
            text(&r["proposals_rejected"]),
            text(&r["tokens_consumed"]),
            format!("${:.6}", r["dollars_consumed"].as_f64().unwrap_or(0.0)),
            text(&r["runs"]),
        );
    }
    Ok(ExitCode::Ok)
}
