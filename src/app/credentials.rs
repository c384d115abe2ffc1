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
        let expires_at = Timestamp(svc.now() + Duration::seconds(ttl_seconds));
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

/// Who presents a credential for redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemer {
    /// The operator or the runner: any credential.
    Trusted,
    /// An agent's token: only that agent's credentials.
    Agent(String),
    /// No token (only with `agent_auth = "optional"`).
    Anonymous,
}

/// How often at most an entry records redemptions of unknown tokens.
pub const UNKNOWN_WINDOW_SECONDS: i64 = 60;

/// Redemptions of unknown tokens since the last entry that recorded them:
/// anyone who can reach the port can send them, so they are counted and
/// written at most once per [`UNKNOWN_WINDOW_SECONDS`], not one entry each.
#[derive(Debug, Default)]
pub struct UnknownRedemptions {
    count: u64,
    since: Option<chrono::DateTime<Utc>>,
    last_written: Option<chrono::DateTime<Utc>>,
}

impl UnknownRedemptions {
    /// Counts one; returns the entry to write if one is due.
    fn record(&mut self, now: chrono::DateTime<Utc>) -> Option<NewEntry> {
        self.count += 1;
        let since = *self.since.get_or_insert(now);
        let due = self
            .last_written
            .is_none_or(|t| now - t >= Duration::seconds(UNKNOWN_WINDOW_SECONDS));
        if !due {
            return None;
        }
        let e = NewEntry::new(
            Actor::server(),
            Event::CredentialsUnknown(crate::domain::event::UnknownRedemptions {
                count: self.count,
                since: Timestamp(since),
                window_seconds: UNKNOWN_WINDOW_SECONDS,
            }),
        );
        self.count = 0;
        self.since = None;
        self.last_written = Some(now);
        Some(e)
    }
}

pub fn redeem(svc: &Service, token: &str, who: &Redeemer) -> Result<Redeemed, AppError> {
    if token.is_empty() || token.len() > 200 || token.chars().any(char::is_control) {
        return Err(AppError::invalid("token", "not a credential token"));
    }
    let hash = token_hash(token);
    svc.transact(|tx| -> Step<Redeemed> {
        let conn = tx.index().conn();
        let state = projection::credential(conn, &hash)?;
        let Some(cred) = state.as_ref() else {
            let entries = svc
                .unknown_redemptions()
                .record(svc.now())
                .into_iter()
                .collect();
            return Ok((Err(AppError::Unauthorized("unknown token".into())), entries));
        };
        let agent = cred.agent_id.clone();
        let scope = cred.scope.clone();
        if let Redeemer::Agent(caller) = who {
            if *caller != agent {
                let e = super::agents::impersonation_entry(
                    caller,
                    &agent,
                    "POST /credentials/redeem",
                );
                return Ok((
                    Err(AppError::Forbidden(format!(
                        "this credential belongs to agent `{agent}`, not `{caller}`; the attempt is audit-flagged"
                    ))),
                    vec![e],
                ));
            }
        }
        if let Some((err, entry)) = refuse_if_paused(conn, &agent, "credentials_redeem")? {
            return Ok((Err(err), vec![entry]));
        }
        let entry = |event: fn(CredentialUse) -> Event| {
            let used = CredentialUse {
                scope: scope.clone(),
                token_hash: hash.clone(),
            };
            NewEntry::new(Actor::server(), event(used)).agent(&agent)
        };
        Ok(match redeem_state(state.as_ref(), svc.now()) {
            Redemption::Redeemed => (
                Ok(Redeemed {
                    agent_id: agent.clone(),
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
            Redemption::Unknown => (Err(AppError::Unauthorized("unknown token".into())), vec![]),
        })
    })
}
