//! The back-end side of the configuration: back-end URLs (`riva://`, `rivas://`,
//! `triton://`, `tritons://`, `openai://`, `openais://`, `deepgram://`, `deepgrams://`, the
//! DNS pools `riva+dns://` …, with TLS files from the query over `[backend_tls]`), routes
//! in tiers, and the `riva`, `triton`, `openai_backend`, `deepgram_backend`, `dns` and `health`
//! sections, each with its validator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{
    RawBackendTls, RawDeepgramBackend, RawDns, RawHealth, RawOpenAiBackend, RawRiva, RawTriton,
};
use super::{ConfigError, MAX_CONNECTIONS, duration_between, invalid};

/// TLS material for one `rivas://` / `tritons://` back end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
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
    /// Offline models: requests in flight at once per back end (`backend::scheduler`).
    pub max_inflight: usize,
    /// Offline models: the order of the requests waiting beyond that.
    pub queue: super::raw::QueueOrder,
}

/// The `openai_backend` section: every `openai://` back end's requests and endpointing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    pub sample_rate: u32,
    pub connect_timeout: Duration,
    /// Deadline of one transcription request, upload to answer.
    pub request_timeout: Duration,
    pub endpointing: Duration,
    pub partials: bool,
    pub partial_interval: Duration,
    pub max_utterance: Duration,
    /// The bearer key's file for back ends without their own `?key_file=`.
    pub key_file: Option<PathBuf>,
    /// Copied from `health.timeout`.
    pub health_timeout: Duration,
    /// Requests in flight at once per back end (`backend::scheduler`).
    pub max_inflight: usize,
    /// The order of the requests waiting beyond that.
    pub queue: super::raw::QueueOrder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// A named list of back ends in tiers (each back end's [`BackendUrl::tier`]; list order
/// breaks load-balancing ties within a tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    /// Tier 0's back ends first, then tier 1's, …
    pub backends: Vec<BackendUrl>,
}

/// Which protocol a back end speaks: the scheme of its URL (`riva://`, `triton://`,
/// `openai://`). The
/// one name for this idea across the workspace (the test kit's sim and the chaos scenarios
/// use it too); "dialect" is kept for the client-facing contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendProtocol {
    Riva,
    Triton,
    /// Deepgram's streaming API (`/v1/listen` over a WebSocket): the cloud, or another
    /// gateway's Deepgram dialect.
    Deepgram,
    #[serde(rename = "openai")]
    OpenAi,
}

/// What an `openai://` URL says besides host, port and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiTarget {
    /// The API's base path (`v1`), under which `models` and `audio/transcriptions` are.
    pub base_path: String,
    /// The file holding the bearer key (`?key_file=`; else `openai_backend.key_file`).
    pub key_file: Option<PathBuf>,
    /// How the session's language is sent (`?language=`).
    pub language: LanguageForm,
    /// What the health probe asks (`?health=`).
    pub health: HealthProbe,
}

/// The `language` form field: OpenAI and Whisper servers take ISO-639-1 (`en`), NVIDIA
/// NIM takes BCP-47 (`en-US`). `auto` is never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LanguageForm {
    /// The primary subtag of the client's code (`en-US` → `en`): `?language=iso639`.
    #[default]
    Iso639,
    /// The client's code as given: `?language=bcp47`.
    Bcp47,
    /// No `language` field (the server detects it): `?language=omit`.
    Omit,
}

/// The health probe: `GET {base}/models` listing the model (OpenAI, vLLM, SGLang,
/// speaches), or `GET {base}/health/ready` answering 2xx (NVIDIA NIM, which lists no
/// models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthProbe {
    /// `?health=models`.
    #[default]
    Models,
    /// `?health=ready`.
    Ready,
}

