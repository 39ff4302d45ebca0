//! Logging, the per-session limits, and the resilience policy sections (`breaker`,
//! `retry`, `admission`): one validator each.

use std::time::Duration;

use super::backends::Route;
use super::raw::{RawAdmission, RawBreaker, RawConfig, RawRetry, RawSession};
use super::{ConfigError, invalid};
use crate::resilience::admission::AdmissionSettings;
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::retry::RetrySettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub json: bool,
    pub filter: String,
    /// See [`crate::telemetry::throttle`]; 0 = no limit.
    pub burst: u32,
}

/// Per-session limits, all as audio time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_frame: Duration,
    pub queue: Duration,
    pub replay: Duration,
    pub flush_timeout: Duration,
    /// `None`: stall detection off.
    pub stall_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    /// `None`: no idle timeout.
    pub idle_timeout: Option<Duration>,
    /// `None`: sessions may last for ever.
    pub max_duration: Option<Duration>,
    /// `None`: no lag signal.
    pub lag_warning: Option<Duration>,
    /// Longest one write to the client may wait (`limits.write_timeout`).
    pub write_timeout: Duration,
}

/// Two-pass recognition (`two_pass`): which routes' finals another route decodes again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwoPassSettings {
    /// Route → its finals route.
    pub routes: std::collections::BTreeMap<String, String>,
    pub deadline: Duration,
    pub pad: Duration,
}

impl TwoPassSettings {
    /// The finals route of `route`, if it has one.
    pub fn finals_route(&self, route: &str) -> Option<&str> {
        self.routes.get(route).map(String::as_str)
    }
}

/// The `two_pass` section: both ends of every pair are configured routes, and a route is
/// not its own finals route.
pub(super) fn validate_two_pass(
    t: &super::raw::RawTwoPass,
    routes: &[Route],
) -> Result<TwoPassSettings, ConfigError> {
    let known = |name: &str| routes.iter().any(|r| r.name == name);
    let mut pairs = std::collections::BTreeMap::new();
    for (route, finals) in &t.routes {
        let (route, finals) = (
            route.to_ascii_lowercase(),
            finals.trim().to_ascii_lowercase(),
        );
        let key = format!("two_pass.routes.{route}");
        if !known(&route) {
            return Err(invalid(&key, "names no configured route"));
        }
        if !known(&finals) {
            return Err(invalid(&key, format!("`{finals}` is no configured route")));
        }
        if finals == route {
            return Err(invalid(&key, "a route cannot be its own finals route"));
        }
        pairs.insert(route, finals);
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&t.deadline) {
        return Err(invalid(
            "two_pass.deadline",
            "must be between 100ms and 60s",
        ));
    }
    if t.pad > Duration::from_secs(2) {
        return Err(invalid("two_pass.pad", "must be at most 2s"));
    }
    Ok(TwoPassSettings {
        routes: pairs,
        deadline: t.deadline,
        pad: t.pad,
    })
}

/// `log_format`, `log_level`, `log_burst`.
pub(super) fn validate_log(raw: &RawConfig) -> Result<LogConfig, ConfigError> {
    let json = match raw.log_format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(invalid(
                "log_format",
                format!("`{other}` is not json or text"),
            ));
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
        return Err(invalid(
            "log_level",
            format!("`{}` is not a tracing filter", raw.log_level),
        ));
    }
    Ok(LogConfig {
        json,
        filter: raw.log_level.clone(),
        burst: raw.log_burst,
    })
}

