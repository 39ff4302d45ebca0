//! The gateway's own overload: how late its runtime gets round to a task that is ready.
//!
//! Every session's latency passes through the same few worker threads. When the gateway
//! (or the machine under it) runs out of CPU, every task waits longer for its turn, and
//! every session pays: past that point one more session makes all of them worse. The lag
//! signal cannot see this — it times audio from the moment the gateway reads it, and an
//! overloaded gateway reads late. (When the *machine* saturates with the gateway's own
//! runtime still on time — as in the co-located benchmarks of `docs/measurements.md`,
//! where its tasks woke at most 19 ms late at 3,000 sessions — this probe stays quiet and
//! the lag signal and route shedding are what speak.)
//!
//! So a probe task sleeps [`PROBE_EVERY`] again and again and records how late it wakes:
//! the scheduling delay any session task sees too. The delays are smoothed (an
//! exponentially weighted mean, each sample capped at twice the limit, so one long stall —
//! a paused VM, a swapped page — does not count as overload; it takes about two seconds
//! of heavy delay). While the mean is above `admission.max_delay` the gateway is
//! overloaded and refuses new sessions before the upgrade (HTTP 503 + `Retry-After`,
//! reason `overloaded`); it takes them again once the mean is under half the limit.
//! Sessions already running are never touched: refusing newcomers is what keeps them
//! within their latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// How often the probe measures.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Weight of each new sample in the mean (time constant ≈ 5 probes).
const WEIGHT: f64 = 0.2;

pub struct Overload {
    /// `None`: never refuse (the delay is still measured and exported).
    limit: Option<Duration>,
    /// The smoothed delay, in µs.
    mean_us: AtomicU64,
    overloaded: AtomicBool,
}

impl Overload {
    pub fn new(limit: Option<Duration>) -> Self {
        Overload {
            limit,
            mean_us: AtomicU64::new(0),
            overloaded: AtomicBool::new(false),
        }
    }

    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// New sessions are being refused.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Acquire)
    }

    /// The smoothed scheduling delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.mean_us.load(Ordering::Acquire))
    }

    /// Folds in one probe's delay; `Some(state)` when the overload state changed. Only
    /// the probe task calls this, so load-then-store is enough.
    pub fn observe(&self, late: Duration) -> Option<bool> {
        let cap = self.limit.map_or(Duration::from_secs(10), |l| l * 2);
        let sample = late.min(cap).as_secs_f64() * 1e6;
        let mean = self.mean_us.load(Ordering::Acquire) as f64;
        let mean = mean + WEIGHT * (sample - mean);
        self.mean_us.store(mean.round() as u64, Ordering::Release);
        let limit = self.limit?.as_secs_f64() * 1e6;
        let was = self.overloaded();
        let now = if was {
            mean >= limit / 2.0
        } else {
            mean > limit
        };
        (now != was).then(|| {
            self.overloaded.store(now, Ordering::Release);
            now
        })
    }

    /// Measures until `stop`, keeping `gauge` (seconds) at the smoothed delay.
    pub async fn probe(self: Arc<Self>, gauge: Gauge<f64, AtomicU64>, stop: CancellationToken) {
        loop {
            let asked = tokio::time::Instant::now() + PROBE_EVERY;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(asked) => {}
            }
            // The timer wheel has millisecond ticks: a healthy wake-up is up to ~1 ms late.
            let late = tokio::time::Instant::now().saturating_duration_since(asked);
            match self.observe(late) {
                Some(true) => tracing::warn!(
                    delay_ms = self.delay().as_millis() as u64,
                    limit_ms = self.limit.map(|l| l.as_millis() as u64),
                    "overloaded: tasks run late; new sessions are refused (admission.max_delay)"
                ),
                Some(false) => tracing::info!(
                    delay_ms = self.delay().as_millis() as u64,
                    "no longer overloaded: new sessions are admitted again"
                ),
                None => {}
            }
            gauge.set(self.delay().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sustained_delay_overloads_and_recovery_clears_it_with_hysteresis() {
        let o = Overload::new(Some(100 * MS));
        for _ in 0..20 {
            assert_eq!(o.observe(MS), None, "healthy wake-ups");
        }
        assert!(!o.overloaded());
        // Delays at 2× the limit: the mean climbs past it after a few probes.
        let mut tripped_after = None;
        for i in 1..=10 {
            if o.observe(200 * MS) == Some(true) {
                tripped_after = Some(i);
                break;
            }
        }
        assert_eq!(tripped_after, Some(4), "mean {:?}", o.delay());
        assert!(o.overloaded());
        // Between half the limit and the limit: still overloaded (hysteresis).
        for _ in 0..30 {
            assert_eq!(o.observe(60 * MS), None);
        }
        assert!(o.overloaded(), "mean {:?}", o.delay());
        // Back to healthy: cleared once the mean is under half the limit.
        let mut cleared = false;
        for _ in 0..20 {
            if o.observe(MS) == Some(false) {
                cleared = true;
                break;
            }
        }
        assert!(cleared && !o.overloaded(), "mean {:?}", o.delay());
    }

    #[test]
    fn one_long_stall_is_not_overload() {
        let o = Overload::new(Some(100 * MS));
        assert_eq!(
            o.observe(Duration::from_secs(30)),
            None,
            "capped at 2× the limit"
        );
        assert!(o.delay() <= 40 * MS, "{:?}", o.delay());
        assert!(!o.overloaded());
    }

    #[test]
    fn without_a_limit_the_delay_is_measured_but_nothing_is_refused() {
        let o = Overload::new(None);
        for _ in 0..50 {
            assert_eq!(o.observe(Duration::from_secs(1)), None);
        }
        assert!(!o.overloaded());
        assert!(o.delay() > Duration::from_millis(900), "{:?}", o.delay());
    }
}
