//! Per-client-IP limit on WebSocket connection attempts: a token bucket per IP (`rate`
//! attempts per second sustained, `burst` at once). Attempts beyond it get HTTP 429 with
//! `Retry-After` before any other work (authentication included), so a client hammering
//! the gateway costs it one map lookup per attempt.
//!
//! Memory is bounded: buckets that have refilled are forgotten by a sweep, and past
//! [`MAX_TRACKED`] addresses the table is swept at once before a new one is added.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter: one bucket per IP.
#[derive(Debug)]
pub struct ConnectLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    last_sweep: Mutex<Instant>,
}

impl ConnectLimiter {
    pub fn new(rate: f64, burst: u32) -> ConnectLimiter {
        ConnectLimiter {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Takes one attempt for `ip` at `now`: `Ok` if allowed, else how long until the next
    /// attempt would be.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.maybe_sweep(now);
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            Self::sweep(&mut buckets, now, self.rate, self.burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Addresses tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().expect("limiter lock").len()
    }

    fn maybe_sweep(&self, now: Instant) {
        let mut last = self.last_sweep.lock().expect("sweep lock");
        if now.saturating_duration_since(*last) < Duration::from_secs(60) {
            return;
        }
        *last = now;
        drop(last);
        let mut buckets = self.buckets.lock().expect("limiter lock");
        Self::sweep(&mut buckets, now, self.rate, self.burst);
    }

    /// Forgets buckets that would be full by now: they hold no information.
    fn sweep(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant, rate: f64, burst: f64) {
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_per_ip() {
        let l = ConnectLimiter::new(2.0, 3);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, t0).is_ok());
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another address is not affected.
        assert!(l.check(b, t0).is_ok());
        // Half a second at 2/s refills one attempt.
        assert!(l.check(a, t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check(a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let l = ConnectLimiter::new(10.0, 5);
        let t0 = Instant::now();
        for i in 0..50u8 {
            let _ = l.check(IpAddr::from([10, 0, 1, i]), t0);
        }
        assert_eq!(l.tracked(), 50);
        // After a minute every bucket is full again; the next check sweeps them.
        let later = t0 + Duration::from_secs(61);
        let _ = l.check(IpAddr::from([10, 0, 2, 1]), later);
        assert_eq!(l.tracked(), 1);
    }
}
