//! The load report (`load.json`, `load.md`) and the live progress line.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::histogram::Percentiles;
use super::session::PathStats;
use crate::client::dialect::Dialect;
use speech_gateway::telemetry::process::ProcessSample;

/// One path's sessions (through the gateway, or direct to the back end).
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    pub sessions: usize,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub frames_sent: u64,
    pub partials: u64,
    pub finals: u64,
    pub partial: Percentiles,
    #[serde(rename = "final")]
    pub final_: Percentiles,
    /// Error codes the sessions were told (or why they failed: `HTTP 503`, `close 1011`, …).
    pub errors: BTreeMap<String, u64>,
}

impl PathReport {
    pub fn from_stats(s: &PathStats, sessions: usize) -> Self {
        PathReport {
            sessions,
            started: s.started.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            frames_sent: s.frames.load(Ordering::Relaxed),
            partials: s.partials.load(Ordering::Relaxed),
            finals: s.finals.load(Ordering::Relaxed),
            partial: s.partial.percentiles(),
            final_: s.final_.percentiles(),
            errors: s.errors(),
        }
    }
}

/// The gateway process over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    /// `proc` (/proc/PID), `metrics` (the gateway's process_* metrics) or `none`.
    pub source: &'static str,
    pub baseline_rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// Median RSS while every session was running (after the ramp).
    pub steady_rss_bytes: Option<u64>,
    /// (steady − baseline) / sessions.
    pub rss_per_session_bytes: Option<f64>,
    /// Median of the gateway's `sgw_replay_buffer_bytes` while every session was running:
    /// the audio all sessions held for replay.
    pub steady_replay_bytes: Option<u64>,
    /// (steady RSS − baseline − steady replay audio) / sessions: what a session costs
    /// beyond the audio it holds.
    pub rss_beyond_replay_per_session_bytes: Option<f64>,
    /// CPU time over wall time after the ramp, until the end: cores in use.
    pub steady_cpu_cores: Option<f64>,
    pub peak_cpu_cores: Option<f64>,
    /// The highest `sgw_runtime_delay_seconds` seen (ms): how late the gateway's runtime
    /// woke tasks at worst; above `admission.max_delay` it refuses new sessions.
    pub peak_runtime_delay_ms: Option<f64>,
    /// (seconds since start, cores over the last interval, RSS bytes).
    pub timeline: Vec<(f64, f64, u64)>,
}

impl ResourceReport {
    /// `replay`: (seconds since start, `sgw_replay_buffer_bytes`) when `/metrics` answered;
    /// `peak_delay`: the highest `sgw_runtime_delay_seconds` seen there.
    pub fn from_samples(
        source: &'static str,
        samples: &[(f64, ProcessSample)],
        replay: &[(f64, u64)],
        peak_delay: Option<f64>,
        ramp_end: f64,
        end: f64,
        sessions: usize,
    ) -> Self {
        let baseline = samples.first().map(|(_, s)| s.rss_bytes);
        let timeline: Vec<(f64, f64, u64)> = samples
            .windows(2)
            .map(|w| {
                let (t0, a) = w[0];
                let (t1, b) = w[1];
                let cores = (b.cpu_seconds - a.cpu_seconds) / (t1 - t0).max(1e-9);
                (t1, cores, b.rss_bytes)
            })
            .collect();
        // The steady window: one second past the ramp (connections settle) to the end.
        let steady: Vec<&(f64, ProcessSample)> = samples
            .iter()
            .filter(|(t, _)| *t >= ramp_end + 1.0 && *t <= end)
            .collect();
        let steady_cpu_cores = match (steady.first(), steady.last()) {
            (Some((t0, a)), Some((t1, b))) if t1 > t0 => {
                Some((b.cpu_seconds - a.cpu_seconds) / (t1 - t0))
            }
            _ => None,
        };
        let mut rss: Vec<u64> = steady.iter().map(|(_, s)| s.rss_bytes).collect();
        rss.sort_unstable();
        let steady_rss = rss.get(rss.len() / 2).copied();
        let mut held: Vec<u64> = replay
            .iter()
            .filter(|(t, _)| *t >= ramp_end + 1.0 && *t <= end)
            .map(|&(_, b)| b)
            .collect();
        held.sort_unstable();
        let steady_replay = held.get(held.len() / 2).copied();
        let per_session = |bytes: f64| bytes / sessions.max(1) as f64;
        ResourceReport {
            source,
            baseline_rss_bytes: baseline,
            peak_rss_bytes: samples.iter().map(|(_, s)| s.rss_bytes).max(),
            steady_rss_bytes: steady_rss,
            rss_per_session_bytes: match (steady_rss, baseline) {
                (Some(s), Some(b)) => Some(per_session(s as f64 - b as f64)),
                _ => None,
            },
            steady_replay_bytes: steady_replay,
            rss_beyond_replay_per_session_bytes: match (steady_rss, baseline, steady_replay) {
                (Some(s), Some(b), Some(r)) => Some(per_session(s as f64 - b as f64 - r as f64)),
                _ => None,
            },
            steady_cpu_cores,
            peak_cpu_cores: timeline.iter().map(|t| t.1).reduce(f64::max),
            peak_runtime_delay_ms: peak_delay.map(|s| s * 1000.0),
            timeline,
        }
    }
}

