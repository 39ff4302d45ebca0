//! Storm control for per-session warnings.
//!
//! Some conditions hit every session at once: a back end that falls behind makes each of
//! 3,000 sessions warn that its results trail the audio, an outage makes each one warn
//! that its stream failed. One line per session then buries the log (and costs the CPU the
//! gateway is short of). Each such warning goes through a [`LogThrottle`]: at most `burst`
//! lines per [`WINDOW`], gateway-wide; the rest are counted, and the next line that is
//! written carries the count in its `suppressed` field. Metrics still count every event;
//! each session's `session ended` line is never throttled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The period over which `log_burst` lines of one kind are written.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One kind of warning's allowance.
#[derive(Debug)]
pub struct LogThrottle {
    /// Lines per window; 0 = every line is written.
    burst: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    written: u32,
    /// Lines left out since the last one written.
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(burst: u32) -> Self {
        LogThrottle {
            burst,
            state: Mutex::new(State {
                window_start: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` (write it, with `suppressed = n`,
    /// the lines left out since the last one written) or `None` (leave it out; it is
    /// counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        if self.burst == 0 {
            return Some(0);
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = s
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if expired {
            s.window_start = Some(now);
            s.written = 0;
        }
        if s.written < self.burst {
            s.written += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

/// The session warnings that come in storms, one allowance each.
#[derive(Debug)]
pub struct SessionLogs {
    pub lagging: LogThrottle,
    pub caught_up: LogThrottle,
    pub open_failed: LogThrottle,
    pub stream_failed: LogThrottle,
    pub stalled: LogThrottle,
    pub flush_timeout: LogThrottle,
}

impl SessionLogs {
    pub fn new(burst: u32) -> Self {
        SessionLogs {
            lagging: LogThrottle::new(burst),
            caught_up: LogThrottle::new(burst),
            open_failed: LogThrottle::new(burst),
            stream_failed: LogThrottle::new(burst),
            stalled: LogThrottle::new(burst),
            flush_timeout: LogThrottle::new(burst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_written_then_lines_are_counted_until_the_window_turns() {
        let t = LogThrottle::new(3);
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..6).map(|_| t.admit(t0)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None, None]);
        // Still the same window.
        assert_eq!(t.admit(t0 + WINDOW - Duration::from_millis(1)), None);
        // A new window: the first line carries the four left out.
        let t1 = t0 + WINDOW;
        assert_eq!(t.admit(t1), Some(4));
        assert_eq!(t.admit(t1), Some(0));
        assert_eq!(t.admit(t1), Some(0));
        assert_eq!(t.admit(t1), None);
        assert_eq!(t.admit(t1 + WINDOW * 5), Some(1));
    }

    #[test]
    fn zero_writes_every_line() {
        let t = LogThrottle::new(0);
        let now = Instant::now();
        assert!((0..1000).all(|_| t.admit(now) == Some(0)));
    }

    #[test]
    fn kinds_have_allowances_of_their_own() {
        let logs = SessionLogs::new(1);
        let now = Instant::now();
        assert_eq!(logs.lagging.admit(now), Some(0));
        assert_eq!(logs.lagging.admit(now), None);
        assert_eq!(logs.caught_up.admit(now), Some(0));
        assert_eq!(logs.stream_failed.admit(now), Some(0));
        assert_eq!(logs.open_failed.admit(now), Some(0));
        assert_eq!(logs.stalled.admit(now), Some(0));
        assert_eq!(logs.flush_timeout.admit(now), Some(0));
    }
}
