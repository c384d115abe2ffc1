//! Bearer tokens (operator, runner, agent run tokens) and one-shot
//! credentials: only their SHA-256 hashes are ever stored or audited.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The longest a one-shot credential may live.
pub const MAX_TTL_SECONDS: i64 = 24 * 60 * 60;

/// The hex SHA-256 of a token: what is stored and written to the chain.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A token made from 32 random bytes, with a prefix saying what it is for
/// (`gov_agent_…`, `gov_cred_…`).
pub fn token_from_bytes(prefix: &str, bytes: &[u8; 32]) -> String {
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Compares two secrets in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl_seconds must be positive")]
    NotPositive,
    #[error("ttl_seconds must be at most {MAX_TTL_SECONDS}")]
    TooLong,
}

pub fn check_ttl(ttl_seconds: i64) -> Result<(), TtlError> {
    if ttl_seconds <= 0 {
        Err(TtlError::NotPositive)
    } else if ttl_seconds > MAX_TTL_SECONDS {
        Err(TtlError::TooLong)
    } else {
        Ok(())
    }
}

/// A credential as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    pub agent_id: String,
    pub scope: String,
    pub expires_at: DateTime<Utc>,
    pub redeemed: bool,
}

/// What a redemption attempt comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    Redeemed,
    Unknown,
    Expired,
    AlreadyUsed,
}

pub fn redeem(state: Option<&CredentialState>, now: DateTime<Utc>) -> Redemption {
    match state {
        None => Redemption::Unknown,
        Some(s) if s.redeemed => Redemption::AlreadyUsed,
        Some(s) if s.expires_at <= now => Redemption::Expired,
        Some(_) => Redemption::Redeemed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn redeemed_once_until_expiry() {
        let now = Utc::now();
        let mut s = CredentialState {
            agent_id: "a".into(),
            scope: "s".into(),
            expires_at: now + Duration::seconds(5),
            redeemed: false,
        };
        assert_eq!(redeem(Some(&s), now), Redemption::Redeemed);
        assert_eq!(
            redeem(Some(&s), now + Duration::seconds(5)),
            Redemption::Expired
        );
        s.redeemed = true;
        assert_eq!(redeem(Some(&s), now), Redemption::AlreadyUsed);
        assert_eq!(redeem(None, now), Redemption::Unknown);
    }

    #[test]
    fn ttl_is_positive_and_bounded() {
        assert_eq!(check_ttl(0), Err(TtlError::NotPositive));
        assert_eq!(check_ttl(MAX_TTL_SECONDS + 1), Err(TtlError::TooLong));
        assert_eq!(check_ttl(300), Ok(()));
    }

    #[test]
    fn hashes_and_compares() {
        assert_eq!(token_hash("x").len(), 64);
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "ab"));
        assert!(token_from_bytes("gov_agent", &[0u8; 32]).starts_with("gov_agent_00"));
    }
}