/// A parsed back-end URL: `riva://host:port[/model]`, `triton://host:port/model`,
/// `openai://host:port/base?model=NAME[&key_file=PATH]`, `deepgram://host[:port][?model=…]`,
/// or the TLS forms `rivas://…`, `tritons://…`, `openais://…`, `deepgrams://…`; riva and
/// triton also as DNS pools (`riva+dns://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub protocol: BackendProtocol,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Riva: the `RecognitionConfig.model` to request (empty path = the server's default).
    /// Triton: the model name (required). OpenAI: the `?model=` (required).
    pub model: Option<String>,
    /// OpenAI: the URL's path and its options; `None` for the other protocols.
    pub openai: Option<OpenAiTarget>,
    /// The URL as written without its query (OpenAI: with its `?model=` only; Deepgram:
    /// with its pass-through parameters, which choose the model): the back end's name in
    /// logs, metrics and `/status`.
    pub url: String,
    /// TLS files and server name (TLS URLs only): the URL's query parameters over the
    /// `[backend_tls]` defaults.
    pub tls_files: BackendTls,
    /// Most sessions streaming to this back end at once (`?max_sessions=N`); `None`: no
    /// cap of its own.
    pub max_sessions: Option<usize>,
    /// Its tier in the route it was written in (0 first): a lower tier takes sessions
    /// only while every back end of the tiers above is down, open or full.
    pub tier: usize,
    /// `riva+dns://NAME:PORT` (and `rivas+dns`, `triton+dns`, `tritons+dns`): a pool of
    /// back ends, one per address `host` resolves to, re-resolved continuously.
    pub dns: bool,
    /// Deepgram: the API key's file (`key_file=`, over `deepgram_backend.key_file`).
    pub key_file: Option<PathBuf>,
    /// Deepgram: the other query parameters (`model=nova-3`, …), passed upstream as
    /// written; they win over the ones the adapter derives from the session.
    pub params: Vec<(String, String)>,
}

