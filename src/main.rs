//! The `speech-gateway` binary: `serve` runs the gateway; `transcribe` streams a WAV file
//! through a running gateway as a client would and prints the transcript and latencies.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::value::{Dict, Value};

use speech_gateway::client::transcribe::{self, LiveLine, TranscribeOptions};
use speech_gateway::client::wav;
use speech_gateway::config::Config;

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
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (also `SGW_CONFIG`).
    #[arg(long, env = "SGW_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// A back end of the default route, e.g. riva://127.0.0.1:50051; repeat for failover order.
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
    }
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
    eprintln!("speech-gateway: listening on http://{addr} (WebSocket ws://{addr}/v1/audio/stream)");
    speech_gateway::serve(listener, config, shutdown_signal()).await?;
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
