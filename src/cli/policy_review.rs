//! `gov policy diff` and `gov policy impact`: what a policy change is, by
//! policy id, and what it would do to the decisions gov recorded.
//!
//! Exit codes (`impact`): 0 no recorded decision changes, 3 some change, 2
//! the set at REV is invalid (or REV does not exist). `diff`: 0, or 2 when
//! a side does not load.

use std::path::PathBuf;

use git2::{Oid, Repository};

use super::{ExitCode, Failure};
use crate::app::replay::{self, ImpactFilter, ImpactReport};
use crate::config::Settings;
use crate::domain::policy::PolicySet;
use crate::domain::policy_diff::{diff, Delta, PolicyDiff};

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
    /// `gov/policy/ID` or a commit.
    #[arg(num_args = 1..=2, required = true)]
    pub revs: Vec<String>,
    /// Print the difference as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    /// The revision whose policy set to replay against (a branch such as
    /// `gov/policy/ID`, a commit).
    pub rev: String,
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

fn open(repo: Option<PathBuf>) -> Result<(Settings, Repository), Failure> {
    let settings = Settings::load(&super::repo_root(repo)?)?;
    let git = Repository::open(&settings.root).map_err(|e| {
        Failure::new(
            ExitCode::Failure,
            format!("cannot open the repository: {e}"),
        )
    })?;
    Ok((settings, git))
}

/// The commit a revision names.
fn commit_of(repo: &Repository, rev: &str) -> Result<Oid, Failure> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|_| {
            Failure::new(
                ExitCode::Config,
                format!("no revision `{rev}` in the repository"),
            )
        })
}

