//! Exit codes are part of the interface; docs/CLI.md lists them. The code
//! of a failure is decided here, once per error type (`From` impls below)
//! and once for a server's reply ([`Failure::from_reply`]); commands only
//! propagate.

use crate::app::error::AppError;

/// What a `gov` command tells its caller through its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// It worked; for `gov policy eval`, the request is auto-approved.
    Ok = 0,
    /// It could not be done: I/O, Git, a failed run.
    Failure = 1,
    /// The command line, the configuration or the input is wrong (bad flag,
    /// no repository, invalid `gov.toml` or policies, a token the server
    /// does not take, collisions on `gov init`).
    Config = 2,
    /// A check ran and found a problem: a tampered audit chain, a policy test
    /// that did not give its expected outcome, a refused sync.
    CheckFailed = 3,
    /// `gov policy eval`: the request needs a person.
    NeedsPerson = 4,
    /// Refused by policy (`gov policy eval`: the request is forbidden).
    Forbidden = 5,
    /// What was named does not exist: a proposal, an agent, a run.
    NotFound = 6,
    /// The state does not allow it: already decided, expired, tampered,
    /// paused, over the budget cap.
    Conflict = 7,
    /// The server could not be reached.
    Unreachable = 8,
}

impl std::process::Termination for ExitCode {
    fn report(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self as u8)
    }
}

impl ExitCode {
    /// The code for an error the use cases return.
    pub fn of(e: &AppError) -> ExitCode {
        match e {
            AppError::Invalid { .. }
            | AppError::InvalidQuery { .. }
            | AppError::Unauthorized(_)
            | AppError::Forbidden(_)
            | AppError::NoPolicy(_)
            | AppError::NotConfigured(_) => ExitCode::Config,
            AppError::NotFound(_) => ExitCode::NotFound,
            AppError::Conflict(_)
            | AppError::BadRequest(_)
            | AppError::Paused { .. }
            | AppError::BudgetInsufficient { .. }
            | AppError::Tampered(_)
            | AppError::Expired(_) => ExitCode::Conflict,
            AppError::SelfApproveBlocked { .. }
            | AppError::ForbiddenByPolicy { .. }
            | AppError::ContinueDenied { .. } => ExitCode::Forbidden,
            // The chain was tampered with: a check failed.
            AppError::ChainTampered(_) => ExitCode::CheckFailed,
            AppError::Internal(_) | AppError::StorageFull(_) => ExitCode::Failure,
        }
    }

    /// The code for a server's answer other than 200, by its status and,
    /// where one status means two things, its `error`.
    pub fn of_reply(status: u16, error: Option<&str>) -> ExitCode {
        match (status, error) {
            (400, Some("self_approve_blocked")) | (403, Some("forbidden_by_policy")) => {
                ExitCode::Forbidden
            }
            (423, Some("continue_denied")) => ExitCode::Forbidden,
            (400 | 409 | 423, _) => ExitCode::Conflict,
            (401 | 403 | 422 | 503, _) => ExitCode::Config,
            (404, _) => ExitCode::NotFound,
            _ => ExitCode::Failure,
        }
    }
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

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        Failure::from_error(ExitCode::of(&e), &e)
    }
}

impl From<crate::app::governance::GovError> for Failure {
    fn from(e: crate::app::governance::GovError) -> Self {
        let code = if e.is_tampered() {
            ExitCode::CheckFailed
        } else {
            ExitCode::Failure
        };
        Failure::from_error(code, &e)
    }
}

impl From<crate::app::audit::VerifyError> for Failure {
    fn from(e: crate::app::audit::VerifyError) -> Self {
        use crate::app::audit::VerifyError;
        let code = match e {
            VerifyError::Signers(_) | VerifyError::NoSigners { .. } => ExitCode::Config,
            VerifyError::Gov(_) | VerifyError::ChainChanged { .. } => ExitCode::Failure,
        };
        Failure::from_error(code, &e)
    }
}

impl From<crate::app::init::InitError> for Failure {
    fn from(e: crate::app::init::InitError) -> Self {
        use crate::app::init::InitError;
        use crate::app::init::KeyError;
        let code = match &e {
            InitError::Collisions(_)
            | InitError::BadOperatorName(_)
            | InitError::Config(_)
            | InitError::Key(KeyError::Read { .. })
            | InitError::Key(KeyError::Parse { .. })
            | InitError::Key(KeyError::NotEd25519 { .. }) => ExitCode::Config,
            _ => ExitCode::Failure,
        };
        Failure::from_error(code, &e)
    }
}

impl From<crate::runner::run::RunError> for Failure {
    fn from(e: crate::runner::run::RunError) -> Self {
        use crate::client::ClientError;
        use crate::runner::run::RunError;
        match &e {
            RunError::UnknownAgent { .. } | RunError::UnknownToServer(_) => {
                Failure::from_error(ExitCode::NotFound, &e)
            }
            RunError::Open(ClientError::Unreachable { .. } | ClientError::Timeout { .. }) => {
                Failure::new(
                    ExitCode::Unreachable,
                    format!(
                        "{}; is `gov serve` running for this repository? (the server is `GOV_URL`, else the one `.gov/server.json` names, else `[server] port`)",
                        error_chain(&e)
                    ),
                )
            }
            _ if e.is_config() => Failure::from_error(ExitCode::Config, &e),
            _ => Failure::from_error(ExitCode::Failure, &e),
        }
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::from_error(ExitCode::Config, &e)
    }
}