/// The gateway's cost relative to the direct path, from the same run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Added {
    pub partial_p50_ms: Option<f64>,
    pub partial_p99_ms: Option<f64>,
    /// Gateway p99 over direct p99.
    pub partial_p99_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The endpoint the sessions spoke to.
    pub url: String,
    /// The contract they spoke.
    pub dialect: Dialect,
    pub sessions: usize,
    pub duration_seconds: f64,
    pub ramp_seconds: f64,
    pub frame_ms: u32,
    pub clips: usize,
    pub fd_limit: u64,
    pub active_peak: u64,
    pub gateway: PathReport,
    pub direct: Option<PathReport>,
    pub resources: ResourceReport,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    })
}

fn mib(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1_048_576.0))
}

impl LoadReport {
    pub fn added(&self) -> Option<Added> {
        let d = self.direct.as_ref()?;
        let g = &self.gateway;
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Some(Added {
            partial_p50_ms: diff(g.partial.p50_ms, d.partial.p50_ms),
            partial_p99_ms: diff(g.partial.p99_ms, d.partial.p99_ms),
            partial_p99_ratio: match (g.partial.p99_ms, d.partial.p99_ms) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            },
        })
    }

    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["added"] = serde_json::to_value(self.added()).unwrap_or_default();
        v
    }

    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Load\n\n`{}` ({}): {} sessions, {} s (ramp {} s), {} ms frames at real time, \
             {} clip(s); peak active {}; open-file limit {}.\n\n",
            self.url,
            self.dialect.name(),
            self.sessions,
            self.duration_seconds,
            self.ramp_seconds,
            self.frame_ms,
            self.clips,
            self.active_peak,
            self.fd_limit
        );
        md += "| path | sessions | completed | failed | partials | partial p50 | p95 | p99 | max | final p50 | p95 | p99 |\n";
        md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        let mut row = |name: &str, p: &PathReport| {
            md += &format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.sessions,
                p.completed,
                p.failed,
                p.partials,
                ms(p.partial.p50_ms),
                ms(p.partial.p95_ms),
                ms(p.partial.p99_ms),
                ms(p.partial.max_ms),
                ms(p.final_.p50_ms),
                ms(p.final_.p95_ms),
                ms(p.final_.p99_ms)
            );
        };
        row("gateway", &self.gateway);
        if let Some(d) = &self.direct {
            row("direct", d);
        }
        md += "\nLatencies in ms (client-measured, log buckets of 2 %).\n";
        if let Some(a) = self.added() {
            md += &format!(
                "\nGateway added latency (gateway − direct, same run): partial p50 {} ms, p99 {} ms; p99 ratio {}.\n",
                ms(a.partial_p50_ms),
                ms(a.partial_p99_ms),
                a.partial_p99_ratio
                    .map_or("-".into(), |r| format!("{r:.2}"))
            );
        }
        let r = &self.resources;
        md += &format!(
            "\nGateway process ({}): CPU {} cores steady (peak {}), RSS baseline {} MiB, steady {} MiB, peak {} MiB, {} per session; audio held for replay {} MiB, {} per session beyond it; runtime delay peak {} ms.\n",
            r.source,
            r.steady_cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
            r.peak_cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
            mib(r.baseline_rss_bytes),
            mib(r.steady_rss_bytes),
            mib(r.peak_rss_bytes),
            r.rss_per_session_bytes
                .map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
            mib(r.steady_replay_bytes),
            r.rss_beyond_replay_per_session_bytes
                .map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
            r.peak_runtime_delay_ms
                .map_or("-".into(), |d| format!("{d:.1}"))
        );
        let mut errors = String::new();
        for (path, p) in [
            ("gateway", Some(&self.gateway)),
            ("direct", self.direct.as_ref()),
        ] {
            for (code, n) in p.map(|p| &p.errors).into_iter().flatten() {
                errors += &format!("| {path} | {code} | {n} |\n");
            }
        }
        if errors.is_empty() {
            md += "\nNo errors.\n";
        } else {
            md += "\n| path | error or status | count |\n|---|---|---:|\n";
            md += &errors;
        }
        md
    }
}

