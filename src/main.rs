//! The `speech-gateway` binary: `serve` runs the gateway; `transcribe` streams a WAV file
//! through a running gateway as a client would and prints the transcript and latencies;
//! `sim-backend` runs the zero-compute test back end ([`speech_gateway::sim`]); `healthcheck`
//! is the container image's liveness probe.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use figment::value::{Dict, Value};

use speech_gateway::client::transcribe::{self, LiveLine, TranscribeOptions};
use speech_gateway::client::wav;
use speech_gateway::config::Config;
use speech_gateway::sim::{Behaviour, SimOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "speech-gateway",
    version,
    about = "Streaming speech-recognition gateway for NVIDIA Riva"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Stream a WAV file (mono, 16-bit, any rate) through a gateway at real time.
    Transcribe(TranscribeArgs),
    /// A TEST TOOL, NOT A RECOGNISER: a zero-compute back end speaking Riva and/or Triton
    /// streaming gRPC, whose words come from the audio's content (see `--help`).
    #[command(long_about = SIM_ABOUT)]
    SimBackend(SimArgs),
    /// Sign a JWT for development and tests (HS256 secret file, or RS256/ES256 private key
    /// PEM, e.g. from scripts/gen-certs.sh); prints the token.
    Token(TokenArgs),
    /// Stream the golden clips (golden/manifest.toml) through a gateway and judge WER,
    /// latency and words on silence against each clip's ceilings; exits 1 if any is broken.
    Eval(EvalArgs),
    /// Load a gateway with N concurrent real-time sessions for a bounded time and report
    /// latencies, errors and the gateway's CPU and memory.
    Load(LoadArgs),
    /// Run the chaos scenarios (chaos/scenarios/*.toml) against real processes: this
    /// binary as gateway and as sim back ends, with faults injected; exits 1 if any fails.
    Chaos(ChaosArgs),
    /// Exit 0 when the gateway's `/health` (or any plain-HTTP URL) answers 200, else 1: the
    /// container image's HEALTHCHECK, which has no curl.
    Healthcheck(HealthcheckArgs),
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The URL to probe: http:// or https://.
    #[arg(long, default_value = "http://127.0.0.1:8080/health")]
    url: String,
    /// For https://: a CA certificate file to trust besides the system's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    timeout: Duration,
}

#[derive(Args)]
struct TokenArgs {
    /// HS256 secret file, or an RSA / P-256 private key in PEM.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// `sub` claim.
    #[arg(long)]
    sub: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    aud: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    iss: Option<String>,
    /// `kid` header (selects a key of a JWKS).
    #[arg(long)]
    kid: Option<String>,
    /// Lifetime (`exp` = now + ttl).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: Duration,
}

#[derive(Args)]
struct EvalArgs {
    /// The golden manifest.
    #[arg(long, default_value = "golden/manifest.toml")]
    manifest: PathBuf,
    /// The gateway's v1 endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/audio/stream")]
    url: String,
    /// Pacing: 1 = real time, 4 = four times as fast.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Clips streamed at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Route (the contract's `model`); repeat to run every clip on several routes.
    #[arg(long = "route", value_name = "NAME", default_value = "default")]
    routes: Vec<String>,
    /// Only clips with one of these tags; repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Only these clip ids; repeatable.
    #[arg(long = "only", value_name = "ID")]
    only: Vec<String>,
    /// Reviewed transcripts (DIR/ROUTE/ID.txt), compared with each run (drift).
    #[arg(long, default_value = "golden/expected")]
    expected: PathBuf,
    /// Write this run's transcripts into the expected directory (then review the diff).
    #[arg(long)]
    write_expected: bool,
    /// Where report.json, report.md and latency.svg go.
    #[arg(long, default_value = "target/eval")]
    out: PathBuf,
    /// Bearer token (also `SGW_TOKEN`).
    #[arg(long, env = "SGW_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct LoadArgs {
    /// The gateway's v1 endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/audio/stream")]
    url: String,
    /// Concurrent real-time sessions.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// From the first session's start to every session's `end`, e.g. 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    duration: Duration,
    /// Session starts are spread evenly over this.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    ramp: Duration,
    /// A directory of mono 16-bit WAV clips (or one file), played in a loop.
    #[arg(long, default_value = "golden/clips")]
    clips: PathBuf,
    /// Audio per frame, in ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=500))]
    frame_ms: u32,
    /// Silence after each pass through a clip (a talker's pause).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    gap: Duration,
    /// Route (the contract's `model`).
    #[arg(long)]
    route: Option<String>,
    /// The gateway's process id: CPU and RSS from /proc/PID (else from its /metrics).
    #[arg(long)]
    pid: Option<u32>,
    /// Also stream straight to this Riva back end (HOST:PORT) in the same run: the baseline
    /// that shows the gateway's added latency.
    #[arg(long, value_name = "ADDR")]
    direct_riva: Option<SocketAddr>,
    /// Sessions of the direct baseline (default: --sessions).
    #[arg(long)]
    direct_sessions: Option<usize>,
    /// Where load.json and load.md go.
    #[arg(long, default_value = "target/load")]
    out: PathBuf,
}

