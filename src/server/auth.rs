//! Who is calling: `Authorization: Bearer <token>` names the operator, the
//! runner, or an agent (a run token or one the operator minted). The rules
//! of who may do what live here, once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{blocking, AppState};
use crate::app::error::AppError;
use crate::config::AgentAuth;
use crate::domain::audit::Actor;
use crate::domain::credential::secrets_equal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Runner,
    Agent {
        agent_id: String,
        run_id: Option<String>,
    },
    /// No token. Accepted for agent requests only with
    /// `agent_auth = "optional"`.
    Anonymous,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized("malformed Authorization header; expected `Bearer <token>`")
            })?
            .to_string();
        if secrets_equal(&token, state.operator_token.expose()) {
            return Ok(Caller::Operator);
        }
        if secrets_equal(&token, state.runner_token.expose()) {
            return Ok(Caller::Runner);
        }
        let svc = state.svc.clone();
        match blocking(move || crate::app::runs::token_agent(&svc, &token)).await {
            Ok(Some((agent_id, run_id))) => Ok(Caller::Agent { agent_id, run_id }),
            Ok(None) => Err(unauthorized("invalid or revoked token")),
            Err(e) => Err(e.into_response()),
        }
    }
}

fn unauthorized(msg: &str) -> Response {
    ApiError(AppError::Unauthorized(msg.into())).into_response()
}

impl Caller {
    /// Decisions, pauses, resumes, pause-all, minting tokens.
    pub fn require_operator(&self) -> Result<(), AppError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Anonymous => Err(AppError::Unauthorized(
                "the operator's token is required".into(),
            )),
            _ => Err(AppError::Forbidden("only the operator may do this".into())),
        }
    }

    /// Budget charges, runs.
    pub fn require_runner(&self) -> Result<(), AppError> {
        match self {
            Caller::Operator | Caller::Runner => Ok(()),
            Caller::Anonymous => Err(AppError::Unauthorized(
                "the runner's token is required".into(),
            )),
            _ => Err(AppError::Forbidden("only the runner may do this".into())),
        }
    }

    /// Reads: anyone with a token, or anyone when agent auth is optional.
    pub fn require_reader(&self, auth: AgentAuth) -> Result<(), AppError> {
        match (self, auth) {
            (Caller::Anonymous, AgentAuth::Required) => {
                Err(AppError::Unauthorized("a bearer token is required".into()))
            }
            _ => Ok(()),
        }
    }

    /// Who the audit chain names for this caller acting for `agent_id`.
    pub fn actor(&self, operator_name: &str, agent_id: Option<&str>) -> Actor {
        match self {
            Caller::Operator => Actor::operator(operator_name),
            Caller::Runner => Actor::runner(),
            Caller::Agent { agent_id, .. } => Actor::agent(agent_id),
            Caller::Anonymous => Actor::agent(agent_id.unwrap_or("anonymous")),
        }
    }
}

/// Checks that the caller may act as `claimed`: the operator and the runner
/// may act for any agent; an agent token only for its own agent (anything
/// else is refused and audit-flagged); no token only when agent auth is
/// optional.
pub async fn act_for_agent(
    state: &AppState,
    caller: &Caller,
    claimed: &str,
    what: &'static str,
) -> Result<(), ApiError> {
    match caller {
        Caller::Operator | Caller::Runner => Ok(()),
        Caller::Agent { agent_id, .. } if agent_id == claimed => Ok(()),
        Caller::Agent { agent_id, .. } => {
            let svc = state.svc.clone();
            let (token_agent, claimed_id) = (agent_id.clone(), claimed.to_string());
            blocking(move || {
                crate::app::agents::flag_impersonation(&svc, &token_agent, &claimed_id, what)
            })
            .await?;
            Err(ApiError(AppError::Forbidden(format!(
                "this token belongs to agent `{agent_id}`, not `{claimed}`; the attempt is audit-flagged"
            ))))
        }
        Caller::Anonymous => match state.svc.settings().agent_auth {
            AgentAuth::Optional => Ok(()),
            AgentAuth::Required => Err(ApiError(AppError::Unauthorized(
                "an agent token is required (Authorization: Bearer ...)".into(),
            ))),
        },
    }
}
