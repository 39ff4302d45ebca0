//! Runs chaos scenarios against real processes: `sim-backend` processes (killed with
//! SIGKILL, restarted, misbehaving), the fault-injecting proxy in front of some of them,
//! and the gateway itself as a child process, with marker-audio clients streaming at
//! real time through its v1 contract or, if the scenario says `dialect = "deepgram"` or
//! `"openai-realtime"`, its Deepgram-compatible one (`/v1/listen`) or OpenAI's realtime
//! one (`/v1/realtime`). Only the wire differs ([`Dialect`]'s methods, shared with `eval`
//! and `load`); the session loop and the judging are the same for all.
//!
//! Marker audio survives only untouched: any resampler smooths its ±k samples away. So a
//! realtime session sends it at 24 kHz, `audio/pcm`'s own rate (its writer then passes it
//! through), and a realtime scenario runs its back ends at 24 kHz too
//! (`SGW_RIVA__SAMPLE_RATE`, a sim's `triton_sample_rate`), so the gateway does not
//! resample it either.
//!
//! Marker audio names itself (block `k` → word `w{k}` at the zero-compute back end), so
//! the fault-free transcript is known by construction: `w1 … wN` for N blocks sent. A
//! completed session whose finals say anything else lost or repeated audio.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use super::report::ScenarioReport;
use super::scenario::{Action, BackendSpec, Dialect, Scenario};
use crate::client::dialect::Ask;
use crate::client::events::ClientEvent;
use sgw_testkit::proxy::{Fault, FaultProxy};
use sgw_testkit::sim::marker::{marker_audio, marker_word};
use speech_gateway::config::BackendProtocol;
use speech_gateway::telemetry::exposition;

/// Marker block length: one word per block.
const BLOCK_MS: u64 = 500;
const SAMPLE_RATE: u32 = 16_000;
/// Realtime's marker audio: `audio/pcm`'s rate, so nothing resamples it on the way out.
const REALTIME_RATE: u32 = crate::client::openai_realtime::RATE;
const FRAME_MS: u64 = 100;
/// A client with no close this long after its audio ended is hung.
const HANG_AFTER: Duration = Duration::from_secs(20);

/// Gateway settings every scenario starts from (a scenario's `[gateway]` overrides them):
/// quick health probes and breaker cool-down, a short stall timeout.
const CHAOS_DEFAULTS: &[(&str, &str)] = &[
    ("SGW_LOG_LEVEL", "info"),
    // The chaos suite measures resilience; auth is tested on its own (tests/security.rs).
    ("SGW_AUTH__ENABLED", "false"),
    ("SGW_HEALTH__INTERVAL", "500ms"),
    ("SGW_HEALTH__TIMEOUT", "500ms"),
    ("SGW_SESSION__STALL_TIMEOUT", "1s"),
    ("SGW_SESSION__DRAIN_TIMEOUT", "1s"),
    ("SGW_BREAKER__OPEN_FOR", "2s"),
    ("SGW_RIVA__CONNECT_TIMEOUT", "1s"),
    ("SGW_RIVA__OPEN_TIMEOUT", "1s"),
    ("SGW_TRITON__CONNECT_TIMEOUT", "1s"),
    ("SGW_TRITON__OPEN_TIMEOUT", "1s"),
];

/// How one client session ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SessionEnd {
    Completed,
    /// Told a non-recoverable error and closed.
    Failed {
        code: String,
    },
    /// Refused before the upgrade.
    Refused {
        status: u16,
    },
    /// Closed without the contract's goodbye: no error, and not 1000 (or, Deepgram, 1000
    /// without `Metadata` before it).
    Dropped {
        close: Option<u16>,
    },
    Hung,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionResult {
    pub end: SessionEnd,
    pub blocks_sent: usize,
    /// Blocks whose word never came back in a final (completed sessions only).
    pub lost_blocks: usize,
    /// Words that came back more than once or out of order.
    pub repeated_words: usize,
    pub failover_statuses: usize,
    pub audio_gap_statuses: usize,
    /// Longest wait between two messages from the gateway while audio flowed.
    pub longest_silence_ms: u64,
}

