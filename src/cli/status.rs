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
    if !s["audit_tampered"].is_null() {
        println!(
            "TAMPERED        {}; writes are refused until `gov audit recover`",
            text(&s["audit_tampered"])
        );
    }
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
    Ok(ExitCode::Ok)
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
