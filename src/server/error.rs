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
use serde_json::json;

use crate::app::error::AppError;

/// An error on its way out of a handler.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

fn policies_json(p: &[crate::domain::request::PolicyCitation]) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or_default()
}

/// A 422 body naming one field.
pub fn unprocessable(loc: &[&str], msg: &str, kind: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"detail": [{"loc": loc, "msg": msg, "type": kind}]})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let msg = self.0.to_string();
        let (status, body) = match &self.0 {
            AppError::Invalid { field, message } => {
                return unprocessable(&["body", field], message, "value_error")
            }
            AppError::InvalidQuery { field, message } => {
                return unprocessable(&["query", field], message, "value_error")
            }
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, json!({"detail": msg})),
            AppError::Conflict(_) | AppError::NotConfigured(_) => {
                (StatusCode::CONFLICT, json!({"detail": msg}))
            }
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, json!({"detail": msg})),
            AppError::SelfApproveBlocked {
                action_type,
                policies,
            } => (
                StatusCode::BAD_REQUEST,
                json!({"detail": {
                    "error": "self_approve_blocked",
                    "action_type": action_type,
                    "message": format!("action_type '{action_type}' requires human approval; cannot self-approve"),
                    "audit_flagged": true,
                    "policies": policies_json(policies),
                }}),
            ),
            AppError::ForbiddenByPolicy { policies } => (
                StatusCode::FORBIDDEN,
                json!({"detail": {"error": "forbidden_by_policy", "message": msg, "policies": policies_json(policies)}}),
            ),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, json!({"detail": msg})),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, json!({"detail": msg})),
            AppError::Paused { agent_id, reason } => (
                StatusCode::LOCKED,
                json!({"error": "agent_paused", "detail": msg, "agent_id": agent_id, "reason": reason, "policies": []}),
            ),
            AppError::ContinueDenied { agent_id, policies } => (
                StatusCode::LOCKED,
                json!({"error": "continue_denied", "detail": msg, "agent_id": agent_id, "policies": policies_json(policies)}),
            ),
            AppError::BudgetInsufficient { agent_id, .. } => (
                StatusCode::LOCKED,
                json!({"error": "budget_insufficient", "detail": msg, "agent_id": agent_id, "policies": []}),
            ),
            AppError::Tampered(_) => (
                StatusCode::CONFLICT,
                json!({"detail": {"error": "proposal_tampered", "message": msg, "audit_flagged": true}}),
            ),
            AppError::Expired(_) => (
                StatusCode::CONFLICT,
                json!({"detail": {"error": "proposal_expired", "message": msg}}),
            ),
            AppError::ChainTampered(why) => {
                tracing::error!(reason = %why, "refusing writes: the audit chain was tampered with");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"detail": {"error": "audit_chain_tampered", "message": msg, "reason": why}}),
                )
            }
            AppError::StorageFull(why) => {
                tracing::error!(error = %why, "refusing a write: the disk is full");
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    json!({"detail": {"error": "storage_full", "message": "the disk is full: nothing was written; free space and retry"}}),
                )
            }
            AppError::NoPolicy(_) => {
                tracing::error!(error = %msg, "refusing: no policy set");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"detail": "no policy set is in force; see /status"}),
                )
            }
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"detail": "internal server error"}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
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
        // The body has arrived in time already (`server::read_body_in_time`).
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) => return Err(unprocessable(&["body"], &e.body_text(), "value_error")),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(unprocessable(&["body"], "Field required", "missing"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(Body(v)),
            Err(e) => {
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
                    None if inner.is_syntax() || inner.is_eof() => {
                        ("body".to_string(), "json_invalid")
                    }
                    None => (path, "value_error"),
                };
                let mut loc = vec!["body"];
                loc.extend(field.split('.').filter(|s| !s.is_empty() && *s != "body"));
                let msg = text.split(" at line ").next().unwrap_or(&text).to_string();
                Err(unprocessable(&loc, &msg, kind))
            }
        }
    }
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