impl BackendUrl {
    /// Parses a back-end URL as written on the command line or in a route.
    pub fn parse(full: &str) -> Result<BackendUrl, String> {
        let (url, query) = match full.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (full, None),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!(
                "`{url}` is not a URL (expected riva://HOST:PORT, triton://HOST:PORT/MODEL or \
                 deepgram://HOST[:PORT])"
            )
        })?;
        let (scheme, dns) = match scheme.strip_suffix("+dns") {
            Some(base) => (base, true),
            None => (scheme, false),
        };
        let (protocol, tls) = match scheme {
            "riva" => (BackendProtocol::Riva, false),
            "rivas" => (BackendProtocol::Riva, true),
            "triton" => (BackendProtocol::Triton, false),
            "tritons" => (BackendProtocol::Triton, true),
            "deepgram" => (BackendProtocol::Deepgram, false),
            "deepgrams" => (BackendProtocol::Deepgram, true),
            "openai" => (BackendProtocol::OpenAi, false),
            "openais" => (BackendProtocol::OpenAi, true),
            other => {
                return Err(format!(
                    "`{url}`: unknown scheme `{other}` (expected riva, rivas, triton, tritons, \
                     openai, openais, deepgram or deepgrams; riva and triton also as DNS pools: \
                     riva+dns, …)"
                ));
            }
        };
        let deepgram = protocol == BackendProtocol::Deepgram;
        if dns && !matches!(protocol, BackendProtocol::Riva | BackendProtocol::Triton) {
            return Err(format!(
                "`{url}`: DNS pools are for riva and triton (an HTTP or cloud endpoint \
                 balances itself)"
            ));
        }
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p.trim_matches('/')),
            None => (rest, ""),
        };
        // Deepgram URLs may leave the port out: 443 with TLS, 80 without.
        let default_port = if tls { "443" } else { "80" };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !authority.ends_with(']') => (h, p),
            _ if deepgram => (authority, default_port),
            _ => return Err(format!("`{url}`: missing port (expected HOST:PORT)")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}`: missing host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{url}`: `{port}` is not a port number"))?;
        if protocol == BackendProtocol::Triton && path.is_empty() {
            return Err(format!(
                "`{url}`: a triton URL names its model: triton://HOST:PORT/MODEL"
            ));
        }
        if deepgram && !path.is_empty() {
            return Err(format!(
                "`{url}`: a deepgram URL has no path; name the model as ?model=NAME"
            ));
        }
        let openai = protocol == BackendProtocol::OpenAi;
        let mut model = None;
        let (mut language, mut health) = (LanguageForm::default(), HealthProbe::default());
        let mut tls_files = BackendTls::default();
        let mut max_sessions = None;
        let mut key_file = None;
        let mut params = Vec::new();
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
                "max_sessions" => {
                    max_sessions =
                        Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("`{url}`: max_sessions must be a whole number above 0")
                        })?);
                }
                "key_file" if deepgram || openai => key_file = Some(PathBuf::from(v)),
                other if deepgram => params.push((other.to_string(), v.to_string())),
                "model" if openai => model = Some(v.to_string()),
                "language" if openai => {
                    language = match v {
                        "iso639" => LanguageForm::Iso639,
                        "bcp47" => LanguageForm::Bcp47,
                        "omit" => LanguageForm::Omit,
                        _ => {
                            return Err(format!(
                                "`{url}`: language is iso639, bcp47 or omit, not `{v}`"
                            ));
                        }
                    }
                }
                "health" if openai => {
                    health = match v {
                        "models" => HealthProbe::Models,
                        "ready" => HealthProbe::Ready,
                        _ => {
                            return Err(format!("`{url}`: health is models or ready, not `{v}`"));
                        }
                    }
                }
                other => {
                    let openai_keys = if openai {
                        ", model, key_file, language, health"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "`{url}`: unknown query parameter `{other}` (expected ca, cert, key, \
                         server_name, max_sessions{openai_keys})"
                    ));
                }
            }
        }
        if !tls && tls_files != BackendTls::default() {
            return Err(format!(
                "`{url}`: TLS parameters on a plaintext URL (use {scheme}s://)"
            ));
        }
        if openai {
            let Some(model) = model.filter(|_| !path.is_empty()) else {
                return Err(format!(
                    "`{url}`: an openai URL names its API base and model: \
                     openai://HOST:PORT/v1?model=NAME"
                ));
            };
            return Ok(BackendUrl {
                protocol,
                tls,
                host: host.to_string(),
                port,
                url: format!("{url}?model={model}"),
                model: Some(model),
                openai: Some(OpenAiTarget {
                    base_path: path.to_string(),
                    key_file: key_file.take(),
                    language,
                    health,
                }),
                tls_files,
                max_sessions,
                tier: 0,
                dns,
                key_file: None,
                params: Vec::new(),
            });
        }
        let name = if params.is_empty() {
            url.to_string()
        } else {
            let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{url}?{}", shown.join("&"))
        };
        Ok(BackendUrl {
            protocol,
            tls,
            host: host.to_string(),
            port,
            model: (!path.is_empty()).then(|| path.to_string()),
            openai: None,
            url: name,
            tls_files,
            max_sessions,
            tier: 0,
            dns,
            key_file,
            params,
        })
    }

    /// One address of a DNS pool: the same back end at `ip` (the pool's name stays the
    /// TLS server name, so certificates issued for the service name still verify).
    pub fn at_address(&self, ip: std::net::IpAddr) -> BackendUrl {
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        let scheme = scheme.strip_suffix("+dns").unwrap_or(scheme);
        let host = match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        let path = self
            .model
            .as_ref()
            .map_or(String::new(), |m| format!("/{m}"));
        let mut tls_files = self.tls_files.clone();
        if self.tls && tls_files.server_name.is_none() {
            tls_files.server_name = Some(self.host.clone());
        }
        BackendUrl {
            host: ip.to_string(),
            url: format!("{scheme}://{host}:{}{path}", self.port),
            tls_files,
            dns: false,
            ..self.clone()
        }
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

/// The `riva` section (its probe deadline is `health.timeout`).
pub(super) fn validate_riva(r: &RawRiva, health: &RawHealth) -> Result<RivaSettings, ConfigError> {
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
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be above zero"));
        }
    }
    connections("riva.connections", r.connections)?;
    Ok(RivaSettings {
        sample_rate: r.sample_rate,
        auto_language: r.auto_language.clone(),
        max_stream_age: r.max_stream_age,
        connect_timeout: r.connect_timeout,
        open_timeout: r.open_timeout,
        health_timeout: health.timeout,
        connections: r.connections,
    })
}

