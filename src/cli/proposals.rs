//! `gov proposals [--status S]` and `gov proposals show ID`.

use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::app::service::Service;
use crate::config::Settings;
use crate::domain::proposal::Proposal;
use crate::store::projection;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub show: Option<Show>,
    /// Only proposals with this status (pending, approved, auto-approved,
    /// rejected, expired).
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

fn failure(e: crate::app::error::AppError) -> Failure {
    Failure::from_error(ExitCode::Failure, &e)
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let svc = Service::open(&settings).map_err(failure)?;
    match args.show {
        Some(Show::Show { id }) => {
            let p = svc
                .read(|c| projection::proposal(c, &id))
                .map_err(failure)?
                .ok_or_else(|| Failure::new(ExitCode::Failure, format!("no proposal `{id}`")))?;
            let audit_commit = svc
                .read(|c| crate::store::index::submitted_commit(c, &id))
                .map_err(failure)?;
            print!("{}", render(&p, audit_commit.as_deref()));
            Ok(ExitCode::Ok)
        }
        None => {
            let status = args.status.filter(|s| s != "all");
            if let Some(s) = &status {
                if crate::domain::proposal::ProposalStatus::parse(s).is_none() {
                    return Err(Failure::new(
                        ExitCode::Config,
                        format!("`{s}` is not a status (pending, approved, auto-approved, rejected, expired)"),
                    ));
                }
            }
            let list = svc
                .read(|c| projection::proposals(c, status.as_deref(), args.limit))
                .map_err(failure)?;
            if list.is_empty() {
                println!("no proposals");
            }
            for p in list {
                println!(
                    "{:<36}  {:<13}  {:<12}  {}",
                    p.proposal_id,
                    p.status.as_str(),
                    p.agent_id,
                    p.action_type
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
    line("agent", p.agent_id.clone());
    line("action type", p.action_type.clone());
    line("submitted at", p.submitted_at.to_rfc3339());
    line("expires at", p.expires_at.to_rfc3339());
    line("reversible", p.reversible.to_string());
    line("expected", p.expected_outcome.clone());
    if !p.rationale.is_empty() {
        line("rationale", p.rationale.clone());
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
    let payload = serde_json::to_string_pretty(&p.payload).unwrap_or_default();
    s.push_str("payload:\n");
    for l in payload.lines() {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    s
}
