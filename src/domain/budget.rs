//! The budget ledger: caps, spend per period, the charge check and the
//! agent's status. Integer tokens and micro-dollars only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::money::Micros;

/// How often spend starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[default]
    Lifetime,
    Daily,
    Monthly,
}

/// Budget caps and pricing, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSettings {
    pub tokens_cap: u64,
    pub dollars_cap: Micros,
    pub dollars_per_1k_tokens: Micros,
    pub period: Period,
    pub run_tokens: u64,
    pub run_dollars: Micros,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            tokens_cap: 200_000,
            dollars_cap: Micros(50 * super::money::MICROS_PER_DOLLAR),
            dollars_per_1k_tokens: Micros(15_000),
            period: Period::Lifetime,
            run_tokens: 50_000,
            run_dollars: Micros(5 * super::money::MICROS_PER_DOLLAR),
        }
    }
}

impl BudgetSettings {
    /// What one run reserves at admission.
    pub fn run_hold(&self) -> Hold {
        Hold {
            tokens: i64::try_from(self.run_tokens).unwrap_or(i64::MAX),
            micros: self.run_dollars,
        }
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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

/// What recording a charge does to the agent. A charge records money that
/// was already spent, so it is always recorded; crossing a cap pauses the
/// agent, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeEffect {
    /// Within the caps (a charge that lands exactly on a cap is within).
    Within,
    /// It crosses a cap: record it and pause the agent.
    Pauses {
        tokens_over: bool,
        dollars_over: bool,
    },
    /// The agent is paused already: record it, nothing more.
    AlreadyPaused,
}

/// Whether spend is over a cap (strictly: exactly at the cap is not over).
fn over_caps(caps: &BudgetSettings, spend: Spend) -> (bool, bool) {
    let tokens_over = spend.tokens > i64::try_from(caps.tokens_cap).unwrap_or(i64::MAX);
    let dollars_over = spend.micros.0 > caps.dollars_cap.0;
    (tokens_over, dollars_over)
}

/// Decides what a charge does, given what was spent before it.
pub fn charge_effect(
    caps: &BudgetSettings,
    spent: Spend,
    charge: Charge,
    paused: bool,
) -> ChargeEffect {
    if paused {
        return ChargeEffect::AlreadyPaused;
    }
    match over_caps(caps, spent.plus(charge.tokens, charge.micros)) {
        (false, false) => ChargeEffect::Within,
        (tokens_over, dollars_over) => ChargeEffect::Pauses {
            tokens_over,
            dollars_over,
        },
    }
}

impl Spend {
    pub fn plus(self, tokens: i64, micros: Micros) -> Spend {
        Spend {
            tokens: self.tokens.saturating_add(tokens),
            micros: Micros(self.micros.0.saturating_add(micros.0)),
        }
    }
}

/// Budget held for spend that has not happened yet: a run's reservation, or
/// the expected cost of an approved proposal not yet executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hold {
    pub tokens: i64,
    pub micros: Micros,
}

impl Hold {
    /// What a reservation still holds once `spent` of it was charged: never
    /// below zero.
    pub fn left_after(self, spent: Spend) -> Hold {
        Hold {
            tokens: (self.tokens - spent.tokens).max(0),
            micros: Micros((self.micros.0 - spent.micros.0).max(0)),
        }
    }

    pub fn plus(self, other: Hold) -> Hold {
        Hold {
            tokens: self.tokens.saturating_add(other.tokens),
            micros: Micros(self.micros.0.saturating_add(other.micros.0)),
        }
    }

    /// Whether `spent` has used all of it (either dimension).
    pub fn exhausted_by(self, spent: Spend) -> bool {
        spent.tokens >= self.tokens || spent.micros.0 >= self.micros.0
    }
}

/// Why a reservation cannot be admitted: what is left and what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub left: Hold,
    pub wanted: Hold,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a run reserves {} tokens and {}, but only {} tokens and {} are left (cap - spent - reserved)",
            self.wanted.tokens, self.wanted.micros, self.left.tokens.max(0), Micros(self.left.micros.0.max(0))
        )
    }
}

/// Admission: a reservation fits when the caps minus what is spent minus
/// what is held by open reservations still cover it, in both dimensions.
pub fn admit(
    caps: &BudgetSettings,
    spent: Spend,
    held: Hold,
    wanted: Hold,
) -> Result<(), Shortfall> {
    let left = Hold {
        tokens: i64::try_from(caps.tokens_cap)
            .unwrap_or(i64::MAX)
            .saturating_sub(spent.tokens)
            .saturating_sub(held.tokens),
        micros: Micros(
            caps.dollars_cap
                .0
                .saturating_sub(spent.micros.0)
                .saturating_sub(held.micros.0),
        ),
    };
    if wanted.tokens <= left.tokens && wanted.micros.0 <= left.micros.0 {
        Ok(())
    } else {
        Err(Shortfall { left, wanted })
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

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    fn a_charge_that_crosses_a_cap_pauses_once() {
        let spent = Spend {
            tokens: 199_000,
            micros: Micros(1),
        };
        let at_cap = Charge::new(1000, Some(Micros(0)), Micros(0)).expect("valid");
        assert_eq!(
            charge_effect(&caps(), spent, at_cap, false),
            ChargeEffect::Within
        );
        let over = Charge::new(1001, Some(Micros(0)), Micros(0)).expect("valid");
        assert_eq!(
            charge_effect(&caps(), spent, over, false),
            ChargeEffect::Pauses {
                tokens_over: true,
                dollars_over: false
            }
        );
        assert_eq!(
            charge_effect(&caps(), spent, over, true),
            ChargeEffect::AlreadyPaused
        );
        let dollars = Charge::new(0, Some(Micros(50_000_000)), Micros(0)).expect("valid");
        assert!(matches!(
            charge_effect(&caps(), spent, dollars, false),
            ChargeEffect::Pauses {
                dollars_over: true,
                ..
            }
        ));
    }

    #[test]
    fn admission_counts_spend_and_open_reservations() {
        let caps = BudgetSettings {
            tokens_cap: 1000,
            dollars_cap: Micros(1_000_000),
            ..caps()
        };
        let spent = Spend {
            tokens: 200,
            micros: Micros(200_000),
        };
        let held = Hold {
            tokens: 300,
            micros: Micros(300_000),
        };
        let want = |t, m| Hold {
            tokens: t,
            micros: Micros(m),
        };
        assert_eq!(admit(&caps, spent, held, want(500, 500_000)), Ok(()));
        let short = admit(&caps, spent, held, want(501, 1)).expect_err("no tokens left");
        assert_eq!(short.left, want(500, 500_000));
        assert!(admit(&caps, spent, held, want(1, 500_001)).is_err());
        assert_eq!(
            short.to_string(),
            "a run reserves 501 tokens and $0.000001, but only 500 tokens and $0.50 are left (cap - spent - reserved)"
        );
        // What a run has charged comes off its own hold, never below zero.
        let r = want(100, 100);
        assert_eq!(
            r.left_after(Spend {
                tokens: 40,
                micros: Micros(200)
            }),
            want(60, 0)
        );
        assert!(r.exhausted_by(Spend {
            tokens: 0,
            micros: Micros(100)
        }));
        assert!(!r.exhausted_by(Spend {
            tokens: 99,
            micros: Micros(99)
        }));
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
