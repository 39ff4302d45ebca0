//! Configuration: defaults → TOML file → `SGW_*` environment → command-line flags, merged
//! with figment and validated once into typed values.
//!
//! Every setting has one key. In TOML it is written as nested tables (`[session]
//! max_frame = "1s"`); in the environment as `SGW_` + the path in upper case joined by
//! `__` (`SGW_SESSION__MAX_FRAME=1s`). Durations are humantime strings (`500ms`, `10s`).
//! Routes are a table of name → list of back-end URLs (they share the route's sessions,
//! least-loaded first, and the list order breaks ties); in the environment a route is
//! `SGW_ROUTES__<NAME>=url1,url2`.
//!
//! [`RawConfig`] is the serde shape (what files and variables spell); [`Config`] is what
//! the rest of the gateway uses. Only [`Config::from_figment`] turns one into the other, so
//! a value that passed validation is never re-checked elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "SGW_";

/// The serde shape of the configuration, with the defaults in `Default`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: String,
    /// `json` (one JSON object a line, for machines) or `text` (for people).
    pub log_format: String,
    /// A tracing filter directive, e.g. `info` or `speech_gateway=debug`.
    pub log_level: String,
    pub session: RawSession,
    pub riva: RawRiva,
    pub triton: RawTriton,
    pub health: RawHealth,
    pub breaker: RawBreaker,
    pub retry: RawRetry,
    pub admission: RawAdmission,
    /// Route name → back-end URLs. `start.config.model` selects a route; absent, `default`.
    #[serde(deserialize_with = "de_routes")]
    pub routes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    /// Longest audio frame accepted, as audio time.
    #[serde(with = "humantime_serde")]
    pub max_frame: Duration,
    /// Audio a session may have waiting for the back end before frames are refused.
    #[serde(with = "humantime_serde")]
    pub queue: Duration,
    /// Audio kept since the last final so a stream can be reopened without loss.
    #[serde(with = "humantime_serde")]
    pub replay: Duration,
    /// How long `end` (or shutdown) waits for the back end's last finals.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// A stream that has been sent audio and has answered nothing for this long is
    /// stalled: the session fails over. `0s` turns stall detection off.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// On shutdown, how long live sessions may go on before they are finalised and closed.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRiva {
    /// Sample rate the gateway sends to Riva (audio is resampled to it).
    pub sample_rate: u32,
    /// Language code sent to Riva when the client asks for `auto` (Riva has no auto).
    pub auto_language: String,
    /// After this much stream age, the stream is rotated at the next final.
    #[serde(with = "humantime_serde")]
    pub max_stream_age: Duration,
    /// TCP + HTTP/2 connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for opening a stream (response headers).
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTriton {
    /// Sample rate of the `AUDIO` tensor (the tensor contract's rate).
    pub sample_rate: u32,
    /// TCP + HTTP/2 connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a usable connection (and the first ModelConfig answer).
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
    /// Offline models: silence that ends an utterance when the client sets no
    /// `endpointing_ms`.
    #[serde(with = "humantime_serde")]
    pub endpointing: Duration,
    /// Offline models: the growing utterance is re-decoded for a partial at most this often.
    #[serde(with = "humantime_serde")]
    pub partial_interval: Duration,
    /// Offline models: an utterance is cut (and finalised) at this length.
    #[serde(with = "humantime_serde")]
    pub max_utterance: Duration,
    /// Offline models: deadline of one ModelInfer call.
    #[serde(with = "humantime_serde")]
    pub infer_timeout: Duration,
}

