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
    #[error("the charge would cross the budget cap of agent `{agent_id}`; the agent is paused")]
    OverCap {
        agent_id: String,
        budget: serde_json::Value,
    },
    #[error("proposal `{0}` was changed after it was submitted; it cannot be approved")]
    Tampered(String),
    #[error("proposal `{0}` has expired and can no longer be approved")]
    Expired(String),
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
