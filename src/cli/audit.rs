//! `gov audit verify|log|export`: check and read the audit chain.

use std::path::PathBuf;

use crate::app::audit as app;
use crate::app::audit::{AuditFilter, SignatureCheck};
use crate::app::governance::Governance;
use crate::app::governance::Role;
use crate::config::Settings;
use crate::domain::audit::{Actor, Event, NewEntry};

use super::{repo_root, ExitCode, Failure};

/// The event type of the entries `gov audit append-test` writes.
const APPEND_TEST: &str = "append_test";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain: signatures, sequence, linearity, approval
    /// merges on main, what is in force, and that the index agrees (exit 3
    /// if tampered).
    Verify(VerifyArgs),
    /// Show entries, newest first, with their signer and signature status.
    Log(LogArgs),
    /// Print every entry as a JSON line, oldest first.
    Export,
    /// After tampering: set the foreign or missing part aside under
    /// `refs/gov/set-aside/`, resume from the last verified entry and
    /// record it in an entry signed by the operator's key. Stop the server
    /// first.
    Recover(RecoverArgs),
    /// Internal, for tests and benchmarks: append COUNT test entries.
    #[command(hide = true)]
    AppendTest(AppendTestArgs),
}

#[derive(Debug, Default, clap::Args)]
pub struct VerifyArgs {
    /// Also replay every recorded decision against the policy version it
    /// cites and check its recorded outcome and policies.
    #[arg(long)]
    pub replay: bool,
}

#[derive(Debug, Default, clap::Args)]
pub struct LogArgs {
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub event: Option<String>,
    #[arg(long)]
    pub proposal: Option<String>,
    /// How many entries to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
}

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Why: recorded in the `audit_recovered` entry.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct AppendTestArgs {
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Entries per lock hold (group commit).
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Sign as the watchdog instead of the server.
    #[arg(long)]
    pub watchdog: bool,
}

pub fn run(repo: Option<PathBuf>, args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&repo_root(repo)?)?;
    match args.command {
        AuditCommand::Verify(a) => verify(&settings, &a),
        AuditCommand::Log(a) => log(&settings, a),
        AuditCommand::Export => export(&settings),
        AuditCommand::Recover(a) => recover(&settings, &a),
        AuditCommand::AppendTest(a) => append_test(&settings, a),
    }
}

fn verify(settings: &Settings, args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let mut report = app::verify(settings)?;
    for note in &report.notes {
        println!("note: {note}");
    }
    if args.replay {
        let started = std::time::Instant::now();
        let replayed = crate::app::replay::replay(settings)?;
        if replayed.problems.is_empty() {
            println!(
                "ok: {} decisions replayed against {} policy versions in {:.1}s, each as recorded",
                replayed.decisions,
                replayed.versions,
                started.elapsed().as_secs_f64()
            );
        }
        report.problems.extend(replayed.problems);
    }
    match report.problems.first() {
        None => {
            println!(
                "ok: {} entries, signatures good, chain linear",
                report.entries
            );
            let signed = report.merges_checked - report.forge_merges;
            if signed > 0 {
                println!(
                    "ok: {signed} approval merges on `{}` signed by approvers",
                    settings.main_branch
                );
            }
            if report.forge_merges > 0 {
                println!(
                    "ok: {} merges on `{}` made on the forge, each recorded by gov",
                    report.forge_merges, settings.main_branch
                );
            }
            Ok(ExitCode::Ok)
        }
        Some(first) => {
            println!("tampered: {first}");
            if report.problems.len() > 1 {
                println!("({} more problems after it)", report.problems.len() - 1);
            }
            Ok(ExitCode::CheckFailed)
        }
    }
}

fn recover(settings: &Settings, a: &RecoverArgs) -> Result<ExitCode, Failure> {
    use crate::app::recover::{recover, RecoverError};
    let done = recover(settings, &a.reason).map_err(|e| {
        let code = match &e {
            RecoverError::NothingToRecover(_) | RecoverError::NoReason => ExitCode::Config,
            RecoverError::InUse(_) => ExitCode::Conflict,
            _ => ExitCode::Failure,
        };
        Failure::from_error(code, &e)
    })?;
    for s in &done.set_aside {
        println!(
            "set aside: the {} (commit {}) under `{}`: {}",
            s.what,
            s.commit.to_string().get(..12).unwrap_or_default(),
            s.refname,
            s.why
        );
    }
    if let Some(p) = &done.index_moved_to {
        println!("the old index is kept at `{}`", p.display());
    }
    println!(
        "recovered: resumed from entry #{} (commit {}); recorded as entry #{}, signed by the operator",
        done.resumed_from.0,
        done.resumed_from.1.to_string().get(..12).unwrap_or_default(),
        done.entry_seq
    );
    Ok(ExitCode::Ok)
}

fn signature_text(check: &SignatureCheck) -> String {
    match check {
        SignatureCheck::Good { principal, .. } => format!("good ({principal})"),
        SignatureCheck::Missing => "MISSING".into(),
        SignatureCheck::Bad(why) => format!("BAD: {why}"),
    }
}

fn log(settings: &Settings, a: LogArgs) -> Result<ExitCode, Failure> {
    let filter = AuditFilter {
        agent_id: a.agent,
        event_type: a.event,
        proposal_id: a.proposal,
        limit: Some(a.limit),
        ..AuditFilter::default()
    };
    let lines = app::log(settings, &filter)?;
    for l in lines {
        let e = &l.indexed.entry;
        let mut ids = String::new();
        for (k, v) in [
            ("agent", &e.entry.agent_id),
            ("proposal", &e.entry.proposal_id),
            ("task", &e.entry.task_id),
        ] {
            if let Some(v) = v {
                ids.push_str(&format!(" {k}={v}"));
            }
        }
        println!(
            "#{} {} {} by {}{} [{} {}; signature {}]",
            e.seq,
            e.ts.to_rfc3339(),
            e.entry.event_type(),
            e.entry.actor.0,
            ids,
            l.indexed.commit.get(..12).unwrap_or(&l.indexed.commit),
            l.indexed.signer_role.as_deref().unwrap_or("?"),
            signature_text(&l.signature),
        );
        if let Some(shadow) = e
            .entry
            .decision
            .as_ref()
            .and_then(|d| d.decision.shadow_summary())
        {
            println!("    shadow: {shadow}");
        }
    }
    Ok(ExitCode::Ok)
}

fn export(settings: &Settings) -> Result<ExitCode, Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    app::export(settings, &mut out)?;
    std::io::Write::flush(&mut out)
        .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot write the export: {e}")))?;
    Ok(ExitCode::Ok)
}

fn append_test(settings: &Settings, a: AppendTestArgs) -> Result<ExitCode, Failure> {
    let role = if a.watchdog {
        Role::Watchdog
    } else {
        Role::Server
    };
    let gov = Governance::open(settings, role)?;
    let pid = std::process::id();
    let batch = a.batch.max(1);
    let mut done = 0;
    while done < a.count {
        let n = batch.min(a.count - done);
        let entries = (0..n)
            .map(|i| {
                let payload = serde_json::json!({"pid": pid, "i": done + i});
                Event::other(APPEND_TEST, payload)
                    .map(|event| NewEntry::new(Actor::runner(), event).agent(format!("test-{pid}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::new(ExitCode::Failure, e.to_string()))?;
        gov.append(entries)?;
        done += n;
    }
    Ok(ExitCode::Ok)
}
