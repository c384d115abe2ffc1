//! The one place where errors become HTTP answers, in FastAPI's shapes so
//! that clients of the original read them unchanged:
//! `{"detail": "..."}`, `{"detail": {"error": ...}}`, and for malformed
//! bodies 422 `{"detail": [{"loc": ["body", "field"], "msg", "type"}]}`.
//! 5xx bodies say nothing internal; the cause is logged.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::app::error::AppError;
use crate::domain::request::PolicyCitation;
use crate::wire::{ErrorDetail, ErrorReply, FieldError, Refusal, RunSkipped};

/// An error on its way out of a handler.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

/// A 422 body naming one field.
pub fn unprocessable(loc: &[&str], msg: &str, kind: &str) -> Response {
    let field = FieldError {
        loc: loc.iter().map(|s| s.to_string()).collect(),
        msg: msg.into(),
        kind: kind.into(),
    };
    let body = ErrorReply {
        detail: ErrorDetail::Fields(vec![field]),
    };
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// A reply with a plain `{"detail": message}`.
pub fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(ErrorReply::message(text))).into_response()
}

fn refusal(status: StatusCode, r: Refusal) -> Response {
    let body = ErrorReply {
        detail: ErrorDetail::Refusal(r),
    };
    (status, axum::Json(body)).into_response()
}

/// A refused run (423), in the shape `POST /runs` documents.
fn locked(
    error: &str,
    detail: String,
    agent_id: &str,
    reason: Option<String>,
    policies: &[PolicyCitation],
) -> Response {
    let body = RunSkipped {
        error: error.into(),
        detail,
        agent_id: Some(agent_id.into()),
        reason,
        policies: policies.to_vec(),
    };
    (StatusCode::LOCKED, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let msg = self.0.to_string();
        match &self.0 {
            AppError::Invalid { field, message } => {
                unprocessable(&["body", field], message, "value_error")
            }
            AppError::InvalidQuery { field, message } => {
                unprocessable(&["query", field], message, "value_error")
            }
            AppError::NotFound(_) => self::message(StatusCode::NOT_FOUND, msg),
            AppError::Conflict(_) | AppError::NotConfigured(_) => {
                self::message(StatusCode::CONFLICT, msg)
            }
            AppError::BadRequest(_) => self::message(StatusCode::BAD_REQUEST, msg),
            AppError::SelfApproveBlocked {
                action_type,
                policies,
            } => refusal(
                StatusCode::BAD_REQUEST,
                Refusal {
                    action_type: Some(action_type.clone()),
                    audit_flagged: Some(true),
                    policies: Some(policies.clone()),
                    ..Refusal::new(
                        "self_approve_blocked",
                        format!("action_type '{action_type}' requires human approval; cannot self-approve"),
                    )
                },
            ),
            AppError::ForbiddenByPolicy { policies } => refusal(
                StatusCode::FORBIDDEN,
                Refusal {
                    policies: Some(policies.clone()),
                    ..Refusal::new("forbidden_by_policy", msg)
                },
            ),
            AppError::Forbidden(_) => self::message(StatusCode::FORBIDDEN, msg),
            AppError::Unauthorized(_) => self::message(StatusCode::UNAUTHORIZED, msg),
            AppError::Paused { agent_id, reason } => {
                locked("agent_paused", msg, agent_id, Some(reason.clone()), &[])
            }
            AppError::ContinueDenied { agent_id, policies } => {
                locked("continue_denied", msg, agent_id, None, policies)
            }
            AppError::BudgetInsufficient { agent_id, .. } => {
                locked("budget_insufficient", msg, agent_id, None, &[])
            }
            AppError::Tampered(_) => refusal(
                StatusCode::CONFLICT,
                Refusal {
                    audit_flagged: Some(true),
                    ..Refusal::new("proposal_tampered", msg)
                },
            ),
            AppError::Expired(_) => refusal(
                StatusCode::CONFLICT,
                Refusal::new("proposal_expired", msg),
            ),
            AppError::ChainTampered(why) => {
                tracing::error!(reason = %why, "refusing writes: the audit chain was tampered with");
                refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Refusal {
                        reason: Some(why.clone()),
                        ..Refusal::new("audit_chain_tampered", msg)
                    },
                )
            }
            AppError::StorageFull(why) => {
                tracing::error!(error = %why, "refusing a write: the disk is full");
                refusal(
                    StatusCode::INSUFFICIENT_STORAGE,
                    Refusal::new(
                        "storage_full",
                        "the disk is full: nothing was written; free space and retry",
                    ),
                )
            }
            AppError::NoPolicy(_) => {
                tracing::error!(error = %msg, "refusing: no policy set");
                self::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no policy set is in force; see /status",
                )
            }
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                self::message(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            }
        }
    }
}

/// A JSON body whose rejections are FastAPI-shaped 422s naming the field
/// (axum's own plain-text rejections never reach a client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let BodyBytes(bytes) = BodyBytes::from_request(req, state).await?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(Body)
            .map_err(body_rejection)
    }
}

/// A body's bytes, refused as [`Body`] refuses them when they cannot be
/// read or are empty: for a type read from them in more than one pass
/// (`wire::Submission::from_slice`), then refused with [`body_rejection`].
#[derive(Debug, Clone, Default)]
pub struct BodyBytes(pub axum::body::Bytes);

impl<S> FromRequest<S> for BodyBytes
where
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body has arrived in time already (`server::read_body_in_time`).
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) => return Err(unprocessable(&["body"], &e.body_text(), "value_error")),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(unprocessable(&["body"], "Field required", "missing"));
        }
        Ok(BodyBytes(bytes))
    }
}

/// The 422 for a body that does not read as its type: `loc` names the field
/// (`["body", "wave"]`), `missing` for a field left out, `json_invalid` for
/// text that is not JSON.
pub fn body_rejection(e: serde_path_to_error::Error<serde_json::Error>) -> Response {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let text = inner.to_string();
    // `missing field `x`` names the field itself, one level down.
    let (field, kind) = match text
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        Some(f) if path == "." => (f.to_string(), "missing"),
        Some(f) => (format!("{path}.{f}"), "missing"),
        None if inner.is_syntax() || inner.is_eof() => ("body".to_string(), "json_invalid"),
        None => (path, "value_error"),
    };
    let mut loc = vec!["body"];
    loc.extend(field.split('.').filter(|s| !s.is_empty() && *s != "body"));
    let msg = text.split(" at line ").next().unwrap_or(&text).to_string();
    unprocessable(&loc, &msg, kind)
}

/// A query string whose rejections are 422s naming the parameter.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> Response {
    let text = e.body_text();
    let field = text
        .split("missing field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or("query");
    unprocessable(&["query", field], &text, "value_error")
}
