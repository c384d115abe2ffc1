//! Pauses (one agent, all) and agent tokens (mint, revoke).

use super::*;

/// The body of pause calls is optional (`{}` or nothing); when there is
/// one it must be a JSON object (an array would otherwise read as a struct).
pub(super) fn reason_of(raw: &axum::body::Bytes) -> Result<Option<String>, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| AppError::invalid("body", format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(AppError::invalid("body", "the body must be a JSON object").into());
    }
    let b: wire::PauseRequest =
        serde_json::from_value(value).map_err(|e| AppError::invalid("reason", e.to_string()))?;
    Ok(b.reason)
}

pub(super) async fn pause_all(
    State(state): State<AppState>,
    caller: Caller,
    raw: axum::body::Bytes,
) -> ApiResult {
    caller.require_operator()?;
    let reason = reason_of(&raw)?.unwrap_or_else(|| "manual_pause_all".into());
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let paused = blocking_write(&state, move || agents::pause_all(&svc, &reason, actor)).await?;
    reply(&wire::PausedAll {
        paused_agents: paused,
    })
}

pub(super) async fn pause_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult {
    caller.require_operator()?;
    let reason = reason_of(&raw)?.unwrap_or_else(|| "paused by the operator".into());
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let s = blocking_write(&state, move || agents::pause(&svc, &agent, &reason, actor)).await?;
    reply(&s)
}

pub(super) async fn resume_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
) -> ApiResult {
    caller.require_operator()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let s = blocking_write(&state, move || agents::resume(&svc, &agent, actor)).await?;
    reply(&s)
}

pub(super) async fn mint_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
) -> ApiResult {
    caller.require_operator()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let a = agent.clone();
    let token = blocking_write(&state, move || runs::mint_token(&svc, &a, actor)).await?;
    Ok((
        StatusCode::CREATED,
        Json(wire::TokenMinted {
            agent_id: agent,
            agent_token: token,
        }),
    )
        .into_response())
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<wire::TokenRevoke>,
) -> ApiResult {
    caller.require_operator()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let agent_id =
        blocking_write(&state, move || runs::revoke_token(&svc, &body.token, actor)).await?;
    reply(&wire::TokenRevoked {
        agent_id,
        revoked: true,
    })
}
