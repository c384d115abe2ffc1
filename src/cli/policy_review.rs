//! `gov policy diff` and `gov policy impact`: what a policy change is, by
//! policy id, and what it would do to the decisions gov recorded.
//!
//! Exit codes (`impact`): 0 no recorded decision changes, 3 some change, 2
//! the set at REV is invalid (or REV does not exist). `diff`: 0, or 2 when
//! a side does not load.

use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::app::replay::{self, ImpactFilter, ImpactReport, SetError, SetSource};
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

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
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
pub fn diff_lines(d: &PolicyDiff, from: &SetSource, to: &SetSource) -> Vec<String> {
    let mut out = vec![format!(
        "policy set {from} ({}) -> {to} ({})",
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
        if let Some((a, b)) = &c.effect {
            what.push(format!("effect {a} -> {b}"));
        }
        if c.condition {
            what.push("scope or conditions changed".to_string());
        }
        for (name, a, b) in &c.annotations {
            what.push(format!("@{name} `{a}` -> `{b}`"));
        }
        out.push(format!("  ~ {}: {}", c.id, what.join("; ")));
    }
    delta_lines("schema entity types", &d.entity_types, &mut out);
    delta_lines("schema actions", &d.actions, &mut out);
    delta_lines("schema common types", &d.common_types, &mut out);
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
    let settings = settings(repo)?;
    let filter = ImpactFilter {
        since: args.since.as_deref().map(parse_since).transpose()?,
        agent: args.agent.clone(),
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

/// `(the first N shown)` when the report lists fewer failing requests
/// than there are.
fn shown_of(r: &ImpactReport) -> String {
    if (r.failing.len() as u64) < r.failing_total {
        format!(" (the first {} shown)", r.failing.len())
    } else {
        String::new()
    }
}

/// The impact report as text lines.
pub fn impact_text(r: &ImpactReport, source: &SetSource) -> Vec<String> {
    let mut out = vec![format!(
        "impact of {source} (policy version {}) on {} recorded decisions: {} change, {} unchanged",
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
            "requests whose evaluation now fails: {}{}",
            r.failing_total,
            shown_of(r)
        ));
        for (e, errors) in &r.failing {
            out.push(format!("  #{} {}: {}", e.seq, e.request, errors.join("; ")));
        }
    }
    out
}

/// Text for a code span in a table cell: a backtick would end the span and
/// a bar the cell.
fn code_in_table(s: &str) -> String {
    s.replace('`', "'").replace('|', "\\|")
}

/// The impact report as Markdown, to post as a pull-request comment.
pub fn impact_markdown(r: &ImpactReport, source: &SetSource) -> String {
    let mut md = format!(
        "### gov policy impact: {source}\n\nReplayed **{}** recorded decisions against policy version `{}` (shadow policies enforced): **{}** would change, {} unchanged.\n\n",
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
                .map(|e| format!("#{} `{}`", e.seq, code_in_table(&e.request)))
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
            "**{} requests would fail to evaluate** (a failure is a deny){}:\n\n",
            r.failing_total,
            shown_of(r)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::replay::{Example, Group};
    use crate::domain::policy_diff::tests::{set, AFTER, BEFORE, SCHEMA};
    use crate::domain::request::Outcome;

    #[test]
    fn diff_text_names_each_change_by_policy_id() {
        let d = diff(
            &set(SCHEMA, BEFORE, None, "1111111111111111"),
            &set(SCHEMA, AFTER, None, "working-tree"),
        );
        let main = SetSource::Revision("main".into());
        assert_eq!(
            diff_lines(&d, &main, &SetSource::WorkingTree),
            [
                "policy set `main` (111111111111) -> the working tree (working-tree)",
                "policies: 1 added, 1 removed, 3 changed",
                "  + new (forbid) policies/p.cedar: added",
                "  - gone (forbid) policies/p.cedar",
                "  ~ flips: effect forbid -> permit",
                "  ~ narrowed: scope or conditions changed",
                "  ~ renamed: @mode `-` -> `shadow`; @reason `old reason` -> `new reason`",
            ]
        );
        let same = diff(
            &set(SCHEMA, BEFORE, None, "a"),
            &set(SCHEMA, BEFORE, None, "b"),
        );
        assert_eq!(
            diff_lines(&same, &main, &SetSource::Revision("x".into())),
            [
                "policy set `main` (a) -> `x` (b)",
                "no policy, schema or static entity changed"
            ]
        );
    }

    fn example(seq: u64) -> Example {
        Example {
            seq,
            event_type: "proposal_submitted".into(),
            agent_id: Some("noop".into()),
            request: r#"Agent::"noop" propose ActionType::"research_only""#.into(),
            before: vec!["proposals-allowed".into()],
            after: vec!["ban".into()],
        }
    }

    fn report() -> ImpactReport {
        ImpactReport {
            version: "0123456789abcdef".into(),
            replayed: 6,
            unchanged: 3,
            changed: 3,
            transitions: [("auto → forbidden".to_string(), 3)].into(),
            groups: vec![Group {
                from: Outcome::Auto,
                to: Outcome::Forbidden,
                policies: vec!["ban".into()],
                count: 3,
                examples: vec![example(4), example(5)],
            }],
            failing: vec![(example(6), vec!["evaluation error: overflow".into()])],
            failing_total: 2,
        }
    }

    #[test]
    fn impact_text_and_markdown_of_a_small_report() {
        let rev = SetSource::Revision("gov/policy/ban".into());
        assert_eq!(
            impact_text(&report(), &rev),
            [
                "impact of `gov/policy/ban` (policy version 0123456789ab) on 6 recorded decisions: 3 change, 3 unchanged",
                "  auto → forbidden: 3",
                "auto → forbidden by `ban`: 3",
                r#"  #4 proposal_submitted agent=noop: Agent::"noop" propose ActionType::"research_only""#,
                r#"  #5 proposal_submitted agent=noop: Agent::"noop" propose ActionType::"research_only""#,
                "requests whose evaluation now fails: 2 (the first 1 shown)",
                r#"  #6 Agent::"noop" propose ActionType::"research_only": evaluation error: overflow"#,
            ]
        );
        let md = impact_markdown(&report(), &rev);
        assert_eq!(
            md,
            "### gov policy impact: `gov/policy/ban`\n\n\
             Replayed **6** recorded decisions against policy version `0123456789ab` (shadow policies enforced): **3** would change, 3 unchanged.\n\n\
             | from | to | responsible policies | decisions | examples |\n\
             |---|---|---|---|---|\n\
             | auto | forbidden | `ban` | 3 | #4 `Agent::\"noop\" propose ActionType::\"research_only\"`<br>#5 `Agent::\"noop\" propose ActionType::\"research_only\"` |\n\n\
             **2 requests would fail to evaluate** (a failure is a deny) (the first 1 shown):\n\n\
             - #6 `Agent::\"noop\" propose ActionType::\"research_only\"`: evaluation error: overflow\n"
        );
    }

    /// The cells of every table row the Markdown renders to (GitHub's
    /// table extension).
    fn table_rows(md: &str) -> Vec<Vec<String>> {
        use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
        let mut rows = Vec::new();
        let mut row: Vec<String> = Vec::new();
        let mut cell: Option<String> = None;
        for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
            match event {
                Event::Start(Tag::TableCell) => cell = Some(String::new()),
                Event::End(TagEnd::TableCell) => row.extend(cell.take()),
                Event::End(TagEnd::TableRow | TagEnd::TableHead) => {
                    rows.push(std::mem::take(&mut row))
                }
                Event::Code(c) | Event::Text(c) => {
                    if let Some(cell) = cell.as_mut() {
                        cell.push_str(&c);
                    }
                }
                Event::InlineHtml(h) => {
                    if let Some(cell) = cell.as_mut() {
                        cell.push_str(&h);
                    }
                }
                _ => {}
            }
        }
        rows
    }

    #[test]
    fn the_markdown_renders_as_one_table_row_per_group() {
        let mut r = report();
        // A bar and a backtick in a request do not break the table.
        r.groups[0].examples[1].request = r#"Agent::"a|b" use_tool Tool::"x`y""#.into();
        let rows = table_rows(&impact_markdown(&r, &SetSource::WorkingTree));
        assert_eq!(
            rows,
            [
                vec![
                    "from",
                    "to",
                    "responsible policies",
                    "decisions",
                    "examples"
                ],
                vec![
                    "auto",
                    "forbidden",
                    "ban",
                    "3",
                    r#"#4 Agent::"noop" propose ActionType::"research_only"<br>#5 Agent::"a|b" use_tool Tool::"x'y""#
                ],
            ]
        );
    }
}
