//! `sgw load`: N concurrent real-time sessions against a gateway, bounded in
//! time, with a live progress line; reports latencies, errors by code, sessions completed
//! and failed, and the gateway's CPU and memory over the run. Sessions speak v1 or, with
//! [`run_with_dialect`], Deepgram's `/v1/listen` or OpenAI's `/v1/realtime`: only the
//! wire differs ([`crate::client::dialect`]); pacing, latency and the report are the same.
//!
//! Sessions start evenly over `--ramp`, each streams clips from `--clips` in a loop at
//! real time (one frame per `--frame-ms`, `--gap` of silence after each pass), and all of them send `end` when `--duration`
//! (counted from the first start) is over. The client is built to be cheap, so that one
//! process can hold 10,000 sessions on a small machine beside the gateway: one task per
//! session, no task per direction, frames cut (and put on the dialect's wire: realtime's
//! 24 kHz base64 appends) once and shared, a 4 KiB read
//! buffer per socket, messages parsed for the few fields latency needs, and latencies
//! recorded into lock-free log histograms.
//!
//! With `--direct-riva ADDR`, the same number of sessions (or `--direct-sessions`) also
//! stream the same audio at the same cadence straight to a Riva back end in the same run;
//! the report sets both paths side by side, so the gateway's added latency is their
//! difference under identical machine load.
//!
//! | module | role |
//! |---|---|
//! | [`histogram`] | lock-free log-bucket latency histogram |
//! | [`session`] | one session: WebSocket through the gateway, or Riva straight to the back end |
//! | [`report`] | the JSON and markdown report |

pub mod histogram;
pub mod report;
pub mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::dialect::{Ask, Dialect};
use crate::client::wav::read_wav_file;
pub use report::LoadReport;
use report::{PathReport, ResourceReport};
use session::{Clip, PathStats, Plan};
use speech_gateway::telemetry::process;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The gateway's v1 endpoint (`ws://HOST:PORT/v1/audio/stream`); Deepgram and realtime
    /// sessions use the same gateway's `/v1/listen` / `/v1/realtime` ([`Dialect::endpoint`]).
    pub url: String,
    pub sessions: usize,
    /// From the first session's start to every session's `end`.
    pub duration: Duration,
    /// Session starts are spread evenly over this.
    pub ramp: Duration,
    /// WAV files (mono PCM16) played in a loop; a directory or one file.
    pub clips: PathBuf,
    pub frame_ms: u32,
    /// Silence after each pass through a clip (a talker's pause: lets the back end end
    /// the utterance).
    pub gap: Duration,
    /// A route (the contract's `model`).
    pub route: Option<String>,
    /// The gateway's process id: CPU and RSS from `/proc/PID` (else from `/metrics`).
    pub pid: Option<u32>,
    /// A Riva back end for the direct baseline.
    pub direct_riva: Option<SocketAddr>,
    /// Direct sessions (defaults to `sessions`).
    pub direct_sessions: Option<usize>,
    /// Print the progress line every second (on stderr).
    pub progress: bool,
}

/// Loads every WAV of `path` (a file or a directory, sorted) and cuts it into frames,
/// each clip followed by `gap` of silence.
pub fn load_clips(path: &Path, frame_ms: u32, gap: Duration) -> anyhow::Result<Vec<Clip>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut clips = Vec::new();
    for file in files {
        let wav = read_wav_file(&file)?;
        let per_frame = (wav.sample_rate as usize * frame_ms as usize / 1000).max(1);
        if wav.samples.len() < per_frame {
            continue;
        }
        let mut frames: Vec<Bytes> = wav
            .samples
            .chunks(per_frame)
            .map(|c| Bytes::from(c.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()))
            .collect();
        let mut frame_ms_each: Vec<f64> = wav
            .samples
            .chunks(per_frame)
            .map(|c| c.len() as f64 * 1000.0 / f64::from(wav.sample_rate))
            .collect();
        let silence = Bytes::from(vec![0u8; per_frame * 2]);
        let gap_frames = (gap.as_millis() as usize).div_ceil(frame_ms.max(1) as usize);
        frames.extend(std::iter::repeat_n(silence, gap_frames));
        frame_ms_each.extend(std::iter::repeat_n(f64::from(frame_ms), gap_frames));
        clips.push(Clip {
            sample_rate: wav.sample_rate,
            frames,
            frame_ms_each,
        });
    }
    if clips.is_empty() {
        bail!("no usable WAV clip in {}", path.display());
    }
    Ok(clips)
}

