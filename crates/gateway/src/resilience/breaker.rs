//! A circuit breaker per back end.
//!
//! Closed: every session may use the back end; consecutive upstream failures are counted
//! and a success resets the count. After `failures` in a row the breaker opens: no session
//! is sent there for `open_for`. Then it is half-open: exactly one session is let through
//! as a probe; its success closes the breaker, its failure opens it for another
//! `open_for`, and a probe that ends without a verdict (the client left first) frees the
//! slot for the next session. Only upstream failures are recorded; the caller never
//! reports client faults. Time is tokio's, so tests run on paused time.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive upstream failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker refuses sessions before it lets one probe through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// The cool-down has passed: the next session (or the one in flight) is the probe.
    HalfOpen,
}

impl BreakerState {
    /// The value of `sgw_breaker_state`: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What the breaker granted one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Normal,
    /// The one half-open trial: its outcome decides the breaker.
    Probe,
}

/// A state change worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive: u32,
    /// Set while open or half-open.
    opened_at: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("breaker lock is never poisoned")
    }

    pub fn state(&self) -> BreakerState {
        let i = self.lock();
        match i.opened_at {
            None => BreakerState::Closed,
            Some(t) if i.probing || t.elapsed() >= self.settings.open_for => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// Consecutive failures counted so far (0 while open).
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive
    }

    /// Whether a session would be let through now (without taking the probe slot).
    pub fn would_pass(&self) -> bool {
        let i = self.lock();
        match i.opened_at {
            None => true,
            Some(t) => !i.probing && t.elapsed() >= self.settings.open_for,
        }
    }

    /// Asks to send one session to the back end.
    pub fn try_pass(&self) -> Option<Pass> {
        let mut i = self.lock();
        match i.opened_at {
            None => Some(Pass::Normal),
            Some(t) if !i.probing && t.elapsed() >= self.settings.open_for => {
                i.probing = true;
                Some(Pass::Probe)
            }
            Some(_) => None,
        }
    }

    /// A stream on the back end worked.
    pub fn on_success(&self) -> Option<Transition> {
        let mut i = self.lock();
        i.consecutive = 0;
        i.probing = false;
        i.opened_at.take().map(|_| Transition::Closed)
    }

    /// An attempt failed upstream.
    pub fn on_failure(&self, pass: Pass) -> Option<Transition> {
        let mut i = self.lock();
        if pass == Pass::Probe {
            i.probing = false;
            i.opened_at = Some(Instant::now());
            return None; // it was already open
        }
        if i.opened_at.is_some() {
            return None; // a session let through before it opened; nothing new
        }
        i.consecutive += 1;
        if i.consecutive >= self.settings.failures {
            i.consecutive = 0;
            i.opened_at = Some(Instant::now());
            return Some(Transition::Opened);
        }
        None
    }

    /// A probe ended without a verdict: the next session may probe.
    pub fn release_probe(&self) {
        self.lock().probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(30),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let b = breaker();
        assert_eq!(b.on_failure(Pass::Normal), None);
        assert_eq!(b.on_failure(Pass::Normal), None);
        b.on_success(); // resets the count
        assert_eq!(b.on_failure(Pass::Normal), None);
        assert_eq!(b.on_failure(Pass::Normal), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.on_failure(Pass::Normal), Some(Transition::Opened));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_pass(), None);
        // Late failures of sessions let through before it opened change nothing.
        assert_eq!(b.on_failure(Pass::Normal), None);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure(Pass::Normal);
        }
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.try_pass(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_pass(), Some(Pass::Probe));
        assert_eq!(b.try_pass(), None, "a second session while the probe runs");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.try_pass(), Some(Pass::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_period() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure(Pass::Normal);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let pass = b.try_pass().expect("probe");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.on_failure(pass), None);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.try_pass(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.try_pass(), Some(Pass::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_verdict_frees_the_slot() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure(Pass::Normal);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.try_pass(), Some(Pass::Probe));
        b.release_probe();
        assert!(b.would_pass());
        assert_eq!(b.try_pass(), Some(Pass::Probe));
    }
}
