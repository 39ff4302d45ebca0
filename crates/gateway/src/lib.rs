//! speech-gateway: a streaming speech-recognition gateway. Client apps stream PCM audio over
//! a WebSocket and get partial and final transcripts back as JSON; the gateway bridges each
//! session to NVIDIA Riva (gRPC `StreamingRecognize`) or NVIDIA Triton (KServe v2) and adds what the servers lack:
//! validation, backpressure, stream rotation and reopening without audio loss, health-aware
//! routing, metrics and structured logs. It does no inference itself.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`config`] | figment layering (defaults → TOML → `SGW_*` env → flags), validated once into typed values; one validator per section |
//! | [`ingress`] | the HTTP/WebSocket edge: the [`Dialect`](ingress::dialect::Dialect) seam, one pre-upgrade [`gate`](ingress::gate), [`ingress::v1`] (the v1 contract and its wire types), [`ingress::server`] the connection layer (timeouts, caps) |
//! | [`session`] | the domain: one conversation, no transport types ([`session::engine`] is the loop: upstream and failover episode, timeline, in-memory tests) |
//! | [`router`] | routes, back-end health monitor (hysteresis), breakers per back end, least-loaded candidate order |
//! | [`resilience`] | policy: circuit breaker, retry backoff and budget, admission limits |
//! | [`security`] | listener TLS with certificate reload, back-end TLS files, JWT and API-key auth, per-IP connection limit, concurrent caps per key |
//! | [`backend`] | the `SpeechBackend` port and its adapters ([`backend::riva`], [`backend::triton`], [`backend::openai_http`], [`backend::deepgram`]), and the gateway-side endpointing the whole-utterance ones share ([`backend::utterances`]); generated protobuf lives only here |
//! | [`telemetry`] | tracing setup and the one module where metric names are spelled |
//! | [`pcm`] | PCM16LE conversions shared by the session and the back-end adapters |
//! | [`media`] | audio files (WAV, FLAC, MP3, Ogg Vorbis/Opus, MP4 AAC, WebM) to PCM16 planes, bounded |
//! | [`error`] | error classes shared by every boundary |
//!
//! The generated protocol code is its own crate ([`sgw_proto`]); the test kit
//! (`crates/testkit`) and the tools (`crates/tools`, the `sgw` binary) build on this crate,
//! never the other way round.
//!
//! The server entry is [`serve`]: it takes a bound listener and a shutdown future, so tests
//! run the real gateway in-process on port 0.

pub mod backend;
pub mod config;
pub mod discovery;
pub mod error;
pub mod ingress;
pub mod media;
pub mod pcm;
pub mod resilience;
pub mod router;
pub mod security;
pub mod session;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::BackendError;
use crate::config::Config;
use crate::ingress::AppState;
use crate::resilience::admission::Admission;
use crate::resilience::overload::Overload;
use crate::resilience::retry::RetryBudget;
use crate::router::Router;
use crate::security::auth::Authenticator;
use crate::security::quota::Quota;
use crate::security::ratelimit::ConnectLimiter;
use crate::session::SessionContext;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::throttle::SessionLogs;

/// Resolves at Ctrl-C or SIGTERM: the `shutdown` future the binaries give [`serve`] (and
/// the sim back end its stop).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("back end could not be set up: {0}")]
    Backend(#[from] BackendError),
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: {error}")]
    File {
        what: &'static str,
        error: security::files::FileError,
    },
    #[error("DNS pools cannot be resolved: {0}")]
    Dns(String),
}

/// Runs the gateway on `listener` until `shutdown` resolves. Then it drains: it stops
/// accepting (and `/ready` answers 503), lets live sessions go on for up to
/// `session.drain_timeout`, then finalises those left — their pending finals are flushed
/// (bounded by `session.flush_timeout`) — and closes them with 1001 ("going away").
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let admin = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_with_admin(listener, admin, config, shutdown).await
}

