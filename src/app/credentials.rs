//! One-shot credentials: issued for a scope and TTL, stored hashed,
//! redeemed at most once (the check and the redemption entry are one
//! transaction), every outcome audited.

use chrono::{Duration, Utc};

use super::error::AppError;
use super::proposals::refuse_if_paused;
use super::service::{random_bytes, Service, Step};
use crate::domain::audit::{Actor, Event, NewEntry, Timestamp};
use crate::domain::credential::{
    check_ttl, redeem as redeem_state, token_from_bytes, token_hash, Redemption,
};
use crate::domain::event::{CredentialUse, CredentialsIssued};
use crate::store::projection;

#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_at: Timestamp,
}

pub fn issue(
    svc: &Service,
    agent_id: &str,
    scope: &str,
    ttl_seconds: i64,
) -> Result<Issued, AppError> {
    if !crate::config::valid_agent_id(agent_id) {
        return Err(AppError::invalid("agent_id", "not a valid agent id"));
    }
    if scope.trim().is_empty() || scope.len() > 200 {
        return Err(AppError::invalid(
            "scope",
            "scope must be non-empty (at most 200)",
        ));
    }
    check_ttl(ttl_seconds).map_err(|e| AppError::invalid("ttl_seconds", e.to_string()))?;
    let token = token_from_bytes("gov_cred", &random_bytes());
    let hash = token_hash(&token);
    svc.transact(|tx| -> Step<Issued> {
        if let Some((err, entry)) = refuse_if_paused(tx.index().conn(), agent_id, "credentials")? {
            return Ok((Err(err), vec![entry]));
        }
        let expires_at = Timestamp(Utc::now() + Duration::seconds(ttl_seconds));
        let issued = CredentialsIssued {
            scope: scope.into(),
            expires_at,
            token_hash: hash.clone(),
        };
        let e = NewEntry::new(Actor::server(), Event::CredentialsIssued(issued)).agent(agent_id);
        Ok((
            Ok(Issued {
                token: token.clone(),
                expires_at,
            }),
            vec![e],
        ))
    })
}

#[derive(Debug, Clone)]
pub struct Redeemed {
    pub agent_id: String,
    pub scope: String,
}

pub fn redeem(svc: &Service, token: &str) -> Result<Redeemed, AppError> {
    let hash = token_hash(token);
    svc.transact(|tx| -> Step<Redeemed> {
        let state = projection::credential(tx.index().conn(), &hash)?;
        let outcome = redeem_state(state.as_ref(), Utc::now());
        let (agent, scope) = state
            .as_ref()
            .map(|s| (Some(s.agent_id.clone()), s.scope.clone()))
            .unwrap_or((None, String::new()));
        let entry = |event: fn(CredentialUse) -> Event| {
            let used = CredentialUse {
                scope: scope.clone(),
                token_hash: hash.clone(),
            };
            let e = NewEntry::new(Actor::server(), event(used));
            match &agent {
                Some(a) => e.agent(a),
                None => e,
            }
        };
        Ok(match outcome {
            Redemption::Redeemed => (
                Ok(Redeemed {
                    agent_id: agent.clone().unwrap_or_default(),
                    scope: scope.clone(),
                }),
                vec![entry(Event::CredentialsRedeemed)],
            ),
            Redemption::Expired => (
                Err(AppError::Unauthorized("token expired".into())),
                vec![entry(Event::CredentialsExpired)],
            ),
            Redemption::AlreadyUsed => (
                Err(AppError::Unauthorized("token already used".into())),
                vec![entry(Event::CredentialsReplayBlocked)],
            ),
            Redemption::Unknown => (
                Err(AppError::Unauthorized("unknown token".into())),
                vec![entry(Event::CredentialsUnknown)],
            ),
        })
    })
}
