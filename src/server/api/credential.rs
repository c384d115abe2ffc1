//! Short-lived credentials: issue, redeem.

use super::*;

pub(super) async fn issue_credential(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<wire::CredentialIssue>,
) -> ApiResult {
    act_for_agent(&state, &caller, &body.agent_id, "POST /credentials/issue").await?;
    let svc = state.svc.clone();
    let issued = blocking_write(&state, move || {
        credentials::issue(&svc, &body.agent_id, &body.scope, body.ttl_seconds)
    })
    .await?;
    reply(&wire::CredentialIssued {
        token: issued.token,
        expires_at: issued.expires_at,
    })
}

pub(super) async fn redeem_credential(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<wire::CredentialRedeem>,
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
    reply(&wire::CredentialRedeemed {
        scope: r.scope,
        agent_id: r.agent_id,
    })
}
