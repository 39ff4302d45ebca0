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
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Most HTTP/2 connections per back end (`riva.connections`, `triton.connections`).
pub const MAX_CONNECTIONS: usize = 64;

/// Prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "SGW_";

/// The serde shape of the configuration, with the defaults in `Default`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: String,
    /// A second, plain-HTTP listener for operators (`/health`, `/ready`, `/status`,
    /// `/metrics`). Empty: none, and every operational endpoint is on `listen`. When set,
    /// `/status` and `/metrics` are served only here (they show back ends and limits).
    pub admin_listen: String,
    /// `json` (one JSON object a line, for machines) or `text` (for people).
    pub log_format: String,
    /// A tracing filter directive, e.g. `info` or `speech_gateway=debug`.
    pub log_level: String,
    /// Lines per 10 s for each kind of per-session warning that comes in storms (a lagging
    /// or failed back end warns in every session at once); the rest are counted. 0 = all.
    pub log_burst: u32,
    pub session: RawSession,
    pub riva: RawRiva,
    pub triton: RawTriton,
    pub health: RawHealth,
    pub breaker: RawBreaker,
    pub retry: RawRetry,
    pub admission: RawAdmission,
    pub tls: RawTls,
    pub backend_tls: RawBackendTls,
    pub auth: RawAuth,
    pub limits: RawLimits,
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
    /// A session whose client sends nothing (no audio, no message) for this long is
    /// finalised and closed with `SESSION_TIMEOUT`. `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a session may last (wall-clock from the upgrade); then it is finalised and
    /// closed with `SESSION_TIMEOUT`. `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// When the back end's results trail the audio by more than this (it is overloaded),
    /// the client gets a `backend_lagging` status, and `backend_caught_up` once they are
    /// back under half of it. `0s` turns the signal off.
    #[serde(with = "humantime_serde")]
    pub lag_warning: Duration,
}

/// TLS on the client-facing listener. Both files or neither (plain HTTP/WS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// PEM certificate chain (leaf first).
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: String,
    /// How often the files are checked for changes (they are also reloaded on SIGHUP).
    /// `0s`: only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest a client may take to complete the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once, gateway-wide; more connections wait for one.
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one TCP peer address; beyond, the new
    /// connection is closed at once. 0: no per-address limit.
    pub max_handshakes_per_ip: usize,
}

/// TLS towards `rivas://` and `tritons://` back ends: the defaults for every TLS back end.
/// A back-end URL overrides them with query parameters of the same names
/// (`rivas://h:50051?ca=/p/ca.pem&cert=/p/c.pem&key=/p/c.key&server_name=riva`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackendTls {
    /// PEM bundle of the CAs trusted for the back ends' certificates (empty: the system's roots).
    pub ca: String,
    /// PEM client certificate chain presented to the back end (mTLS); needs `key`.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// Name checked against the back end's certificate (empty: the URL's host).
    pub server_name: String,
}

/// JWT authentication of WebSocket clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// `false` lets any client in (a loud warning is logged at start-up).
    pub enabled: bool,
    /// Shared secret for HS256 tokens (prefer `hs256_secret_file`).
    pub hs256_secret: Secret,
    /// File holding the HS256 secret (trailing newline ignored).
    pub hs256_secret_file: String,
    /// PEM public keys or certificates: RSA keys verify RS256, P-256 keys ES256.
    #[serde(deserialize_with = "de_list")]
    pub public_keys: Vec<String>,
    /// A JWKS file (RS256 / ES256 keys, selected by `kid`).
    pub jwks: String,
    /// Accepted `aud` values; empty: `aud` is not checked.
    #[serde(deserialize_with = "de_list")]
    pub audience: Vec<String>,
    /// Accepted `iss` values; empty: `iss` is not checked.
    #[serde(deserialize_with = "de_list")]
    pub issuer: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Accept the token as `?token=` (for clients that cannot set headers).
    pub query_token: bool,
}