impl Default for RawTriton {
    fn default() -> Self {
        RawTriton {
            sample_rate: 16_000,
            connect_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(5),
            endpointing: Duration::from_millis(500),
            partial_interval: Duration::from_secs(1),
            max_utterance: Duration::from_secs(25),
            infer_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// Interval between health checks of each back end.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one health check.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed checks in a row that mark a healthy back end unhealthy.
    pub unhealthy_after: u32,
    /// Passed checks in a row that mark an unhealthy back end healthy.
    pub healthy_after: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    /// Consecutive upstream failures that open a back end's breaker.
    pub failures: u32,
    /// How long an open breaker refuses sessions before one probe session is let through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    /// Retries of a back end that failed, per failure episode (0 = fail over only).
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    pub multiplier: f64,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retries allowed as a percentage of session starts over `budget_window`.
    pub budget_percent: f32,
    /// Retries always allowed per second.
    pub budget_min_per_second: u32,
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmission {
    /// Sessions the gateway takes at once (0 = no limit); beyond it, HTTP 503.
    pub max_sessions: usize,
    /// The `Retry-After` sent with a 503.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Route name → sessions that route takes at once; beyond it, `RATE_LIMIT_EXCEEDED`.
    pub routes: BTreeMap<String, usize>,
}

impl Default for RawBreaker {
    fn default() -> Self {
        let d = crate::resilience::breaker::BreakerSettings::default();
        RawBreaker {
            failures: d.failures,
            open_for: d.open_for,
        }
    }
}

impl Default for RawRetry {
    fn default() -> Self {
        let d = crate::resilience::retry::RetrySettings::default();
        RawRetry {
            attempts: d.attempts,
            initial_backoff: d.initial_backoff,
            multiplier: d.multiplier,
            max_backoff: d.max_backoff,
            budget_percent: d.budget_percent,
            budget_min_per_second: d.budget_min_per_second,
            budget_window: d.budget_window,
        }
    }
}

impl Default for RawAdmission {
    fn default() -> Self {
        RawAdmission {
            max_sessions: 0,
            retry_after: Duration::from_secs(5),
            routes: BTreeMap::new(),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: "127.0.0.1:8080".into(),
            log_format: "json".into(),
            log_level: "info".into(),
            session: RawSession::default(),
            riva: RawRiva::default(),
            triton: RawTriton::default(),
            health: RawHealth::default(),
            breaker: RawBreaker::default(),
            retry: RawRetry::default(),
            admission: RawAdmission::default(),
            routes: BTreeMap::new(),
        }
    }
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            max_frame: Duration::from_secs(1),
            queue: Duration::from_secs(10),
            replay: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for RawRiva {
    fn default() -> Self {
        RawRiva {
            sample_rate: 16_000,
            auto_language: "en-US".into(),
            max_stream_age: Duration::from_secs(240),
            connect_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            healthy_after: 2,
        }
    }
}

/// Routes may be given as a list (TOML) or as one comma-separated string (environment).
fn de_routes<'de, D>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    let raw = BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(name, v)| {
            let urls = match v {
                OneOrMany::Many(v) => v,
                OneOrMany::One(s) => s
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            };
            (name.to_ascii_lowercase(), urls)
        })
        .collect())
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub session: SessionLimits,
    pub riva: RivaSettings,
    pub triton: TritonSettings,
    pub health: HealthSettings,
    pub breaker: crate::resilience::breaker::BreakerSettings,
    pub retry: crate::resilience::retry::RetrySettings,
    pub admission: crate::resilience::admission::AdmissionSettings,
    /// Routes in name order; each has at least one back end.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub json: bool,
    pub filter: String,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RivaSettings {
    pub sample_rate: u32,
    pub auto_language: String,
    pub max_stream_age: Duration,
    pub connect_timeout: Duration,
    pub open_timeout: Duration,
    /// Copied from `health.timeout`: the adapter's health probe deadline.
    pub health_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonSettings {
    pub sample_rate: u32,
    pub connect_timeout: Duration,
    pub open_timeout: Duration,
    pub endpointing: Duration,
    pub partial_interval: Duration,
    pub max_utterance: Duration,
    pub infer_timeout: Duration,
    /// Copied from `health.timeout`.
    pub health_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// A named list of back ends (list order breaks load-balancing ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub backends: Vec<BackendUrl>,
}

/// Which protocol a back end speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Riva,
    Triton,
}

/// A parsed back-end URL: `riva://host:port[/model]`, `triton://host:port/model`, or the
/// TLS forms `rivas://…`, `tritons://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub kind: BackendKind,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Riva: the `RecognitionConfig.model` to request (empty path = the server's default).
    /// Triton: the model name (required).
    pub model: Option<String>,
    /// The URL as written: the back end's name in logs, metrics and `/status`.
    pub url: String,
}

/// Why the configuration was refused. Each message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

