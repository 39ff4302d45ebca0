//! The serde shape of the configuration: what TOML files and `SGW_*` variables spell, with
//! the defaults in `Default`. Nothing here is validated: [`super::Config::validate`] turns
//! these into typed values, section by section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a request/response back end's queue (`backend::scheduler`) orders the decodes
/// waiting beyond `max_inflight`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrder {
    /// Finals before partials; a session's newer partial replaces its waiting one;
    /// partials pause while finals back up.
    #[default]
    FinalsFirst,
    /// Arrival order, every request kept (the same bound on requests in flight, no
    /// ordering: the baseline that separates the bound's effect from the order's).
    Fifo,
}

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
    pub deepgram_backend: RawDeepgramBackend,
    pub openai_backend: RawOpenAiBackend,
    pub health: RawHealth,
    pub dns: RawDns,
    pub two_pass: RawTwoPass,
    pub breaker: RawBreaker,
    pub retry: RawRetry,
    pub admission: RawAdmission,
    pub tls: RawTls,
    pub backend_tls: RawBackendTls,
    pub auth: RawAuth,
    pub limits: RawLimits,
    pub deepgram: RawDeepgram,
    pub files: RawFiles,
    pub page: RawPage,
    /// Route name → back-end URLs. `start.config.model` selects a route; absent, `default`.
    /// Route name → its tiers, each a list of back-end URLs.
    #[serde(deserialize_with = "de_routes")]
    pub routes: BTreeMap<String, Vec<Vec<String>>>,
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
    /// A TOML file of API keys by SHA-256, with a name and an optional session cap each
    /// (`security::apikeys`).
    pub api_keys_file: String,
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
            api_keys_file: String::new(),
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
            OneOrMany::One(s) => comma_list(&s),
        }
    }
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A route as written: one comma-separated string with tiers split by `|`
/// (environment), a list of URLs (one tier), or a list of lists (tiers, TOML).
#[derive(Deserialize)]
#[serde(untagged)]
enum RouteSpec {
    One(String),
    Many(Vec<String>),
    Tiers(Vec<Vec<String>>),
}

impl RouteSpec {
    fn into_tiers(self) -> Vec<Vec<String>> {
        match self {
            RouteSpec::One(s) => s.split('|').map(comma_list).collect(),
            RouteSpec::Many(v) => vec![v],
            RouteSpec::Tiers(t) => t,
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
    /// Offline models: requests in flight to one back end at once; more wait in the
    /// gateway's finals-first queue (`backend::scheduler`).
    pub max_inflight: usize,
    /// Offline models: the order of that queue.
    pub queue: QueueOrder,
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
            max_inflight: 4,
            queue: QueueOrder::FinalsFirst,
        }
    }
}

/// `openai://` / `openais://` back ends (OpenAI-compatible `POST /v1/audio/transcriptions`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawOpenAiBackend {
    /// Rate of the WAV files uploaded (one of the VAD's rates).
    pub sample_rate: u32,
    /// TCP (+ TLS) connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one transcription request, upload to answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Silence that ends an utterance when the client sets no `endpointing_ms`.
    #[serde(with = "humantime_serde")]
    pub endpointing: Duration,
    /// Re-decode the open utterance for partials (each one a whole request).
    pub partials: bool,
    /// Audio the utterance grows by between partial re-decodes.
    #[serde(with = "humantime_serde")]
    pub partial_interval: Duration,
    /// An utterance is cut (and finalised) at this length.
    #[serde(with = "humantime_serde")]
    pub max_utterance: Duration,
    /// File holding the bearer key sent to every `openai://` back end without its own
    /// `?key_file=` (empty: no `Authorization` header).
    pub key_file: String,
    /// Requests in flight to one back end at once; more wait in the gateway's
    /// finals-first queue (`backend::scheduler`).
    pub max_inflight: usize,
    /// The order of that queue.
    pub queue: QueueOrder,
}