/// Abuse limits at the edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Sustained WebSocket connection attempts per second from one client IP (HTTP 429
    /// beyond). `0` turns the limit off.
    pub connect_rate: f64,
    /// Attempts one client IP may make in a burst before `connect_rate` applies.
    pub connect_burst: u32,
    /// Header holding the client IP when the gateway is behind a proxy (e.g.
    /// `x-forwarded-for`: its last address is used). Empty: the TCP peer address.
    pub client_ip_header: String,
    /// Largest WebSocket message accepted, in bytes (beyond: `MESSAGE_TOO_LARGE`, close
    /// 1009). `0`: twice the largest valid audio frame at 48 kHz (at least 64 KiB).
    pub max_message_bytes: usize,
    /// Browser origins allowed to open sessions (exact `scheme://host[:port]`); a request
    /// with another `Origin` gets 403. Empty: any. Requests without `Origin` (native
    /// apps, servers) are not affected.
    #[serde(deserialize_with = "de_list")]
    pub allowed_origins: Vec<String>,
    /// Longest one write to a client may wait (a client that does not read): the
    /// connection is then cut off. Applies to WebSocket messages and HTTP responses.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most bytes a WebSocket connection may have queued for a client that is not reading
    /// (messages and automatic pongs); beyond, the connection is cut off.
    pub max_write_buffer_bytes: usize,
    /// A request's headers must arrive complete within this, counted from the connection's
    /// accept (or the end of the previous response on a kept-alive connection): slow or
    /// silent connections are closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Open client connections at once (HTTP, WebSocket, TLS handshakes). 0: automatic,
    /// from the process's open-file limit (see the README's Security section).
    pub max_connections: usize,
    /// Open connections at once from one TCP peer address (beyond: closed at accept).
    /// 0: no limit. Leave it off behind a proxy (every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// Live sessions at once from one client IP (after `client_ip_header`); beyond, HTTP
    /// 429. 0: no limit.
    pub max_sessions_per_ip: usize,
    /// Live sessions at once per token subject (`sub`); beyond, HTTP 429. 0: no limit.
    pub max_sessions_per_subject: usize,
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert: String::new(),
            key: String::new(),
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            max_handshakes_per_ip: 32,
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            enabled: true,
            hs256_secret: Secret::default(),
            hs256_secret_file: String::new(),
            public_keys: Vec::new(),
            jwks: String::new(),
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway: Duration::from_secs(30),
            query_token: true,
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            connect_rate: 20.0,
            connect_burst: 100,
            client_ip_header: String::new(),
            max_message_bytes: 0,
            allowed_origins: Vec::new(),
            write_timeout: Duration::from_secs(10),
            max_write_buffer_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_sessions_per_ip: 0,
            max_sessions_per_subject: 0,
        }
    }
}

/// A list given as a TOML array or as one comma-separated string (environment).
fn de_list<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(OneOrMany::deserialize(d)?.into_list())
}

/// A list as TOML writes it, or as one comma-separated string (the environment).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

impl OneOrMany {
    fn into_list(self) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
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
    /// HTTP/2 connections to each Riva back end; streams take them in turn.
    pub connections: usize,
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
    /// HTTP/2 connections to each Triton back end; streams take them in turn.
    pub connections: usize,
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
            connections: 1,
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
    /// A route refuses new sessions (`RATE_LIMIT_EXCEEDED`) while at least this share (%)
    /// of its live sessions are lagging (`session.lag_warning`); 0 = never.
    pub shed_lagging_percent: u32,
    /// The gateway refuses new sessions (HTTP 503) while its tasks run later than this on
    /// average (see `resilience::overload`); 0s = never.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
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
            shed_lagging_percent: 25,
            max_delay: Duration::from_millis(250),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: String::new(),
            log_format: "json".into(),
            log_level: "info".into(),
            log_burst: 10,
            session: RawSession::default(),
            riva: RawRiva::default(),
            triton: RawTriton::default(),
            health: RawHealth::default(),
            breaker: RawBreaker::default(),
            retry: RawRetry::default(),
            admission: RawAdmission::default(),
            tls: RawTls::default(),
            backend_tls: RawBackendTls::default(),
            auth: RawAuth::default(),
            limits: RawLimits::default(),
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
            idle_timeout: Duration::from_secs(60),
            max_duration: Duration::from_secs(4 * 3600),
            lag_warning: Duration::from_secs(3),
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
            connections: 1,
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
    let raw = BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(name, v)| (name.to_ascii_lowercase(), v.into_list()))
        .collect())
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The operators' listener, if any (`admin_listen`).
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
    pub session: SessionLimits,
    pub riva: RivaSettings,
    pub triton: TritonSettings,
    pub health: HealthSettings,
    pub breaker: crate::resilience::breaker::BreakerSettings,
    pub retry: crate::resilience::retry::RetrySettings,
    pub admission: crate::resilience::admission::AdmissionSettings,
    /// TLS on the listener; `None`: plain HTTP/WebSocket.
    pub tls: Option<ListenerTls>,
    pub auth: AuthSettings,
    pub limits: EdgeLimits,
    /// Routes in name order; each has at least one back end.
    pub routes: Vec<Route>,
}