/// The `triton` section (its probe deadline is `health.timeout`).
pub(super) fn validate_triton(
    t: &RawTriton,
    health: &RawHealth,
) -> Result<TritonSettings, ConfigError> {
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
    connections("triton.connections", t.connections)?;
    max_inflight("triton.max_inflight", t.max_inflight)?;
    Ok(TritonSettings {
        sample_rate: t.sample_rate,
        connect_timeout: t.connect_timeout,
        open_timeout: t.open_timeout,
        endpointing: t.endpointing,
        partial_interval: t.partial_interval,
        max_utterance: t.max_utterance,
        infer_timeout: t.infer_timeout,
        health_timeout: health.timeout,
        connections: t.connections,
        max_inflight: t.max_inflight,
        queue: t.queue,
    })
}

/// `deepgram://` / `deepgrams://` back ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepgramBackendSettings {
    /// The API key's file for URLs without `key_file=`; `None`: no key is sent.
    pub key_file: Option<PathBuf>,
    pub sample_rate: u32,
    /// Audio silence upstream after which a `KeepAlive` is sent.
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    /// Copied from `health.timeout`.
    pub health_timeout: Duration,
}

/// The `deepgram_backend` section (its probe deadline is `health.timeout`).
pub(super) fn validate_deepgram_backend(
    d: &RawDeepgramBackend,
    health: &RawHealth,
) -> Result<DeepgramBackendSettings, ConfigError> {
    if !(8_000..=48_000).contains(&d.sample_rate) {
        return Err(invalid(
            "deepgram_backend.sample_rate",
            "must be between 8000 and 48000",
        ));
    }
    // Deepgram closes a socket that heard nothing for 10 s: a keep-alive must come sooner.
    duration_between(
        "deepgram_backend.keepalive",
        d.keepalive,
        Duration::from_secs(1),
        Duration::from_secs(9),
    )?;
    if d.connect_timeout.is_zero() {
        return Err(invalid(
            "deepgram_backend.connect_timeout",
            "must be above zero",
        ));
    }
    let key_file = d.key_file.trim();
    Ok(DeepgramBackendSettings {
        key_file: (!key_file.is_empty()).then(|| PathBuf::from(key_file)),
        sample_rate: d.sample_rate,
        keepalive: d.keepalive,
        connect_timeout: d.connect_timeout,
        health_timeout: health.timeout,
    })
}

/// The `openai_backend` section (its probe deadline is `health.timeout`).
pub(super) fn validate_openai(
    o: &RawOpenAiBackend,
    health: &RawHealth,
) -> Result<OpenAiSettings, ConfigError> {
    if !crate::backend::utterances::VAD_RATES.contains(&o.sample_rate) {
        return Err(invalid(
            "openai_backend.sample_rate",
            "must be 8000, 16000, 32000 or 48000 (the VAD's rates)",
        ));
    }
    if !(10..=10_000).contains(&o.endpointing.as_millis()) {
        return Err(invalid(
            "openai_backend.endpointing",
            "must be between 10ms and 10s",
        ));
    }
    if o.max_utterance < Duration::from_secs(1) {
        return Err(invalid(
            "openai_backend.max_utterance",
            "must be at least 1s",
        ));
    }
    for (key, d) in [
        ("openai_backend.connect_timeout", o.connect_timeout),
        ("openai_backend.request_timeout", o.request_timeout),
        ("openai_backend.partial_interval", o.partial_interval),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be above zero"));
        }
    }
    max_inflight("openai_backend.max_inflight", o.max_inflight)?;
    Ok(OpenAiSettings {
        sample_rate: o.sample_rate,
        connect_timeout: o.connect_timeout,
        request_timeout: o.request_timeout,
        endpointing: o.endpointing,
        partials: o.partials,
        partial_interval: o.partial_interval,
        max_utterance: o.max_utterance,
        key_file: (!o.key_file.trim().is_empty()).then(|| PathBuf::from(o.key_file.trim())),
        health_timeout: health.timeout,
        max_inflight: o.max_inflight,
        queue: o.queue,
    })
}

