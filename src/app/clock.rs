//! gov's one clock. Every time gov records or compares (an entry's time,
//! a proposal's expiry, a credential's, a reservation's hold, a watchdog
//! pass) is read from the [`Clock`] of the service that does it, so a test
//! can set the time instead of sleeping. The layers test
//! `layers::the_clock_is_read_in_one_place` keeps `Utc::now()` here.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

/// The system clock, or a time a test set (and moves by hand).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system's time.
    fixed: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stays at `at` until it is set or advanced.
    pub fn fixed(at: DateTime<Utc>) -> Clock {
        let c = Clock::default();
        c.set(at);
        c
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        let fixed = *self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        fixed.unwrap_or_else(Utc::now)
    }

    /// From now on, the time is `at` (for every holder of this clock).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.fixed.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// Moves the time on by `by`: a fixed clock from where it stands, the
    /// system clock from now (it is fixed from then on).
    pub fn advance(&self, by: Duration) {
        let mut fixed = self.fixed.lock().unwrap_or_else(PoisonError::into_inner);
        let now = fixed.unwrap_or_else(Utc::now);
        *fixed = Some(now + by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_clock_stays_and_moves_for_every_holder() {
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("a time");
        let c = Clock::fixed(at);
        let held = c.clone();
        assert_eq!(held.now(), at);
        c.advance(Duration::seconds(90));
        assert_eq!(held.now(), at + Duration::seconds(90));
        let system = Clock::system();
        let before = Utc::now();
        let read = system.now();
        assert!(read >= before && read <= Utc::now());
    }
}