impl Default for RawOpenAiBackend {
    fn default() -> Self {
        RawOpenAiBackend {
            sample_rate: 16_000,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            endpointing: Duration::from_millis(500),
            partials: false,
            partial_interval: Duration::from_secs(1),
            max_utterance: Duration::from_secs(25),
            key_file: String::new(),
            max_inflight: 4,
            queue: QueueOrder::FinalsFirst,
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

/// Two-pass recognition: a route's finals decoded again by another route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTwoPass {
    /// Route name → the route that decodes its finals again (the quality pass).
    pub routes: BTreeMap<String, String>,
    /// The fast final goes out when the quality pass is not back this long after it.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Audio after the fast final's last word also sent to the quality pass.
    #[serde(with = "humantime_serde")]
    pub pad: Duration,
}

impl Default for RawTwoPass {
    fn default() -> Self {
        RawTwoPass {
            routes: BTreeMap::new(),
            deadline: Duration::from_secs(3),
            pad: Duration::from_millis(100),
        }
    }
}

/// DNS pools (`riva+dns://NAME:PORT`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// Re-resolution interval of each pool's name (sooner when the answer's TTL ends
    /// first; never more often than once a second).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Name servers (`IP:PORT`) to ask instead of the system's (`/etc/resolv.conf`).
    #[serde(deserialize_with = "de_list")]
    pub servers: Vec<String>,
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            interval: Duration::from_secs(5),
            servers: Vec::new(),
        }
    }
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
            deepgram_backend: RawDeepgramBackend::default(),
            openai_backend: RawOpenAiBackend::default(),
            health: RawHealth::default(),
            dns: RawDns::default(),
            two_pass: RawTwoPass::default(),
            breaker: RawBreaker::default(),
            retry: RawRetry::default(),
            admission: RawAdmission::default(),
            tls: RawTls::default(),
            backend_tls: RawBackendTls::default(),
            auth: RawAuth::default(),
            limits: RawLimits::default(),
            deepgram: RawDeepgram::default(),
            files: RawFiles::default(),
            page: RawPage::default(),
            routes: BTreeMap::new(),
        }
    }
}

/// The Deepgram-compatible dialect (`/v1/listen`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDeepgram {
    /// No audio and no message for this long closes a `/v1/listen` session, as Deepgram
    /// does (10 s); `0s`: `session.idle_timeout` applies.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// The live-captions page (`GET /`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPage {
    /// Serve the page. Unset (absent, or empty in the environment): on when `auth.enabled`
    /// is false, off when it is true; `true` / `false` decide either way.
    pub enabled: Option<Switch>,
}

/// A setting that may be left unset: a boolean as TOML writes it, or the text of an
/// environment variable (`true`, `false`, or empty for unset), checked by the section's
/// validator so a wrong value is refused with its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Switch {
    Bool(bool),
    Text(String),
}

/// Whole-file transcription (`POST /v1/listen`): what one request may bring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawFiles {
    /// Largest request body (HTTP 413 beyond).
    pub max_bytes: usize,
    /// Longest audio, checked as it decodes (HTTP 413 beyond).
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// The whole body must arrive within this long (HTTP 408 otherwise).
    #[serde(with = "humantime_serde")]
    pub upload_timeout: Duration,
    /// Files being received or decoded at once (each holds its body and its samples);
    /// beyond, HTTP 503 + `Retry-After`.
    pub max_concurrent: usize,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            max_bytes: 64 * 1024 * 1024,
            max_duration: Duration::from_secs(30 * 60),
            upload_timeout: Duration::from_secs(60),
            max_concurrent: 4,
        }
    }
}

impl Default for RawDeepgram {
    fn default() -> Self {
        RawDeepgram {
            idle_timeout: Duration::from_secs(10),
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

/// `deepgram://` / `deepgrams://` back ends (the Deepgram streaming API upstream).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawDeepgramBackend {
    /// File holding the API key sent as `Authorization: Token KEY` (a URL's `key_file=`
    /// wins). Empty: no key is sent (a gateway's own `/v1/listen` without auth).
    pub key_file: String,
    /// Sample rate of the linear16 audio sent upstream (audio is resampled to it).
    pub sample_rate: u32,
    /// A `KeepAlive` goes upstream when no audio was sent for this long (Deepgram closes
    /// a socket that hears nothing for 10 s).
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// TCP + TLS + WebSocket handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for RawDeepgramBackend {
    fn default() -> Self {
        RawDeepgramBackend {
            key_file: String::new(),
            sample_rate: 16_000,
            keepalive: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(5),
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

/// Routes may be given as lists (TOML) or as one string (environment); see [`RouteSpec`].
fn de_routes<'de, D>(d: D) -> Result<BTreeMap<String, Vec<Vec<String>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = BTreeMap::<String, RouteSpec>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(name, v)| (name.to_ascii_lowercase(), v.into_tiers()))
        .collect())
}
