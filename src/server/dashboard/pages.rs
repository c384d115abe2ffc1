//! The dashboard's routes: pages (GET) that render view models built from
//! the app's read use cases, and forms (POST) that check the session's CSRF
//! token, call the same use cases as the JSON API and the CLI, leave a
//! one-line result for the next page and redirect (post/redirect/get).

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::access::{self, SignedIn};
use super::render;
use super::views::*;
use crate::app::audit::{AuditFilter, SignatureCheck};
use crate::app::audit::{LogLine, VerifyReport};
use crate::app::error::AppError;
use crate::app::service::PolicyStatus;
use crate::app::{agents, policy_change, proposals, run_budget};
use crate::domain::audit::{Actor, Timestamp};
use crate::domain::money::Micros;
use crate::domain::proposal::ProposalStatus;
use crate::domain::proposal::{Proposal, Verdict};
use crate::server::auth::Caller;
use crate::server::{blocking, blocking_write, AppState};

/// How many rows a list shows at most.
const LIST_LIMIT: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pending))
        .route("/login", get(access::login::<AppState>))
        .route("/dashboard/logout", post(access::logout))
        .route("/dashboard/login-codes", post(mint_login_code))
        .route("/dashboard/assets/{name}", get(access::asset))
        .route("/dashboard/proposals", get(history))
        .route("/dashboard/proposals/{id}", get(detail))
        .route("/dashboard/proposals/{id}/decision", post(decide))
        .route("/dashboard/agents", get(agents_page))
        .route("/dashboard/agents/{id}/pause", post(pause))
        .route("/dashboard/agents/{id}/resume", post(resume))
        .route("/dashboard/audit", get(audit_page))
        .route("/dashboard/audit/verify", post(verify))
        .route("/dashboard/policies", get(policies_page))
        .layer(axum::middleware::map_response(access::security_headers))
}

// ------------------------------------------------------------ shared parts

