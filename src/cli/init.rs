//! `gov init [DIR]`: scaffold a governance repository.

use std::path::PathBuf;

use crate::app::init::{add_ci, ci_collisions, init, CiForge, InitError, InitOptions};

use super::{ExitCode, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repository (default: the current folder). It may
    /// exist, but none of the files gov writes may.
    pub dir: Option<PathBuf>,
    /// The operator's name, as it appears in approvals.
    #[arg(long, default_value = "operator")]
    pub operator_name: String,
    /// Approve with this existing OpenSSH Ed25519 private key instead of a
    /// new one in `.gov/keys/operator`.
    #[arg(long, value_name = "PATH")]
    pub operator_key: Option<PathBuf>,
    /// Also write the policy CI jobs of `docs/ci/` for this forge (checks,
    /// tests, diff and impact report on every pull request touching
    /// governed paths) and commit them.
    #[arg(long, value_enum, value_name = "FORGE")]
    pub ci: Option<Ci>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    Github,
    Gitlab,
}

impl From<Ci> for CiForge {
    fn from(c: Ci) -> Self {
        match c {
            Ci::Github => CiForge::Github,
            Ci::Gitlab => CiForge::Gitlab,
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode, Failure> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let ci = args.ci.map(CiForge::from);
    if let Some(forge) = ci {
        let collisions = ci_collisions(&dir, forge);
        if !collisions.is_empty() {
            return Err(InitError::Collisions(collisions).into());
        }
    }
    let report = init(&InitOptions {
        dir,
        operator_name: args.operator_name,
        operator_key: args.operator_key,
    })?;
    // All the work is done before the first line is printed: a reader
    // that stops early ends the process at that line (see
    // `Command::quits_when_output_closes`).
    let ci_commit = ci.map(|forge| add_ci(&report.dir, forge)).transpose()?;
    let d = report.dir.display();
    println!(
        "created a governance repository in {d} ({} files)",
        report.files
    );
    println!(
        "  first commit on main: {} (signed by the operator)",
        report.commit
    );
    println!("  server key:   {}", report.server_fingerprint);
    println!("  watchdog key: {}", report.watchdog_fingerprint);
    println!("  operator key: {}", report.operator_fingerprint);
    if let Some(commit) = ci_commit {
        println!("  policy CI jobs: {commit} (signed by the operator; see docs/ci/README.md)");
    }
    println!();
    println!("next steps:");
    println!("  cd {d}");
    println!("  gov policy test          # the policy set and its test cases");
    println!("  gov serve                # server and dashboard on 127.0.0.1:8005");
    println!("  gov watchdog             # in a second terminal");
    println!("  gov run noop smoke       # in a third: the zero-cost smoke agent");
    println!("  gov audit verify         # check the signed audit trail");
    Ok(ExitCode::Ok)
}
