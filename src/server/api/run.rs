//! Runs (open, usage, finish) and tool-call evaluation.

use super::*;

pub(super) async fn start_run(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<wire::RunOpen>,
) -> ApiResult {
    caller.require_runner()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let run = blocking_write(&state, move || {
        runs::start_run_in(
            &svc,
            &body.agent_id,
            body.task_id.as_deref(),
            body.folder.as_deref(),
            actor,
        )
    })
    .await?;
    let opened = wire::RunOpened {
        run_id: run.run_id,
        agent_id: run.agent_id,
        agent_token: run.agent_token,
        reservation: Some(wire::RunReservation {
            tokens: run.reservation.tokens,
            dollars: run.reservation.micros.as_dollars_f64(),
            hold_until: run.hold_until,
        }),
    };
    Ok((StatusCode::CREATED, Json(opened)).into_response())
}

pub(super) async fn finish_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Body(end): Body<wire::RunFinish>,
) -> ApiResult {
    caller.require_runner()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let done = blocking_write(&state, move || runs::finish_run(&svc, &run_id, &end, actor)).await?;
    reply(&done)
}

pub(super) async fn run_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Body(report): Body<wire::UsageReport>,
) -> ApiResult {
    // A `gov guard` session meters itself with its own run's token; every
    // other run is metered by its runner.
    let own = match &caller {
        Caller::Agent {
            agent_id,
            run_id: Some(own),
        } if *own == run_id => Some(agent_id.clone()),
        _ => {
            caller.require_runner()?;
            None
        }
    };
    // The server records a session's own report as its own act (it checked
    // the run and priced the usage): entries acted by an agent change
    // nothing in the index.
    let actor = match own {
        Some(_) => crate::domain::audit::Actor::server(),
        None => caller.actor(&state.svc.settings().operator_name, None),
    };
    let svc = state.svc.clone();
    let charged = blocking_write(&state, move || match own {
        Some(agent) => run_budget::charge_own_run(&svc, &run_id, &agent, &report, actor),
        None => run_budget::charge_run(&svc, &run_id, &report, actor),
    })
    .await?;
    reply(&charged)
}

pub(super) async fn evaluate_tool(
    State(state): State<AppState>,
    caller: Caller,
    Body(mut call): Body<wire::ToolCall>,
) -> ApiResult {
    act_for_agent(&state, &caller, &call.agent_id, "POST /tools/evaluate").await?;
    // A run's token speaks for its own run only.
    if let Caller::Agent {
        run_id: Some(own), ..
    } = &caller
    {
        match &call.run_id {
            Some(named) if named != own => {
                return Err(AppError::Forbidden(format!(
                    "this token belongs to run `{own}`, not `{named}`"
                ))
                .into())
            }
            _ => call.run_id = Some(own.clone()),
        }
    }
    let svc = state.svc.clone();
    let answer = blocking_write(&state, move || runs::evaluate_tool(&svc, &call)).await?;
    reply(&answer)
}
