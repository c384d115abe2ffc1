//! `gov proposals [--status S]` and `gov proposals show ID`.

use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::app::proposals;
use crate::app::service::Service;
use crate::config::Settings;
use crate::domain::proposal::Proposal;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub show: Option<Show>,
    /// Only proposals with this status: pending, approved, auto-approved,
    /// rejected, expired, or all (the default).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum Show {
    /// Every field of one proposal, its payload, the policies that decided
    /// it, its Git commits and the audit commit that records it.
    Show { id: String },
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let svc = Service::open(&settings)?;
    match args.show {
        Some(Show::Show { id }) => {
            let p = proposals::get(&svc, &id)?;
            let audit_commit = proposals::audit_commit(&svc, &id)?;
            print!("{}", render(&p, audit_commit.as_deref()));
            Ok(ExitCode::Ok)
        }
        None => {
            let status = proposals::status_filter(args.status.as_deref())
                .map_err(|m| Failure::new(ExitCode::Config, m))?;
            let list = proposals::list(&svc, status, args.limit)?;
            if list.is_empty() {
                println!("no proposals");
            }
            for p in list {
                println!(
                    "{:<36}  {:<13}  {:<12}  {}",
                    p.proposal_id,
                    p.status.as_str(),
                    p.proposed.agent_id,
                    p.proposed.action_type
                );
            }
            Ok(ExitCode::Ok)
        }
    }
}

/// One proposal, readable.
pub fn render(p: &Proposal, audit_commit: Option<&str>) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<16} {v}\n"));
    line("proposal", p.proposal_id.clone());
    line("status", p.status.as_str().into());
    line("agent", p.proposed.agent_id.clone());
    line("action type", p.proposed.action_type.clone());
    line("submitted at", p.submitted_at.to_rfc3339());
    line("expires at", p.expires_at.to_rfc3339());
    line("reversible", p.proposed.reversible.to_string());
    line("expected", p.proposed.expected_outcome.clone());
    if !p.proposed.rationale.is_empty() {
        line("rationale", p.proposed.rationale.clone());
    }
    line("payload hash", p.payload_hash.clone());
    line("policy version", p.policy_version.clone());
    for c in &p.policies {
        line("policy", format!("{}: {}", c.id, c.reason));
    }
    if let Some(b) = &p.branch {
        line("branch", b.clone());
    }
    if let Some(c) = &p.commit {
        line("commit", c.clone());
    }
    if let Some(m) = &p.merge_commit {
        line("merge commit", m.clone());
    }
    if let Some(a) = audit_commit {
        line("audit commit", a.to_string());
    }
    if let Some(d) = &p.decided_by {
        line("decided by", d.clone());
    }
    if let Some(d) = &p.decision {
        line("decision", d.clone());
    }
    let payload = serde_json::to_string_pretty(&p.proposed.payload).unwrap_or_default();
    s.push_str("payload:\n");
    for l in payload.lines() {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    s
}
