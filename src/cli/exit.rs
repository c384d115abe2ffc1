//! Exit codes are part of the interface; docs/CLI.md lists them.

/// What a `gov` command tells its caller through its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// It worked; for `gov policy eval`, the request is auto-approved.
    Ok = 0,
    /// It could not be done: I/O, Git, an unreachable server, a failed run.
    Failure = 1,
    /// The command line or the configuration is wrong (bad flag, invalid
    /// `gov.toml` or policies, unknown agent, collisions on `gov init`).
    Config = 2,
    /// A check ran and found a problem: a tampered audit chain, a policy test
    /// that did not give its expected outcome.
    CheckFailed = 3,
    /// `gov policy eval`: the request needs a person.
    NeedsPerson = 4,
    /// `gov policy eval`: the request is forbidden.
    Forbidden = 5,
}

/// A failure on its way to the terminal: the message (with its cause chain
/// already joined) and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Builds a message from an error and every `source()` below it.
    pub fn from_error(code: ExitCode, err: &dyn std::error::Error) -> Self {
        Failure::new(code, error_chain(err))
    }
}

pub use crate::domain::errors::error_chain;

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::from_error(ExitCode::Config, &e)
    }
}
