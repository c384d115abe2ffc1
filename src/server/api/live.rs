//! Live state: the scoreboard, `/status`, `/status/me`.

use super::*;

pub(super) async fn scoreboard(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let svc = state.svc.clone();
    let rows = blocking(move || agents::scoreboard(&svc)).await?;
    reply(&rows)
}

pub(super) async fn status(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let svc = state.svc.clone();
    let port = state.port();
    let v = blocking(move || {
        let policy = svc.policy_status();
        let (paused, pending, entries) = {
            let paused = agents::paused_ids(&svc)?;
            let pending = proposals::pending_count(&svc)?;
            let entries = crate::app::audit::entry_count(&svc)?;
            (paused, pending, entries)
        };
        let remote = crate::app::remote::remote_status(&svc)?;
        Ok(wire::Status {
            ok: policy.version.is_some() && svc.governance().tampered().is_none(),
            host: "127.0.0.1".into(),
            port,
            db_ok: true,
            audit_jsonl_ok: true,
            audit_entries: entries,
            audit_ok: svc.governance().tampered().is_none(),
            audit_tampered: svc.governance().tampered(),
            started_at: svc.started_at,
            agents_paused: paused,
            known_agents: svc.agent_ids(),
            agent_errors: svc.agent_errors(),
            pending_proposals: u64::try_from(pending).unwrap_or(0),
            policy_version: policy.version,
            policy_error: policy.error,
            remote,
            policy_refused: policy
                .refused
                .into_iter()
                .map(|r| wire::RefusedCommit {
                    commit: r.commit,
                    reason: r.reason,
                    summary: r.summary,
                })
                .collect(),
            agent_auth: match svc.settings().agent_auth {
                crate::config::AgentAuth::Required => "required",
                crate::config::AgentAuth::Optional => "optional",
            }
            .into(),
            batches: {
                let (flushed, writers) = svc.governance().batch_stats();
                wire::BatchCounts { flushed, writers }
            },
        })
    })
    .await?;
    reply(&v)
}

#[derive(Debug, Deserialize)]
pub(super) struct MeQuery {
    agent_id: String,
}

pub(super) async fn status_me(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MeQuery>,
) -> ApiResult {
    act_for_agent(&state, &caller, &q.agent_id, "GET /status/me").await?;
    let svc = state.svc.clone();
    let s = blocking(move || agents::state(&svc, &q.agent_id)).await?;
    reply(&s)
}