#[derive(Args)]
struct ChaosArgs {
    /// A scenario file, or a directory of them.
    #[arg(long, default_value = "chaos/scenarios")]
    scenarios: PathBuf,
    /// Run only these scenarios (file stems); repeatable.
    #[arg(long = "only", value_name = "NAME")]
    only: Vec<String>,
    /// Where report.md, report.json and the gateways' logs go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
}

const SIM_ABOUT: &str = "\
A TEST TOOL, NOT A RECOGNISER. A zero-compute back end that speaks Riva StreamingRecognize
(with gRPC health) and Triton ModelStreamInfer (a decoupled sequence model) on real gRPC, so
the gateway can be tested and loaded without a GPU. Its words come from the audio alone:

  marker audio (block k is +k,-k,+k,... ; see speech_gateway::sim::marker) comes back as one
  word `wk` per block, timed by its samples: lost or duplicated audio shows in the words;
  any other audio gives one word per --word-ms of stream, cycling through --transcript
  (or a built-in sentence); quiet audio (every |sample| < 64) gives none.

A final every --final-words words and at the end of the stream. Prints one line per listener
(`riva listening on ADDR`, `triton listening on ADDR`; port 0 picks a free port) and runs until
SIGTERM or SIGINT. The behaviour is fixed for the life of the process: restart it to change it.";

#[derive(Args)]
#[command(group(ArgGroup::new("listeners").required(true).multiple(true).args(["riva", "triton"])))]
struct SimArgs {
    /// Serve Riva (and gRPC health) on this address, e.g. 127.0.0.1:50051.
    #[arg(long, value_name = "ADDR")]
    riva: Option<SocketAddr>,
    /// Serve Triton (KServe v2) on this address, e.g. 127.0.0.1:8001.
    #[arg(long, value_name = "ADDR")]
    triton: Option<SocketAddr>,
    /// The Triton model served (decoupled, sequence batching).
    #[arg(long, default_value = "asr_stream")]
    triton_model: String,
    /// Sample rate of the Triton model's AUDIO input.
    #[arg(long, default_value_t = 16_000)]
    triton_sample_rate: u32,
    /// The model name Riva lists.
    #[arg(long, default_value = "sim-asr")]
    riva_model: String,
    /// How the process (mis)behaves, for its whole life.
    #[arg(long, value_enum, default_value_t = BehaviourArg::Normal)]
    behaviour: BehaviourArg,
    /// `slow`: added delay of every response.
    #[arg(long, value_parser = parse_duration, default_value = "300ms")]
    delay: Duration,
    /// `fail-after`: stream audio after which a stream fails with UNAVAILABLE.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    fail_after: Duration,
    /// Stream time per word of transcript mode, in ms.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    word_ms: u64,
    /// Words per final.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    final_words: u64,
    /// Transcript-mode words (whitespace-separated), used in turn.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BehaviourArg {
    /// Answer every request.
    Normal,
    /// Every call fails with UNAVAILABLE; health says not serving.
    Unavailable,
    /// Accept streams, read them, never answer; health says serving.
    Hang,
    /// Delay every response by --delay, in order.
    Slow,
    /// Fail each stream with UNAVAILABLE after --fail-after of its audio.
    FailAfter,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (also `SGW_CONFIG`).
    #[arg(long, env = "SGW_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// A back end of the default route, e.g. riva://127.0.0.1:50051; repeat for several (they share sessions, and a session fails over between them).
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
}