fn when(t: Timestamp) -> String {
    t.0.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The policy set's state (it opens the repository: blocking work).
async fn policy_status(state: &AppState) -> PolicyStatus {
    let svc = state.svc.clone();
    match tokio::task::spawn_blocking(move || svc.policy_status()).await {
        Ok(status) => status,
        Err(e) => PolicyStatus {
            version: None,
            error: Some(format!("cannot read the policy state: {e}")),
            refused: Vec::new(),
        },
    }
}

async fn layout(state: &AppState, user: &SignedIn, active: &str, title: &str) -> Layout {
    Layout {
        title: title.into(),
        active: active.into(),
        csrf: user.session.csrf.expose().to_string(),
        operator: state.svc.settings().operator_name.clone(),
        flash: user.sessions.take_flash(&user.session),
        policy_warning: policy_status(state).await.error,
        tampered: state.svc.governance().tampered(),
        remote: remote_view(state).await,
    }
}

/// The remote's line on every page (it opens the repository: blocking
/// work).
async fn remote_view(state: &AppState) -> Option<RemoteView> {
    let svc = state.svc.clone();
    let status = tokio::task::spawn_blocking(move || crate::app::remote::remote_status(&svc))
        .await
        .ok()?
        .ok()??;
    let (state, last_sync) = match &status.last_sync {
        None => ("never", "never synced".to_string()),
        Some(l) if l.ok => ("ok", format!("last sync {}: ok", l.at)),
        Some(l) => (
            "error",
            format!("last sync {}: failed: {}", l.at, l.problems()),
        ),
    };
    let w = &status.waiting;
    let waiting = if w.is_empty() {
        "nothing waits to be pushed".to_string()
    } else {
        format!(
            "not yet pushed: {} audit entries, {} commit(s) on main, {} proposal branch(es)",
            w.audit_entries,
            w.main_commits,
            w.proposal_branches.len()
        )
    };
    Some(RemoteView {
        name: status.name,
        url: status.url,
        state: state.into(),
        last_sync,
        waiting,
    })
}

/// A use case's failure as the operator should read it: the app's own
/// message for what they can act on, nothing internal otherwise.
fn failure(e: &AppError) -> String {
    match e {
        AppError::Internal(inner) => {
            tracing::error!(error = %inner, "dashboard action failed");
            "it could not be done: an internal error (see the server's log)".into()
        }
        other => other.to_string(),
    }
}

/// Runs a read on the blocking pool; an error becomes a bare 500 page.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, Response> {
    blocking(f).await.map_err(|e| {
        tracing::error!(error = %e.0, "dashboard read failed");
        access::plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

fn page(body: Result<String, render::RenderError>) -> Response {
    access::html(StatusCode::OK, body)
}

fn proposal_view(p: &Proposal) -> ProposalView {
    let payload = serde_json::Value::Object(p.proposed.payload.clone());
    ProposalView {
        id: p.proposal_id.clone(),
        agent_id: p.proposed.agent_id.clone(),
        action_type: p.proposed.action_type.clone(),
        status: p.status.as_str().into(),
        submitted_at: when(p.submitted_at),
        expires_at: Some(when(p.expires_at)),
        payload_pretty: ProposalView::pretty(&payload),
        payload_hash: p.payload_hash.clone(),
        expected_outcome: Some(p.proposed.expected_outcome.clone()).filter(|s| !s.is_empty()),
        cost_tokens: u64::try_from(p.proposed.expected_cost_tokens)
            .ok()
            .filter(|t| *t > 0),
        cost_dollars: Micros::from_dollars_f64(p.proposed.expected_cost_dollars)
            .ok()
            .filter(|m| m.0 > 0)
            .map(ProposalView::dollars),
        reversible: p.proposed.reversible,
        rationale: Some(p.proposed.rationale.clone()).filter(|s| !s.is_empty()),
        links: p.proposed.links.clone(),
        policies: p
            .policies
            .iter()
            .map(|c| Citation {
                id: c.id.clone(),
                reason: c.reason.clone(),
                effect: c.effect.clone(),
            })
            .collect(),
        branch: p.branch.clone(),
        commit: p.merge_commit.clone().or_else(|| p.commit.clone()),
        // As in the original, `decision` holds the note, or the verdict
        // when there was no note.
        decision: p.decided_at.map(|at| DecisionView {
            decision: p.status.as_str().into(),
            by: p.decided_by.clone().unwrap_or_default(),
            at: when(at),
            note: p
                .decision
                .clone()
                .filter(|d| !matches!(d.as_str(), "" | "approve" | "reject")),
            is_final: p.decision_final,
        }),
        review: None,
        shadow: None,
    }
}

/// A proposal's view with its policy-change review, when it has one. A
/// review that could not be computed says so instead of failing the page.
fn reviewed_view(p: &Proposal, review: &ReviewResult) -> ProposalView {
    ProposalView {
        review: match review {
            Ok(r) => r.as_deref().map(PolicyReviewView::from),
            Err(why) => Some(PolicyReviewView::failed(why)),
        },
        ..proposal_view(p)
    }
}

type ReviewResult = Result<Option<std::sync::Arc<policy_change::Review>>, String>;

/// The reviews of the `policy_change` proposals among `list` (blocking
/// work: it may replay the recorded decisions, once per proposal head).
fn reviews(svc: &crate::app::service::Service, list: &[Proposal]) -> Vec<ReviewResult> {
    list.iter()
        .map(|p| policy_change::review(svc, p).map_err(|e| failure(&e)))
        .collect()
}

fn signature_view(check: &SignatureCheck) -> SignatureView {
    match check {
        SignatureCheck::Good {
            principal, roles, ..
        } => SignatureView {
            status: "verified".into(),
            role: roles.first().map(|r| r.as_str().to_string()),
            detail: Some(principal.clone()),
        },
        SignatureCheck::Missing => SignatureView {
            status: "unsigned".into(),
            role: None,
            detail: Some("the commit is not signed".into()),
        },
        SignatureCheck::Bad(why) => SignatureView {
            status: "bad".into(),
            role: None,
            detail: Some(why.clone()),
        },
    }
}

fn audit_row(line: &LogLine) -> AuditRow {
    let e = &line.indexed.entry;
    AuditRow {
        seq: e.seq,
        ts: when(e.ts),
        actor: e.entry.actor.0.clone(),
        agent_id: e.entry.agent_id.clone(),
        event_type: e.entry.event_type().to_string(),
        proposal_id: e.entry.proposal_id.clone(),
        task_id: e.entry.task_id.clone(),
        payload: e.entry.payload().to_string(),
        signature: signature_view(&line.signature),
        commit: Some(line.indexed.commit.clone()),
        shadow: e
            .entry
            .decision
            .as_ref()
            .and_then(|d| d.decision.shadow_summary()),
    }
}

fn verify_view(report: &VerifyReport) -> VerifyView {
    let summary = if report.is_ok() {
        format!(
            "{} entries and {} approval merges checked; every signature is good and the chain has no gap",
            report.entries, report.merges_checked
        )
    } else {
        match report.problems.first() {
            Some(first) => format!("the first bad entry is {first}"),
            None => "verification failed".into(),
        }
    };
    VerifyView {
        ok: report.is_ok(),
        entries: report.entries,
        summary,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn filter_view(name: &str, label: &str, value: &Option<String>, options: Vec<String>) -> Filter {
    Filter {
        name: name.into(),
        label: label.into(),
        value: nonempty(value).unwrap_or_default(),
        options,
    }
}

// ------------------------------------------------------------------- pages

/// `/`: pending proposals, oldest first (the next to expire on top).
async fn pending(user: SignedIn, State(state): State<AppState>) -> Response {
    let svc = state.svc.clone();
    let (list, reviews) = match read(move || {
        let list = proposals::list(&svc, Some(ProposalStatus::Pending), LIST_LIMIT)?;
        let reviews = reviews(&svc, &list);
        Ok((list, reviews))
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let page_data = PendingPage {
        layout: layout(&state, &user, "pending", "Pending proposals").await,
        proposals: list
            .iter()
            .zip(&reviews)
            .rev()
            .map(|(p, r)| reviewed_view(p, r))
            .collect(),
    };
    page(render::pending(&page_data))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    status: Option<String>,
    agent: Option<String>,
    action: Option<String>,
}

/// `/dashboard/proposals`: every proposal, newest first, filtered.
async fn history(
    user: SignedIn,
    State(state): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let svc = state.svc.clone();
    // A status that is none of them shows nothing, as a filter would.
    let status = proposals::status_filter(nonempty(&q.status).as_deref());
    let (all, shadows) = match read(move || {
        let list = match status {
            Ok(status) => proposals::list(&svc, status, LIST_LIMIT)?,
            Err(_) => Vec::new(),
        };
        Ok((list, submission_shadows(&svc)?))
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let agents: BTreeSet<String> = all.iter().map(|p| p.proposed.agent_id.clone()).collect();
    let actions: BTreeSet<String> = all.iter().map(|p| p.proposed.action_type.clone()).collect();
    let (agent, action) = (nonempty(&q.agent), nonempty(&q.action));
    let shown = all
        .iter()
        .filter(|p| agent.as_deref().is_none_or(|a| p.proposed.agent_id == a))
        .filter(|p| {
            action
                .as_deref()
                .is_none_or(|a| p.proposed.action_type == a)
        })
        .map(|p| ProposalView {
            shadow: shadows.get(&p.proposal_id).cloned(),
            ..proposal_view(p)
        })
        .collect();
    let statuses = [
        "pending",
        "approved",
        "auto-approved",
        "rejected",
        "expired",
    ];
    let page_data = HistoryPage {
        layout: layout(&state, &user, "proposals", "Proposals").await,
        filters: vec![
            filter_view(
                "status",
                "Status",
                &q.status,
                statuses.iter().map(|s| s.to_string()).collect(),
            ),
            filter_view("agent", "Agent", &q.agent, agents.into_iter().collect()),
            filter_view(
                "action",
                "Action type",
                &q.action,
                actions.into_iter().collect(),
            ),
        ],
        proposals: shown,
    };
    page(render::history(&page_data))
}

/// What shadow policies would have done to the newest submissions, by
/// proposal id (from the index: no signature checks, no scan of Git).
fn submission_shadows(
    svc: &crate::app::service::Service,
) -> Result<std::collections::HashMap<String, String>, AppError> {
    let filter = AuditFilter {
        event_type: Some("proposal_submitted".into()),
        limit: Some(u64::from(LIST_LIMIT)),
        ..AuditFilter::default()
    };
    let rows = svc
        .governance()
        .index()?
        .query(&filter)
        .map_err(AppError::internal)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let e = r.entry.entry;
            let shadow = e.decision.as_ref()?.decision.shadow_summary()?;
            Some((e.proposal_id?, shadow))
        })
        .collect())
}

/// `/dashboard/proposals/{id}`: one proposal and the audit entries naming it.
async fn detail(user: SignedIn, State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let svc = state.svc.clone();
    let wanted = id.clone();
    let found = read(move || {
        let p = match proposals::get(&svc, &wanted) {
            Ok(p) => Some(p),
            Err(AppError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let filter = AuditFilter {
            proposal_id: Some(wanted),
            ..AuditFilter::default()
        };
        let log = crate::app::audit::log(svc.settings(), &filter).map_err(AppError::internal)?;
        let review = match &p {
            Some(p) => reviews(&svc, std::slice::from_ref(p))
                .pop()
                .unwrap_or(Ok(None)),
            None => Ok(None),
        };
        Ok((p, log, review))
    })
    .await;
    let (p, log, review) = match found {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(p) = p else {
        return access::plain(StatusCode::NOT_FOUND, &format!("no proposal `{id}`"));
    };
    let view = reviewed_view(&p, &review);
    let page_data = ProposalPage {
        layout: layout(&state, &user, "proposals", &format!("Proposal {id}")).await,
        proposal: view,
        audit: log.iter().map(audit_row).collect(),
    };
    page(render::proposal(&page_data))
}

/// `/dashboard/agents`: status, spend against caps, pause / resume.
async fn agents_page(user: SignedIn, State(state): State<AppState>) -> Response {
    let svc = state.svc.clone();
    let rows = read(move || {
        let board = agents::scoreboard(&svc)?;
        let mut out = Vec::with_capacity(board.len());
        for row in board {
            let caps = svc.caps(&row.agent_id);
            let budget = agents::budget(&svc, &row.agent_id, 0)?;
            let filter = AuditFilter {
                agent_id: Some(row.agent_id.clone()),
                limit: Some(1),
                ..AuditFilter::default()
            };
            let last = crate::app::audit::indexed(&svc, &filter)?;
            let spent = Micros::from_dollars_f64(budget.dollars_consumed).unwrap_or(Micros(0));
            let now = svc.now();
            let history = agents::spend_history(&svc, &row.agent_id)?;
            let chart = SpendChart::new(
                &history.charges,
                caps.dollars_cap,
                history.from,
                now.timestamp(),
            );
            let reservations = run_budget::open_reservations(&svc, &row.agent_id, now)?
                .into_iter()
                .map(|r| ReservationView {
                    kind: r.kind.into(),
                    id: r.id,
                    tokens: group_thousands(r.held.tokens),
                    dollars: r.held.micros.to_string(),
                    until: r.until,
                })
                .collect();
            out.push(AgentView {
                id: row.agent_id.clone(),
                status: row.status.as_str().into(),
                paused_reason: row.paused_reason.clone(),
                tokens: Meter::tokens(
                    u64::try_from(budget.tokens_consumed).unwrap_or(0),
                    caps.tokens_cap,
                ),
                dollars: Meter::dollars(spent, caps.dollars_cap),
                period: budget.period.clone(),
                last_seen: last.first().map(|e| when(e.entry.ts)),
                runs: u64::try_from(row.runs).unwrap_or(0),
                proposals: u64::try_from(row.proposals_submitted).unwrap_or(0),
                chart,
                reservations,
            });
        }
        Ok(out)
    })
    .await;
    let agents = match rows {
        Ok(a) => a,
        Err(r) => return r,
    };
    let page_data = AgentsPage {
        layout: layout(&state, &user, "agents", "Agents").await,
        agents,
    };
    page(render::agents(&page_data))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    agent: Option<String>,
    event: Option<String>,
    proposal: Option<String>,
}

/// `/dashboard/audit`: the chain, newest first, filtered, with signatures.
async fn audit_page(
    user: SignedIn,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let svc = state.svc.clone();
    let query = AuditFilter {
        agent_id: nonempty(&q.agent),
        event_type: nonempty(&q.event),
        proposal_id: nonempty(&q.proposal),
        limit: Some(u64::from(LIST_LIMIT)),
        ..AuditFilter::default()
    };
    let lines = match read(move || {
        crate::app::audit::log(svc.settings(), &query).map_err(AppError::internal)
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let verify = user.sessions.take_verify(&user.session);
    let page_data = AuditPage {
        layout: layout(&state, &user, "audit", "Audit trail").await,
        filters: vec![
            filter_view("agent", "Agent", &q.agent, vec![]),
            filter_view("event", "Event type", &q.event, vec![]),
            filter_view("proposal", "Proposal", &q.proposal, vec![]),
        ],
        entries: lines.iter().map(audit_row).collect(),
        verify,
    };
    page(render::audit(&page_data))
}

/// `/dashboard/policies`: the set in force and why a newer one was refused.
async fn policies_page(user: SignedIn, State(state): State<AppState>) -> Response {
    let status = policy_status(&state).await;
    let set = state.svc.current_policy();
    let page_data = PoliciesPage {
        layout: layout(&state, &user, "policies", "Policies").await,
        version: status.version.clone().unwrap_or_else(|| "none".into()),
        policies: set
            .map(|s| s.policies().iter().map(PolicyView::from).collect())
            .unwrap_or_default(),
        refused: status.error,
        unauthorized: status.refused,
    };
    page(render::policies(&page_data))
}

// ------------------------------------------------------------------- forms

#[derive(Debug, Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    r#final: Option<String>,
}

/// Approve or reject: the same use case as `gov approve` and the API.
async fn decide(
    user: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    if let Err(r) = user.check_csrf(&form.csrf) {
        return r.into_response();
    }
    let verdict = match form.decision.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        other => {
            return access::plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("decision: `{other}` is neither `approve` nor `reject`"),
            )
        }
    };
    let input = proposals::DecisionInput {
        verdict,
        note: Some(form.note.trim().to_string()).filter(|n| !n.is_empty()),
        final_: form.r#final.is_some_and(|v| v == "true" || v == "on"),
    };
    let svc = state.svc.clone();
    let pid = id.clone();
    let result = blocking_write(&state, move || {
        let decider = svc.settings().operator_name.clone();
        // Not waiting for the checkout: the file reaches a checked-out
        // `main` within a moment.
        proposals::decide(&svc, &pid, &input, &decider)
    })
    .await;
    let flash = match result {
        Ok(p) => Flash::ok(match verdict {
            Verdict::Approve => format!(
                "approved `{id}`{}",
                p.merge_commit
                    .map(|c| format!(": merged into main as {}", c.get(..12).unwrap_or(&c)))
                    .unwrap_or_default()
            ),
            Verdict::Reject => format!("rejected `{id}`"),
        }),
        Err(e) => Flash::error(format!("`{id}` was not decided: {}", failure(&e.0))),
    };
    user.sessions.set_flash(&user.session, flash);
    Redirect::to("/").into_response()
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Pause or resume one agent, as the operator.
async fn pause_or_resume(
    user: SignedIn,
    state: AppState,
    id: String,
    csrf: &str,
    pause: bool,
) -> Response {
    if let Err(r) = user.check_csrf(csrf) {
        return r.into_response();
    }
    let svc = state.svc.clone();
    let agent = id.clone();
    let result = blocking_write(&state, move || {
        let actor = Actor::operator(&svc.settings().operator_name);
        if pause {
            agents::pause(&svc, &agent, "paused from the dashboard", actor)
        } else {
            agents::resume(&svc, &agent, actor)
        }
    })
    .await;
    let verb = if pause { "paused" } else { "resumed" };
    let flash = match result {
        Ok(_) => Flash::ok(format!("{verb} `{id}`")),
        Err(e) => Flash::error(format!("`{id}` was not {verb}: {}", failure(&e.0))),
    };
    user.sessions.set_flash(&user.session, flash);
    Redirect::to("/dashboard/agents").into_response()
}

async fn pause(
    user: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    pause_or_resume(user, state, id, &form.csrf, true).await
}

async fn resume(
    user: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    pause_or_resume(user, state, id, &form.csrf, false).await
}

/// Verify the whole chain, as `gov audit verify` does.
async fn verify(
    user: SignedIn,
    State(state): State<AppState>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check_csrf(&form.csrf) {
        return r.into_response();
    }
    let svc = state.svc.clone();
    let result =
        blocking(move || crate::app::audit::verify(svc.settings()).map_err(AppError::internal))
            .await;
    let view = match result {
        Ok(report) => verify_view(&report),
        Err(e) => VerifyView {
            ok: false,
            entries: 0,
            summary: failure(&e.0),
            problems: vec![],
        },
    };
    user.sessions.set_verify(&user.session, view);
    Redirect::to("/dashboard/audit").into_response()
}

/// `POST /dashboard/login-codes` (operator token): a fresh login link, for
/// `gov dashboard-link`.
async fn mint_login_code(caller: Caller, State(state): State<AppState>) -> Response {
    if let Err(e) = caller.require_operator() {
        return crate::server::error::ApiError(e).into_response();
    }
    Json(crate::wire::LoginLink {
        url: login_url(&state, state.port()),
        expires_in_seconds: super::session::CODE_TTL.as_secs(),
    })
    .into_response()
}

/// A fresh one-time login link for the server on `port`.
pub fn login_url(state: &AppState, port: u16) -> String {
    let code = state.dashboard.mint_code(std::time::Instant::now());
    format!("http://127.0.0.1:{port}/login?code={}", code.expose())
}
