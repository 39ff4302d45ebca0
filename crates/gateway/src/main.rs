//! The `speech-gateway` binary: `serve` runs the gateway; `healthcheck` is the container
//! image's liveness probe. The client and test tools are the `sgw` binary (crates/tools) and
//! the test kit's `sim-backend` (crates/testkit): none of them ships in the image.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::value::{Dict, Value};

use speech_gateway::config::Config;

#[derive(Parser)]
#[command(
    name = "speech-gateway",
    version,
    about = "Streaming speech-recognition gateway for NVIDIA Riva and Triton"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
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
    #[arg(long, value_parser = speech_gateway::config::parse_duration, default_value = "3s")]
    timeout: Duration,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (also `SGW_CONFIG`).
    #[arg(long, env = "SGW_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// A back end of the default route, e.g. riva://127.0.0.1:50051, triton://HOST:PORT/MODEL or deepgrams://api.deepgram.com; repeat for several (they share sessions, and a session fails over between them).
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
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
        Command::Healthcheck(args) => runtime.block_on(healthcheck(args)),
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
    speech_gateway::serve_with_admin(listener, admin, config, speech_gateway::shutdown_signal())
        .await?;
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
            let config = speech_gateway::security::files::client_config(ca.as_deref())?;
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