#[derive(Args)]
struct TranscribeArgs {
    /// The WAV file to stream.
    file: PathBuf,
    /// The gateway's v1 endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/audio/stream")]
    url: String,
    /// Pacing: 1 = real time, 2 = twice as fast, 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Bearer token (also `SGW_TOKEN`).
    #[arg(long, env = "SGW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For wss:// URLs: a CA certificate file to trust (e.g. certs/dev/ca.pem).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Language code, or auto.
    #[arg(long)]
    language: Option<String>,
    /// Route (the contract's `model`), e.g. default or offline.
    #[arg(long)]
    model: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    // `.env` first, so SGW_* from it reach both clap and the config loader.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Transcribe(args) => runtime.block_on(run_transcribe(args)),
        Command::SimBackend(args) => runtime.block_on(sim_backend(args)),
        Command::Chaos(args) => runtime.block_on(chaos(args)),
        Command::Token(args) => {
            let token = speech_gateway::security::auth::mint(
                &args.key,
                &speech_gateway::security::auth::MintOptions {
                    subject: args.sub,
                    audience: args.aud,
                    issuer: args.iss,
                    kid: args.kid,
                    ttl: args.ttl,
                },
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Healthcheck(args) => runtime.block_on(healthcheck(args)),
        Command::Eval(args) => runtime.block_on(eval(args)),
        Command::Load(args) => runtime.block_on(load(args)),
    }
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    use speech_gateway::chaos::runner;
    let scenarios = runner::load_scenarios(&args.scenarios, &args.only)?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let reports = runner::run_all(&exe, &scenarios, &args.out).await?;
    print!("{}", speech_gateway::chaos::report::markdown(&reports));
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        eprintln!("chaos: failed: {}", failed.join(", "));
        std::process::exit(1);
    }
    Ok(())
}

async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    use speech_gateway::golden::{self, EvalOptions, EvalReport, Manifest};
    let manifest = Manifest::load(&args.manifest)?;
    let expected = args.expected.is_dir() || args.write_expected;
    let opts = EvalOptions {
        url: args.url,
        speed: args.speed,
        concurrency: args.concurrency,
        routes: args.routes,
        tags: args.tags,
        only: args.only,
        token: args.token,
        expected_dir: expected.then_some(args.expected),
        write_expected: args.write_expected,
    };
    let results = golden::eval::run(&manifest, &opts).await?;
    let report = EvalReport::new(
        &opts.url,
        opts.speed,
        opts.concurrency,
        &opts.routes,
        results,
    );
    golden::write_reports(&report, &args.out)?;
    print!("{}", report.markdown());
    eprintln!("eval: reports in {}", args.out.display());
    if !report.failures.is_empty() {
        eprintln!(
            "eval: {} clip(s) broke a ceiling or failed:",
            report.failures.len()
        );
        for f in &report.failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    use speech_gateway::load::{self, LoadOptions};
    let opts = LoadOptions {
        url: args.url,
        sessions: args.sessions,
        duration: args.duration,
        ramp: args.ramp,
        clips: args.clips,
        frame_ms: args.frame_ms,
        gap: args.gap,
        route: args.route,
        pid: args.pid,
        direct_riva: args.direct_riva,
        direct_sessions: args.direct_sessions,
        progress: true,
    };
    let report = load::run(&opts).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    std::fs::write(
        args.out.join("load.json"),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    std::fs::write(args.out.join("load.md"), report.markdown())?;
    print!("{}", report.markdown());
    eprintln!("load: reports in {}", args.out.display());
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut overrides = Dict::new();
    if let Some(listen) = args.listen {
        overrides.insert("listen".into(), Value::from(listen));
    }
    if !args.backends.is_empty() {
        let mut routes = Dict::new();
        routes.insert("default".into(), Value::from(args.backends));
        overrides.insert("routes".into(), Value::from(routes));
    }
    let config = Config::load(args.config.as_deref(), std::env::vars(), overrides)?;
    speech_gateway::telemetry::init_logging(&config.log);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (http, ws) = if config.tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    eprintln!(
        "speech-gateway: listening on {http}://{addr} (WebSocket {ws}://{addr}/v1/audio/stream)"
    );
    let admin = match config.admin_listen {
        Some(at) => {
            let admin = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (admin_listen)"))?;
            eprintln!(
                "speech-gateway: admin on http://{} (/health, /ready, /status, /metrics)",
                admin.local_addr()?
            );
            Some(admin)
        }
        None => None,
    };
    speech_gateway::serve_with_admin(listener, admin, config, shutdown_signal()).await?;
    Ok(())
}

async fn sim_backend(args: SimArgs) -> anyhow::Result<()> {
    let vocabulary = match &args.transcript {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            anyhow::ensure!(!words.is_empty(), "{} holds no words", path.display());
            words
        }
        None => Vec::new(),
    };
    let options = SimOptions {
        behaviour: match args.behaviour {
            BehaviourArg::Normal => Behaviour::Normal,
            BehaviourArg::Unavailable => Behaviour::Unavailable,
            BehaviourArg::Hang => Behaviour::Hang,
            BehaviourArg::Slow => Behaviour::Slow(args.delay),
            BehaviourArg::FailAfter => Behaviour::FailAfter(args.fail_after),
        },
        word: Duration::from_millis(args.word_ms),
        final_words: args.final_words as usize,
        vocabulary,
        riva_model: args.riva_model,
        triton_model: args.triton_model,
        triton_sample_rate_hz: args.triton_sample_rate,
    };
    let stop = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for (name, addr) in [("riva", args.riva), ("triton", args.triton)] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        // One line per listener, with the real port: the parent process reads it.
        println!("{name} listening on {}", listener.local_addr()?);
        let (options, stop) = (options.clone(), stop.clone().cancelled_owned());
        servers.spawn(async move {
            let served = match name {
                "riva" => speech_gateway::sim::serve_riva(listener, options, stop).await,
                _ => speech_gateway::sim::serve_triton(listener, options, stop).await,
            };
            served.with_context(|| format!("{name} server failed"))
        });
    }
    tokio::select! {
        () = shutdown_signal() => stop.cancel(),
        Some(done) = servers.join_next() => {
            stop.cancel();
            done??;
        }
    }
    while let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}

