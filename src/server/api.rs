//! The JSON API: the original's contract (same paths, fields, defaults and
//! status codes) plus what gov adds (pause/resume, agent tokens, runs, tool
//! evaluation). docs/API.md describes every endpoint.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{act_for_agent, Caller};
use super::error::{ApiError, Body, Query};
use super::{blocking, blocking_write, AppState};
use crate::app::error::AppError;
use crate::app::{agents, credentials, proposals, run_budget, runs};
use crate::domain::audit::{Event, NewEntry};
use crate::domain::proposal::Proposal;
use crate::wire;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/proposals", post(submit_proposal).get(list_proposals))
        .route("/proposals/{id}", get(get_proposal))
        .route("/proposals/{id}/decision", post(decide_proposal))
        .route("/budget/{agent}", get(get_budget))
        .route("/budget/{agent}/charge", post(charge_budget))
        .route("/audit", post(post_audit).get(list_audit))
        .route("/scoreboard", get(scoreboard))
        .route("/status", get(status))
        .route("/status/me", get(status_me))
        .route("/admin/pause-all", post(pause_all))
        .route("/agents/{agent}/pause", post(pause_agent))
        .route("/agents/{agent}/resume", post(resume_agent))
        .route("/agents/{agent}/tokens", post(mint_token))
        .route("/tokens/revoke", post(revoke_token))
        .route("/credentials/issue", post(issue_credential))
        .route("/credentials/redeem", post(redeem_credential))
        .route("/runs", post(start_run))
        .route("/runs/{run}/usage", post(run_usage))
        .route("/runs/{run}/finish", post(finish_run))
        .route("/tools/evaluate", post(evaluate_tool))
        .fallback(not_found)
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// A 200 with a typed body from [`crate::wire`].
fn reply<T: serde::Serialize>(body: &T) -> ApiResult {
    Ok(Json(body).into_response())
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

/// A proposal in the original's shape, plus gov's fields.
pub fn proposal_json(p: &Proposal) -> Value {
    to_json(p)
}

fn review_url(state: &AppState, id: &str) -> String {
    format!("http://127.0.0.1:{}/#proposal-{id}", state.port())
}

// ------------------------------------------------------------- proposals

async fn submit_proposal(
    State(state): State<AppState>,
    caller: Caller,
    Body(sub): Body<proposals::Submission>,
) -> ApiResult {
    act_for_agent(&state, &caller, &sub.agent_id, "POST /proposals").await?;
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
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

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

async fn list_proposals(
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
    ok(Value::Array(list.iter().map(proposal_json).collect()))
}

async fn get_proposal(
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
    let mut body = proposal_json(&p);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("audit_commit".into(), json!(audit_commit));
    }
    ok(body)
}

async fn decide_proposal(
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
    let p = blocking_write(&state, move || {
        let decider = svc.settings().operator_name.clone();
        proposals::decide(&svc, &id, &input, &decider)
    })
    .await?;
    reply(&wire::ProposalDecided {
        proposal_id: p.proposal_id,
        status: p.status,
        decided_at: p.decided_at,
        decided_by: p.decided_by,
        merge_commit: p.merge_commit,
        branch: p.branch,
    })
}

// ---------------------------------------------------------------- budget

#[derive(Debug, Deserialize)]
struct WaveQuery {
    wave: Option<i64>,
}

async fn get_budget(
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
    ok(to_json(&view))
}

#[derive(Debug, Deserialize)]
struct ChargeBody {
    tokens: i64,
    tool: String,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    dollars: Option<f64>,
    /// gov adds: the model (priced by `[prices]`) and the tokens by kind.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<crate::domain::pricing::TokenUsage>,
}

async fn charge_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(body): Body<ChargeBody>,
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
    ok(to_json(&view))
}

// ----------------------------------------------------------------- audit

async fn post_audit(
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
struct AuditQuery {
    agent_id: Option<String>,
    event_type: Option<String>,
    proposal_id: Option<String>,
    limit: Option<String>,
}

async fn list_audit(
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
    };
    let svc = state.svc.clone();
    let rows = blocking(move || {
        let index = svc.governance().index()?;
        index.query(&filter).map_err(AppError::internal)
    })
    .await?;
    ok(Value::Array(
        rows.iter()
            .map(|r| {
                let mut v = r.entry.to_compat_json();
                if let Some(o) = v.as_object_mut() {
                    o.insert("commit".into(), json!(r.commit));
                    o.insert("signer".into(), json!(r.signer_role));
                }
                v
            })
            .collect(),
    ))
}

// ------------------------------------------------------------ live state

async fn scoreboard(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let svc = state.svc.clone();
    let rows = blocking(move || agents::scoreboard(&svc)).await?;
    ok(to_json(&rows))
}

