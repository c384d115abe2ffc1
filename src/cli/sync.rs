//! `gov sync`: one exchange with the configured Git remote (see
//! [`crate::app::remote`]). It opens the repository itself, like the
//! watchdog: the chain lock keeps it and a running server from forking the
//! chain.

use std::path::PathBuf;

use super::{repo_root, ExitCode, Failure};
use crate::app::remote::{sync, SyncReport};
use crate::app::service::Service;
use crate::config::Settings;

#[derive(Debug, Default, clap::Args)]
pub struct Args {}

/// The lines a sync prints on stdout; what was refused goes to stderr.
pub fn describe(report: &SyncReport) -> Vec<String> {
    let mut lines = Vec::new();
    for a in &report.approved {
        lines.push(format!(
            "approved `{}`: merged by {} in {}{}",
            a.proposal_id,
            a.merged_by,
            a.merge_commit.get(..12).unwrap_or(&a.merge_commit),
            if a.kind == "squash" { " (squash)" } else { "" }
        ));
    }
    for c in &report.changes {
        lines.push(format!(
            "took pull request #{}: merged by {} in {}, changing {}",
            c.pull_request,
            c.merged_by,
            c.merge_commit.get(..12).unwrap_or(&c.merge_commit),
            crate::domain::paths::quoted_list(&c.paths)
        ));
    }
    if let Some((from, to)) = &report.main_moved {
        lines.push(format!(
            "main fast-forwarded: {}..{}",
            from.get(..12).unwrap_or(from),
            to.get(..12).unwrap_or(to)
        ));
    }
    if !report.pushed.is_empty() {
        lines.push(format!("pushed: {}", report.pushed.join(", ")));
    }
    if !report.deleted.is_empty() {
        lines.push(format!(
            "deleted on the remote: {}",
            report.deleted.join(", ")
        ));
    }
    for pr in &report.pull_requests {
        lines.push(format!(
            "pull request #{} {} for `{}`{}",
            pr.number,
            pr.action,
            pr.proposal_id,
            pr.url
                .as_deref()
                .map(|u| format!(": {u}"))
                .unwrap_or_default()
        ));
    }
    lines.push(format!(
        "synced with `{}` ({}){}",
        report.remote,
        report.url,
        if report.refused.is_empty() {
            String::new()
        } else {
            format!("; {} refusal(s)", report.refused.len())
        }
    ));
    lines
}

pub fn run(repo: Option<PathBuf>, _args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&repo_root(repo)?)?;
    let svc = Service::open(&settings)?;
    let report = sync(&svc)?;
    for line in describe(&report) {
        println!("{line}");
    }
    for why in &report.refused {
        eprintln!("refused: {why}");
    }
    for why in &report.forge_errors {
        eprintln!("forge: {why}");
    }
    Ok(if !report.is_clean() {
        ExitCode::CheckFailed
    } else if !report.forge_errors.is_empty() {
        ExitCode::Failure
    } else {
        ExitCode::Ok
    })
}
