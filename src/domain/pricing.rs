//! Token prices: what a number of tokens of one model costs, in integer
//! micro-dollars, with no floating point anywhere.
//!
//! Claude Code reports tokens by kind (input, output, cache writes, cache
//! reads), each priced differently. A model is priced by the longest
//! configured name that its id starts with (`claude-sonnet-4-5` prices
//! `claude-sonnet-4-5-20250929`); tokens of a model with no price, or of a
//! charge that names no model, cost the flat rate per 1,000 tokens.
//!
//! Costs are computed on running totals: the cost of a report is
//! `cost(total after) - cost(total before)`, so a run charged event by event
//! is charged exactly what its final totals cost (no rounding drift).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::money::Micros;

/// Tokens by kind, as Claude Code counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl TokenUsage {
    /// Every token, cached or not: what the token cap counts.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// The larger of each count (a message's usage only grows while it
    /// streams).
    pub fn max(self, other: TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.max(other.input_tokens),
            output_tokens: self.output_tokens.max(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .max(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .max(other.cache_read_input_tokens),
        }
    }

    pub fn plus(self, other: TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(other.cache_read_input_tokens),
        }
    }

    /// What `self` has beyond `before`, per kind, never below zero.
    pub fn beyond(self, before: TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.saturating_sub(before.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(before.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_sub(before.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_sub(before.cache_read_input_tokens),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

/// Running totals per model (`""` for usage that names no model).
pub type UsageByModel = BTreeMap<String, TokenUsage>;

/// One model's part of a run's spend, priced by the runner: what
/// `POST /runs/{id}/usage` and the end of a run carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCharge {
    /// The model id as Claude Code names it; empty when unknown.
    #[serde(default)]
    pub model: String,
    #[serde(flatten)]
    pub usage: TokenUsage,
    /// Its price in micro-dollars.
    pub micros: i64,
}

impl Prices {
    /// The charges that take a run from `charged` to `seen` (running totals
    /// per model): one per model that grew, priced exactly.
    pub fn charges_between(&self, charged: &UsageByModel, seen: &UsageByModel) -> Vec<ModelCharge> {
        let mut out = Vec::new();
        for (model, now) in seen {
            let before = charged.get(model).copied().unwrap_or_default();
            let usage = now.beyond(before);
            if usage.is_zero() {
                continue;
            }
            out.push(ModelCharge {
                model: model.clone(),
                usage,
                micros: self.cost_between(model, &before, now).0,
            });
        }
        out
    }
}

/// The prices of one model, in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    pub input: Micros,
    pub output: Micros,
    pub cache_write: Micros,
    pub cache_read: Micros,
}

const PER_MILLION: i128 = 1_000_000;

impl ModelPrice {
    fn cost(&self, u: &TokenUsage) -> Micros {
        let part = |tokens: u64, rate: Micros| i128::from(tokens) * i128::from(rate.0);
        let sum = part(u.input_tokens, self.input)
            + part(u.output_tokens, self.output)
            + part(u.cache_creation_input_tokens, self.cache_write)
            + part(u.cache_read_input_tokens, self.cache_read);
        // Rounded half up to the micro-dollar.
        Micros(i64::try_from((sum + PER_MILLION / 2) / PER_MILLION).unwrap_or(i64::MAX))
    }
}

/// The price table: per model, and the flat rate for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub models: BTreeMap<String, ModelPrice>,
    pub per_1k_tokens: Micros,
}

impl Prices {
    /// The price of a model: the longest configured name its id starts with.
    pub fn of(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        if model.is_empty() {
            return None;
        }
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(name, p)| (name.as_str(), p))
    }

    /// What these tokens of this model cost.
    pub fn cost(&self, model: &str, usage: &TokenUsage) -> Micros {
        match self.of(model) {
            Some((_, p)) => p.cost(usage),
            None => {
                let tokens = i128::from(usage.total());
                let c = (tokens * i128::from(self.per_1k_tokens.0) + 500) / 1000;
                Micros(i64::try_from(c).unwrap_or(i64::MAX))
            }
        }
    }

    /// The cost of going from `before` to `after` (running totals of one
    /// model): exact, whatever the steps.
    pub fn cost_between(&self, model: &str, before: &TokenUsage, after: &TokenUsage) -> Micros {
        let after = self.cost(model, &after.max(*before));
        Micros((after.0 - self.cost(model, before).0).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        let m = |d: &str| Micros::from_dollars_str(d).expect("valid");
        let mut models = BTreeMap::new();
        models.insert(
            "claude-sonnet-4-5".to_string(),
            ModelPrice {
                input: m("3"),
                output: m("15"),
                cache_write: m("3.75"),
                cache_read: m("0.30"),
            },
        );
        models.insert(
            "claude-sonnet".to_string(),
            ModelPrice {
                input: m("1"),
                output: m("1"),
                cache_write: m("1"),
                cache_read: m("1"),
            },
        );
        Prices {
            models,
            per_1k_tokens: Micros(15_000),
        }
    }

    fn usage(i: u64, o: u64, cw: u64, cr: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: i,
            output_tokens: o,
            cache_creation_input_tokens: cw,
            cache_read_input_tokens: cr,
        }
    }

    #[test]
    fn each_kind_has_its_price_and_the_longest_name_wins() {
        let p = prices();
        // 1200 * 3 + 40 * 15 + 300 * 3.75 + 4000 * 0.30 = 6525 micro-dollars.
        assert_eq!(
            p.cost("claude-sonnet-4-5-20250929", &usage(1200, 40, 300, 4000)),
            Micros(6525)
        );
        assert_eq!(
            p.of("claude-sonnet-4-5-20250929").map(|(n, _)| n),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            p.of("claude-sonnet-3").map(|(n, _)| n),
            Some("claude-sonnet")
        );
        // No model, or an unknown one: the flat $0.015 per 1,000 tokens.
        assert_eq!(p.cost("", &usage(1000, 0, 0, 0)), Micros(15_000));
        assert_eq!(p.cost("gpt-x", &usage(500, 500, 0, 0)), Micros(15_000));
    }

    #[test]
    fn step_by_step_costs_add_up_to_the_total() {
        let p = prices();
        let model = "claude-sonnet-4-5";
        let steps = [usage(1, 1, 0, 1), usage(2, 3, 0, 7), usage(3, 3, 1, 7)];
        let mut before = TokenUsage::default();
        let mut sum = 0;
        for s in steps {
            sum += p.cost_between(model, &before, &s).0;
            before = s;
        }
        assert_eq!(sum, p.cost(model, &usage(3, 3, 1, 7)).0);
        assert_eq!(
            usage(5, 1, 0, 0).beyond(usage(3, 2, 0, 0)),
            usage(2, 0, 0, 0)
        );
    }
}
