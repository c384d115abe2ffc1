//! `gov sandbox-exec --read P... --write P... -- PROGRAM ARGS...`: the
//! launcher `gov run` starts every agent through (hidden from `--help`). It
//! confines itself with Landlock ([`crate::runner::sandbox`]) and then
//! executes the agent in its place, same process, same environment and
//! folder, so the agent and everything it starts stay confined. It also
//! drops every capability (an agent started as root keeps none of root's
//! powers beyond its files). If either cannot be done, nothing is executed
//! (exit 126).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use super::{ExitCode, Failure};
use crate::runner::sandbox::{drop_capabilities, enforce, Confinement};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder or file the agent may read and execute.
    #[arg(long = "read", value_name = "PATH")]
    pub read: Vec<PathBuf>,
    /// A folder or file the agent may read and write.
    #[arg(long = "write", value_name = "PATH")]
    pub write: Vec<PathBuf>,
    /// The agent's program and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// The exit status when the agent could not be confined or started: as a
/// shell says when a command cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;

pub fn run(args: Args) -> Result<ExitCode, Failure> {
    let confinement = Confinement {
        read: args.read,
        write: args.write,
    };
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Failure::new(ExitCode::Config, "sandbox-exec: no program"));
    };
    let shown = std::path::Path::new(program).display().to_string();
    if let Err(e) = enforce(&confinement).and_then(|_| drop_capabilities()) {
        eprintln!(
            "gov sandbox-exec: cannot confine `{shown}`, so it does not run: {}",
            crate::domain::errors::error_chain(&e)
        );
        std::process::exit(i32::from(CANNOT_EXECUTE));
    }
    // Only returns when the program could not be executed.
    let e = std::process::Command::new(program).args(rest).exec();
    eprintln!("gov sandbox-exec: cannot run `{shown}`: {e}");
    std::process::exit(i32::from(CANNOT_EXECUTE));
}
