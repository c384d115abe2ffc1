//! `gov policy diff` and `gov policy impact`: what a policy change is, by
//! policy id, and what it would do to the decisions gov recorded.
//!
//! Exit codes (`impact`): 0 no recorded decision changes, 3 some change, 2
//! the set at REV is invalid (or REV does not exist). `diff`: 0, or 2 when
//! a side does not load.

use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::app::policy_report::{diff_lines, impact_markdown, impact_text, short};
use crate::app::replay::{self, ImpactFilter, SetError, SetSource};
use crate::config::Settings;
use crate::domain::policy::PolicySet;
use crate::domain::policy_diff::diff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// `[FROM] TO`: two revisions (FROM defaults to `main`), e.g.
    /// `gov/policy/ID` or a commit. With `--worktree`, at most FROM.
    #[arg(num_args = 0..=2, required_unless_present = "worktree")]
    pub revs: Vec<String>,
    /// Compare with the policies in the working tree (committed or not).
    #[arg(long)]
    pub worktree: bool,
    /// Print the difference as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    /// The revision whose policy set to replay against (a branch such as
    /// `gov/policy/ID`, a commit).
    #[arg(required_unless_present = "worktree", conflicts_with = "worktree")]
    pub rev: Option<String>,
    /// Replay against the policies in the working tree instead.
    #[arg(long)]
    pub worktree: bool,
    /// Only decisions recorded at or after this date (`2026-11-01` or an
    /// RFC 3339 time).
    #[arg(long)]
    pub since: Option<String>,
    /// Only decisions about this agent.
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// What the change is for (the commit message and the proposal's
    /// rationale).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
}

fn settings(repo: Option<PathBuf>) -> Result<Settings, Failure> {
    Ok(Settings::load(&super::repo_root(repo)?)?)
}

/// The policy set at `source`; an invalid one prints every problem on
/// stderr and fails with `Config`, as does a revision that does not exist.
fn set_at(settings: &Settings, source: &SetSource) -> Result<PolicySet, Failure> {
    replay::load_set(settings, source).map_err(|e| {
        let code = match &e {
            SetError::Invalid { problems, .. } => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                ExitCode::Config
            }
            SetError::NoRevision(_) => ExitCode::Config,
            SetError::Gov(_) => ExitCode::Failure,
        };
        Failure::from_error(code, &e)
    })
}

pub fn run_diff(args: DiffArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let settings = settings(repo)?;
    let rev = |r: &String| SetSource::Revision(r.clone());
    let main = SetSource::Revision(settings.main_branch.clone());
    let (from, to) = match (args.revs.as_slice(), args.worktree) {
        ([], true) => (main, SetSource::WorkingTree),
        ([from], true) => (rev(from), SetSource::WorkingTree),
        ([to], false) => (main, rev(to)),
        ([from, to], false) => (rev(from), rev(to)),
        _ => {
            return Err(Failure::new(
                ExitCode::Config,
                "name FROM and TO, or at most FROM with --worktree",
            ))
        }
    };
    let d = diff(&set_at(&settings, &from)?, &set_at(&settings, &to)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    } else {
        for line in diff_lines(&d, &from, &to) {
            println!("{line}");
        }
    }
    Ok(ExitCode::Ok)
}

fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            Failure::new(
                ExitCode::Config,
                format!("--since: `{s}` is not a date (`2026-11-01`) or an RFC 3339 time"),
            )
        })
}

pub fn run_impact(args: ImpactArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let settings = settings(repo)?;
    let filter = ImpactFilter {
        since: args.since.as_deref().map(parse_since).transpose()?,
        agent: args.agent.clone(),
        max_entries: None,
    };
    let source = match &args.rev {
        Some(rev) if !args.worktree => SetSource::Revision(rev.clone()),
        _ => SetSource::WorkingTree,
    };
    let set = set_at(&settings, &source)?;
    let report = replay::impact(&settings, &set, &filter)
        .map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => {
            for line in impact_text(&report, &source) {
                println!("{line}");
            }
        }
        Format::Markdown => print!("{}", impact_markdown(&report, &source)),
    }
    Ok(if report.changed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

pub fn run_propose(args: ProposeArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&super::repo_root(repo)?)?;
    let dir = settings.policies_dir();
    super::policy::check(&dir)?;
    let tested = super::policy::test(&dir)?;
    if tested != ExitCode::Ok {
        return Err(Failure::new(
            tested,
            "a policy test fails: nothing was proposed",
        ));
    }
    let svc = crate::app::service::Service::open(&settings)
        .map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    let message = args.message.unwrap_or_else(|| "policy change".into());
    let proposed = crate::app::policy_change::propose(&svc, &message, &settings.operator_name)
        .map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    let id = &proposed.proposal.proposal_id;
    println!(
        "proposed policy change {id} on `{}` (commit {}): {}",
        proposed.branch,
        short(&proposed.commit),
        proposed
            .paths
            .iter()
            .map(|p| format!("`{p}`"))
            .chain(proposed.deleted.iter().map(|p| format!("`{p}` (deleted)")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "review it with `gov policy diff {}` and `gov policy impact {}`; approve it with `gov approve {id}` or on the dashboard",
        proposed.branch, proposed.branch
    );
    Ok(ExitCode::Ok)
}
