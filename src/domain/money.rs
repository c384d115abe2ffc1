//! Money as integer micro-dollars, so that sums never drift.

use serde::{Deserialize, Serialize};

/// An amount of US dollars in millionths. Negative amounts exist only as the
/// result of arithmetic; charges and caps are checked to be non-negative.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub i64);

pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_dollars_str(s: &str) -> Result<Self, MoneyError> {
        let s = s.trim().trim_start_matches('$');
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(MoneyError::Malformed(s.to_string()));
        }
        if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(MoneyError::Malformed(s.to_string()));
        }
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(s.to_string()));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| MoneyError::TooLarge(s.to_string()))?
        };
        let frac_micros: i64 = format!("{frac:0<6}")
            .parse()
            .map_err(|_| MoneyError::Malformed(s.to_string()))?;
        let total = whole
            .checked_mul(MICROS_PER_DOLLAR)
            .and_then(|w| w.checked_add(frac_micros))
            .ok_or_else(|| MoneyError::TooLarge(s.to_string()))?;
        Ok(Micros(if neg { -total } else { total }))
    }

    /// Converts a JSON or TOML number of dollars. The number is printed in its
    /// shortest round-trip form and parsed as a decimal, so `0.015` is exactly
    /// 15,000 micro-dollars.
    pub fn from_dollars_f64(x: f64) -> Result<Self, MoneyError> {
        if !x.is_finite() {
            return Err(MoneyError::Malformed(x.to_string()));
        }
        Self::from_dollars_str(&format!("{x}"))
    }

    pub fn as_dollars_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_DOLLAR as f64
    }

    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }
}

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_DOLLAR as u64;
        let frac = abs % MICROS_PER_DOLLAR as u64;
        if frac == 0 {
            write!(f, "{sign}${whole}.00")
        } else {
            let frac = format!("{frac:06}");
            let frac = frac.trim_end_matches('0');
            let frac = if frac.len() < 2 {
                format!("{frac:0<2}")
            } else {
                frac.to_string()
            };
            write!(f, "{sign}${whole}.{frac}")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an amount of dollars")]
    Malformed(String),
    #[error("`{0}` has more than 6 decimal places")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Micros::from_dollars_str("0.015"), Ok(Micros(15_000)));
        assert_eq!(Micros::from_dollars_str("50"), Ok(Micros(50_000_000)));
        assert_eq!(Micros::from_dollars_str("$1.5"), Ok(Micros(1_500_000)));
        assert_eq!(Micros::from_dollars_str(".25"), Ok(Micros(250_000)));
        assert_eq!(Micros::from_dollars_f64(0.1), Ok(Micros(100_000)));
        assert!(Micros::from_dollars_f64(1e-7).is_err());
        assert!(Micros::from_dollars_str("1.2.3").is_err());
        assert!(Micros::from_dollars_str("").is_err());
        assert!(Micros::from_dollars_str("99999999999999999").is_err());
    }

    #[test]
    fn displays_dollars() {
        assert_eq!(Micros(50_000_000).to_string(), "$50.00");
        assert_eq!(Micros(15_000).to_string(), "$0.015");
        assert_eq!(Micros(1_500_000).to_string(), "$1.50");
        assert_eq!(Micros(-1).to_string(), "-$0.000001");
    }
}
