//! One deadline per Key Vault operation.
//!
//! SPIRE gives a plugin RPC 30 s. Each `KeyVaultApi` method of `KeyVaultClient` starts one
//! [`Deadline`] and passes it down; it bounds everything the operation does: waiting for a
//! token another caller is fetching, the credential's own HTTP calls, every attempt of the
//! request (socket timeouts shrink to the time left), back-offs and `Retry-After` waits, and
//! the retry after a 401 challenge. Time comes from the injected [`Clock`], so tests drive it
//! with a `ManualClock` instead of sleeping.

use std::time::{Duration, SystemTime};

use crate::clock::Clock;

/// The deadline of one Key Vault operation: below SPIRE's 30 s, leaving it time to get the
/// answer (or the error) back.
pub(crate) const OPERATION_DEADLINE: Duration = Duration::from_secs(25);

/// The moment an operation must be over, and the budget it was given (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: SystemTime,
    budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(clock: &dyn Clock, budget: Duration) -> Self {
        let now = clock.now();
        Deadline {
            at: now.checked_add(budget).unwrap_or(now),
            budget,
        }
    }

    /// Time left; zero once passed. Never more than the budget, should the wall clock step
    /// back.
    pub fn remaining(&self, clock: &dyn Clock) -> Duration {
        self.at
            .duration_since(clock.now())
            .unwrap_or(Duration::ZERO)
            .min(self.budget)
    }

    /// `"the 25 s deadline of this operation"`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "the {} s deadline of this operation",
            trim_float(self.budget.as_secs_f64())
        )
    }
}

/// Seconds without a useless fraction: `25`, `2.5`.
pub(crate) fn trim_float(secs: f64) -> String {
    let s = format!("{secs:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn remaining_counts_down_to_zero_and_never_exceeds_the_budget() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ManualClock::new(start);
        let d = Deadline::after(&clock, Duration::from_secs(25));
        assert_eq!(d.remaining(&clock), Duration::from_secs(25));
        clock.advance(Duration::from_millis(24_500));
        assert_eq!(d.remaining(&clock), Duration::from_millis(500));
        clock.advance(Duration::from_secs(1));
        assert_eq!(d.remaining(&clock), Duration::ZERO);
        // A wall clock stepping back does not stretch the deadline.
        let back = ManualClock::new(start - Duration::from_secs(60));
        assert_eq!(d.remaining(&back), Duration::from_secs(25));
        assert_eq!(d.describe(), "the 25 s deadline of this operation");
        let short = Deadline::after(&clock, Duration::from_millis(2500));
        assert_eq!(short.describe(), "the 2.5 s deadline of this operation");
    }
}
