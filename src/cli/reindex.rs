//! `gov reindex`: rebuild the index database from the audit chain.

use std::path::PathBuf;

use crate::app::governance;
use crate::config::Settings;

use super::{repo_root, ExitCode, Failure};

#[derive(Debug, Default, clap::Args)]
pub struct Args {}

pub fn run(repo: Option<PathBuf>, _args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&repo_root(repo)?)?;
    let n = governance::reindex(&settings)?;
    println!("reindexed {n} entries");
    Ok(ExitCode::Ok)
}
