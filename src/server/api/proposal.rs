//! Proposals: submit, list, read, decide.

use super::*;

pub(super) async fn submit_proposal(
    State(state): State<AppState>,
    caller: Caller,
    BodyBytes(raw): BodyBytes,
) -> ApiResult {
    // Read part by part (`Submission::from_slice`) so a 422 names the field.
    let sub = match proposals::Submission::from_slice(&raw) {
        Ok(sub) => sub,
        Err(e) => return Ok(body_rejection(e)),
    };
    act_for_agent(&state, &caller, &sub.proposed.agent_id, "POST /proposals").await?;
    let svc = state.svc.clone();
    let done = blocking_write(&state, move || proposals::submit(&svc, sub)).await?;
    let p = done.proposal;
    reply(&wire::ProposalFiled {
        review_url: review_url(&state, &p.proposal_id),
        proposal_id: p.proposal_id,
        status: p.status,
        policies: p.policies,
        policy_version: p.policy_version,
        branch: p.branch,
        commit: p.commit,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_proposals(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let limit = parse_limit(q.limit.as_deref(), 100)?;
    let status = proposals::status_filter(q.status.as_deref()).map_err(|message| {
        ApiError(AppError::InvalidQuery {
            field: "status".into(),
            message,
        })
    })?;
    let svc = state.svc.clone();
    let list = blocking(move || proposals::list(&svc, status, limit)).await?;
    reply(&list)
}

pub(super) async fn get_proposal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let svc = state.svc.clone();
    let (p, audit_commit) = blocking(move || {
        let p = proposals::get(&svc, &id)?;
        let audit_commit = proposals::audit_commit(&svc, &id)?;
        Ok((p, audit_commit))
    })
    .await?;
    reply(&wire::ProposalView {
        proposal: p,
        audit_commit,
    })
}

pub(super) async fn decide_proposal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<wire::DecisionRequest>,
) -> ApiResult {
    caller.require_operator()?;
    let svc = state.svc.clone();
    let input = proposals::DecisionInput {
        verdict: body.decision,
        note: body.note,
        final_: body.final_,
    };
    let (p, checkout) = blocking_write(&state, move || {
        let decider = svc.settings().operator_name.clone();
        match body.wait_for_checkout {
            true => proposals::decide_in_person(&svc, &id, &input, &decider),
            false => Ok((
                proposals::decide(&svc, &id, &input, &decider)?,
                proposals::CheckoutState::Done,
            )),
        }
    })
    .await?;
    reply(&wire::ProposalDecided {
        proposal_id: p.proposal_id,
        status: p.status,
        decided_at: p.decided_at,
        decided_by: p.decided_by,
        merge_commit: p.merge_commit,
        branch: p.branch,
        checkout_waits: checkout == proposals::CheckoutState::Waits,
    })
}