/// The policy set at a revision; an invalid one fails with `Config`,
/// every problem on stderr.
fn set_at(repo: &Repository, rev: &str) -> Result<PolicySet, Failure> {
    let oid = commit_of(repo, rev)?;
    crate::store::policies::load_commit(repo, oid).map_err(|e| {
        let why = crate::domain::errors::error_chain(&e);
        for line in why.lines() {
            eprintln!("error: {line}");
        }
        Failure::new(
            ExitCode::Config,
            format!("the policy set at `{rev}` is invalid"),
        )
    })
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

pub fn run_diff(args: DiffArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let (settings, git) = open(repo)?;
    let (from, to) = match args.revs.as_slice() {
        [to] => (settings.main_branch.clone(), to.clone()),
        [from, to, ..] => (from.clone(), to.clone()),
        [] => return Err(Failure::new(ExitCode::Config, "name a revision to compare")),
    };
    let d = diff(&set_at(&git, &from)?, &set_at(&git, &to)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    } else {
        for line in diff_lines(&d, &from, &to) {
            println!("{line}");
        }
    }
    Ok(ExitCode::Ok)
}

fn delta_lines(what: &str, d: &Delta, out: &mut Vec<String>) {
    if d.is_empty() {
        return;
    }
    out.push(format!("{what}:"));
    out.extend(d.added.iter().map(|n| format!("  + {n}")));
    out.extend(d.removed.iter().map(|n| format!("  - {n}")));
    out.extend(d.changed.iter().map(|n| format!("  ~ {n}")));
}

/// The diff as text lines.
pub fn diff_lines(d: &PolicyDiff, from: &str, to: &str) -> Vec<String> {
    let mut out = vec![format!(
        "policy set `{from}` ({}) -> `{to}` ({})",
        short(&d.from),
        short(&d.to)
    )];
    if d.is_empty() {
        out.push("no policy, schema or static entity changed".into());
        return out;
    }
    out.push(format!(
        "policies: {} added, {} removed, {} changed",
        d.added.len(),
        d.removed.len(),
        d.changed.len()
    ));
    for p in &d.added {
        out.push(format!(
            "  + {} ({}{}) {}: {}",
            p.id,
            p.effect,
            if p.shadow { ", shadow" } else { "" },
            p.file,
            p.reason
        ));
    }
    for p in &d.removed {
        out.push(format!("  - {} ({}) {}", p.id, p.effect, p.file));
    }
    for c in &d.changed {
        let mut what = Vec::new();
        if c.text {
            what.push("text changed".to_string());
        }
        for (name, a, b) in &c.annotations {
            what.push(format!("@{name} `{a}` -> `{b}`"));
        }
        out.push(format!("  ~ {}: {}", c.id, what.join("; ")));
    }
    delta_lines("schema entity types", &d.entity_types, &mut out);
    delta_lines("schema actions", &d.actions, &mut out);
    delta_lines("static entities", &d.entities, &mut out);
    out
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
    let (settings, git) = open(repo)?;
    let filter = ImpactFilter {
        since: args.since.as_deref().map(parse_since).transpose()?,
        agent: args.agent.clone(),
    };
    let set = set_at(&git, &args.rev)?;
    let report = replay::impact(&settings, &set, &filter)
        .map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => {
            for line in impact_text(&report, &args.rev) {
                println!("{line}");
            }
        }
        Format::Markdown => print!("{}", impact_markdown(&report, &args.rev)),
    }
    Ok(if report.changed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

fn responsible(policies: &[String]) -> String {
    if policies.is_empty() {
        "no policy (default deny or an error)".into()
    } else {
        policies
            .iter()
            .map(|p| match p.strip_prefix('-') {
                Some(gone) => format!("no longer `{gone}`"),
                None => format!("`{p}`"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The impact report as text lines.
pub fn impact_text(r: &ImpactReport, rev: &str) -> Vec<String> {
    let mut out = vec![format!(
        "impact of `{rev}` (policy version {}) on {} recorded decisions: {} change, {} unchanged",
        short(&r.version),
        r.replayed,
        r.changed,
        r.unchanged
    )];
    for (t, n) in &r.transitions {
        out.push(format!("  {t}: {n}"));
    }
    for g in &r.groups {
        out.push(format!(
            "{} → {} by {}: {}",
            g.from,
            g.to,
            responsible(&g.policies),
            g.count
        ));
        for e in &g.examples {
            out.push(format!(
                "  #{} {}{}: {}",
                e.seq,
                e.event_type,
                e.agent_id
                    .as_ref()
                    .map(|a| format!(" agent={a}"))
                    .unwrap_or_default(),
                e.request
            ));
        }
    }
    if !r.failing.is_empty() {
        out.push(format!(
            "requests whose evaluation now fails: {}",
            r.failing.len()
        ));
        for (e, errors) in &r.failing {
            out.push(format!("  #{} {}: {}", e.seq, e.request, errors.join("; ")));
        }
    }
    out
}

/// The impact report as Markdown, to post as a pull-request comment.
pub fn impact_markdown(r: &ImpactReport, rev: &str) -> String {
    let mut md = format!(
        "### gov policy impact: `{rev}`\n\nReplayed **{}** recorded decisions against policy version `{}` (shadow policies enforced): **{}** would change, {} unchanged.\n\n",
        r.replayed,
        short(&r.version),
        r.changed,
        r.unchanged
    );
    if !r.groups.is_empty() {
        md.push_str(
            "| from | to | responsible policies | decisions | examples |\n|---|---|---|---|---|\n",
        );
        for g in &r.groups {
            let examples: Vec<String> = g
                .examples
                .iter()
                .map(|e| format!("#{} `{}`", e.seq, e.request.replace('|', "\\|")))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                g.from,
                g.to,
                responsible(&g.policies),
                g.count,
                examples.join("<br>")
            ));
        }
        md.push('\n');
    }
    if !r.failing.is_empty() {
        md.push_str(&format!(
            "**{} requests would fail to evaluate** (a failure is a deny):\n\n",
            r.failing.len()
        ));
        for (e, errors) in &r.failing {
            md.push_str(&format!(
                "- #{} `{}`: {}\n",
                e.seq,
                e.request.replace('`', "'"),
                errors.join("; ")
            ));
        }
    }
    md
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
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "review it with `gov policy diff {}` and `gov policy impact {}`; approve it with `gov approve {id}` or on the dashboard",
        proposed.branch, proposed.branch
    );
    Ok(ExitCode::Ok)
}