/// A back-end process and, if asked, the proxy in front of it.
struct BackendProc {
    spec: BackendSpec,
    child: Option<Child>,
    /// Where the sim listens.
    addr: SocketAddr,
    proxy: Option<FaultProxy>,
}

impl BackendProc {
    /// The address the gateway dials.
    fn public_addr(&self) -> SocketAddr {
        self.proxy
            .as_ref()
            .map_or(self.addr, FaultProxy::local_addr)
    }

    fn url(&self) -> String {
        match self.spec.protocol {
            BackendProtocol::Riva => format!("riva://{}", self.public_addr()),
            BackendProtocol::Triton => format!("triton://{}/asr_stream", self.public_addr()),
            BackendProtocol::Deepgram => format!("deepgram://{}", self.public_addr()),
            BackendProtocol::OpenAi => unreachable!("Scenario::check refuses openai back ends"),
        }
    }
}

/// The programs a scenario runs: the gateway under test and the sim back end.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `speech-gateway` binary (run as `speech-gateway serve`).
    pub gateway: PathBuf,
    /// The test kit's `sim-backend` binary.
    pub sim_backend: PathBuf,
}

impl Programs {
    /// The workspace's binaries beside the running one (`target/<profile>/`).
    pub fn beside_this_one() -> Self {
        Self {
            gateway: sgw_testkit::binary("speech-gateway"),
            sim_backend: sgw_testkit::binary("sim-backend"),
        }
    }
}

/// Starts `sim-backend` and reads the address it printed.
async fn start_sim(
    exe: &Path,
    spec: &BackendSpec,
    behaviour: &str,
    addr: SocketAddr,
) -> anyhow::Result<(Child, SocketAddr)> {
    let flag = match spec.protocol {
        BackendProtocol::Riva => "--riva",
        BackendProtocol::Triton => "--triton",
        BackendProtocol::Deepgram => {
            anyhow::bail!("the sim back end speaks riva and triton; deepgram is not simulated")
        }
        BackendProtocol::OpenAi => unreachable!("Scenario::check refuses openai back ends"),
    };
    let mut cmd = Command::new(exe);
    cmd.arg(flag)
        .arg(addr.to_string())
        .arg("--behaviour")
        .arg(behaviour);
    if let Some(d) = &spec.delay {
        cmd.arg("--delay").arg(d);
    }
    if let Some(d) = &spec.fail_after {
        cmd.arg("--fail-after").arg(d);
    }
    if let Some(rate) = spec.triton_sample_rate {
        cmd.arg("--triton-sample-rate").arg(rate.to_string());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| anyhow!("sim-backend `{}` did not start in 10 s", spec.name))??
        .ok_or_else(|| anyhow!("sim-backend `{}` exited at start", spec.name))?;
    let bound: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("unexpected sim-backend output: {line}"))?;
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, bound))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Runs every scenario; writes `report.md` and `report.json` into `out`.
pub async fn run_all(
    programs: &Programs,
    scenarios: &[Scenario],
    out: &Path,
) -> anyhow::Result<Vec<ScenarioReport>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut reports = Vec::new();
    for s in scenarios {
        eprintln!("chaos: {} — {}", s.name, s.description);
        let r = run_one(programs, s, out)
            .await
            .with_context(|| format!("scenario {}", s.name))?;
        eprintln!(
            "chaos: {} {} (completed {}/{}, failed {}, refused {}, hung {}, lost {} ms, failovers {})",
            s.name,
            if r.passed { "passed" } else { "FAILED" },
            r.completed,
            r.sessions,
            r.failed,
            r.refused,
            r.hung,
            r.audio_lost_ms,
            r.failovers
        );
        for p in &r.problems {
            eprintln!("chaos:   {p}");
        }
        reports.push(r);
    }
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&reports)?,
    )?;
    std::fs::write(out.join("report.md"), super::report::markdown(&reports))?;
    Ok(reports)
}

