//! The client-facing edge: TLS on the listener, JWT authentication, and the abuse limits
//! applied before and after a WebSocket upgrade; one validator each.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawAuth, RawDeepgram, RawFiles, RawLimits, RawPage, RawTls, Secret, Switch};
use super::{ConfigError, duration_between, invalid};

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

/// Where the JWT verification keys and the API keys come from and what a token must say.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub enabled: bool,
    pub hs256_secret: Option<Secret>,
    pub hs256_secret_file: Option<PathBuf>,
    pub public_keys: Vec<PathBuf>,
    pub jwks: Option<PathBuf>,
    /// API keys by hash (`auth.api_keys_file`).
    pub api_keys_file: Option<PathBuf>,
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

pub(super) fn validate_listener_tls(t: &RawTls) -> Result<Option<ListenerTls>, ConfigError> {
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

/// Settings of the Deepgram-compatible dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepgramSettings {
    /// `None`: `session.idle_timeout` applies.
    pub idle_timeout: Option<Duration>,
}

pub(super) fn validate_deepgram(d: &RawDeepgram) -> Result<DeepgramSettings, ConfigError> {
    if d.idle_timeout > Duration::from_secs(600) {
        return Err(invalid(
            "deepgram.idle_timeout",
            "must be at most 10m (0s: off)",
        ));
    }
    Ok(DeepgramSettings {
        idle_timeout: (!d.idle_timeout.is_zero()).then_some(d.idle_timeout),
    })
}

/// The live-captions page (`GET /` and its assets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSettings {
    /// Whether the page is served (resolved from `page.enabled` and `auth.enabled`).
    pub enabled: bool,
    /// `page.enabled` as given; `None`: unset, decided by `auth.enabled`.
    pub explicit: Option<bool>,
}

/// `page.enabled` is a tri-state: unset follows authentication (on without it, off with
/// it: a gateway with tokens does not advertise a page unless asked to), `true` / `false`
/// decide either way.
pub(super) fn validate_page(p: &RawPage, auth_enabled: bool) -> Result<PageSettings, ConfigError> {
    let explicit = match &p.enabled {
        None => None,
        Some(Switch::Bool(b)) => Some(*b),
        Some(Switch::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                return Err(invalid(
                    "page.enabled",
                    format!(
                        "`{t}` is not true, false or empty (unset: on when auth.enabled is \
                         false, off when it is true)"
                    ),
                ));
            }
        },
    };
    Ok(PageSettings {
        enabled: explicit.unwrap_or(!auth_enabled),
        explicit,
    })
}

/// What one whole-file request may bring (`files.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLimits {
    pub max_bytes: usize,
    pub max_duration: Duration,
    pub upload_timeout: Duration,
    pub max_concurrent: usize,
}

/// Largest `files.max_bytes`: 2 GiB, Deepgram's own upload limit.
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024 * 1024;

pub(super) fn validate_files(f: &RawFiles) -> Result<FileLimits, ConfigError> {
    if !(1024..=MAX_FILE_BYTES).contains(&f.max_bytes) {
        return Err(invalid(
            "files.max_bytes",
            "must be between 1024 bytes and 2 GiB",
        ));
    }
    duration_between(
        "files.max_duration",
        f.max_duration,
        Duration::from_secs(1),
        Duration::from_secs(4 * 3600),
    )?;
    duration_between(
        "files.upload_timeout",
        f.upload_timeout,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    if !(1..=1024).contains(&f.max_concurrent) {
        return Err(invalid(
            "files.max_concurrent",
            "must be between 1 and 1024",
        ));
    }
    Ok(FileLimits {
        max_bytes: f.max_bytes,
        max_duration: f.max_duration,
        upload_timeout: f.upload_timeout,
        max_concurrent: f.max_concurrent,
    })
}

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key as long as the hash.
pub const MIN_HS256_SECRET: usize = 32;

pub(super) fn validate_auth(a: &RawAuth) -> Result<AuthSettings, ConfigError> {
    let path_of = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let settings = AuthSettings {
        enabled: a.enabled,
        hs256_secret: (!a.hs256_secret.0.is_empty()).then(|| a.hs256_secret.clone()),
        hs256_secret_file: path_of(&a.hs256_secret_file),
        public_keys: a.public_keys.iter().map(PathBuf::from).collect(),
        jwks: path_of(&a.jwks),
        api_keys_file: path_of(&a.api_keys_file),
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
        || settings.jwks.is_some()
        || settings.api_keys_file.is_some();
    if settings.enabled && !has_keys {
        return Err(invalid(
            "auth",
            "auth is enabled but no key is configured: set auth.hs256_secret_file, \
             auth.hs256_secret, auth.public_keys, auth.jwks or auth.api_keys_file (or auth.enabled = false for \
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

pub(super) fn validate_limits(l: &RawLimits) -> Result<EdgeLimits, ConfigError> {
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
