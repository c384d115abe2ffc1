//! The errors of the use cases, typed; the HTTP edge and the CLI each map
//! them once (`server::error`, `cli::exit`).

use crate::domain::request::PolicyCitation;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field of a request is malformed (HTTP 422 naming the field).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A query parameter is malformed (HTTP 422 naming it).
    #[error("{field}: {message}")]
    InvalidQuery { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a duplicate id).
    #[error("{0}")]
    Conflict(String),
    /// Something the request needs is not configured (no remote).
    #[error("{0}")]
    NotConfigured(String),
    /// The request is wrong for the state (already decided), as the
    /// original answered it (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    #[error("action_type `{action_type}` requires human approval; cannot self-approve")]
    SelfApproveBlocked {
        action_type: String,
        policies: Vec<PolicyCitation>,
    },
    #[error("forbidden by policy: {}", cite(.policies))]
    ForbiddenByPolicy { policies: Vec<PolicyCitation> },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("agent `{agent_id}` is paused: {reason}")]
    Paused { agent_id: String, reason: String },
    #[error("agent `{agent_id}` may not continue: {}", cite(.policies))]
    ContinueDenied {
        agent_id: String,
        policies: Vec<PolicyCitation>,
    },
    /// Admission: the budget left cannot cover a run's reservation.
    #[error("agent `{agent_id}` has not enough budget left for a run: {detail}")]
    BudgetInsufficient { agent_id: String, detail: String },
    #[error("proposal `{0}` was changed after it was submitted; it cannot be approved")]
    Tampered(String),
    #[error("proposal `{0}` has expired and can no longer be approved")]
    Expired(String),
    /// The audit chain or the index was changed behind gov's back: writes
    /// are refused until the operator runs `gov audit recover` (HTTP 503).
    #[error(
        "the audit chain was tampered with: {0}; writes are refused until `gov audit recover`"
    )]
    ChainTampered(String),
    /// The disk is full: nothing was written; a write succeeds again once
    /// space is freed (HTTP 507).
    #[error("the disk is full: nothing was written: {0}")]
    StorageFull(String),
    /// No policy set could be loaded: everything is refused (fail closed).
    #[error("no policy set is in force: {0}")]
    NoPolicy(String),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

fn cite(policies: &[PolicyCitation]) -> String {
    if policies.is_empty() {
        "no policy permits it".into()
    } else {
        policies
            .iter()
            .map(|p| format!("{} ({})", p.id, p.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Something failed underneath (Git, SQLite, a key): not the caller's fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InternalError(pub String);

impl AppError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(InternalError(e.to_string()))
    }
}

impl From<crate::domain::audit::EntryError> for AppError {
    fn from(e: crate::domain::audit::EntryError) -> Self {
        AppError::Invalid {
            field: e.field.to_string(),
            message: e.reason,
        }
    }
}

/// Free text (a note, a rationale): tabs and line breaks are fine, other
/// control characters (NUL, escape sequences) are not.
pub fn check_text(field: &'static str, s: &str) -> Result<(), AppError> {
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(AppError::invalid(
            field,
            "must not contain control characters other than tab and line breaks",
        ));
    }
    Ok(())
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::internal(format!("index: {e}"))
    }
}

impl From<git2::Error> for AppError {
    fn from(e: git2::Error) -> Self {
        AppError::internal(format!("git: {e}"))
    }
}