async fn status(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_reader(state.svc.settings().agent_auth)?;
    let svc = state.svc.clone();
    let port = state.port();
    let v = blocking(move || {
        let policy = svc.policy_status();
        let (paused, pending, entries) = {
            let paused = agents::paused_ids(&svc)?;
            let pending = proposals::pending_count(&svc)?;
            let entries = svc
                .governance()
                .index()?
                .count()
                .map_err(AppError::internal)?;
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
        })
    })
    .await?;
    reply(&v)
}

#[derive(Debug, Deserialize)]
struct MeQuery {
    agent_id: String,
}

async fn status_me(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MeQuery>,
) -> ApiResult {
    act_for_agent(&state, &caller, &q.agent_id, "GET /status/me").await?;
    let svc = state.svc.clone();
    let s = blocking(move || agents::state(&svc, &q.agent_id)).await?;
    ok(to_json(&s))
}

// ----------------------------------------------------------------- pause

#[derive(Debug, Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The body of pause calls is optional (`{}` or nothing); when there is
/// one it must be a JSON object (an array would otherwise read as a struct).
fn reason_of(raw: &axum::body::Bytes) -> Result<Option<String>, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| AppError::invalid("body", format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(AppError::invalid("body", "the body must be a JSON object").into());
    }
    let b: ReasonBody =
        serde_json::from_value(value).map_err(|e| AppError::invalid("reason", e.to_string()))?;
    Ok(b.reason)
}

async fn pause_all(
    State(state): State<AppState>,
    caller: Caller,
    raw: axum::body::Bytes,
) -> ApiResult {
    caller.require_operator()?;
    let reason = reason_of(&raw)?.unwrap_or_else(|| "manual_pause_all".into());
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let paused = blocking_write(&state, move || agents::pause_all(&svc, &reason, actor)).await?;
    ok(json!({"paused_agents": paused}))
}

async fn pause_agent(
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
    ok(to_json(&s))
}

async fn resume_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
) -> ApiResult {
    caller.require_operator()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let s = blocking_write(&state, move || agents::resume(&svc, &agent, actor)).await?;
    ok(to_json(&s))
}

async fn mint_token(
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
        Json(json!({"agent_id": agent, "agent_token": token})),
    )
        .into_response())
}

async fn revoke_token(
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

// ----------------------------------------------------------- credentials

fn default_ttl() -> i64 {
    300
}

#[derive(Debug, Deserialize)]
struct IssueBody {
    agent_id: String,
    scope: String,
    #[serde(default = "default_ttl")]
    ttl_seconds: i64,
}

async fn issue_credential(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<IssueBody>,
) -> ApiResult {
    act_for_agent(&state, &caller, &body.agent_id, "POST /credentials/issue").await?;
    let svc = state.svc.clone();
    let issued = blocking_write(&state, move || {
        credentials::issue(&svc, &body.agent_id, &body.scope, body.ttl_seconds)
    })
    .await?;
    ok(json!({"token": issued.token, "expires_at": issued.expires_at}))
}

#[derive(Debug, Deserialize)]
struct RedeemBody {
    token: String,
}

async fn redeem_credential(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<RedeemBody>,
) -> ApiResult {
    // Where agents have tokens, a credential is redeemed with one: nobody
    // without a token can write to the chain through this endpoint.
    let who = match &caller {
        Caller::Operator | Caller::Runner => credentials::Redeemer::Trusted,
        Caller::Agent { agent_id, .. } => credentials::Redeemer::Agent(agent_id.clone()),
        Caller::Anonymous => {
            caller.require_reader(state.svc.settings().agent_auth)?;
            credentials::Redeemer::Anonymous
        }
    };
    let svc = state.svc.clone();
    let r = blocking_write(&state, move || credentials::redeem(&svc, &body.token, &who)).await?;
    ok(json!({"scope": r.scope, "agent_id": r.agent_id}))
}

// ------------------------------------------------------------ runs, tools

async fn start_run(
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

async fn finish_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Body(end): Body<runs::RunEnd>,
) -> ApiResult {
    caller.require_runner()?;
    let actor = caller.actor(&state.svc.settings().operator_name, None);
    let svc = state.svc.clone();
    let done = blocking_write(&state, move || runs::finish_run(&svc, &run_id, &end, actor)).await?;
    ok(to_json(&done))
}

async fn run_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Body(report): Body<run_budget::UsageReport>,
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
    ok(to_json(&charged))
}

async fn evaluate_tool(
    State(state): State<AppState>,
    caller: Caller,
    Body(mut call): Body<runs::ToolCall>,
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
    ok(to_json(&answer))
}
