//! Prometheus metrics. Every metric name in the gateway is spelled here and nowhere else.
//!
//! Names carry their unit (`_seconds`, `_total` is added by the encoder for counters);
//! label values are bounded (route and back-end names from the configuration, error codes,
//! outcomes) — never a session id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub dialect: String,
    pub outcome: String,
}

/// The API key's name from `auth.api_keys_file` (empty: no API key — a JWT, or no auth).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteBackendLabels {
    pub route: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolOutcomeLabels {
    pub pool: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendOutcomeLabels {
    pub backend: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReopenLabels {
    pub backend: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendKindLabels {
    pub backend: String,
    /// `final` or `partial`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// One back end's decode-queue metrics (`backend::scheduler`), handles into the
/// registered families; `Default` gives unregistered ones (tests, adapters built alone).
#[derive(Clone, Debug)]
pub struct DecodeQueueMetrics {
    pub finals_depth: Gauge,
    pub partials_depth: Gauge,
    pub final_wait: Histogram,
    pub partial_wait: Histogram,
    pub partials_skipped: Counter,
}

impl Default for DecodeQueueMetrics {
    fn default() -> Self {
        DecodeQueueMetrics {
            finals_depth: Gauge::default(),
            partials_depth: Gauge::default(),
            final_wait: latency_histogram(),
            partial_wait: latency_histogram(),
            partials_skipped: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub backend: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub from: String,
    pub to: String,
}

/// The process's own CPU time and memory, read from `/proc/self` at each scrape, under
/// the conventional `process_*` names (absent where `/proc` is not).
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Ok(sample) = super::process::sample(None) else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of the gateway process",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(sample.rss_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the gateway process",
            None,
            rss.metric_type(),
        )?)?;
        Ok(())
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All gateway metrics, registered once at start-up and shared by reference.
pub struct Metrics {
    registry: Registry,
    pub sessions_active: Gauge,
    pub sessions_total: Family<SessionLabels, Counter>,
    pub partial_latency: Histogram,
    pub final_latency: Histogram,
    pub first_partial: Histogram,
    /// Adapter receipt of a back-end result → WebSocket frame written: the gateway's own cost.
    pub relay_overhead: Histogram,
    /// Audio accepted, by API key name (`key=""`: sessions without an API key).
    pub audio_seconds: Family<KeyLabels, Counter<f64, AtomicU64>>,
    /// Sessions opened with an API key, by its name.
    pub key_sessions_total: Family<KeyLabels, Counter>,
    /// Live sessions per API key name.
    pub key_sessions_active: Family<KeyLabels, Gauge>,
    /// Audio held for replay by every live session (since each one's last final).
    pub replay_buffer_bytes: Gauge,
    /// Live sessions whose back end's results trail their audio (`backend_lagging`).
    pub sessions_lagging: Gauge,
    /// How late the runtime wakes a ready task, smoothed (`resilience::overload`).
    pub runtime_delay: Gauge<f64, AtomicU64>,
    pub errors_total: Family<CodeLabels, Counter>,
    pub backend_requests_total: Family<BackendOutcomeLabels, Counter>,
    pub backend_up: Family<BackendLabels, Gauge>,
    pub backend_sessions_active: Family<BackendLabels, Gauge>,
    pub backend_tier: Family<RouteBackendLabels, Gauge>,
    pub dns_resolutions_total: Family<PoolOutcomeLabels, Counter>,
    pub two_pass_finals_total: Family<OutcomeLabels, Counter>,
    pub decode_queue_depth: Family<BackendKindLabels, Gauge>,
    pub decode_wait_seconds: HistogramFamily<KindLabels>,
    pub decode_partials_skipped_total: Family<BackendLabels, Counter>,
    pub stream_reopens_total: Family<ReopenLabels, Counter>,
    pub failovers_total: Family<FailoverLabels, Counter>,
    pub failover_seconds: Histogram,
    pub backend_open_seconds: HistogramFamily<BackendLabels>,
    pub breaker_state: Family<BackendLabels, Gauge>,
    pub breaker_transitions_total: Family<TransitionLabels, Counter>,
    pub retries_total: Family<ReasonLabels, Counter>,
    pub rejections_total: Family<ReasonLabels, Counter>,
    pub auth_failures_total: Family<ReasonLabels, Counter>,
    pub tls_handshake_failures_total: Family<ReasonLabels, Counter>,
    /// Client connections open now (HTTP, WebSocket, TLS handshakes), on the main listener.
    pub connections_open: Gauge,
    /// Connections refused at accept, or served only the operational endpoints.
    pub connections_refused_total: Family<ReasonLabels, Counter>,
    /// Connections the gateway cut off for a client's slowness.
    pub connections_cut_total: Family<ReasonLabels, Counter>,
    pub reloads_total: Family<ReloadLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: String,
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~20 s
    Histogram::new(exponential_buckets(0.005, 1.5, 21))
}

fn failover_histogram() -> Histogram {
    // 1 ms … ~56 s in steps of 25 %: failovers are read at the millisecond.
    Histogram::new(exponential_buckets(0.001, 1.25, 50))
}

fn fine_histogram() -> Histogram {
    // 1 µs … ~0.6 s in steps of 25 %: fine enough to read p50/p99 of the relay overhead.
    Histogram::new(exponential_buckets(1e-6, 1.25, 60))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            sessions_active: Gauge::default(),
            sessions_total: Family::default(),
            partial_latency: latency_histogram(),
            final_latency: latency_histogram(),
            first_partial: latency_histogram(),
            relay_overhead: fine_histogram(),
            audio_seconds: Family::default(),
            key_sessions_total: Family::default(),
            key_sessions_active: Family::default(),
            replay_buffer_bytes: Gauge::default(),
            sessions_lagging: Gauge::default(),
            runtime_delay: Gauge::default(),
            errors_total: Family::default(),
            backend_requests_total: Family::default(),
            backend_up: Family::default(),
            backend_sessions_active: Family::default(),
            backend_tier: Family::default(),
            dns_resolutions_total: Family::default(),
            two_pass_finals_total: Family::default(),
            decode_queue_depth: Family::default(),
            decode_wait_seconds: Family::new_with_constructor(latency_histogram),
            decode_partials_skipped_total: Family::default(),
            stream_reopens_total: Family::default(),
            failovers_total: Family::default(),
            failover_seconds: failover_histogram(),
            backend_open_seconds: Family::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            breaker_transitions_total: Family::default(),
            retries_total: Family::default(),
            rejections_total: Family::default(),
            auth_failures_total: Family::default(),
            tls_handshake_failures_total: Family::default(),
            connections_open: Gauge::default(),
            connections_refused_total: Family::default(),
            connections_cut_total: Family::default(),
            reloads_total: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sgw_sessions_active",
            "Sessions open now",
            m.sessions_active.clone(),
        );
        registry.register(
            "sgw_sessions",
            "Sessions ended, by dialect and outcome",
            m.sessions_total.clone(),
        );
        registry.register(
            "sgw_partial_latency_seconds",
            "Gateway receipt of the audio a partial accounts for, to the partial sent",
            m.partial_latency.clone(),
        );
        registry.register(
            "sgw_final_latency_seconds",
            "Gateway receipt of an utterance's last speech audio (or end), to its final sent",
            m.final_latency.clone(),
        );
        registry.register(
            "sgw_first_partial_seconds",
            "Gateway receipt of the first speech audio, to the first partial sent",
            m.first_partial.clone(),
        );
        registry.register(
            "sgw_relay_overhead_seconds",
            "Back-end result received by the adapter, to its WebSocket frame written",
            m.relay_overhead.clone(),
        );
        registry.register(
            "sgw_audio_seconds",
            "Audio accepted from clients, in seconds, by API key name (empty: no API key)",
            m.audio_seconds.clone(),
        );
        registry.register(
            "sgw_key_sessions",
            "Sessions opened with an API key, by the key's name",
            m.key_sessions_total.clone(),
        );
        registry.register(
            "sgw_key_sessions_active",
            "Live sessions per API key name",
            m.key_sessions_active.clone(),
        );
        registry.register(
            "sgw_replay_buffer_bytes",
            "Audio held by live sessions for replay after a failover (since each one's last final)",
            m.replay_buffer_bytes.clone(),
        );
        registry.register(
            "sgw_sessions_lagging",
            "Live sessions whose back-end results trail their audio by more than session.lag_warning",
            m.sessions_lagging.clone(),
        );
        registry.register(
            "sgw_runtime_delay_seconds",
            "How late the gateway's runtime wakes a ready task (smoothed); above admission.max_delay new sessions are refused",
            m.runtime_delay.clone(),
        );
        registry.register(
            "sgw_errors",
            "Errors sent to clients, by code",
            m.errors_total.clone(),
        );
        registry.register(
            "sgw_backend_requests",
            "Back-end stream opens, by back end and outcome",
            m.backend_requests_total.clone(),
        );
        registry.register(
            "sgw_backend_up",
            "1 when the back end's last health checks passed",
            m.backend_up.clone(),
        );
        registry.register(
            "sgw_backend_sessions_active",
            "Sessions streaming to the back end now (its max_sessions caps this)",
            m.backend_sessions_active.clone(),
        );
        registry.register(
            "sgw_two_pass_finals",
            "Finals of two-pass routes, by outcome: quality (the finals route's text), deadline, failed, quality_empty (the fast final went out)",
            m.two_pass_finals_total.clone(),
        );
        registry.register(
            "sgw_decode_queue_depth",
            "Decodes waiting for a request/response back end (offline Triton, openai://), by kind (final, partial)",
            m.decode_queue_depth.clone(),
        );
        registry.register(
            "sgw_decode_wait_seconds",
            "Time a decode waited in its back end's queue before its request went, by kind",
            m.decode_wait_seconds.clone(),
        );
        registry.register(
            "sgw_decode_partials_skipped",
            "Partial re-decodes dropped without a request: replaced by the session's newer one, or paused while finals back up",
            m.decode_partials_skipped_total.clone(),
        );
        registry.register(
            "sgw_dns_resolutions",
            "Lookups of DNS pools' names, by pool and outcome (ok, failed: the last good addresses are kept)",
            m.dns_resolutions_total.clone(),
        );
        registry.register(
            "sgw_backend_tier",
            "The back end's tier in the route (0 first; a lower tier takes sessions only while the tiers above cannot)",
            m.backend_tier.clone(),
        );
        registry.register(
            "sgw_stream_reopens",
            "Back-end streams reopened mid-session, by reason (rotation, error)",
            m.stream_reopens_total.clone(),
        );
        registry.register(
            "sgw_failovers",
            "Live sessions moved from one back end to another",
            m.failovers_total.clone(),
        );
        registry.register(
            "sgw_failover_seconds",
            "Back-end failure seen, to the next back end's stream open",
            m.failover_seconds.clone(),
        );
        registry.register(
            "sgw_backend_open_seconds",
            "Time to open a back-end stream",
            m.backend_open_seconds.clone(),
        );
        registry.register(
            "sgw_breaker_state",
            "Circuit breaker per back end: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "sgw_breaker_transitions",
            "Breakers opened or closed, by back end",
            m.breaker_transitions_total.clone(),
        );
        registry.register(
            "sgw_retries",
            "Back-end retries: scheduled, or refused because the attempts or the budget ran out",
            m.retries_total.clone(),
        );
        registry.register(
            "sgw_rejections",
            "Sessions refused, by reason: before the upgrade (global_limit, overloaded, draining, ip_rate_limit, origin, unauthenticated) or at start (route_limit, route_lagging)",
            m.rejections_total.clone(),
        );
        registry.register(
            "sgw_auth_failures",
            "Tokens refused, by reason (missing, malformed, algorithm, unknown_key, signature, expired, not_yet_valid, audience, issuer, missing_claim)",
            m.auth_failures_total.clone(),
        );
        registry.register(
            "sgw_tls_handshake_failures",
            "TLS handshakes on the listener that failed (error) or timed out (timeout)",
            m.tls_handshake_failures_total.clone(),
        );
        registry.register(
            "sgw_connections_open",
            "Client connections open now on the main listener (HTTP, WebSocket, TLS handshakes)",
            m.connections_open.clone(),
        );
        registry.register(
            "sgw_connections_refused",
            "Connections refused at accept (connection_limit, per_ip_limit, handshake_per_ip_limit) or answered only on the operational endpoints (overflow)",
            m.connections_refused_total.clone(),
        );
        registry.register(
            "sgw_connections_cut",
            "Connections closed for the client's slowness: header_timeout (request headers not complete in time), write_timeout (a write waited too long: the client does not read), write_buffer (a WebSocket client's unread queue was full)",
            m.connections_cut_total.clone(),
        );
        registry.register(
            "sgw_reloads",
            "Reloads of certificates and keys from their files, by what and result (ok, error)",
            m.reloads_total.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        // Sessions without an API key: a sample from the start, as before per-key labels.
        m.audio_counter(None);
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition (format 0.0.4, the content type `/metrics` declares)
    /// of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        openmetrics_to_prometheus_text(&out)
    }

    pub fn session_ended(&self, dialect: &str, outcome: &str) {
        self.sessions_total
            .get_or_create(&SessionLabels {
                dialect: dialect.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The audio counter of one session's key (resolved once per session: a frame costs
    /// one atomic add).
    pub fn audio_counter(&self, key: Option<&str>) -> Counter<f64, AtomicU64> {
        self.audio_seconds
            .get_or_create(&KeyLabels {
                key: key.unwrap_or_default().into(),
            })
            .clone()
    }

    /// The live-sessions gauge of an API key (incremented when a session opens with it).
    pub fn key_session_opened(&self, key: &str) -> Gauge {
        let labels = KeyLabels { key: key.into() };
        self.key_sessions_total.get_or_create(&labels).inc();
        let active = self.key_sessions_active.get_or_create(&labels).clone();
        active.inc();
        active
    }

    pub fn error_sent(&self, code: &str) {
        self.errors_total
            .get_or_create(&CodeLabels { code: code.into() })
            .inc();
    }

    pub fn backend_request(&self, backend: &str, outcome: &str, took: Duration) {
        self.backend_requests_total
            .get_or_create(&BackendOutcomeLabels {
                backend: backend.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.backend_open_seconds
            .get_or_create(&BackendLabels {
                backend: backend.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn set_backend_sessions(&self, backend: &str, active: usize) {
        self.backend_sessions_active
            .get_or_create(&BackendLabels {
                backend: backend.into(),
            })
            .set(active as i64);
    }

    pub fn set_backend_tier(&self, route: &str, backend: &str, tier: usize) {
        self.backend_tier
            .get_or_create(&RouteBackendLabels {
                route: route.into(),
                backend: backend.into(),
            })
            .set(tier as i64);
    }

    /// Handles for one back end's decode queue.
    pub fn decode_queue(&self, backend: &str) -> DecodeQueueMetrics {
        let depth = |kind: &str| {
            self.decode_queue_depth
                .get_or_create(&BackendKindLabels {
                    backend: backend.into(),
                    kind: kind.into(),
                })
                .clone()
        };
        let wait = |kind: &str| {
            self.decode_wait_seconds
                .get_or_create(&KindLabels { kind: kind.into() })
                .clone()
        };
        DecodeQueueMetrics {
            finals_depth: depth("final"),
            partials_depth: depth("partial"),
            final_wait: wait("final"),
            partial_wait: wait("partial"),
            partials_skipped: self
                .decode_partials_skipped_total
                .get_or_create(&BackendLabels {
                    backend: backend.into(),
                })
                .clone(),
        }
    }

    pub fn two_pass_final(&self, outcome: &str) {
        self.two_pass_finals_total
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn dns_resolution(&self, pool: &str, outcome: &str) {
        self.dns_resolutions_total
            .get_or_create(&PoolOutcomeLabels {
                pool: pool.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn forget_backend_tier(&self, route: &str, backend: &str) {
        self.backend_tier.remove(&RouteBackendLabels {
            route: route.into(),
            backend: backend.into(),
        });
    }

    /// Drops the gauges of a back end that left (a DNS pool's address): label values
    /// stay bounded by the back ends that exist. Its counters stay (they are totals).
    pub fn forget_backend(&self, backend: &str) {
        let labels = BackendLabels {
            backend: backend.into(),
        };
        self.backend_up.remove(&labels);
        self.breaker_state.remove(&labels);
        self.backend_sessions_active.remove(&labels);
    }

    pub fn set_backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabels {
                backend: backend.into(),
            })
            .set(i64::from(up));
    }

    pub fn stream_reopened(&self, backend: &str, reason: &str) {
        self.stream_reopens_total
            .get_or_create(&ReopenLabels {
                backend: backend.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn set_breaker_state(&self, backend: &str, value: i64) {
        self.breaker_state
            .get_or_create(&BackendLabels {
                backend: backend.into(),
            })
            .set(value);
    }

    pub fn breaker_transition(&self, backend: &str, to: &str) {
        self.breaker_transitions_total
            .get_or_create(&TransitionLabels {
                backend: backend.into(),
                to: to.into(),
            })
            .inc();
    }

    /// `outcome`: `scheduled`, `attempts_exhausted` or `budget_exhausted`.
    pub fn retry(&self, outcome: &str) {
        self.retries_total
            .get_or_create(&ReasonLabels {
                reason: outcome.into(),
            })
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejections_total
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures_total
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn tls_handshake_failed(&self, reason: &str) {
        self.tls_handshake_failures_total
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused_total
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn connection_cut(&self, reason: &str) {
        self.connections_cut_total
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn reloaded(&self, what: &str, result: &str) {
        self.reloads_total
            .get_or_create(&ReloadLabels {
                what: what.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn failed_over(&self, from: &str, to: &str, took: Duration) {
        self.failovers_total
            .get_or_create(&FailoverLabels {
                from: from.into(),
                to: to.into(),
            })
            .inc();
        self.failover_seconds.observe(took.as_secs_f64());
    }
}

/// prometheus_client writes OpenMetrics, where a counter family is named without its
/// `_total` suffix (`# TYPE sgw_errors counter`, samples `sgw_errors_total`) and the text
/// ends with `# EOF`. Read as Prometheus text 0.0.4, those HELP/TYPE lines describe no
/// sample (scrapers lose the type; `promtool check metrics` reports "no help text"), so
/// counter families are renamed to their sample name and `# EOF` is dropped.
fn openmetrics_to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_design_names() {
        let m = Metrics::new();
        m.sessions_active.inc();
        m.session_ended("v1", "completed");
        m.error_sent("BUFFER_OVERFLOW");
        m.backend_request("riva://a:1", "ok", Duration::from_millis(3));
        m.set_backend_up("riva://a:1", true);
        m.audio_counter(None).inc_by(1.5);
        m.audio_counter(Some("ios-app")).inc_by(2.0);
        let _active = m.key_session_opened("ios-app");
        m.partial_latency.observe(0.1);
        m.failed_over("riva://a:1", "riva://b:2", Duration::from_millis(40));
        m.set_breaker_state("riva://a:1", 1);
        m.breaker_transition("riva://a:1", "opened");
        m.retry("scheduled");
        m.rejected("global_limit");
        let text = m.encode();
        for name in [
            "sgw_sessions_active 1",
            "sgw_sessions_total{dialect=\"v1\",outcome=\"completed\"} 1",
            "sgw_errors_total{code=\"BUFFER_OVERFLOW\"} 1",
            "sgw_backend_requests_total{backend=\"riva://a:1\",outcome=\"ok\"} 1",
            "sgw_backend_up{backend=\"riva://a:1\"} 1",
            "sgw_audio_seconds_total{key=\"\"} 1.5",
            "sgw_audio_seconds_total{key=\"ios-app\"} 2.0",
            "sgw_key_sessions_total{key=\"ios-app\"} 1",
            "sgw_key_sessions_active{key=\"ios-app\"} 1",
            "sgw_partial_latency_seconds_count 1",
            "sgw_final_latency_seconds_count 0",
            "sgw_first_partial_seconds_count 0",
            "sgw_relay_overhead_seconds_count 0",
            "sgw_failovers_total{from=\"riva://a:1\",to=\"riva://b:2\"} 1",
            "sgw_failover_seconds_count 1",
            "sgw_breaker_state{backend=\"riva://a:1\"} 1",
            "sgw_breaker_transitions_total{backend=\"riva://a:1\",to=\"opened\"} 1",
            "sgw_retries_total{reason=\"scheduled\"} 1",
            "sgw_rejections_total{reason=\"global_limit\"} 1",
        ] {
            assert!(text.contains(name), "missing `{name}` in:\n{text}");
        }
    }

    #[test]
    fn counters_are_described_under_their_sample_names() {
        let m = Metrics::new();
        m.error_sent("INTERNAL_ERROR");
        m.audio_counter(None).inc_by(0.5);
        let text = m.encode();
        for line in [
            "# TYPE sgw_errors_total counter",
            "# HELP sgw_errors_total Errors sent to clients, by code.",
            "# TYPE sgw_audio_seconds_total counter",
            "# TYPE sgw_sessions_active gauge",
            "# TYPE sgw_final_latency_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(!text.contains("# TYPE sgw_errors counter"));
        assert!(!text.contains("# EOF"));
    }
}
