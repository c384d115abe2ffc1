//! `gov watchdog [--once] [--interval SECONDS]`: the watchdog as its own
//! process. Each pass is [`crate::app::watchdog::pass`]; this file is the
//! loop around it, the signals and the printing.
//!
//! It opens the repository itself, signing as the watchdog, and never talks
//! to the server, so it keeps working when the server is hung or down.
//! SIGTERM or Ctrl-C lets the current pass finish, then it exits 0. With
//! `[remote] name` set, each pass ends with a `gov sync`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{ExitCode, Failure};
use crate::app::governance::Role;
use crate::app::service::Service;
use crate::app::watchdog::{pass, PassReport};
use crate::config::Settings;
use crate::runner::process::stop_on_signals;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do one pass, print what it did and exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between two passes (default: `[watchdog] interval_seconds`
    /// in gov.toml, 30).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
}

/// The lines `--once` prints (and the loop logs when a pass did something).
pub fn describe(report: &PassReport) -> Vec<String> {
    let mut lines = vec![format!(
        "checked {} agent(s){}",
        report.checked.len(),
        if report.already_paused.is_empty() {
            String::new()
        } else {
            format!("; already paused: {}", report.already_paused.join(", "))
        }
    )];
    for p in &report.paused {
        let why: Vec<String> = p
            .policies
            .iter()
            .map(|c| {
                if c.reason.is_empty() {
                    c.id.clone()
                } else {
                    format!("{} ({})", c.id, c.reason)
                }
            })
            .collect();
        let why = if why.is_empty() {
            "no policy permits it to continue".to_string()
        } else {
            why.join("; ")
        };
        lines.push(format!("paused `{}`: {why}", p.agent_id));
    }
    for id in &report.expired {
        lines.push(format!("expired proposal `{id}`"));
    }
    lines
}

fn open(settings: &Settings) -> Result<Service, Failure> {
    Ok(Service::open_as(settings, Role::Watchdog)?)
}

fn one_pass(svc: &Service) -> Result<PassReport, Failure> {
    Ok(pass(svc, svc.now())?)
}

/// Why the policy set on `main`'s tip did not load, if it did not (the
/// pass then used the last good set).
fn broken_policy(svc: &Service) -> Option<String> {
    svc.policy_status().error.map(|why| {
        format!("the policy set on `main` does not load ({why}); the pass used the last good set")
    })
}

/// With a remote configured, one sync after the pass: a failure (the
/// remote unreachable, a refused merge) is printed and tried again next
/// pass; it never stops the watchdog. With `quiet`, a sync that found
/// nothing to say prints nothing.
fn sync_remote(svc: &Service, quiet: bool) {
    if svc.settings().remote.is_none() {
        return;
    }
    match crate::app::remote::sync(svc) {
        Ok(report) => {
            let news = report.main_moved.is_some()
                || !report.approved.is_empty()
                || !report.pull_requests.is_empty();
            if !quiet || news {
                for line in super::sync::describe(&report) {
                    println!("{line}");
                }
            }
            for why in &report.refused {
                eprintln!("gov watchdog: sync refused: {why}");
            }
            for why in &report.forge_errors {
                eprintln!("gov watchdog: forge: {why}");
            }
        }
        Err(e) => eprintln!(
            "gov watchdog: sync failed: {}",
            super::exit::error_chain(&e)
        ),
    }
}

/// Sleeps up to `d`, waking early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let svc = open(&settings)?;
    if args.once {
        let report = one_pass(&svc)?;
        for line in describe(&report) {
            println!("{line}");
        }
        sync_remote(&svc, false);
        return match broken_policy(&svc) {
            Some(why) => Err(Failure::new(ExitCode::Failure, why)),
            None => Ok(ExitCode::Ok),
        };
    }
    let interval = Duration::from_secs(args.interval.unwrap_or(settings.watchdog.interval_seconds));
    let stop = stop_on_signals()
        .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot watch for signals: {e}")))?;
    println!(
        "gov watchdog: watching `{}` every {}s",
        root.display(),
        interval.as_secs()
    );
    while !stop.load(Ordering::SeqCst) {
        // A failed pass (a policy set that does not load, a busy disk) is
        // reported and tried again next time; the watchdog keeps running.
        match one_pass(&svc) {
            Ok(report) => {
                if !report.paused.is_empty() || !report.expired.is_empty() {
                    for line in describe(&report) {
                        println!("{line}");
                    }
                }
            }
            Err(f) => eprintln!("gov watchdog: pass failed: {}", f.message),
        }
        if let Some(why) = broken_policy(&svc) {
            eprintln!("gov watchdog: {why}");
        }
        sync_remote(&svc, true);
        // Between passes the watchdog holds no repository handle, so none
        // keeps a pack the server's maintenance deletes meanwhile.
        svc.let_go_of_idle_handles();
        nap(interval, &stop);
    }
    println!("gov watchdog: stopped");
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::watchdog::Paused;
    use crate::domain::request::PolicyCitation;

    #[test]
    fn a_pass_is_described_line_by_line() {
        let report = PassReport {
            checked: vec!["a".into(), "b".into()],
            already_paused: vec!["c".into()],
            paused: vec![Paused {
                agent_id: "b".into(),
                policies: vec![PolicyCitation {
                    id: "watchdog-looping".into(),
                    reason: "the agent keeps proposing the same payload".into(),
                    effect: Some("forbid".into()),
                }],
            }],
            expired: vec!["p-1".into()],
        };
        assert_eq!(
            describe(&report),
            [
                "checked 2 agent(s); already paused: c",
                "paused `b`: watchdog-looping (the agent keeps proposing the same payload)",
                "expired proposal `p-1`",
            ]
        );
        assert_eq!(describe(&PassReport::default()), ["checked 0 agent(s)"]);
    }
}
