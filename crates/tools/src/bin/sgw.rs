//! `sgw`: the client and operator tools of speech-gateway. `transcribe` streams a WAV file
//! through a running gateway as a client would and prints the transcript and latencies;
//! `token` signs development JWTs; `eval` runs the golden WER and latency harness; `load`
//! is the load generator; `chaos` runs the chaos scenarios against real processes. The
//! gateway itself is the `speech-gateway` binary; none of this ships in its image.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use sgw_tools::client::dialect::Dialect;
use sgw_tools::client::transcribe::{self, LiveLine, TranscribeOptions};
use sgw_tools::client::wav;

#[derive(Parser)]
#[command(
    name = "sgw",
    version,
    about = "Client and operator tools for speech-gateway: transcribe, token, eval, load, chaos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream a WAV file (mono, 16-bit, any rate) through a gateway at real time.
    Transcribe(TranscribeArgs),
    /// Sign a JWT for development and tests (HS256 secret file, or RS256/ES256 private key
    /// PEM, e.g. from scripts/gen-certs.sh); prints the token.
    Token(TokenArgs),
    /// Make a new API key: prints the key (give it to the client; it is shown once) and,
    /// on stderr, its entry for `auth.api_keys_file` (only the key's SHA-256); with
    /// `--append FILE` the entry is added to that file instead.
    ApiKey(ApiKeyArgs),
    /// Stream the golden clips (golden/manifest.toml) through a gateway and judge WER,
    /// latency and words on silence against each clip's ceilings; exits 1 if any is broken.
    Eval(EvalArgs),
    /// Load a gateway with N concurrent real-time sessions for a bounded time and report
    /// latencies, errors and the gateway's CPU and memory.
    Load(LoadArgs),
    /// Run the chaos scenarios (chaos/scenarios/*.toml) against real processes: the
    /// `speech-gateway` and `sim-backend` binaries beside this one, with faults injected;
    /// exits 1 if any fails.
    Chaos(ChaosArgs),
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
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "1h")]
    ttl: Duration,
}

#[derive(Args)]
struct ApiKeyArgs {
    /// The key's name: the `key` label of its metrics (1–64 of A–Z a–z 0–9 . _ -).
    name: String,
    /// Live sessions the key may hold (0: no per-key cap).
    #[arg(long, default_value_t = 0)]
    max_sessions: usize,
    /// Append the entry to this key file (created if missing).
    #[arg(long, value_name = "FILE")]
    append: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// The golden manifest.
    #[arg(long, default_value = "golden/manifest.toml")]
    manifest: PathBuf,
    /// The gateway's v1 endpoint (with --dialect deepgram or openai-realtime, the same
    /// gateway's /v1/listen or /v1/realtime is used).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/audio/stream")]
    url: String,
    /// The contract the clips are streamed over: v1 (/v1/audio/stream), deepgram
    /// (/v1/listen, the route as `model`) or openai-realtime (/v1/realtime, the route as
    /// the transcription model, 24 kHz appends, a commit at the end); judged the same way.
    #[arg(long, value_enum, default_value_t = Dialect::V1)]
    dialect: Dialect,
    /// Pacing: 1 = real time, 4 = four times as fast.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Clips streamed at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Convert every clip to this rate (the gateway's own resampler) before sending it:
    /// `--client-rate 24000` over v1 sends exactly the samples `openai-realtime` sends,
    /// so the two endpoints can be compared on identical audio.
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(8000..=48000))]
    client_rate: Option<u32>,
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
    /// The gateway's v1 endpoint (with --dialect deepgram or openai-realtime, the same
    /// gateway's /v1/listen or /v1/realtime is used).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/audio/stream")]
    url: String,
    /// The contract the sessions speak: v1 (/v1/audio/stream), deepgram (/v1/listen) or
    /// openai-realtime (/v1/realtime); the same pacing, latency rules and report.
    #[arg(long, value_enum, default_value_t = Dialect::V1)]
    dialect: Dialect,
    /// Concurrent real-time sessions.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// From the first session's start to every session's `end`, e.g. 60s.
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Session starts are spread evenly over this.
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "10s")]
    ramp: Duration,
    /// A directory of mono 16-bit WAV clips (or one file), played in a loop.
    #[arg(long, default_value = "golden/clips")]
    clips: PathBuf,
    /// Audio per frame, in ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=500))]
    frame_ms: u32,
    /// Silence after each pass through a clip (a talker's pause).
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "1s")]
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
    /// The gateway binary under test (default: `speech-gateway` beside this binary, else
    /// on PATH).
    #[arg(long, value_name = "FILE")]
    gateway: Option<PathBuf>,
    /// The sim back end binary (default: `sim-backend` beside this binary, else on PATH).
    #[arg(long, value_name = "FILE")]
    sim_backend: Option<PathBuf>,
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
    // `.env` first, so SGW_TOKEN from it reaches clap.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Transcribe(args) => runtime.block_on(run_transcribe(args)),
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
        Command::ApiKey(args) => api_key(args),
        Command::Eval(args) => runtime.block_on(eval(args)),
        Command::Load(args) => runtime.block_on(load(args)),
    }
}

fn api_key(args: ApiKeyArgs) -> anyhow::Result<()> {
    use speech_gateway::security::apikeys;
    anyhow::ensure!(
        apikeys::valid_name(&args.name),
        "a key's name is 1–64 of A–Z a–z 0–9 . _ - (it labels the key's metrics)"
    );
    let key = apikeys::generate()?;
    let entry = apikeys::entry(&args.name, &key, args.max_sessions);
    match &args.append {
        Some(file) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            writeln!(f, "\n{entry}")?;
            eprintln!("appended `{}` to {}", args.name, file.display());
        }
        None => eprintln!("{entry}"),
    }
    println!("{key}");
    Ok(())
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    use sgw_tools::chaos::runner;
    let scenarios = runner::load_scenarios(&args.scenarios, &args.only)?;
    let mut programs = runner::Programs::beside_this_one();
    if let Some(gateway) = args.gateway {
        programs.gateway = gateway;
    }
    if let Some(sim) = args.sim_backend {
        programs.sim_backend = sim;
    }
    let reports = runner::run_all(&programs, &scenarios, &args.out).await?;
    print!("{}", sgw_tools::chaos::report::markdown(&reports));
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
    use sgw_tools::golden::{self, EvalOptions, EvalReport, Manifest};
    let manifest = Manifest::load(&args.manifest)?;
    let expected = args.expected.is_dir() || args.write_expected;
    let opts = EvalOptions {
        url: args.url,
        speed: args.speed,
        concurrency: args.concurrency,
        client_rate: args.client_rate,
        routes: args.routes,
        tags: args.tags,
        only: args.only,
        token: args.token,
        expected_dir: expected.then_some(args.expected),
        write_expected: args.write_expected,
    };
    let results = golden::eval::run_with_dialect(&manifest, &opts, args.dialect).await?;
    let report = EvalReport::new(
        &args.dialect.endpoint(&opts.url),
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
    use sgw_tools::load::{self, LoadOptions};
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
    let report = load::run_with_dialect(&opts, args.dialect).await?;
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

async fn run_transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let audio = wav::read_wav_file(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let opts = TranscribeOptions {
        url: args.url,
        dialect: Dialect::V1,
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
