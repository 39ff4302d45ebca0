//! Per-client-IP limit on WebSocket connection attempts: `rate` attempts per second
//! sustained, `burst` at once, per address — governor's keyed GCRA limiter (the
//! token-bucket rule, one atomic timestamp per address in a sharded map). Attempts beyond
//! it get HTTP 429 with `Retry-After` before any other work (authentication included), so
//! a client hammering the gateway costs it one map lookup per attempt.
//!
//! Memory is bounded: addresses whose allowance has refilled are forgotten by a sweep
//! every minute, and past [`MAX_TRACKED`] addresses the table is swept at once before a
//! new one is added.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Most client addresses tracked at once.
pub const MAX_TRACKED: usize = 100_000;

/// How often addresses with a full allowance are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The table's size is looked at once per this many checks (counting it visits every
/// shard): the bound is [`MAX_TRACKED`] plus at most this many.
const SIZE_CHECK_EVERY: u64 = 1024;

/// The limiter: one allowance per IP.
pub struct ConnectLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    start: C::Instant,
    /// Since `start`, in ns: when the last periodic sweep ran.
    last_sweep_ns: AtomicU64,
    checks: AtomicU64,
}

impl std::fmt::Debug for ConnectLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectLimiter")
            .field("tracked", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl ConnectLimiter {
    /// `rate` > 0 attempts per second (validated by the configuration), `burst` ≥ 1.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::with_clock(rate, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ConnectLimiter<C> {
    pub fn with_clock(rate: f64, burst: u32, clock: C) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period)
            .expect("a positive rate has a non-zero period")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        ConnectLimiter {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            start: clock.now(),
            clock,
            last_sweep_ns: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one attempt for `ip`: `Ok` if allowed, else how long until the next attempt
    /// would be.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now();
        self.maybe_sweep(now);
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SIZE_CHECK_EVERY)
            && self.limiter.len() >= MAX_TRACKED
        {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Addresses tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.len()
    }

    /// Every [`SWEEP_EVERY`], one caller (the one that wins the swap) sweeps.
    fn maybe_sweep(&self, now: C::Instant) {
        let now_ns = u64::from(now.duration_since(self.start));
        let last = self.last_sweep_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(last) < SWEEP_EVERY.as_nanos() as u64 {
            return;
        }
        if self
            .last_sweep_ns
            .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn burst_then_rate_per_ip() {
        let clock = FakeRelativeClock::default();
        let l = ConnectLimiter::with_clock(2.0, 3, clock.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another address is not affected.
        assert!(l.check(b).is_ok());
        // Half a second at 2/s refills one attempt.
        clock.advance(Duration::from_millis(500));
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_err());
    }

    #[test]
    fn full_allowances_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let l = ConnectLimiter::with_clock(10.0, 5, clock.clone());
        for i in 0..50u8 {
            let _ = l.check(IpAddr::from([10, 0, 1, i]));
        }
        assert_eq!(l.tracked(), 50);
        // After a minute every allowance is full again; the next check sweeps them.
        clock.advance(Duration::from_secs(61));
        let _ = l.check(IpAddr::from([10, 0, 2, 1]));
        assert_eq!(l.tracked(), 1);
    }
}
