//! `gov status` and `gov scoreboard`: live state from the running server.

use std::path::PathBuf;

use super::http::Client;
use super::{ExitCode, Failure};
use crate::config::Settings;
use crate::wire::{RemoteStatus, Status};

#[derive(Debug, clap::Args)]
pub struct Args {}

fn fetch<T: serde::de::DeserializeOwned>(path: &str, repo: Option<PathBuf>) -> Result<T, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let client = Client::new(&settings);
    client.require_server()?;
    let reply = client.get(path).map_err(|f| {
        Failure::new(
            f.code,
            format!(
                "no gov server answers at {}; start one with `gov serve`",
                client.base()
            ),
        )
    })?;
    reply.ok_as()
}

pub fn run_status(_args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let s: Status = fetch("/status", repo)?;
    println!("server          http://{}:{}/", s.host, s.port);
    println!("started at      {}", s.started_at.to_rfc3339());
    println!(
        "policy version  {}",
        s.policy_version.as_deref().unwrap_or("-")
    );
    if let Some(e) = &s.policy_error {
        println!("policy error    {e} (the last good set stays in force)");
    }
    for r in &s.policy_refused {
        println!(
            "not in force    commit {}: {} (the last authorized state stays in force)",
            r.commit, r.reason
        );
    }
    println!("audit entries   {}", s.audit_entries);
    if let Some(why) = &s.audit_tampered {
        println!("TAMPERED        {why}; writes are refused until `gov audit recover`");
    }
    println!("pending         {}", s.pending_proposals);
    println!(
        "paused agents   {}",
        if s.agents_paused.is_empty() {
            "none".into()
        } else {
            s.agents_paused.join(", ")
        }
    );
    print_remote(s.remote.as_ref());
    Ok(ExitCode::Ok)
}

/// The remote's lines: its last sync and what waits to be pushed.
fn print_remote(r: Option<&RemoteStatus>) {
    let Some(r) = r else {
        return;
    };
    println!("remote          {} ({})", r.name, r.url);
    match &r.last_sync {
        None => println!("last sync       never"),
        Some(l) if l.ok => println!("last sync       {}: ok", l.at),
        Some(l) => println!("last sync       {}: failed: {}", l.at, l.problems()),
    }
    let w = &r.waiting;
    if w.is_empty() {
        println!("not yet pushed  nothing");
    } else {
        println!(
            "not yet pushed  {} audit entr{}, {} commit(s) on main, {} proposal branch(es){}",
            w.audit_entries,
            if w.audit_entries == 1 { "y" } else { "ies" },
            w.main_commits,
            w.proposal_branches.len(),
            if w.proposal_branches.is_empty() {
                String::new()
            } else {
                format!(": {}", w.proposal_branches.join(", "))
            }
        );
    }
}

pub fn run_scoreboard(_args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let rows: Vec<crate::wire::ScoreRow> = fetch("/scoreboard", repo)?;
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
            r.agent_id,
            r.status.as_str(),
            r.proposals_submitted,
            r.proposals_approved,
            r.proposals_rejected,
            r.tokens_consumed,
            format!("${:.6}", r.dollars_consumed),
            r.runs,
        );
    }
    Ok(ExitCode::Ok)
}