/// A back end's concurrent requests (a large value turns the queue's ordering off).
fn max_inflight(key: &str, n: usize) -> Result<(), ConfigError> {
    if (1..=4096).contains(&n) {
        return Ok(());
    }
    Err(invalid(key, "must be between 1 and 4096"))
}

fn connections(key: &str, n: usize) -> Result<(), ConfigError> {
    if (1..=MAX_CONNECTIONS).contains(&n) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!("must be between 1 and {MAX_CONNECTIONS}"),
    ))
}

/// The `health` section: the monitor's probes and its hysteresis.
pub(super) fn validate_health(h: &RawHealth) -> Result<HealthSettings, ConfigError> {
    for (key, d) in [
        ("health.interval", h.interval),
        ("health.timeout", h.timeout),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be above zero"));
        }
    }
    if h.unhealthy_after == 0 || h.healthy_after == 0 {
        return Err(invalid(
            "health.unhealthy_after",
            "health.unhealthy_after and health.healthy_after must be at least 1",
        ));
    }
    Ok(HealthSettings {
        interval: h.interval,
        timeout: h.timeout,
        unhealthy_after: h.unhealthy_after,
        healthy_after: h.healthy_after,
    })
}

/// How DNS pools are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Re-resolution interval (sooner when a TTL ends first; at least 1 s).
    pub interval: Duration,
    /// Name servers to ask; empty: the system's.
    pub servers: Vec<std::net::SocketAddr>,
}

/// The `dns` section.
pub(super) fn validate_dns(d: &RawDns) -> Result<DnsSettings, ConfigError> {
    if d.interval < Duration::from_secs(1) {
        return Err(invalid("dns.interval", "must be at least 1s"));
    }
    let servers = d
        .servers
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                invalid(
                    "dns.servers",
                    format!("`{s}` is not IP:PORT (e.g. 10.96.0.10:53)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DnsSettings {
        interval: d.interval,
        servers,
    })
}

/// The routes, each URL parsed, TLS URLs completed from the `[backend_tls]` defaults.
pub(super) fn validate_routes(
    raw: &BTreeMap<String, Vec<Vec<String>>>,
    default_tls: &RawBackendTls,
) -> Result<Vec<Route>, ConfigError> {
    let path_of = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    if default_tls.cert.is_empty() != default_tls.key.is_empty() {
        return Err(invalid(
            "backend_tls.cert",
            "backend_tls.cert and backend_tls.key go together",
        ));
    }
    if raw.is_empty() {
        return Err(invalid(
            "routes",
            "no back end configured: pass --backend riva://HOST:PORT or set routes.default",
        ));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (name, tiers) in raw {
        let key = format!("routes.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(&key, "route names are letters, digits, - and _"));
        }
        if tiers.iter().all(Vec::is_empty) {
            return Err(invalid(&key, "a route needs at least one back end"));
        }
        if tiers.iter().any(Vec::is_empty) {
            return Err(invalid(
                &key,
                "a tier needs at least one back end (`|` between tiers)",
            ));
        }
        let mut backends = Vec::new();
        for (tier, urls) in tiers.iter().enumerate() {
            for u in urls {
                let mut b = BackendUrl::parse(u).map_err(|p| invalid(&key, p))?;
                b.tier = tier;
                if backends.iter().any(|o: &BackendUrl| o.url == b.url) {
                    return Err(invalid(&key, format!("`{}` is named twice", b.url)));
                }
                // One back end named in several routes is one pool member: one cap.
                let elsewhere = routes
                    .iter()
                    .flat_map(|r| &r.backends)
                    .find(|o| o.url == b.url);
                if let Some(o) = elsewhere
                    && o.max_sessions != b.max_sessions
                {
                    return Err(invalid(
                        &key,
                        format!("`{}` has another max_sessions in another route", b.url),
                    ));
                }
                backends.push(b);
            }
        }
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
    Ok(routes)
}
