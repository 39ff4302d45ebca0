//! The back-end side of the configuration: back-end URLs (`riva://`, `rivas://`,
//! `triton://`, `tritons://`, `openai://`, `openais://`, with TLS files from the query over
//! `[backend_tls]`), routes, and the `riva`, `triton`, `openai_backend` and `health`
//! sections, each with its validator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawBackendTls, RawHealth, RawOpenAiBackend, RawRiva, RawTriton};
use super::{ConfigError, MAX_CONNECTIONS, invalid};

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

/// Which protocol a back end speaks: the scheme of its URL (`riva://`, `triton://`,
/// `openai://`). The
/// one name for this idea across the workspace (the test kit's sim and the chaos scenarios
/// use it too); "dialect" is kept for the client-facing contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendProtocol {
    Riva,
    Triton,
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
/// `openai://host:port/base?model=NAME[&key_file=PATH]`, or the TLS forms `rivas://…`,
/// `tritons://…`, `openais://…`.
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
    /// The URL as written without its query (OpenAI: with its `?model=` only): the back
    /// end's name in logs, metrics and `/status`.
    pub url: String,
    /// TLS files and server name (TLS URLs only): the URL's query parameters over the
    /// `[backend_tls]` defaults.
    pub tls_files: BackendTls,
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
        let (protocol, tls) = match scheme {
            "riva" => (BackendProtocol::Riva, false),
            "rivas" => (BackendProtocol::Riva, true),
            "triton" => (BackendProtocol::Triton, false),
            "tritons" => (BackendProtocol::Triton, true),
            "openai" => (BackendProtocol::OpenAi, false),
            "openais" => (BackendProtocol::OpenAi, true),
            other => {
                return Err(format!(
                    "`{url}`: unknown scheme `{other}` (expected riva, rivas, triton, tritons, \
                     openai or openais)"
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
        if protocol == BackendProtocol::Triton && path.is_empty() {
            return Err(format!(
                "`{url}`: a triton URL names its model: triton://HOST:PORT/MODEL"
            ));
        }
        let openai = protocol == BackendProtocol::OpenAi;
        let (mut model, mut key_file) = (None, None);
        let (mut language, mut health) = (LanguageForm::default(), HealthProbe::default());
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
                "model" if openai => model = Some(v.to_string()),
                "key_file" if openai => key_file = Some(PathBuf::from(v)),
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
                         server_name{openai_keys})"
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
                    key_file,
                    language,
                    health,
                }),
                tls_files,
            });
        }
        Ok(BackendUrl {
            protocol,
            tls,
            host: host.to_string(),
            port,
            model: (!path.is_empty()).then(|| path.to_string()),
            openai: None,
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
    })
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

/// The routes, each URL parsed, TLS URLs completed from the `[backend_tls]` defaults.
pub(super) fn validate_routes(
    raw: &BTreeMap<String, Vec<String>>,
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
    let mut routes = Vec::new();
    for (name, urls) in raw {
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
    Ok(routes)
}