/// Raises the soft open-file limit to the hard one: every session is a socket.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

/// Where the gateway's CPU and RSS come from: `/proc/PID` when the pid is known, else the
/// gateway's own `process_*` metrics. `/metrics` also gives the audio held for replay.
struct Probe {
    pid: Option<u32>,
    metrics: Option<SocketAddr>,
}

impl Probe {
    fn source(&self) -> &'static str {
        match (self.pid, self.metrics) {
            (Some(_), _) => "proc",
            (None, Some(_)) => "metrics",
            (None, None) => "none",
        }
    }

    /// The process sample, and `sgw_replay_buffer_bytes` and `sgw_runtime_delay_seconds`
    /// when `/metrics` answered.
    async fn sample(&self) -> (Option<process::ProcessSample>, Option<u64>, Option<f64>) {
        let body = match self.metrics {
            Some(addr) => match crate::chaos::runner::http_get(addr, "/metrics").await {
                Ok((200, body)) => Some(body),
                _ => None,
            },
            None => None,
        };
        let value = |name: &str| {
            body.as_deref()?
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let replay = value("sgw_replay_buffer_bytes").map(|v| v.max(0.0) as u64);
        let delay = value("sgw_runtime_delay_seconds");
        let process = match self.pid {
            Some(pid) => process::sample(Some(pid)).ok(),
            None => value("process_cpu_seconds_total")
                .zip(value("process_resident_memory_bytes"))
                .map(|(cpu_seconds, rss)| process::ProcessSample {
                    cpu_seconds,
                    rss_bytes: rss as u64,
                }),
        };
        (process, replay, delay)
    }
}

/// `host:port` of a `ws://host:port/...` URL.
fn ws_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("ws://")?;
    let authority = rest.split('/').next()?;
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()
}

/// Where a session playing `clip` connects, and its first message.
fn opening(
    dialect: Dialect,
    url: &str,
    clip: &Clip,
    route: Option<&str>,
) -> (String, Option<String>) {
    let ask = Ask {
        route: route.map(str::to_string),
        ..Ask::new(clip.sample_rate)
    };
    (dialect.url(url, &ask), dialect.opening(&ask))
}

/// Runs the load over v1 and returns its report.
pub async fn run(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    run_with_dialect(opts, Dialect::V1).await
}

