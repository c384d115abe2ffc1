//! `gov reindex`: rebuild the index database from the audit chain.

use std::path::PathBuf;

use crate::app::governance;
use crate::config::Settings;

use super::{repo_root, ExitCode, Failure};

#[derive(Debug, Default, clap::Args)]
pub struct Args {}

pub fn run(repo: Option<PathBuf>, _args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::load(&repo_root(repo)?)?;
    let done = governance::reindex(&settings).map_err(|e| {
        let code = match &e {
            governance::GovError::Store(crate::store::git::StoreError::Tampered(_)) => {
                ExitCode::CheckFailed
            }
            _ => ExitCode::Failure,
        };
        Failure::from_error(code, &e)
    })?;
    if let Some(aside) = &done.moved_aside {
        println!(
            "the index was unreadable; moved it to `{}`",
            aside.display()
        );
    }
    println!("reindexed {} entries", done.entries);
    Ok(ExitCode::Ok)
}
