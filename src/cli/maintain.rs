//! `gov maintain`: one pass of repository maintenance by hand.

use std::path::PathBuf;

use crate::app::governance;
use crate::config::Settings;

use super::{repo_root, ExitCode, Failure};

#[derive(Debug, Default, clap::Args)]
pub struct Args {}

pub fn run(repo: Option<PathBuf>, _args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&repo_root(repo)?)?;
    let r =
        governance::maintain(&settings).map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    println!(
        "packed {} loose objects ({} left), merged {} of {} packs ({} now), packed {} loose refs; objects take {} KiB",
        r.loose_packed,
        r.loose_after,
        r.packs_merged,
        r.packs_before,
        r.packs_after,
        r.loose_refs_packed,
        r.object_bytes / 1024
    );
    Ok(ExitCode::Ok)
}