async fn run_one(programs: &Programs, s: &Scenario, out: &Path) -> anyhow::Result<ScenarioReport> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let mut procs: HashMap<String, BackendProc> = HashMap::new();
    for spec in &s.backends {
        let (child, addr) = start_sim(&programs.sim_backend, spec, &spec.behaviour, any).await?;
        let proxy = if spec.proxy {
            let listener = tokio::net::TcpListener::bind(any).await?;
            Some(FaultProxy::start(listener, addr)?)
        } else {
            None
        };
        procs.insert(
            spec.name.clone(),
            BackendProc {
                spec: spec.clone(),
                child: Some(child),
                addr,
                proxy,
            },
        );
    }
    let route: Vec<String> = s
        .route
        .iter()
        .map(|n| match procs.get(n) {
            Some(p) => p.url(),
            None => n.clone(), // the tier separator
        })
        .collect();
    let urls: HashMap<String, String> = procs.iter().map(|(n, p)| (n.clone(), p.url())).collect();
    let port = free_port()?;
    let gw_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::fs::File::create(out.join(format!("{}.gateway.log", s.name)))?;
    let mut cmd = Command::new(&programs.gateway);
    cmd.arg("serve").current_dir(out); // not the checkout: no stray .env is read
    for (k, _) in std::env::vars() {
        if k.starts_with(speech_gateway::config::ENV_PREFIX) {
            cmd.env_remove(k);
        }
    }
    for (k, v) in CHAOS_DEFAULTS {
        cmd.env(k, v);
    }
    cmd.env("SGW_LISTEN", gw_addr.to_string())
        .env("SGW_ROUTES__DEFAULT", route.join(","));
    for (k, v) in &s.gateway {
        cmd.env(k, v);
    }
    let mut gateway = cmd
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", programs.gateway.display()))?;
    wait_up(gw_addr, &mut gateway).await?;

    let blocks = (s.audio.as_millis() as u64 / BLOCK_MS) as usize;
    let dialect = s.dialect;
    let ws_url = dialect.url(&format!("ws://{gw_addr}"), &ask(dialect));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..s.sessions {
        let url = ws_url.clone();
        let delay = s.stagger * i as u32;
        clients.spawn(async move {
            tokio::time::sleep(delay).await;
            run_session(dialect, &url, blocks).await
        });
    }
    let mut faults = s.faults.clone();
    faults.sort_by_key(|f| f.at);
    for f in &faults {
        tokio::time::sleep_until((started + f.at).into()).await;
        let p = procs.get_mut(&f.target).expect("checked at load");
        eprintln!(
            "chaos:   {:>6.2} s {:?} {}",
            started.elapsed().as_secs_f64(),
            f.action,
            f.target
        );
        match f.action {
            Action::Kill => {
                if let Some(mut c) = p.child.take() {
                    c.start_kill()?; // SIGKILL
                    let _ = c.wait().await;
                }
            }
            Action::Restart => {
                if let Some(mut c) = p.child.take() {
                    c.start_kill()?;
                    let _ = c.wait().await;
                }
                let behaviour = f
                    .behaviour
                    .clone()
                    .unwrap_or_else(|| p.spec.behaviour.clone());
                let (child, _) =
                    start_sim(&programs.sim_backend, &p.spec, &behaviour, p.addr).await?;
                p.child = Some(child);
            }
            Action::Reset => p.proxy.as_ref().expect("checked").set_fault(Fault::Reset),
            Action::Blackhole => p
                .proxy
                .as_ref()
                .expect("checked")
                .set_fault(Fault::Blackhole),
            Action::Delay => p
                .proxy
                .as_ref()
                .expect("checked")
                .set_fault(Fault::Delay(f.delay.expect("checked"))),
            Action::Heal => p.proxy.as_ref().expect("checked").set_fault(Fault::None),
        }
    }
    let mut results = Vec::new();
    while let Some(r) = clients.join_next().await {
        results.push(r.context("a client task panicked")?);
    }
    let wall = started.elapsed().as_secs_f64();
    let metrics = http_get(gw_addr, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    let _ = gateway.start_kill();
    let _ = gateway.wait().await;
    drop(procs);
    Ok(judge(s, &results, &metrics, &urls, wall))
}