/// The `session` section; `write_timeout` comes from `limits.write_timeout`.
pub(super) fn validate_session(
    s: &RawSession,
    write_timeout: Duration,
) -> Result<SessionLimits, ConfigError> {
    if !(10..=10_000).contains(&s.max_frame.as_millis()) {
        return Err(invalid("session.max_frame", "must be between 10ms and 10s"));
    }
    if s.queue < s.max_frame {
        return Err(invalid(
            "session.queue",
            "must hold at least one maximal frame (session.max_frame)",
        ));
    }
    if s.queue > Duration::from_secs(600) {
        return Err(invalid("session.queue", "must be at most 10m"));
    }
    if s.replay < Duration::from_secs(1) || s.replay > Duration::from_secs(600) {
        return Err(invalid("session.replay", "must be between 1s and 10m"));
    }
    if s.flush_timeout.is_zero() {
        return Err(invalid("session.flush_timeout", "must be above zero"));
    }
    if s.lag_warning > Duration::from_secs(600) {
        return Err(invalid(
            "session.lag_warning",
            "must be at most 10m (0s: off)",
        ));
    }
    let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
    Ok(SessionLimits {
        max_frame: s.max_frame,
        queue: s.queue,
        replay: s.replay,
        flush_timeout: s.flush_timeout,
        stall_timeout: off_if_zero(s.stall_timeout),
        drain_timeout: s.drain_timeout,
        idle_timeout: off_if_zero(s.idle_timeout),
        max_duration: off_if_zero(s.max_duration),
        lag_warning: off_if_zero(s.lag_warning),
        write_timeout,
    })
}

/// The `breaker` section.
pub(super) fn validate_breaker(b: &RawBreaker) -> Result<BreakerSettings, ConfigError> {
    if b.failures == 0 {
        return Err(invalid("breaker.failures", "must be at least 1"));
    }
    if b.open_for.is_zero() {
        return Err(invalid("breaker.open_for", "must be above zero"));
    }
    Ok(BreakerSettings {
        failures: b.failures,
        open_for: b.open_for,
    })
}

/// The `retry` section.
pub(super) fn validate_retry(rt: &RawRetry) -> Result<RetrySettings, ConfigError> {
    if rt.attempts > 10 {
        return Err(invalid("retry.attempts", "must be at most 10"));
    }
    if rt.initial_backoff.is_zero() || rt.max_backoff < rt.initial_backoff {
        return Err(invalid(
            "retry.initial_backoff",
            "must be above zero and at most retry.max_backoff",
        ));
    }
    if !(1.0..=10.0).contains(&rt.multiplier) {
        return Err(invalid("retry.multiplier", "must be between 1 and 10"));
    }
    if !(0.0..=1000.0).contains(&rt.budget_percent) {
        return Err(invalid(
            "retry.budget_percent",
            "must be between 0 and 1000",
        ));
    }
    if rt.budget_window < Duration::from_secs(1) || rt.budget_window > Duration::from_secs(60) {
        return Err(invalid("retry.budget_window", "must be between 1s and 60s"));
    }
    Ok(RetrySettings {
        attempts: rt.attempts,
        initial_backoff: rt.initial_backoff,
        multiplier: rt.multiplier,
        max_backoff: rt.max_backoff,
        budget_percent: rt.budget_percent,
        budget_min_per_second: rt.budget_min_per_second,
        budget_window: rt.budget_window,
    })
}

/// The `admission` section; its per-route caps must name configured routes.
pub(super) fn validate_admission(
    a: &RawAdmission,
    routes: &[Route],
) -> Result<AdmissionSettings, ConfigError> {
    let max_delay = a.max_delay;
    if !max_delay.is_zero()
        && (max_delay < Duration::from_millis(10) || max_delay > Duration::from_secs(10))
    {
        return Err(invalid(
            "admission.max_delay",
            "must be 0s (off) or between 10ms and 10s",
        ));
    }
    if a.shed_lagging_percent > 100 {
        return Err(invalid(
            "admission.shed_lagging_percent",
            "must be between 0 (off) and 100",
        ));
    }
    for route in a.routes.keys() {
        let name = route.to_ascii_lowercase();
        if !routes.iter().any(|r| r.name == name) {
            return Err(invalid(
                &format!("admission.routes.{route}"),
                "names no configured route",
            ));
        }
    }
    Ok(AdmissionSettings {
        max_sessions: a.max_sessions,
        route_max_sessions: a
            .routes
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect(),
        route_names: routes.iter().map(|r| r.name.clone()).collect(),
        shed_lagging_percent: a.shed_lagging_percent,
        max_delay: (!max_delay.is_zero()).then_some(max_delay),
        retry_after: a.retry_after,
    })
}
