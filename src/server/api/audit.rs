//! The audit chain: an agent's own entry, the list.

use super::*;

pub(super) async fn post_audit(
    State(state): State<AppState>,
    caller: Caller,
    Body(mut body): Body<wire::AuditPost>,
) -> ApiResult {
    let event = Event::posted(body.event_type, Value::Object(body.payload))
        .map_err(|e| AppError::invalid("event_type", e.to_string()))?;
    if !event.agent_may_post() {
        return Err(AppError::invalid(
            "event_type",
            format!(
                "`{}` is recorded by gov itself and cannot be posted",
                event.name()
            ),
        )
        .into());
    }
    if body
        .agent_id
        .as_deref()
        .is_some_and(|a| !crate::config::valid_agent_id(a))
    {
        return Err(AppError::invalid("agent_id", "not a valid agent id").into());
    }
    if body
        .proposal_id
        .as_deref()
        .is_some_and(|p| !crate::domain::proposal::valid_proposal_id(p))
    {
        return Err(AppError::invalid("proposal_id", "not a valid proposal id").into());
    }
    match (&caller, &body.agent_id) {
        (_, Some(a)) => act_for_agent(&state, &caller, a, "POST /audit").await?,
        (Caller::Agent { agent_id, .. }, None) => body.agent_id = Some(agent_id.clone()),
        (Caller::Anonymous, None) => caller.require_reader(state.svc.settings().agent_auth)?,
        _ => {}
    }
    let actor = caller.actor(
        &state.svc.settings().operator_name,
        body.agent_id.as_deref(),
    );
    let mut entry = NewEntry::new(actor, event);
    entry.agent_id = body.agent_id;
    entry.proposal_id = body.proposal_id;
    entry.task_id = body.task_id;
    // The event type, ids and payload depth, before anything else is done.
    entry.validate().map_err(AppError::from)?;
    let svc = state.svc.clone();
    let written = blocking_write(&state, move || Ok(svc.governance().append(vec![entry])?)).await?;
    match written.first() {
        Some(e) => reply(&wire::AuditPosted {
            audit_id: e.seq,
            ts: e.ts,
        }),
        None => Err(AppError::internal("nothing was written").into()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    agent_id: Option<String>,
    event_type: Option<String>,
    proposal_id: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let limit = parse_limit(q.limit.as_deref(), 50)?;
    let filter = crate::app::audit::AuditFilter {
        agent_id: q.agent_id.filter(|s| !s.is_empty()),
        event_type: q.event_type.filter(|s| !s.is_empty()),
        proposal_id: q.proposal_id.filter(|s| !s.is_empty()),
        limit: Some(u64::from(limit)),
        ..crate::app::audit::AuditFilter::default()
    };
    let svc = state.svc.clone();
    let rows = blocking(move || crate::app::audit::indexed(&svc, &filter)).await?;
    let listed: Vec<wire::AuditListed> = rows
        .into_iter()
        .map(|r| wire::AuditListed {
            record: wire::AuditRecord::from(&r.entry),
            commit: r.commit,
            signer: r.signer_role,
        })
        .collect();
    reply(&listed)
}