/// The listener's certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `None`: reloaded on SIGHUP only.
    pub reload_interval: Option<Duration>,
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
    /// 0: no per-address limit.
    pub max_handshakes_per_ip: usize,
}

/// Where the JWT verification keys come from and what a token must say.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub enabled: bool,
    pub hs256_secret: Option<Secret>,
    pub hs256_secret_file: Option<PathBuf>,
    pub public_keys: Vec<PathBuf>,
    pub jwks: Option<PathBuf>,
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
    pub leeway: Duration,
    pub query_token: bool,
}

/// Limits applied before a WebSocket upgrade (and the message size after it).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLimits {
    /// (attempts per second, burst) per client IP; `None`: no limit.
    pub connect_rate: Option<(f64, u32)>,
    /// Lower-case header name holding the client IP, if behind a proxy.
    pub client_ip_header: Option<String>,
    pub max_message_bytes: usize,
    pub allowed_origins: Vec<String>,
    pub write_timeout: Duration,
    pub max_write_buffer_bytes: usize,
    pub header_timeout: Duration,
    /// 0: automatic (from the open-file limit at start-up).
    pub max_connections: usize,
    /// 0: no limit (likewise below).
    pub max_connections_per_ip: usize,
    pub max_sessions_per_ip: usize,
    pub max_sessions_per_subject: usize,
}

/// TLS material for one `rivas://` / `tritons://` back end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RivaSettings {
    pub sample_rate: u32,
    pub auto_language: String,
    pub max_stream_age: Duration,
    pub connect_timeout: Duration,
    pub open_timeout: Duration,
    /// Copied from `health.timeout`: the adapter's health probe deadline.
    pub health_timeout: Duration,
    pub connections: usize,
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
    pub connections: usize,
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
    /// The URL as written without its query: the back end's name in logs, metrics and
    /// `/status`.
    pub url: String,
    /// TLS files and server name (TLS URLs only): the URL's query parameters over the
    /// `[backend_tls]` defaults.
    pub tls_files: BackendTls,
}

/// Why the configuration was refused. Each message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

/// `d` must lie in `lo..=hi`; the error names the key and both ends ("must be between 1s
/// and 10m").
fn duration_between(key: &str, d: Duration, lo: Duration, hi: Duration) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&d) {
        return Ok(());
    }
    let show = humantime_serde::re::humantime::format_duration;
    Err(invalid(
        key,
        format!("must be between {} and {}", show(lo), show(hi)),
    ))
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

