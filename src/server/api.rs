//! The JSON API: the original's contract (same paths, fields, defaults and
//! status codes) plus what gov adds (pause/resume, agent tokens, runs, tool
//! evaluation). docs/API.md describes every endpoint.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{act_for_agent, Caller};
use super::error::{body_rejection, ApiError, Body, BodyBytes, Query};
use super::{blocking, blocking_write, AppState};
use crate::app::error::AppError;
use crate::app::{agents, credentials, proposals, run_budget, runs};
use crate::domain::audit::{Event, NewEntry};
use crate::wire;

mod audit;
mod budget;
mod credential;
mod live;
mod pause;
mod proposal;
mod run;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/proposals",
            post(proposal::submit_proposal).get(proposal::list_proposals),
        )
        .route("/proposals/{id}", get(proposal::get_proposal))
        .route("/proposals/{id}/decision", post(proposal::decide_proposal))
        .route("/budget/{agent}", get(budget::get_budget))
        .route("/budget/{agent}/charge", post(budget::charge_budget))
        .route("/audit", post(audit::post_audit).get(audit::list_audit))
        .route("/scoreboard", get(live::scoreboard))
        .route("/status", get(live::status))
        .route("/status/me", get(live::status_me))
        .route("/admin/pause-all", post(pause::pause_all))
        .route("/agents/{agent}/pause", post(pause::pause_agent))
        .route("/agents/{agent}/resume", post(pause::resume_agent))
        .route("/agents/{agent}/tokens", post(pause::mint_token))
        .route("/tokens/revoke", post(pause::revoke_token))
        .route("/credentials/issue", post(credential::issue_credential))
        .route("/credentials/redeem", post(credential::redeem_credential))
        .route("/runs", post(run::start_run))
        .route("/runs/{run}/usage", post(run::run_usage))
        .route("/runs/{run}/finish", post(run::finish_run))
        .route("/tools/evaluate", post(run::evaluate_tool))
        .fallback(not_found)
}

type ApiResult = Result<Response, ApiError>;

/// A 200 with a typed body from [`crate::wire`].
fn reply<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(Json(body).into_response())
}

async fn not_found() -> Response {
    super::error::message(StatusCode::NOT_FOUND, "Not Found")
}

fn review_url(state: &AppState, id: &str) -> String {
    format!("http://127.0.0.1:{}/#proposal-{id}", state.port())
}

/// A `limit` query parameter: 1 to 500, `default` when absent.
fn parse_limit(raw: Option<&str>, default: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => Ok(n),
            _ => Err(ApiError(AppError::InvalidQuery {
                field: "limit".into(),
                message: "limit must be an integer from 1 to 500".into(),
            })),
        },
    }
}