/// The one-line live display: elapsed, active, completed, failed, partial p99 so far,
/// and the gateway's last CPU and RSS reading.
pub fn progress_line(
    elapsed: f64,
    gateway: &PathStats,
    direct: &PathStats,
    with_direct: bool,
    samples: &[(f64, ProcessSample)],
) -> String {
    let mut line = format!(
        "[{elapsed:5.0} s] active {}  completed {}  failed {}  partial p99 {} ms",
        gateway.active.load(Ordering::Relaxed),
        gateway.completed.load(Ordering::Relaxed),
        gateway.failed.load(Ordering::Relaxed),
        ms(gateway.partial.quantile_ms(0.99)),
    );
    if with_direct {
        line += &format!(
            " | direct active {} p99 {} ms",
            direct.active.load(Ordering::Relaxed),
            ms(direct.partial.quantile_ms(0.99))
        );
    }
    if let [.., (t0, a), (t1, b)] = samples {
        line += &format!(
            " | gateway {:.2} cores {:.0} MiB",
            (b.cpu_seconds - a.cpu_seconds) / (t1 - t0).max(1e-9),
            b.rss_bytes as f64 / 1_048_576.0
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu: f64, rss_mib: u64) -> ProcessSample {
        ProcessSample {
            cpu_seconds: cpu,
            rss_bytes: rss_mib * 1_048_576,
        }
    }

    #[test]
    fn resources_take_cpu_and_memory_from_the_steady_window() {
        let samples = vec![
            (0.0, s(0.0, 10)),
            (1.0, s(0.1, 20)),
            (2.0, s(0.3, 30)),
            (3.0, s(0.8, 30)),
            (4.0, s(1.3, 32)),
            (5.0, s(1.8, 30)),
            (6.0, s(1.9, 12)),
        ];
        // replay audio: only the steady window (3..=5 s) counts; its median is 4 MiB
        let mib = 1_048_576u64;
        let replay = vec![
            (1.0, 50 * mib),
            (3.0, 3 * mib),
            (4.0, 4 * mib),
            (5.0, 5 * mib),
        ];
        let r =
            ResourceReport::from_samples("proc", &samples, &replay, Some(0.0125), 2.0, 5.0, 100);
        assert_eq!(r.baseline_rss_bytes, Some(10 * 1_048_576));
        assert_eq!(r.steady_rss_bytes, Some(30 * 1_048_576));
        assert!((r.steady_cpu_cores.unwrap() - 0.5).abs() < 1e-9);
        assert!((r.rss_per_session_bytes.unwrap() - 20.0 * 1_048_576.0 / 100.0).abs() < 1e-6);
        assert_eq!(r.timeline.len(), 6);
        assert_eq!(r.peak_rss_bytes, Some(32 * 1_048_576));
        assert_eq!(r.steady_replay_bytes, Some(4 * mib));
        assert_eq!(
            r.peak_runtime_delay_ms,
            Some(12.5),
            "seconds on /metrics, ms here"
        );
        assert!(
            (r.rss_beyond_replay_per_session_bytes.unwrap() - 16.0 * 1_048_576.0 / 100.0).abs()
                < 1e-6
        );
        let no_metrics = ResourceReport::from_samples("proc", &samples, &[], None, 2.0, 5.0, 100);
        assert_eq!(no_metrics.rss_beyond_replay_per_session_bytes, None);
        assert_eq!(no_metrics.peak_runtime_delay_ms, None);
        let empty = ResourceReport::from_samples("none", &[], &[], None, 2.0, 5.0, 100);
        assert_eq!(empty.steady_cpu_cores, None);
    }
}