/// Waits for the gateway's `/health`, then (briefly) for `/ready`.
async fn wait_up(addr: SocketAddr, gateway: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = gateway.try_wait()? {
            bail!("the gateway exited at start ({status}); see its log");
        }
        if let Ok((200, _)) = http_get(addr, "/health").await {
            break;
        }
        if Instant::now() > deadline {
            bail!("the gateway did not answer /health in 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Scenarios may start with a broken back end: readiness is not required.
    for _ in 0..40 {
        if let Ok((200, _)) = http_get(addr, "/ready").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A server text message as the session loop reads it, whatever the dialect.
#[derive(Debug, PartialEq)]
enum Heard {
    /// A final's text (marker words).
    Final(String),
    /// A status notice's state (`failover`, `audio_gap`, …).
    Status(String),
    Error {
        code: String,
        recoverable: bool,
    },
    /// The message the contract sends just before a normal close (Deepgram's `Metadata`).
    Goodbye,
    Other,
}

/// What every chaos session asks: marker audio at 16 kHz (realtime: 24 kHz) on the
/// default route, no punctuation (marker words are bare).
fn ask(dialect: Dialect) -> Ask {
    let rate = match dialect {
        Dialect::OpenaiRealtime => REALTIME_RATE,
        Dialect::V1 | Dialect::Deepgram => SAMPLE_RATE,
    };
    Ask {
        route: Some("default".into()),
        punctuate: false,
        ..Ask::new(rate)
    }
}

/// The wire is the dialect's ([`crate::client::dialect`]); this is what a chaos session
/// keeps of a message (read statelessly; sessions read with their
/// [`crate::client::dialect::Reader`]).
#[cfg(test)]
fn hear(dialect: Dialect, text: &str) -> Heard {
    heard(dialect.read(text))
}

fn heard(event: ClientEvent) -> Heard {
    match event {
        ClientEvent::Final(f) => Heard::Final(f.text.into_owned()),
        ClientEvent::Status(st) => Heard::Status(st.state.into_owned()),
        ClientEvent::Error(e) => Heard::Error {
            code: e.code.into_owned(),
            recoverable: e.recoverable,
        },
        ClientEvent::Metadata => Heard::Goodbye,
        _ => Heard::Other,
    }
}

/// One client: marker audio at real time in 100 ms frames, then the dialect's end
/// (`end` / `CloseStream` / the commit), reading everything until the close (realtime:
/// until done, then the client closes).
pub async fn run_session(dialect: Dialect, url: &str, blocks: usize) -> SessionResult {
    let mut result = SessionResult {
        end: SessionEnd::Hung,
        blocks_sent: blocks,
        lost_blocks: 0,
        repeated_words: 0,
        failover_statuses: 0,
        audio_gap_statuses: 0,
        longest_silence_ms: 0,
    };
    let ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            result.end = SessionEnd::Refused {
                status: resp.status().as_u16(),
            };
            return result;
        }
        Err(_) => {
            result.end = SessionEnd::Refused { status: 0 };
            return result;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let ask = ask(dialect);
    let (mut wire, mut reader) = dialect.session(&ask);
    let samples_per_block = (u64::from(ask.sample_rate) * BLOCK_MS / 1000) as usize;
    let audio = marker_audio(1, blocks, samples_per_block);
    let frame_bytes = (u64::from(ask.sample_rate) * FRAME_MS / 1000 * 2) as usize;
    // Sends everything, then hands the sink back (for realtime's close) and never ends.
    let (sink_back, sink_returned) = tokio::sync::oneshot::channel();
    let writer = async move {
        let send_all = async {
            if let Some(opening) = dialect.opening(&ask) {
                tx.send(Message::text(opening)).await?;
            }
            let t0 = tokio::time::Instant::now();
            for (i, frame) in audio.chunks(frame_bytes).enumerate() {
                tokio::time::sleep_until(t0 + Duration::from_millis(FRAME_MS * i as u64)).await;
                tx.send(wire.audio(frame.to_vec().into())).await?;
            }
            for message in wire.closing() {
                tx.send(message).await?;
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        };
        // A send fails once the gateway has closed: the reader reports why.
        if send_all.await.is_ok() {
            let _ = sink_back.send(tx);
        }
        // Keep the sink alive until the reader is done.
        std::future::pending::<()>().await
    };
    let audio_ms = blocks as u64 * BLOCK_MS;
    let reader = async {
        let mut words: Vec<u16> = Vec::new();
        // A fatal error's code.
        let mut error_code: Option<String> = None;
        let mut goodbye = false;
        let mut last = Instant::now();
        let t0 = Instant::now();
        let end = loop {
            let msg = rx.next().await;
            let now = Instant::now();
            if now.duration_since(t0) < Duration::from_millis(audio_ms) {
                result.longest_silence_ms = result
                    .longest_silence_ms
                    .max(now.duration_since(last).as_millis() as u64);
            }
            last = now;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    match heard(reader.read(t.as_str())) {
                        Heard::Final(text) => words
                            .extend(text.split_whitespace().map(|w| marker_word(w).unwrap_or(0))),
                        Heard::Status(state) if state == "failover" => {
                            result.failover_statuses += 1
                        }
                        Heard::Status(state) if state == "audio_gap" => {
                            result.audio_gap_statuses += 1
                        }
                        Heard::Error {
                            code,
                            recoverable: false,
                        } => error_code = Some(code),
                        Heard::Goodbye => goodbye = true,
                        _ => {}
                    }
                    if reader.done() {
                        // Realtime: the answer to the commit came (or the session never
                        // started); the client closes.
                        break match error_code.as_ref() {
                            Some(c) => SessionEnd::Failed { code: c.clone() },
                            None => SessionEnd::Completed,
                        };
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    break if let Some(c) = &error_code {
                        SessionEnd::Failed { code: c.clone() }
                    } else if code == Some(1000) && (goodbye || !dialect.says_goodbye()) {
                        SessionEnd::Completed
                    } else {
                        SessionEnd::Dropped { close: code }
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    break match error_code.as_ref() {
                        Some(c) => SessionEnd::Failed { code: c.clone() },
                        None => SessionEnd::Dropped { close: None },
                    };
                }
            }
        };
        (end, words)
    };
    let deadline = Duration::from_millis(audio_ms) + HANG_AFTER;
    let outcome = tokio::select! {
        r = tokio::time::timeout(deadline, reader) => r.ok(),
        () = writer => None,
    };
    let Some((end, words)) = outcome else {
        result.end = SessionEnd::Hung;
        return result;
    };
    if dialect == Dialect::OpenaiRealtime
        && let Ok(mut tx) = sink_returned.await
    {
        // The client ends a realtime session; the server's answering close is not awaited.
        let _ = tx.send(Message::Close(None)).await;
    }
    if end == SessionEnd::Completed {
        let (lost, repeated) = compare(&words, blocks);
        result.lost_blocks = lost;
        result.repeated_words = repeated;
    }
    result.end = end;
    result
}

/// Against the fault-free transcript `1..=blocks`: blocks missing, and words repeated
/// or out of order (or not marker words at all).
pub fn compare(words: &[u16], blocks: usize) -> (usize, usize) {
    let mut seen = vec![false; blocks + 1];
    let mut repeated = 0;
    let mut prev = 0u16;
    for &w in words {
        let k = w as usize;
        if k == 0 || k > blocks || seen[k] || w <= prev {
            repeated += 1;
        }
        if (1..=blocks).contains(&k) {
            seen[k] = true;
        }
        prev = prev.max(w);
    }
    let lost = (1..=blocks).filter(|&k| !seen[k]).count();
    (lost, repeated)
}

/// Sums every sample of `name` whose labels contain `filter`.
fn metric_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn judge(
    s: &Scenario,
    results: &[SessionResult],
    metrics: &str,
    urls: &HashMap<String, String>,
    wall: f64,
) -> ScenarioReport {
    let count = |f: &dyn Fn(&SessionEnd) -> bool| results.iter().filter(|r| f(&r.end)).count();
    let completed = count(&|e| *e == SessionEnd::Completed);
    let failed = count(&|e| matches!(e, SessionEnd::Failed { .. }));
    let refused = count(&|e| matches!(e, SessionEnd::Refused { .. }));
    let dropped = count(&|e| matches!(e, SessionEnd::Dropped { .. }));
    let hung = count(&|e| *e == SessionEnd::Hung);
    let lost_blocks: usize = results.iter().map(|r| r.lost_blocks).sum();
    let repeated: usize = results.iter().map(|r| r.repeated_words).sum();
    let failovers = metric_sum(metrics, "sgw_failovers_total", "") as u64;
    let opened = metric_sum(metrics, "sgw_breaker_transitions_total", "to=\"opened\"") as u64;
    let closed = metric_sum(metrics, "sgw_breaker_transitions_total", "to=\"closed\"") as u64;
    let mut reopens = HashMap::new();
    for reason in ["error", "stall", "ended", "rotation"] {
        let n = metric_sum(
            metrics,
            "sgw_stream_reopens_total",
            &format!("reason=\"{reason}\""),
        ) as u64;
        if n > 0 {
            reopens.insert(reason.to_string(), n);
        }
    }
    let e = &s.expect;
    let mut problems = Vec::new();
    if hung > 0 {
        problems.push(format!("{hung} clients hung"));
    }
    if dropped > 0 {
        problems.push(format!(
            "{dropped} sessions closed without a final or an error"
        ));
    }
    if lost_blocks > 0 || repeated > 0 {
        problems.push(format!(
            "completed sessions lost {} ms of audio and repeated {repeated} words",
            lost_blocks as u64 * BLOCK_MS
        ));
    }
    if failed != e.failed {
        let codes: Vec<_> = results
            .iter()
            .filter_map(|r| match &r.end {
                SessionEnd::Failed { code } => Some(code.as_str()),
                _ => None,
            })
            .collect();
        problems.push(format!(
            "{failed} sessions failed ({codes:?}), expected {}",
            e.failed
        ));
    }
    if refused != e.refused {
        problems.push(format!(
            "{refused} sessions refused, expected {}",
            e.refused
        ));
    }
    if failovers < e.min_failovers {
        problems.push(format!(
            "{failovers} failovers, expected at least {}",
            e.min_failovers
        ));
    }
    if e.breaker_opened && opened == 0 {
        problems.push("no breaker opened".into());
    }
    if e.breaker_closed && closed == 0 {
        problems.push("no breaker closed again".into());
    }
    let mut opens = BTreeMap::new();
    for (name, bounds) in &e.opens {
        let url = urls.get(name).map_or("", String::as_str);
        let n = metric_sum(
            metrics,
            "sgw_backend_requests_total",
            &format!("backend=\"{url}\",outcome=\"ok\""),
        ) as u64;
        opens.insert(name.clone(), n);
        if bounds.min.is_some_and(|min| n < min) || bounds.max.is_some_and(|max| n > max) {
            problems.push(format!(
                "{n} streams opened on `{name}`, expected {}..={}",
                bounds.min.map_or(String::new(), |m| m.to_string()),
                bounds.max.map_or(String::new(), |m| m.to_string())
            ));
        }
    }
    ScenarioReport {
        name: s.name.clone(),
        description: s.description.clone(),
        sessions: results.len(),
        completed,
        failed,
        refused,
        dropped,
        hung,
        audio_lost_ms: lost_blocks as u64 * BLOCK_MS,
        repeated_words: repeated,
        failovers,
        failover_p50_ms: exposition::histogram_quantile(metrics, "sgw_failover_seconds", 0.5)
            .map(|s| s * 1000.0),
        failover_p99_ms: exposition::histogram_quantile(metrics, "sgw_failover_seconds", 0.99)
            .map(|s| s * 1000.0),
        longest_silence_ms: results
            .iter()
            .map(|r| r.longest_silence_ms)
            .max()
            .unwrap_or(0),
        breaker_opened: opened,
        breaker_closed: closed,
        reopens,
        opens,
        wall_seconds: wall,
        passed: problems.is_empty(),
        problems,
    }
}

/// The scenario files in `dir` (sorted), or the one file named.
pub fn load_scenarios(path: &Path, only: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let scenarios = files
        .iter()
        .map(|f| Scenario::load(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let picked: Vec<_> = scenarios
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();
    if picked.is_empty() {
        bail!("no scenario to run in {}", path.display());
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_are_heard_alike() {
        let v1 = [
            r#"{"type":"final","text":"w1 w2","confidence":1.0,"is_end_of_utterance":true,"timestamp_ms":1000,"duration_ms":1000}"#,
            r#"{"type":"partial","text":"w3","confidence":0.0,"timestamp_ms":1500}"#,
            r#"{"type":"status","state":"failover","message":"m"}"#,
            r#"{"type":"error","code":"MODEL_UNAVAILABLE","message":"m","recoverable":false}"#,
        ];
        let deepgram = [
            r#"{"type":"Results","is_final":true,"start":0.0,"duration":1.0,"channel":{"alternatives":[{"transcript":"w1 w2"}]}}"#,
            r#"{"type":"Results","is_final":false,"start":1.0,"duration":0.5,"channel":{"alternatives":[{"transcript":"w3"}]}}"#,
            r#"{"type":"GatewayStatus","state":"failover","message":"m"}"#,
            r#"{"type":"Error","code":"MODEL_UNAVAILABLE","description":"m"}"#,
        ];
        let heard = |d: Dialect, m: &[&str]| m.iter().map(|t| hear(d, t)).collect::<Vec<_>>();
        let (a, b) = (heard(Dialect::V1, &v1), heard(Dialect::Deepgram, &deepgram));
        assert_eq!(a, b);
        assert_eq!(a[0], Heard::Final("w1 w2".into()));
        assert_eq!(a[1], Heard::Other);
        assert_eq!(a[2], Heard::Status("failover".into()));
        assert!(matches!(
            &a[3],
            Heard::Error {
                recoverable: false,
                ..
            }
        ));
        assert_eq!(
            hear(Dialect::Deepgram, r#"{"type":"Metadata","duration":8.0}"#),
            Heard::Goodbye
        );
    }

    #[test]
    fn compare_finds_lost_repeated_and_foreign_words() {
        assert_eq!(compare(&[1, 2, 3, 4], 4), (0, 0));
        assert_eq!(compare(&[1, 2, 4], 4), (1, 0));
        assert_eq!(compare(&[1, 2, 2, 3, 4], 4), (0, 1));
        assert_eq!(compare(&[1, 3, 2, 4], 4), (0, 1));
        assert_eq!(compare(&[1, 0, 2, 3, 4], 4), (0, 1));
        assert_eq!(compare(&[], 3), (3, 0));
    }
}
