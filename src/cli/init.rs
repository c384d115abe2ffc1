//! `gov init [DIR]`: scaffold a governance repository.

use std::path::PathBuf;

use super::{ExitCode, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repository (default: the current folder).
    pub dir: Option<PathBuf>,
}

pub fn run(_args: Args) -> Result<ExitCode, Failure> {
    Err(Failure::new(ExitCode::Failure, "gov init is being written"))
}
