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
//!
//! | module | role |
//! |---|---|
//! | [`raw`] | the serde shapes and their defaults |
//! | [`env`] | the `SGW_*` variables as a figment provider, and the listing `.env.example` is checked against |
//! | [`backends`] | back-end URLs, routes, the Riva / Triton / Deepgram and OpenAI back-end / health / DNS sections |
//! | [`edge`] | the client-facing edge: listener TLS, authentication, abuse limits, the captions page |
//! | [`session`] | logging, per-session limits, and the resilience policy sections (breaker, retry, admission) |
//!
//! Each section has one validator, `validate_<section>(raw) -> Result<typed, ConfigError>`;
//! [`Config::validate`] calls them in turn and assembles the result.

pub mod backends;
pub mod edge;
pub mod env;
pub mod raw;
pub mod session;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Dict;

pub use backends::{
    BackendProtocol, BackendTls, BackendUrl, DeepgramBackendSettings, DnsSettings, HealthProbe,
    HealthSettings, LanguageForm, OpenAiSettings, OpenAiTarget, RivaSettings, Route,
    TritonSettings,
};
pub use edge::{
    AuthSettings, DeepgramSettings, EdgeLimits, FileLimits, ListenerTls, MAX_FILE_BYTES,
    MIN_HS256_SECRET, MIN_WRITE_BUFFER, PageSettings,
};
pub use env::{EnvVars, env_defaults};
pub use raw::*;
pub use session::{LogConfig, SessionLimits, TwoPassSettings};

/// Most HTTP/2 connections per back end (`riva.connections`, `triton.connections`).
pub const MAX_CONNECTIONS: usize = 64;

/// Prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "SGW_";

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
    /// `deepgram://` back ends (not the `/v1/listen` dialect: that is `deepgram`).
    pub deepgram_backend: DeepgramBackendSettings,
    /// `openai://` back ends.
    pub openai_backend: OpenAiSettings,
    pub health: HealthSettings,
    pub dns: DnsSettings,
    pub two_pass: TwoPassSettings,
    pub breaker: crate::resilience::breaker::BreakerSettings,
    pub retry: crate::resilience::retry::RetrySettings,
    pub admission: crate::resilience::admission::AdmissionSettings,
    /// TLS on the listener; `None`: plain HTTP/WebSocket.
    pub tls: Option<ListenerTls>,
    pub auth: AuthSettings,
    pub limits: EdgeLimits,
    /// The Deepgram-compatible dialect (`/v1/listen`).
    pub deepgram: DeepgramSettings,
    /// Whole-file requests (`POST /v1/listen`).
    pub files: FileLimits,
    /// The live-captions page (`GET /`).
    pub page: PageSettings,
    /// Routes in name order; each has at least one back end.
    pub routes: Vec<Route>,
}

/// A duration as flags and files spell it (humantime: `500ms`, `10s`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
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
pub(crate) fn duration_between(
    key: &str,
    d: Duration,
    lo: Duration,
    hi: Duration,
) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&d) {
        return Ok(());
    }
    let show = humantime_serde::re::humantime::format_duration;
    Err(invalid(
        key,
        format!("must be between {} and {}", show(lo), show(hi)),
    ))
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
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

    /// Turns the serde shape into typed values, refusing anything out of range: one
    /// validator per section, then the checks that span sections.
    pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|_| invalid("listen", format!("`{}` is not HOST:PORT", raw.listen)))?;
        let log = session::validate_log(&raw)?;
        let limits = edge::validate_limits(&raw.limits)?;
        let session = session::validate_session(&raw.session, limits.write_timeout)?;
        let triton = backends::validate_triton(&raw.triton, &raw.health)?;
        let riva = backends::validate_riva(&raw.riva, &raw.health)?;
        let deepgram_backend =
            backends::validate_deepgram_backend(&raw.deepgram_backend, &raw.health)?;
        let openai_backend = backends::validate_openai(&raw.openai_backend, &raw.health)?;
        let health = backends::validate_health(&raw.health)?;
        let dns = backends::validate_dns(&raw.dns)?;
        let breaker = session::validate_breaker(&raw.breaker)?;
        let retry = session::validate_retry(&raw.retry)?;
        let routes = backends::validate_routes(&raw.routes, &raw.backend_tls)?;
        let admission = session::validate_admission(&raw.admission, &routes)?;
        let two_pass = session::validate_two_pass(&raw.two_pass, &routes)?;
        let tls = edge::validate_listener_tls(&raw.tls)?;
        let auth = edge::validate_auth(&raw.auth)?;
        let deepgram = edge::validate_deepgram(&raw.deepgram)?;
        let files = edge::validate_files(&raw.files)?;
        let page = edge::validate_page(&raw.page, auth.enabled)?;
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
            log,
            session,
            riva,
            triton,
            deepgram_backend,
            openai_backend,
            health,
            dns,
            two_pass,
            breaker,
            retry,
            admission,
            tls,
            auth,
            limits,
            deepgram,
            files,
            page,
            routes,
        })
    }

    /// The route a session asks for, by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
