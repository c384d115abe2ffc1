//! The budget ledger: caps, spend per period, the charge check and the
//! agent's status. Integer tokens and micro-dollars only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::money::Micros;
use crate::config::{BudgetSettings, Period};

/// The largest single charge accepted: anything above is a bug or an attack.
pub const MAX_CHARGE_TOKENS: i64 = 1_000_000_000;
pub const MAX_CHARGE_MICROS: i64 = 1_000_000 * crate::domain::money::MICROS_PER_DOLLAR;

/// The ledger keys a charge is booked under: every charge counts for the
/// lifetime, its UTC day and its UTC month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodKeys {
    pub day: String,
    pub month: String,
}

impl PeriodKeys {
    pub fn at(t: DateTime<Utc>) -> Self {
        PeriodKeys {
            day: t.format("%Y-%m-%d").to_string(),
            month: t.format("%Y-%m").to_string(),
        }
    }

    /// The key that selects the charges of the current period, or `None`
    /// for lifetime (all charges).
    pub fn current(period: Period, now: DateTime<Utc>) -> Option<String> {
        let keys = PeriodKeys::at(now);
        match period {
            Period::Lifetime => None,
            Period::Daily => Some(keys.day),
            Period::Monthly => Some(keys.month),
        }
    }
}

/// The period key as stored in entries: `lifetime`, `2026-11-25`, `2026-11`.
pub fn period_label(period: Period, now: DateTime<Utc>) -> String {
    PeriodKeys::current(period, now).unwrap_or_else(|| "lifetime".into())
}

/// What an agent has spent in the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spend {
    pub tokens: i64,
    pub micros: Micros,
}

/// A charge the runner (or operator) records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub tokens: i64,
    pub micros: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    #[error("tokens must not be negative")]
    NegativeTokens,
    #[error("dollars must not be negative")]
    NegativeDollars,
    #[error("the charge is larger than any single charge can be")]
    Absurd,
}

impl Charge {
    /// Builds a charge; `micros` defaults to the price of the tokens.
    pub fn new(
        tokens: i64,
        micros: Option<Micros>,
        per_1k_tokens: Micros,
    ) -> Result<Charge, ChargeError> {
        if tokens < 0 {
            return Err(ChargeError::NegativeTokens);
        }
        if tokens > MAX_CHARGE_TOKENS {
            return Err(ChargeError::Absurd);
        }
        let micros = match micros {
            Some(m) if m.0 < 0 => return Err(ChargeError::NegativeDollars),
            Some(m) if m.0 > MAX_CHARGE_MICROS => return Err(ChargeError::Absurd),
            Some(m) => m,
            // Rounded to the nearest micro-dollar; tokens are bounded above,
            // so this cannot overflow.
            None => Micros((tokens * per_1k_tokens.0 + 500) / 1000),
        };
        Ok(Charge { tokens, micros })
    }
}

/// The outcome of checking a charge against the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeCheck {
    /// Within the caps: record it.
    Fits,
    /// It would cross a cap: refuse it and pause the agent.
    OverCap {
        tokens_over: bool,
        dollars_over: bool,
    },
}

/// Checks a charge against the caps, given what was spent so far.
pub fn check_charge(caps: &BudgetSettings, spent: Spend, charge: Charge) -> ChargeCheck {
    let tokens_after = spent.tokens.saturating_add(charge.tokens);
    let micros_after = spent.micros.0.saturating_add(charge.micros.0);
    let tokens_over = tokens_after > i64::try_from(caps.tokens_cap).unwrap_or(i64::MAX);
    let dollars_over = micros_after > caps.dollars_cap.0;
    if tokens_over || dollars_over {
        ChargeCheck::OverCap {
            tokens_over,
            dollars_over,
        }
    } else {
        ChargeCheck::Fits
    }
}

/// An agent's status as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Ok,
    Warning,
    Paused,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Ok => "ok",
            AgentStatus::Warning => "warning",
            AgentStatus::Paused => "paused",
        }
    }
}

/// The percentage of the dollar cap left, as the original computes it
/// (0 to 100, two decimals).
pub fn remaining_pct(caps: &BudgetSettings, spent: Spend) -> f64 {
    let cap = caps.dollars_cap.0.max(1) as f64;
    let pct = (1.0 - spent.micros.0 as f64 / cap) * 100.0;
    (pct.max(0.0) * 100.0).round() / 100.0
}

/// `paused` if paused, else `warning` under 25% of either cap left, else `ok`.
pub fn agent_status(caps: &BudgetSettings, spent: Spend, paused: bool) -> AgentStatus {
    if paused {
        return AgentStatus::Paused;
    }
    let tokens_cap = i64::try_from(caps.tokens_cap).unwrap_or(i64::MAX).max(1);
    let tokens_left = 1.0 - spent.tokens as f64 / tokens_cap as f64;
    if remaining_pct(caps, spent) < 25.0 || tokens_left < 0.25 {
        AgentStatus::Warning
    } else {
        AgentStatus::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn caps() -> BudgetSettings {
        BudgetSettings::default()
    }

    #[test]
    fn tokens_priced_at_the_default_rate() {
        let c = Charge::new(1000, None, Micros(15_000)).expect("valid");
        assert_eq!(c.micros, Micros(15_000));
        let c = Charge::new(1, None, Micros(15_000)).expect("valid");
        assert_eq!(c.micros, Micros(15));
        assert_eq!(
            Charge::new(-1, None, Micros(1)),
            Err(ChargeError::NegativeTokens)
        );
        assert_eq!(
            Charge::new(1, Some(Micros(-5)), Micros(1)),
            Err(ChargeError::NegativeDollars)
        );
        assert_eq!(
            Charge::new(MAX_CHARGE_TOKENS + 1, None, Micros(1)),
            Err(ChargeError::Absurd)
        );
    }

    #[test]
    fn a_charge_that_crosses_a_cap_does_not_fit() {
        let spent = Spend {
            tokens: 199_000,
            micros: Micros(1),
        };
        let fits = Charge::new(1000, Some(Micros(0)), Micros(0)).expect("valid");
        assert_eq!(check_charge(&caps(), spent, fits), ChargeCheck::Fits);
        let over = Charge::new(1001, Some(Micros(0)), Micros(0)).expect("valid");
        assert_eq!(
            check_charge(&caps(), spent, over),
            ChargeCheck::OverCap {
                tokens_over: true,
                dollars_over: false
            }
        );
        let dollars = Charge::new(0, Some(Micros(50_000_000)), Micros(0)).expect("valid");
        assert!(matches!(
            check_charge(&caps(), spent, dollars),
            ChargeCheck::OverCap {
                dollars_over: true,
                ..
            }
        ));
    }

    #[test]
    fn status_warns_under_a_quarter() {
        let spent = Spend {
            tokens: 0,
            micros: Micros(38_000_000),
        };
        assert_eq!(agent_status(&caps(), spent, false), AgentStatus::Warning);
        assert_eq!(remaining_pct(&caps(), spent), 24.0);
        assert_eq!(
            agent_status(&caps(), Spend::default(), false),
            AgentStatus::Ok
        );
        assert_eq!(
            agent_status(&caps(), Spend::default(), true),
            AgentStatus::Paused
        );
    }

    #[test]
    fn period_keys_are_utc_days_and_months() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 25, 23, 59, 0)
            .single()
            .expect("valid");
        assert_eq!(period_label(Period::Daily, t), "2026-11-25");
        assert_eq!(period_label(Period::Monthly, t), "2026-11");
        assert_eq!(period_label(Period::Lifetime, t), "lifetime");
    }
}