impl BackendUrl {
    /// Parses a back-end URL as written on the command line or in a route.
    pub fn parse(url: &str) -> Result<BackendUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("`{url}` is not a URL (expected riva://HOST:PORT or triton://HOST:PORT/MODEL)")
        })?;
        let (kind, tls) = match scheme {
            "riva" => (BackendKind::Riva, false),
            "rivas" => (BackendKind::Riva, true),
            "triton" => (BackendKind::Triton, false),
            "tritons" => (BackendKind::Triton, true),
            other => {
                return Err(format!(
                    "`{url}`: unknown scheme `{other}` (expected riva, rivas, triton or tritons)"
                ));
            }
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p.trim_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("`{url}`: missing port (expected HOST:PORT)"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}`: missing host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{url}`: `{port}` is not a port number"))?;
        if kind == BackendKind::Triton && path.is_empty() {
            return Err(format!(
                "`{url}`: a triton URL names its model: triton://HOST:PORT/MODEL"
            ));
        }
        Ok(BackendUrl {
            kind,
            tls,
            host: host.to_string(),
            port,
            model: (!path.is_empty()).then(|| path.to_string()),
            url: url.to_string(),
        })
    }

    /// The HTTP/2 endpoint tonic connects to.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Config {
    /// Layers the defaults under `file` (if any), the `SGW_*` variables in `env`, and then
    /// `overrides` (command-line flags, already in the serde shape).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Dict,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(EnvVars::new(env))
            .merge(Serialized::defaults(overrides));
        Config::from_figment(&fig)
    }

    /// Extracts and validates.
    pub fn from_figment(fig: &Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = fig.extract().map_err(Box::new)?;
        Config::validate(raw)
    }

    /// Turns the serde shape into typed values, refusing anything out of range.
    pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|_| invalid("listen", format!("`{}` is not HOST:PORT", raw.listen)))?;
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
        let s = &raw.session;
        let ms = |d: Duration| d.as_millis();
        if !(10..=10_000).contains(&ms(s.max_frame)) {
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
        let t = &raw.triton;
        if ![8_000, 16_000, 32_000, 48_000].contains(&t.sample_rate) {
            return Err(invalid(
                "triton.sample_rate",
                "must be 8000, 16000, 32000 or 48000 (the VAD's rates)",
            ));
        }
        if !(10..=10_000).contains(&t.endpointing.as_millis()) {
            return Err(invalid(
                "triton.endpointing",
                "must be between 10ms and 10s",
            ));
        }
        if t.max_utterance < Duration::from_secs(1) {
            return Err(invalid("triton.max_utterance", "must be at least 1s"));
        }
        for (key, d) in [
            ("triton.connect_timeout", t.connect_timeout),
            ("triton.open_timeout", t.open_timeout),
            ("triton.partial_interval", t.partial_interval),
            ("triton.infer_timeout", t.infer_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        let r = &raw.riva;
        if !(8_000..=48_000).contains(&r.sample_rate) {
            return Err(invalid(
                "riva.sample_rate",
                "must be between 8000 and 48000",
            ));
        }
        if r.auto_language.trim().is_empty() {
            return Err(invalid("riva.auto_language", "must not be empty"));
        }
        if r.max_stream_age < Duration::from_secs(1) {
            return Err(invalid("riva.max_stream_age", "must be at least 1s"));
        }
        for (key, d) in [
            ("riva.connect_timeout", r.connect_timeout),
            ("riva.open_timeout", r.open_timeout),
            ("health.interval", raw.health.interval),
            ("health.timeout", raw.health.timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        let h = &raw.health;
        if h.unhealthy_after == 0 || h.healthy_after == 0 {
            return Err(invalid(
                "health.unhealthy_after",
                "health.unhealthy_after and health.healthy_after must be at least 1",
            ));
        }
        if raw.breaker.failures == 0 {
            return Err(invalid("breaker.failures", "must be at least 1"));
        }
        if raw.breaker.open_for.is_zero() {
            return Err(invalid("breaker.open_for", "must be above zero"));
        }
        let rt = &raw.retry;
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
        for route in raw.admission.routes.keys() {
            if !raw.routes.contains_key(&route.to_ascii_lowercase()) {
                return Err(invalid(
                    &format!("admission.routes.{route}"),
                    "names no configured route",
                ));
            }
        }
        if raw.routes.is_empty() {
            return Err(invalid(
                "routes",
                "no back end configured: pass --backend riva://HOST:PORT or set routes.default",
            ));
        }
        let mut routes = Vec::new();
        for (name, urls) in &raw.routes {
            let key = format!("routes.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(&key, "route names are letters, digits, - and _"));
            }
            if urls.is_empty() {
                return Err(invalid(&key, "a route needs at least one back end"));
            }
            let backends = urls
                .iter()
                .map(|u| BackendUrl::parse(u).map_err(|p| invalid(&key, p)))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                name: name.clone(),
                backends,
            });
        }
        Ok(Config {
            listen,
            log: LogConfig {
                json,
                filter: raw.log_level,
            },
            session: SessionLimits {
                max_frame: s.max_frame,
                queue: s.queue,
                replay: s.replay,
                flush_timeout: s.flush_timeout,
                stall_timeout: (!s.stall_timeout.is_zero()).then_some(s.stall_timeout),
                drain_timeout: s.drain_timeout,
            },
            riva: RivaSettings {
                sample_rate: r.sample_rate,
                auto_language: r.auto_language.clone(),
                max_stream_age: r.max_stream_age,
                connect_timeout: r.connect_timeout,
                open_timeout: r.open_timeout,
                health_timeout: raw.health.timeout,
            },
            triton: TritonSettings {
                sample_rate: t.sample_rate,
                connect_timeout: t.connect_timeout,
                open_timeout: t.open_timeout,
                endpointing: t.endpointing,
                partial_interval: t.partial_interval,
                max_utterance: t.max_utterance,
                infer_timeout: t.infer_timeout,
                health_timeout: raw.health.timeout,
            },
            health: HealthSettings {
                interval: raw.health.interval,
                timeout: raw.health.timeout,
                unhealthy_after: raw.health.unhealthy_after,
                healthy_after: raw.health.healthy_after,
            },
            breaker: crate::resilience::breaker::BreakerSettings {
                failures: raw.breaker.failures,
                open_for: raw.breaker.open_for,
            },
            retry: crate::resilience::retry::RetrySettings {
                attempts: raw.retry.attempts,
                initial_backoff: raw.retry.initial_backoff,
                multiplier: raw.retry.multiplier,
                max_backoff: raw.retry.max_backoff,
                budget_percent: raw.retry.budget_percent,
                budget_min_per_second: raw.retry.budget_min_per_second,
                budget_window: raw.retry.budget_window,
            },
            admission: crate::resilience::admission::AdmissionSettings {
                max_sessions: raw.admission.max_sessions,
                route_max_sessions: raw
                    .admission
                    .routes
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                    .collect(),
                retry_after: raw.admission.retry_after,
            },
            routes,
        })
    }

    /// The route a session asks for, by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// A figment provider over an explicit list of variables, so loading can be tested
/// without touching the process environment. `SGW_A__B=v` becomes `a.b = v`, with `v`
/// parsed the way figment parses environment values (numbers, booleans, arrays).
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        EnvVars {
            vars: vars
                .into_iter()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != "SGW_CONFIG")
                .collect(),
        }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("SGW_* environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (key, raw) in &self.vars {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let value: Value = raw.parse().expect("figment value parsing is infallible");
            insert_path(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Every environment variable with its default value, in the form `.env.example` lists
/// them. Routes have no default; `SGW_ROUTES__DEFAULT` is listed empty.
pub fn env_defaults() -> Vec<(String, String)> {
    let value = Value::serialize(RawConfig::default()).expect("defaults serialize");
    let mut out = Vec::new();
    flatten(&value, ENV_PREFIX.trim_end_matches('_'), &mut out);
    out.push(("SGW_ROUTES__DEFAULT".into(), String::new()));
    out.sort();
    out
}

fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Dict(_, dict) => {
            for (k, v) in dict {
                let sep = if prefix == "SGW" { "_" } else { "__" };
                flatten(v, &format!("{prefix}{sep}{}", k.to_ascii_uppercase()), out);
            }
        }
        Value::String(_, s) => out.push((prefix.to_string(), s.clone())),
        Value::Num(_, n) => out.push((
            prefix.to_string(),
            n.to_u128()
                .map(|u| u.to_string())
                .or_else(|| n.to_i128().map(|i| i.to_string()))
                .or_else(|| n.to_f64().map(|f| f.to_string()))
                .unwrap_or_default(),
        )),
        Value::Bool(_, b) => out.push((prefix.to_string(), b.to_string())),
        Value::Array(_, a) if a.is_empty() => out.push((prefix.to_string(), String::new())),
        other => out.push((prefix.to_string(), format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_default_route() -> Vec<(String, String)> {
        vars(&[("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051")])
    }

    #[test]
    fn defaults_validate_once_a_route_exists() {
        let c = Config::load(None, with_default_route(), Dict::new()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.session.max_frame, Duration::from_secs(1));
        assert_eq!(c.session.queue, Duration::from_secs(10));
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].name, "default");
        assert_eq!(c.routes[0].backends[0].port, 50051);
    }

    #[test]
    fn no_route_is_refused_with_a_hint() {
        let err = Config::load(None, vec![], Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes") && err.contains("--backend"), "{err}");
    }

    #[test]
    fn environment_overrides_file_and_splits_on_double_underscore() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[session]\nqueue = \"20s\"\nmax_frame = \"500ms\"\n\
             [routes]\ndefault = [\"riva://a:1\", \"rivas://b:2/parakeet\"]\noffline = [\"riva://c:3\"]\n",
        )
        .unwrap();
        let env = vars(&[
            ("SGW_SESSION__QUEUE", "5s"),
            ("SGW_LOG_FORMAT", "text"),
            ("OTHER", "x"),
        ]);
        let c = Config::load(Some(&file), env, Dict::new()).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.session.queue, Duration::from_secs(5));
        assert_eq!(c.session.max_frame, Duration::from_millis(500));
        assert!(!c.log.json);
        let default = c.route("default").unwrap();
        assert_eq!(default.backends.len(), 2);
        assert!(default.backends[1].tls);
        assert_eq!(default.backends[1].model.as_deref(), Some("parakeet"));
        assert_eq!(c.route("offline").unwrap().backends[0].host, "c");
    }

    #[test]
    fn command_line_overrides_everything() {
        let mut cli = Dict::new();
        cli.insert("listen".into(), Value::from("127.0.0.1:0"));
        let mut routes = Dict::new();
        routes.insert(
            "default".into(),
            Value::from(vec!["riva://x:7".to_string()]),
        );
        cli.insert("routes".into(), Value::from(routes));
        let env = vars(&[
            ("SGW_LISTEN", "127.0.0.1:1"),
            ("SGW_ROUTES__DEFAULT", "riva://y:8"),
        ]);
        let c = Config::load(None, env, cli).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.routes[0].backends[0].host, "x");
    }

    #[test]
    fn env_route_accepts_comma_list() {
        let env = vars(&[("SGW_ROUTES__DEFAULT", "riva://a:1, riva://b:2")]);
        let c = Config::load(None, env, Dict::new()).unwrap();
        assert_eq!(c.routes[0].backends.len(), 2);
        assert_eq!(c.routes[0].backends[1].host, "b");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("SGW_LISTEN", "nowhere", "listen"),
            ("SGW_SESSION__MAX_FRAME", "5ms", "session.max_frame"),
            ("SGW_SESSION__QUEUE", "100ms", "session.queue"),
            ("SGW_RIVA__SAMPLE_RATE", "4000", "riva.sample_rate"),
            ("SGW_LOG_FORMAT", "xml", "log_format"),
            ("SGW_HEALTH__INTERVAL", "0s", "health.interval"),
        ];
        for (k, v, key) in cases {
            let mut env = with_default_route();
            env.push((k.into(), v.into()));
            let err = Config::load(None, env, Dict::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
    }

    #[test]
    fn unparseable_duration_is_refused() {
        let mut env = with_default_route();
        env.push(("SGW_SESSION__QUEUE".into(), "ten seconds".into()));
        assert!(Config::load(None, env, Dict::new()).is_err());
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, "[session]\nqueue_size = 3\n").unwrap();
        let err = Config::load(Some(&file), with_default_route(), Dict::new()).unwrap_err();
        assert!(err.to_string().contains("queue_size"), "{err}");
    }

    #[test]
    fn backend_urls_parse_and_refuse() {
        let b = BackendUrl::parse("riva://[::1]:50051").unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.endpoint(), "http://[::1]:50051");
        assert_eq!(
            BackendUrl::parse("rivas://riva.example:443")
                .unwrap()
                .endpoint(),
            "https://riva.example:443"
        );
        let t = BackendUrl::parse("triton://127.0.0.1:8001/asr_stream").unwrap();
        assert_eq!(t.kind, BackendKind::Triton);
        assert_eq!(t.model.as_deref(), Some("asr_stream"));
        assert!(BackendUrl::parse("tritons://h:1/m").unwrap().tls);
        for bad in [
            "triton://h:8001",
            "riva://host",
            "http://h:1",
            "riva://:1",
            "riva://h:0",
            "nothing",
        ] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// `.env.example` must list exactly the keys the code knows, with their defaults.
    #[test]
    fn env_example_matches_the_code() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
            .expect(".env.example exists");
        let mut listed: Vec<(String, String)> = text
            .lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .filter(|l| l.starts_with(ENV_PREFIX))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        listed.sort();
        assert_eq!(listed, env_defaults());
    }
}
