//! Retry policy: exponential backoff with jitter, under a gateway-wide budget.
//!
//! A *retry* is another attempt on a back end that already failed in the same episode
//! (moving a session to a back end that has not failed yet is a failover and is immediate).
//! Attempt `n` (from 0) waits `initial × multiplierⁿ`, capped at `max_backoff`, with
//! "equal jitter": a uniform draw between half that and all of it, so sessions that
//! failed together do not retry together. Every session start deposits into the budget
//! and every retry withdraws; when the budget is spent, retries stop and the session gets
//! `MODEL_UNAVAILABLE` rather than adding load to a failing fleet.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// Backoff and budget settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Retries allowed per failure episode (an episode ends when a stream delivers a result).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub multiplier: f64,
    pub max_backoff: Duration,
    /// Retries allowed as a share of session starts over `budget_window`, in percent.
    pub budget_percent: f32,
    /// Retries always allowed per second, whatever the starts.
    pub budget_min_per_second: u32,
    pub budget_window: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempts: 3,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(5),
            budget_percent: 20.0,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetrySettings {
    /// The un-jittered delay before retry `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(64) as i32);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }

    /// The delay with equal jitter: uniform in `[backoff/2, backoff]`.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let full = self.backoff(attempt);
        full / 2 + full.mul_f64(fastrand::f64() * 0.5)
    }
}

/// The gateway-wide retry budget.
pub struct RetryBudget {
    inner: TpsBudget,
}

impl RetryBudget {
    pub fn new(settings: &RetrySettings) -> Self {
        RetryBudget {
            inner: TpsBudget::new(
                settings.budget_window,
                settings.budget_min_per_second,
                settings.budget_percent / 100.0,
            ),
        }
    }

    /// A session started (a first attempt).
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_caps_at_5s() {
        let s = RetrySettings::default();
        let ms: Vec<u128> = (0..8).map(|n| s.backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let s = RetrySettings::default();
        let draws: Vec<Duration> = (0..200).map(|_| s.jittered(2)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_millis(200)));
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads retries");
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_floor_plus_a_share_of_starts() {
        let s = RetrySettings {
            budget_min_per_second: 1,
            budget_window: Duration::from_secs(10),
            budget_percent: 20.0,
            ..RetrySettings::default()
        };
        let b = RetryBudget::new(&s);
        // The floor: 1 per second over a 10 s window.
        let floor = (0..100).take_while(|_| b.withdraw()).count();
        assert!((9..=11).contains(&floor), "floor was {floor}");
        assert!(!b.withdraw());
        // 100 starts buy ~20 more retries.
        for _ in 0..100 {
            b.deposit();
        }
        let bought = (0..100).take_while(|_| b.withdraw()).count();
        assert!((18..=21).contains(&bought), "bought {bought}");
        assert!(!b.withdraw(), "an outage cannot multiply retries");
    }
}