/// [`serve`] with the admin listener (`admin_listen`) already bound (the binary binds
/// both first, to print where they listen).
pub async fn serve_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let mut routes = Vec::new();
    let mut built: Vec<Arc<dyn backend::SpeechBackend>> = Vec::new();
    for route in &config.routes {
        let mut list = Vec::new();
        for url in &route.backends {
            let existing = built.iter().find(|b| b.name() == url.url).cloned();
            let b = match existing {
                Some(b) => b,
                None => {
                    let b = backend::connect(url, &config, &metrics)?;
                    built.push(b.clone());
                    b
                }
            };
            list.push(router::Member {
                backend: b,
                tier: url.tier,
                max_sessions: url.max_sessions,
                dns: url.dns,
            });
        }
        routes.push((route.name.clone(), list));
    }
    let router = Arc::new(Router::new(
        routes,
        config.health.clone(),
        config.breaker,
        metrics.clone(),
    ));
    let draining = CancellationToken::new();
    let finalise = session::Shutdown::new();
    let ctx = Arc::new(SessionContext {
        router: router.clone(),
        metrics,
        limits: config.session.clone(),
        retry: config.retry.clone(),
        budget: RetryBudget::new(&config.retry),
        shutdown: finalise.clone(),
        logs: SessionLogs::new(config.log.burst),
        two_pass: config.two_pass.clone(),
    });
    let stop_monitor = CancellationToken::new();
    let monitor = tokio::spawn(router.clone().monitor(stop_monitor.clone()));
    let mut pools: Vec<&config::BackendUrl> = Vec::new();
    for url in config
        .routes
        .iter()
        .flat_map(|r| &r.backends)
        .filter(|u| u.dns)
    {
        if !pools.iter().any(|p| p.url == url.url) {
            pools.push(url);
        }
    }
    if !pools.is_empty() {
        let resolver = Arc::new(discovery::resolver(&config.dns).map_err(ServeError::Dns)?);
        let shared = Arc::new(config.clone());
        for url in pools {
            tokio::spawn(discovery::run_pool(
                router.clone(),
                resolver.clone(),
                url.clone(),
                shared.clone(),
                stop_monitor.clone(),
            ));
        }
    }
    let overload = Arc::new(Overload::new(config.admission.max_delay));
    tokio::spawn(
        overload
            .clone()
            .probe(ctx.metrics.runtime_delay.clone(), stop_monitor.clone()),
    );
    // A server holding one descriptor per client wants every one it may have; the
    // connection cap (automatic by default) stays below what it then has.
    let open_files = ingress::server::raise_open_file_limit();
    let max_connections = match config.limits.max_connections {
        0 => open_files.map_or(10_000, ingress::server::auto_max_connections),
        n => n,
    };
    let sessions = TaskTracker::new();
    let auth = if config.auth.enabled {
        let a = Authenticator::load(&config.auth).map_err(|error| ServeError::File {
            what: "auth key",
            error,
        })?;
        Some(Arc::new(a))
    } else {
        None
    };
    let state = AppState {
        ctx,
        config: Arc::new(config.clone()),
        admission: Arc::new(Admission::new(config.admission.clone())),
        overload,
        sessions: sessions.clone(),
        started: Instant::now(),
        draining: draining.clone(),
        auth,
        limiter: config
            .limits
            .connect_rate
            .map(|(rate, burst)| Arc::new(ConnectLimiter::new(rate, burst))),
        sessions_per_ip: Quota::new(config.limits.max_sessions_per_ip),
        sessions_per_subject: Quota::new(config.limits.max_sessions_per_subject),
        sessions_per_key: Quota::new(0),
        files: Arc::new(tokio::sync::Semaphore::new(config.files.max_concurrent)),
        max_connections,
    };
    let addr = listener.local_addr()?;
    let metrics = state.ctx.metrics.clone();
    let mut reloadable: Vec<Arc<dyn security::reload::Reloadable>> = Vec::new();
    let tls_stage = match &config.tls {
        Some(tls) => {
            let store = security::tls::CertStore::load(&tls.cert, &tls.key).map_err(|error| {
                ServeError::File {
                    what: "tls certificate",
                    error,
                }
            })?;
            reloadable.push(store.clone());
            let server = security::tls::server_config(store);
            Some(ingress::server::TlsStage {
                acceptor: tokio_rustls::TlsAcceptor::from(server),
                timeout: tls.handshake_timeout,
                handshakes: Arc::new(tokio::sync::Semaphore::new(tls.max_handshakes)),
                per_ip: Quota::new(tls.max_handshakes_per_ip),
            })
        }
        None => None,
    };
    if let Some(a) = &state.auth {
        reloadable.push(a.clone());
        let api_keys = a.api_keys().map_or(0, |k| k.len());
        if let Some(k) = a.api_keys() {
            reloadable.push(k.clone());
        }
        tracing::info!(keys = a.key_count(), api_keys, "authentication on");
    } else {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.enabled = false): anyone who can reach this \
             port can open sessions. Use this for local development only."
        );
    }
    // Certificates and key files are checked at `tls.reload_interval` (SIGHUP always
    // reloads); without a TLS listener, auth key files are checked every 10 s.
    let reload_interval = match &config.tls {
        Some(t) => t.reload_interval,
        None => Some(std::time::Duration::from_secs(10)),
    };
    let stop_reload = CancellationToken::new();
    tokio::spawn(security::reload::watch(
        reloadable,
        reload_interval,
        metrics,
        stop_reload.clone(),
    ));
    tracing::info!(
        %addr,
        admin = ?config.admin_listen,
        tls = config.tls.is_some(),
        routes = config.routes.len(),
        max_connections,
        open_files,
        "speech-gateway listening"
    );
    // The shutdown sequence runs beside the server: while sessions drain, `/health`,
    // `/ready` (503) and `/metrics` still answer, and new sessions get 503 — a load
    // balancer sees the instance leave before its listener closes.
    let stop_serving = CancellationToken::new();
    let drain = {
        let (sessions, draining, stop_serving) =
            (sessions.clone(), draining.clone(), stop_serving.clone());
        let (drain, flush) = (config.session.drain_timeout, config.session.flush_timeout);
        tokio::spawn(async move {
            shutdown.await;
            draining.cancel();
            sessions.close();
            tracing::info!(
                sessions = sessions.len(),
                drain_ms = drain.as_millis() as u64,
                "draining: no new sessions"
            );
            if tokio::time::timeout(drain, sessions.wait()).await.is_err() {
                tracing::info!(
                    sessions = sessions.len(),
                    "drain timeout: finalising the sessions left"
                );
                finalise.cancel();
                let grace = flush + std::time::Duration::from_secs(1);
                if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
                    tracing::warn!(
                        left = sessions.len(),
                        "sessions still open after the flush grace period"
                    );
                }
            }
            stop_serving.cancel();
        })
    };
    let metrics = state.ctx.metrics.clone();
    let limits = &config.limits;
    let admin = admin.map(|tcp| {
        let listener = ingress::server::Listener {
            tcp,
            app: ingress::admin_app(state.clone()),
            overflow_app: ingress::admin_app(state.clone()),
            tls: None,
            limits: ingress::server::ListenerLimits {
                header_timeout: limits.header_timeout,
                write_timeout: limits.write_timeout,
                max_connections: ingress::server::ADMIN_CONNECTIONS,
                overflow: 0,
                per_ip: 0,
            },
            counted: false,
        };
        tokio::spawn(ingress::server::run(
            listener,
            metrics.clone(),
            stop_serving.clone(),
        ))
    });
    let main = ingress::server::Listener {
        tcp: listener,
        app: ingress::app(state.clone()),
        overflow_app: ingress::overflow_app(state),
        tls: tls_stage,
        limits: ingress::server::ListenerLimits {
            header_timeout: limits.header_timeout,
            write_timeout: limits.write_timeout,
            max_connections,
            overflow: ingress::server::OVERFLOW_CONNECTIONS,
            per_ip: limits.max_connections_per_ip,
        },
        counted: true,
    };
    ingress::server::run(main, metrics, stop_serving.clone()).await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    stop_reload.cancel();
    drain.abort();
    stop_monitor.cancel();
    monitor.abort();
    tracing::info!("speech-gateway stopped");
    Ok(())
}