/// [`run`] with the gateway's sessions speaking `dialect`.
pub async fn run_with_dialect(opts: &LoadOptions, dialect: Dialect) -> anyhow::Result<LoadReport> {
    if opts.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if opts.ramp >= opts.duration {
        bail!("--ramp must be shorter than --duration");
    }
    let fd_limit = raise_fd_limit();
    let clips: Arc<Vec<Clip>> = Arc::new(load_clips(&opts.clips, opts.frame_ms, opts.gap)?);
    let starts: Arc<Vec<(String, Option<String>)>> = Arc::new(
        clips
            .iter()
            .map(|c| opening(dialect, &opts.url, c, opts.route.as_deref()))
            .collect(),
    );
    // Each clip's frames on the dialect's wire, made once for every session playing it.
    let wires: Arc<Vec<Vec<Message>>> = Arc::new(
        clips
            .iter()
            .map(|c| dialect.clip_messages(c.sample_rate, &c.frames))
            .collect(),
    );
    let probe = Probe {
        pid: opts.pid,
        metrics: ws_addr(&opts.url),
    };
    let gateway = Arc::new(PathStats::default());
    let direct = Arc::new(PathStats::default());
    let direct_sessions = opts
        .direct_riva
        .map(|_| opts.direct_sessions.unwrap_or(opts.sessions))
        .unwrap_or(0);

    let t0 = Instant::now() + Duration::from_millis(200);
    let stop_at = t0 + opts.duration;
    let frame = Duration::from_millis(u64::from(opts.frame_ms));
    let mut tasks = tokio::task::JoinSet::new();
    let spread = |i: usize, n: usize| t0 + opts.ramp.mul_f64(i as f64 / n.max(1) as f64);
    for i in 0..opts.sessions {
        let (clips, starts, wires, stats) = (
            clips.clone(),
            starts.clone(),
            wires.clone(),
            gateway.clone(),
        );
        let plan = Plan {
            start_at: spread(i, opts.sessions),
            stop_at,
            frame,
        };
        tasks.spawn(async move {
            let k = i % clips.len();
            let (url, opening) = &starts[k];
            session::ws_session(
                dialect,
                url,
                opening.as_deref(),
                &clips[k],
                &wires[k],
                plan,
                &stats,
            )
            .await;
        });
    }
    if let Some(addr) = opts.direct_riva {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_lazy();
        for i in 0..direct_sessions {
            let (clips, stats, channel) = (clips.clone(), direct.clone(), channel.clone());
            // Interleaved with the gateway's sessions, half a period apart from them.
            let plan = Plan {
                start_at: spread(i, direct_sessions) + frame / 2,
                stop_at,
                frame,
            };
            tasks.spawn(async move {
                let k = i % clips.len();
                session::direct_session(channel, &clips[k], plan, &stats).await;
            });
        }
    }

    // Sample the gateway every second until every session has ended.
    let (baseline, _, _) = probe.sample().await;
    let mut peak_delay: Option<f64> = None;
    let mut samples: Vec<(f64, process::ProcessSample)> = Vec::new();
    let mut replay: Vec<(f64, u64)> = Vec::new();
    if let Some(b) = baseline {
        samples.push((0.0, b));
    }
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut active_peak = 0i64;
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            _ = tick.tick() => {
                let elapsed = t0.elapsed().as_secs_f64();
                let (sample, held, delay) = probe.sample().await;
                if let Some(d) = delay {
                    peak_delay = Some(peak_delay.map_or(d, |p| p.max(d)));
                }
                if let Some(s) = sample {
                    samples.push((elapsed, s));
                }
                if let Some(h) = held {
                    replay.push((elapsed, h));
                }
                active_peak = active_peak.max(gateway.active.load(std::sync::atomic::Ordering::Relaxed));
                if opts.progress {
                    eprint!("\r\x1b[2K{}", report::progress_line(elapsed, &gateway, &direct, direct_sessions > 0, &samples));
                }
            }
        }
    }
    if opts.progress {
        eprintln!();
    }
    let ramp_end = opts.ramp.as_secs_f64();
    let end = opts.duration.as_secs_f64();
    let resources = ResourceReport::from_samples(
        probe.source(),
        &samples,
        &replay,
        peak_delay,
        ramp_end,
        end,
        opts.sessions,
    );
    Ok(LoadReport {
        url: dialect.endpoint(&opts.url),
        dialect,
        sessions: opts.sessions,
        duration_seconds: opts.duration.as_secs_f64(),
        ramp_seconds: opts.ramp.as_secs_f64(),
        frame_ms: opts.frame_ms,
        clips: clips.len(),
        fd_limit,
        active_peak: active_peak.max(0) as u64,
        gateway: PathReport::from_stats(&gateway, opts.sessions),
        direct: (direct_sessions > 0).then(|| PathReport::from_stats(&direct, direct_sessions)),
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_are_cut_into_frames_of_the_given_length() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<i16> = (0..4000).map(|i| (i % 100) as i16).collect();
        std::fs::write(
            dir.path().join("a.wav"),
            crate::client::wav::write_wav(16_000, &samples),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let clips = load_clips(dir.path(), 100, Duration::ZERO).unwrap();
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].frames.len(), 3);
        assert_eq!(clips[0].frames[0].len(), 3200);
        assert_eq!(clips[0].frame_ms_each, vec![100.0, 100.0, 50.0]);
        let gapped = load_clips(dir.path(), 100, Duration::from_millis(250)).unwrap();
        assert_eq!(
            gapped[0].frame_ms_each,
            vec![100.0, 100.0, 50.0, 100.0, 100.0, 100.0]
        );
        assert!(gapped[0].frames[5].iter().all(|b| *b == 0));
        assert!(load_clips(&dir.path().join("notes.txt"), 100, Duration::ZERO).is_err());
    }

    #[test]
    fn ws_urls_give_the_metrics_address() {
        assert_eq!(
            ws_addr("ws://127.0.0.1:8080/v1/audio/stream"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(ws_addr("wss://x/"), None);
    }
}