impl BackendUrl {
    /// Parses a back-end URL as written on the command line or in a route.
    pub fn parse(full: &str) -> Result<BackendUrl, String> {
        let (url, query) = match full.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (full, None),
        };
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
        let mut tls_files = BackendTls::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if v.is_empty() {
                return Err(format!("`{url}`: query parameter `{k}` has no value"));
            }
            match k {
                "ca" => tls_files.ca = Some(PathBuf::from(v)),
                "cert" => tls_files.cert = Some(PathBuf::from(v)),
                "key" => tls_files.key = Some(PathBuf::from(v)),
                "server_name" => tls_files.server_name = Some(v.to_string()),
                other => {
                    return Err(format!(
                        "`{url}`: unknown query parameter `{other}` (expected ca, cert, key, \
                         server_name)"
                    ));
                }
            }
        }
        if !tls && tls_files != BackendTls::default() {
            return Err(format!(
                "`{url}`: TLS parameters on a plaintext URL (use {scheme}s://)"
            ));
        }
        Ok(BackendUrl {
            kind,
            tls,
            host: host.to_string(),
            port,
            model: (!path.is_empty()).then(|| path.to_string()),
            url: url.to_string(),
            tls_files,
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
        if s.lag_warning > Duration::from_secs(600) {
            return Err(invalid(
                "session.lag_warning",
                "must be at most 10m (0s: off)",
            ));
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
        for (key, n) in [
            ("riva.connections", r.connections),
            ("triton.connections", t.connections),
        ] {
            if !(1..=MAX_CONNECTIONS).contains(&n) {
                return Err(invalid(
                    key,
                    format!("must be between 1 and {MAX_CONNECTIONS}"),
                ));
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
        let max_delay = raw.admission.max_delay;
        if !max_delay.is_zero()
            && (max_delay < Duration::from_millis(10) || max_delay > Duration::from_secs(10))
        {
            return Err(invalid(
                "admission.max_delay",
                "must be 0s (off) or between 10ms and 10s",
            ));
        }
        if raw.admission.shed_lagging_percent > 100 {
            return Err(invalid(
                "admission.shed_lagging_percent",
                "must be between 0 (off) and 100",
            ));
        }
        for route in raw.admission.routes.keys() {
            if !raw.routes.contains_key(&route.to_ascii_lowercase()) {
                return Err(invalid(
                    &format!("admission.routes.{route}"),
                    "names no configured route",
                ));
            }
        }
        let default_tls = &raw.backend_tls;
        let path_of = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        if default_tls.cert.is_empty() != default_tls.key.is_empty() {
            return Err(invalid(
                "backend_tls.cert",
                "backend_tls.cert and backend_tls.key go together",
            ));
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
            let mut backends = urls
                .iter()
                .map(|u| BackendUrl::parse(u).map_err(|p| invalid(&key, p)))
                .collect::<Result<Vec<_>, _>>()?;
            for b in backends.iter_mut().filter(|b| b.tls) {
                let f = &mut b.tls_files;
                f.ca = f.ca.take().or_else(|| path_of(&default_tls.ca));
                if f.cert.is_none() && f.key.is_none() {
                    f.cert = path_of(&default_tls.cert);
                    f.key = path_of(&default_tls.key);
                }
                if f.cert.is_some() != f.key.is_some() {
                    return Err(invalid(
                        &key,
                        format!(
                            "`{}`: a client certificate needs its key (cert and key go together)",
                            b.url
                        ),
                    ));
                }
                f.server_name = f.server_name.take().or_else(|| {
                    (!default_tls.server_name.is_empty()).then(|| default_tls.server_name.clone())
                });
            }
            routes.push(Route {
                name: name.clone(),
                backends,
            });
        }
        let tls = validate_listener_tls(&raw.tls)?;
        let auth = validate_auth(&raw.auth)?;
        let limits = validate_limits(&raw.limits)?;
        let admin_listen = if raw.admin_listen.trim().is_empty() {
            None
        } else {
            Some(raw.admin_listen.trim().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "admin_listen",
                    format!(
                        "`{}` is not an address such as 127.0.0.1:9090",
                        raw.admin_listen
                    ),
                )
            })?)
        };
        if admin_listen == Some(listen) && listen.port() != 0 {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        Ok(Config {
            listen,
            admin_listen,
            log: LogConfig {
                json,
                filter: raw.log_level,
                burst: raw.log_burst,
            },
            session: SessionLimits {
                max_frame: s.max_frame,
                queue: s.queue,
                replay: s.replay,
                flush_timeout: s.flush_timeout,
                stall_timeout: (!s.stall_timeout.is_zero()).then_some(s.stall_timeout),
                drain_timeout: s.drain_timeout,
                idle_timeout: (!s.idle_timeout.is_zero()).then_some(s.idle_timeout),
                max_duration: (!s.max_duration.is_zero()).then_some(s.max_duration),
                lag_warning: (!s.lag_warning.is_zero()).then_some(s.lag_warning),
                write_timeout: limits.write_timeout,
            },
            riva: RivaSettings {
                sample_rate: r.sample_rate,
                auto_language: r.auto_language.clone(),
                max_stream_age: r.max_stream_age,
                connect_timeout: r.connect_timeout,
                open_timeout: r.open_timeout,
                health_timeout: raw.health.timeout,
                connections: r.connections,
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
                connections: t.connections,
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
                route_names: routes.iter().map(|r| r.name.clone()).collect(),
                shed_lagging_percent: raw.admission.shed_lagging_percent,
                max_delay: (!max_delay.is_zero()).then_some(max_delay),
                retry_after: raw.admission.retry_after,
            },
            tls,
            auth,
            limits,
            routes,
        })
    }

    /// The route a session asks for, by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

fn validate_listener_tls(t: &RawTls) -> Result<Option<ListenerTls>, ConfigError> {
    duration_between(
        "tls.handshake_timeout",
        t.handshake_timeout,
        Duration::from_millis(100),
        Duration::from_secs(60),
    )?;
    if t.max_handshakes == 0 {
        return Err(invalid("tls.max_handshakes", "must be at least 1"));
    }
    match (t.cert.is_empty(), t.key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(ListenerTls {
            cert: PathBuf::from(&t.cert),
            key: PathBuf::from(&t.key),
            reload_interval: (!t.reload_interval.is_zero()).then_some(t.reload_interval),
            handshake_timeout: t.handshake_timeout,
            max_handshakes: t.max_handshakes,
            max_handshakes_per_ip: t.max_handshakes_per_ip,
        })),
        _ => Err(invalid(
            "tls.cert",
            "tls.cert and tls.key go together (both for TLS, neither for plain HTTP)",
        )),
    }
}

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key as long as the hash.
pub const MIN_HS256_SECRET: usize = 32;

fn validate_auth(a: &RawAuth) -> Result<AuthSettings, ConfigError> {
    let path_of = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let settings = AuthSettings {
        enabled: a.enabled,
        hs256_secret: (!a.hs256_secret.0.is_empty()).then(|| a.hs256_secret.clone()),
        hs256_secret_file: path_of(&a.hs256_secret_file),
        public_keys: a.public_keys.iter().map(PathBuf::from).collect(),
        jwks: path_of(&a.jwks),
        audience: a.audience.clone(),
        issuer: a.issuer.clone(),
        leeway: a.leeway,
        query_token: a.query_token,
    };
    if settings.hs256_secret.is_some() && settings.hs256_secret_file.is_some() {
        return Err(invalid(
            "auth.hs256_secret",
            "set auth.hs256_secret or auth.hs256_secret_file, not both",
        ));
    }
    if let Some(s) = &settings.hs256_secret
        && s.0.len() < MIN_HS256_SECRET
    {
        return Err(invalid(
            "auth.hs256_secret",
            format!("must be at least {MIN_HS256_SECRET} bytes"),
        ));
    }
    let has_keys = settings.hs256_secret.is_some()
        || settings.hs256_secret_file.is_some()
        || !settings.public_keys.is_empty()
        || settings.jwks.is_some();
    if settings.enabled && !has_keys {
        return Err(invalid(
            "auth",
            "auth is enabled but no key is configured: set auth.hs256_secret_file, \
             auth.hs256_secret, auth.public_keys or auth.jwks (or auth.enabled = false for \
             local development only)",
        ));
    }
    if a.leeway > Duration::from_secs(600) {
        return Err(invalid("auth.leeway", "must be at most 10m"));
    }
    Ok(settings)
}

/// Smallest `limits.max_write_buffer_bytes`: above the WebSocket layer's own flush
/// threshold (128 KiB) with room for a large message.
pub const MIN_WRITE_BUFFER: usize = 256 * 1024;

fn validate_limits(l: &RawLimits) -> Result<EdgeLimits, ConfigError> {
    if !l.connect_rate.is_finite() || l.connect_rate < 0.0 {
        return Err(invalid("limits.connect_rate", "must be a number ≥ 0"));
    }
    let connect_rate = if l.connect_rate > 0.0 {
        if l.connect_burst == 0 {
            return Err(invalid(
                "limits.connect_burst",
                "must be at least 1 when limits.connect_rate is set",
            ));
        }
        Some((l.connect_rate, l.connect_burst))
    } else {
        None
    };
    let header = l.client_ip_header.trim().to_ascii_lowercase();
    if !header.is_empty() && axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(invalid(
            "limits.client_ip_header",
            format!("`{header}` is not a header name"),
        ));
    }
    if l.max_message_bytes != 0 && l.max_message_bytes < 1024 {
        return Err(invalid(
            "limits.max_message_bytes",
            "must be 0 (automatic) or at least 1024",
        ));
    }
    for o in &l.allowed_origins {
        if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
            return Err(invalid(
                "limits.allowed_origins",
                format!("`{o}` is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
    let (lo, hi) = (Duration::from_millis(100), Duration::from_secs(600));
    duration_between("limits.write_timeout", l.write_timeout, lo, hi)?;
    duration_between("limits.header_timeout", l.header_timeout, lo, hi)?;
    if l.max_write_buffer_bytes < MIN_WRITE_BUFFER {
        return Err(invalid(
            "limits.max_write_buffer_bytes",
            format!("must be at least {MIN_WRITE_BUFFER} (256 KiB)"),
        ));
    }
    if l.max_connections != 0 && l.max_connections < 16 {
        return Err(invalid(
            "limits.max_connections",
            "must be 0 (automatic) or at least 16",
        ));
    }
    Ok(EdgeLimits {
        connect_rate,
        client_ip_header: (!header.is_empty()).then_some(header),
        max_message_bytes: l.max_message_bytes,
        allowed_origins: l.allowed_origins.clone(),
        write_timeout: l.write_timeout,
        max_write_buffer_bytes: l.max_write_buffer_bytes,
        header_timeout: l.header_timeout,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        max_sessions_per_ip: l.max_sessions_per_ip,
        max_sessions_per_subject: l.max_sessions_per_subject,
    })
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
        vars(&[
            ("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051"),
            ("SGW_AUTH__ENABLED", "false"),
        ])
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
            ("SGW_AUTH__ENABLED", "false"),
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
            ("SGW_AUTH__ENABLED", "false"),
        ]);
        let c = Config::load(None, env, cli).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.routes[0].backends[0].host, "x");
    }

    #[test]
    fn env_route_accepts_comma_list() {
        let env = vars(&[
            ("SGW_ROUTES__DEFAULT", "riva://a:1, riva://b:2"),
            ("SGW_AUTH__ENABLED", "false"),
        ]);
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
            ("SGW_RIVA__CONNECTIONS", "0", "riva.connections"),
            ("SGW_TRITON__CONNECTIONS", "65", "triton.connections"),
            ("SGW_HEALTH__INTERVAL", "0s", "health.interval"),
            ("SGW_ADMISSION__MAX_DELAY", "5ms", "admission.max_delay"),
            ("SGW_ADMISSION__MAX_DELAY", "11s", "admission.max_delay"),
            (
                "SGW_ADMISSION__SHED_LAGGING_PERCENT",
                "101",
                "admission.shed_lagging_percent",
            ),
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

    #[test]
    fn backend_tls_comes_from_the_url_over_the_defaults() {
        let env = vars(&[
            (
                "SGW_ROUTES__DEFAULT",
                "rivas://a:1?ca=/u/ca.pem&server_name=riva-a, rivas://b:2, riva://c:3",
            ),
            ("SGW_AUTH__ENABLED", "false"),
            ("SGW_BACKEND_TLS__CA", "/d/ca.pem"),
            ("SGW_BACKEND_TLS__CERT", "/d/c.pem"),
            ("SGW_BACKEND_TLS__KEY", "/d/c.key"),
        ]);
        let c = Config::load(None, env, Dict::new()).unwrap();
        let b = &c.routes[0].backends;
        assert_eq!(b[0].url, "rivas://a:1", "the name has no query");
        assert_eq!(b[0].tls_files.ca.as_deref(), Some(Path::new("/u/ca.pem")));
        assert_eq!(b[0].tls_files.server_name.as_deref(), Some("riva-a"));
        assert_eq!(b[0].tls_files.cert.as_deref(), Some(Path::new("/d/c.pem")));
        assert_eq!(b[1].tls_files.ca.as_deref(), Some(Path::new("/d/ca.pem")));
        assert_eq!(
            b[2].tls_files,
            BackendTls::default(),
            "plaintext: no TLS files"
        );
        for bad in [
            "riva://a:1?ca=/x.pem",
            "rivas://a:1?bogus=1",
            "rivas://a:1?ca=",
            "rivas://a:1?cert=/c.pem",
        ] {
            let env = vars(&[("SGW_ROUTES__DEFAULT", bad), ("SGW_AUTH__ENABLED", "false")]);
            assert!(Config::load(None, env, Dict::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn security_settings_are_validated() {
        let base = || vars(&[("SGW_ROUTES__DEFAULT", "riva://a:1")]);
        let err = Config::load(None, base(), Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth") && err.contains("no key"), "{err}");
        let cases = [
            (
                vec![("SGW_AUTH__HS256_SECRET", "short")],
                "auth.hs256_secret",
            ),
            (vec![("SGW_TLS__CERT", "/c.pem")], "tls.cert"),
            (
                vec![("SGW_LIMITS__ALLOWED_ORIGINS", "app.example")],
                "limits.allowed_origins",
            ),
            (
                vec![("SGW_LIMITS__CONNECT_RATE", "-1")],
                "limits.connect_rate",
            ),
            (
                vec![("SGW_LIMITS__MAX_MESSAGE_BYTES", "100")],
                "limits.max_message_bytes",
            ),
            (
                vec![("SGW_LIMITS__WRITE_TIMEOUT", "50ms")],
                "`limits.write_timeout`: must be between 100ms and 10m",
            ),
            (
                vec![("SGW_LIMITS__HEADER_TIMEOUT", "11m")],
                "`limits.header_timeout`: must be between 100ms and 10m",
            ),
            (
                vec![("SGW_TLS__HANDSHAKE_TIMEOUT", "2m")],
                "`tls.handshake_timeout`: must be between 100ms and 1m",
            ),
            (vec![("SGW_TLS__MAX_HANDSHAKES", "0")], "tls.max_handshakes"),
            (
                vec![("SGW_LIMITS__MAX_WRITE_BUFFER_BYTES", "1000")],
                "limits.max_write_buffer_bytes",
            ),
            (
                vec![("SGW_LIMITS__MAX_CONNECTIONS", "5")],
                "limits.max_connections",
            ),
            (vec![("SGW_ADMIN_LISTEN", "nowhere")], "admin_listen"),
        ];
        for (extra, key) in cases {
            let mut env = base();
            env.push(("SGW_AUTH__ENABLED".into(), "false".into()));
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let err = Config::load(None, env, Dict::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut env = base();
        env.push(("SGW_AUTH__HS256_SECRET".into(), "x".repeat(32)));
        env.push(("SGW_AUTH__AUDIENCE".into(), "a, b".into()));
        let c = Config::load(None, env, Dict::new()).unwrap();
        assert!(c.auth.enabled);
        assert_eq!(c.auth.audience, vec!["a", "b"]);
        assert!(
            !format!("{:?}", c.auth).contains(&"x".repeat(32)),
            "Debug hides the secret"
        );
    }

    /// `.env.example` must list exactly the keys the code knows, with their defaults.
    #[test]
    fn env_example_matches_the_code() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example"))
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
