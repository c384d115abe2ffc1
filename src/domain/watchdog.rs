//! The watchdog's question, built from what it observed about one agent.
//!
//! The rules themselves are Cedar `continue` policies; this module only turns
//! observations into the request context those rules read, so operators can
//! add rules in Cedar without touching Rust.

use chrono::{DateTime, Utc};

use super::money::Micros;
use super::request::{CedarRequest, EntityData, EntityRef};

/// What the watchdog saw of one agent in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub agent_id: String,
    pub group: String,
    pub tokens_consumed: u64,
    pub tokens_cap: u64,
    pub micros_consumed: Micros,
    pub micros_cap: Micros,
    /// When each approved proposal that has seen no terminal event
    /// (`action_executed`, `agent_stop`, a run's end) was approved.
    pub open_approvals: Vec<DateTime<Utc>>,
    /// Payload hashes of the agent's most recent proposals, newest first.
    pub recent_payload_hashes: Vec<String>,
    /// Pending proposals whose `expires_at` has passed.
    pub expired_pending: u64,
    /// The agent's most recent audit entry.
    pub last_activity: Option<DateTime<Utc>>,
}

/// The thresholds the default rules compare against, from `gov.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub stuck_after_minutes: u64,
    pub repeat_payload_count: u32,
}

/// How many of the newest proposals in a row share the newest one's payload
/// hash (0 when there are none).
pub fn same_payload_streak(newest_first: &[String]) -> u64 {
    match newest_first.first() {
        None => 0,
        Some(h) => newest_first.iter().take_while(|x| *x == h).count() as u64,
    }
}

fn minutes_since(t: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - t).num_minutes().max(0)
}

fn clamp_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// The Cedar `continue` request for an observation at `now`.
pub fn continue_request(obs: &Observation, limits: Thresholds, now: DateTime<Utc>) -> CedarRequest {
    let oldest_open = obs
        .open_approvals
        .iter()
        .min()
        .map(|t| minutes_since(*t, now))
        .unwrap_or(0);
    let since_activity = obs
        .last_activity
        .map(|t| minutes_since(t, now))
        .unwrap_or(0);
    let context = serde_json::json!({
        "tokens_consumed": clamp_i64(obs.tokens_consumed),
        "tokens_cap": clamp_i64(obs.tokens_cap),
        "micros_consumed": obs.micros_consumed.0,
        "micros_cap": obs.micros_cap.0,
        "oldest_open_approval_minutes": oldest_open,
        "stuck_after_minutes": clamp_i64(limits.stuck_after_minutes),
        "same_payload_streak": clamp_i64(same_payload_streak(&obs.recent_payload_hashes)),
        "repeat_payload_limit": i64::from(limits.repeat_payload_count),
        "expired_pending": clamp_i64(obs.expired_pending),
        "minutes_since_activity": since_activity,
    });
    let principal = EntityRef::new("Agent", obs.agent_id.clone());
    let mut attrs = serde_json::Map::new();
    attrs.insert("group".into(), serde_json::Value::String(obs.group.clone()));
    CedarRequest {
        principal: principal.clone(),
        action: "continue".into(),
        resource: principal.clone(),
        context: match context {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        entities: vec![EntityData {
            uid: principal,
            attrs,
            parents: vec![],
            tags: Default::default(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Observation {
        Observation {
            agent_id: "noop".into(),
            group: "smoke".into(),
            tokens_consumed: 10,
            tokens_cap: 100,
            micros_consumed: Micros(5),
            micros_cap: Micros(50),
            open_approvals: vec![],
            recent_payload_hashes: vec![],
            expired_pending: 0,
            last_activity: None,
        }
    }

    #[test]
    fn streak_counts_the_newest_run_only() {
        let h = |s: &str| s.to_string();
        assert_eq!(same_payload_streak(&[]), 0);
        assert_eq!(same_payload_streak(&[h("a"), h("a"), h("b"), h("a")]), 2);
        assert_eq!(same_payload_streak(&[h("a"), h("a"), h("a")]), 3);
    }

    #[test]
    fn context_reports_the_oldest_open_approval() {
        let now = Utc::now();
        let mut o = obs();
        o.open_approvals = vec![
            now - chrono::Duration::minutes(5),
            now - chrono::Duration::minutes(42),
        ];
        let req = continue_request(
            &o,
            Thresholds {
                stuck_after_minutes: 30,
                repeat_payload_count: 3,
            },
            now,
        );
        assert_eq!(req.context["oldest_open_approval_minutes"], 42);
        assert_eq!(req.context["stuck_after_minutes"], 30);
        assert_eq!(req.action, "continue");
        assert_eq!(req.principal, req.resource);
    }
}
