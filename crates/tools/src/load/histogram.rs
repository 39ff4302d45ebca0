//! A latency histogram shared by thousands of sessions: an HDR histogram (hdrhistogram)
//! of microseconds from 1 µs to 1,000 s at two significant digits, so percentiles carry
//! at most 1 % of error — a p99 of a millisecond to ±10 µs. Recording takes a lock that
//! is held for one bucket increment.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value tracked, in µs; longer latencies are recorded as this.
const MAX_US: u64 = 1_000_000_000;

pub struct LatencyHistogram {
    inner: Mutex<Histogram<u64>>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Count, mean and percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let histogram =
            Histogram::new_with_bounds(1, MAX_US, 2).expect("1 µs to 1,000 s at 2 digits");
        LatencyHistogram {
            inner: Mutex::new(histogram),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.inner
            .lock()
            .expect("histogram lock")
            .record(us)
            .expect("clamped into the histogram's range");
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().expect("histogram lock").len()
    }

    /// The value at quantile `q` (0..=1), in ms.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let h = self.inner.lock().expect("histogram lock");
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = self.inner.lock().expect("histogram lock");
        let some = !h.is_empty();
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_ms: some.then(|| h.mean() / 1000.0),
            p50_ms: some.then(|| ms(h.value_at_quantile(0.50))),
            p95_ms: some.then(|| ms(h.value_at_quantile(0.95))),
            p99_ms: some.then(|| ms(h.value_at_quantile(0.99))),
            max_ms: some.then(|| ms(h.max())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_one_percent() {
        let h = LatencyHistogram::new();
        assert_eq!(h.percentiles(), Percentiles::default());
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        for (got, want) in [
            (p.p50_ms, 500.0),
            (p.p95_ms, 950.0),
            (p.p99_ms, 990.0),
            (p.max_ms, 1000.0),
        ] {
            let got = got.unwrap();
            assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        }
        assert!((p.mean_ms.unwrap() - 500.5).abs() / 500.5 < 0.01);
    }

    #[test]
    fn extremes_are_clamped_to_the_range() {
        let h = LatencyHistogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(100_000));
        assert!(h.quantile_ms(0.0).unwrap() <= 0.001);
        assert!(h.quantile_ms(1.0).unwrap() >= 990_000.0);
    }
}