/// One `GET` over a raw socket: the image carries no HTTP client, and a probe needs no more.
async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tls, rest) = if let Some(rest) = args.url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = args.url.strip_prefix("http://") {
        (false, rest)
    } else {
        anyhow::bail!("`{}`: only http:// and https:// URLs are probed", args.url);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let ca = args.ca.clone();
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        let mut head = Vec::new();
        if tls {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let config = speech_gateway::client::connect::tls_config(ca.as_deref())?;
            let name = rustls::pki_types::ServerName::try_from(host)?;
            let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await?;
            stream.write_all(request.as_bytes()).await?;
            // A peer that closes without close_notify still sent its status line.
            let _ = stream.read_to_end(&mut head).await;
        } else {
            let mut stream = tcp;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut head).await?;
        }
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(args.timeout, probe)
        .await
        .with_context(|| format!("{} did not answer within {:?}", args.url, args.timeout))?
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "{} answered `{status_line}`",
        args.url
    );
    Ok(())
}

async fn shutdown_signal() {
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

async fn run_transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let audio = wav::read_wav_file(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let opts = TranscribeOptions {
        url: args.url,
        ca: args.ca,
        speed: args.speed,
        frame_ms: 100,
        token: args.token,
        language: args.language,
        model: args.model,
        word_timestamps: true,
        interim_results: true,
    };
    let width = terminal_width();
    let live = !args.json;
    let report = transcribe::transcribe(&audio, &opts, |ev| {
        if !live {
            return;
        }
        match transcribe::render_live(ev, width) {
            Some(LiveLine::Replace(line)) => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[2K{line}");
                let _ = out.flush();
            }
            Some(LiveLine::Commit(line)) => println!("\r\x1b[2K{line}"),
            Some(LiveLine::Notice(line)) => eprintln!("\r\x1b[2K{line}"),
            None => {}
        }
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\r\x1b[2K");
        print!("{}", transcribe::render_report(&report));
    }
    if !report.errors.is_empty() && report.finals.is_empty() {
        anyhow::bail!("the gateway answered with errors and no transcript");
    }
    Ok(())
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 20)
        .unwrap_or(100)
}
