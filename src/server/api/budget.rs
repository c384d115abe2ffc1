//! Budgets: read, charge.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct WaveQuery {
    wave: Option<i64>,
}

pub(super) async fn get_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
    Query(q): Query<WaveQuery>,
) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let wave = q.wave.unwrap_or(0);
    if wave < 0 {
        return Err(ApiError(AppError::InvalidQuery {
            field: "wave".into(),
            message: "wave must be at least 0".into(),
        }));
    }
    let svc = state.svc.clone();
    let view = blocking(move || agents::budget(&svc, &agent, wave)).await?;
    reply(&view)
}

pub(super) async fn charge_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(body): Body<wire::ChargeRequest>,
) -> ApiResult {
    caller.require_runner()?;
    let actor = caller.actor(&state.svc.settings().operator_name, Some(&agent));
    let svc = state.svc.clone();
    let input = agents::ChargeInput {
        tokens: body.tokens,
        dollars: body.dollars,
        tool: body.tool,
        task_id: body.task_id,
        model: body.model,
        usage: body.usage,
        ..agents::ChargeInput::default()
    };
    let view = blocking_write(&state, move || agents::charge(&svc, &agent, &input, actor)).await?;
    reply(&view)
}
