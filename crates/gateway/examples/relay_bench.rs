//! Benchmark: the gateway's own cost per relayed result, at N concurrent real-time sessions.
//!
//!     cargo run --release -p speech-gateway --example relay_bench -- [SESSIONS] [SECONDS]
//!
//! Runs, in one process, the Riva double (auto mode: a partial per 100 ms frame, a final
//! per second of audio), the real gateway on 127.0.0.1:0 and N WebSocket clients pacing
//! 100 ms frames at real time. Reads `sgw_relay_overhead_seconds` (adapter receipt of a
//! Riva result → WebSocket frame written) from `/metrics` and prints p50/p90/p99,
//! interpolated within the histogram's 25 %-wide buckets. Client, double and gateway share
//! the machine's cores, so the figures include their contention.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use sgw_testkit::riva_double::{Mode, RivaDouble};
use speech_gateway::config::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);

    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 1_000,
    })
    .await;
    let config = Config::load(
        None,
        vec![
            ("SGW_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("SGW_ROUTES__DEFAULT".to_string(), riva.url()),
            ("SGW_AUTH__ENABLED".to_string(), "false".to_string()),
        ],
        Default::default(),
    )?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(speech_gateway::serve(listener, config, async {
        let _ = stop_rx.await;
    }));

    let url = format!("ws://{addr}/v1/audio/stream");
    let frame: Vec<u8> = (0..1600i32)
        .flat_map(|i| ((i % 200 - 100) as i16 * 50).to_le_bytes())
        .collect();
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..sessions {
        let url = url.clone();
        let frame = frame.clone();
        // spread session starts over one frame period so frames do not arrive in lockstep
        let offset = Duration::from_micros((i as u64 * 100_000) / sessions.max(1) as u64);
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
            let (mut tx, mut rx) = ws.split();
            let reader = tokio::spawn(async move {
                let mut n = 0usize;
                while let Some(Ok(m)) = rx.next().await {
                    if matches!(m, Message::Text(_)) {
                        n += 1;
                    }
                }
                n
            });
            tx.send(Message::Text(r#"{"type":"start","config":{}}"#.into()))
                .await?;
            let t0 = tokio::time::Instant::now();
            for k in 0..seconds * 10 {
                tokio::time::sleep_until(t0 + Duration::from_millis(k * 100)).await;
                tx.send(Message::Binary(frame.clone().into())).await?;
            }
            tx.send(Message::Text(r#"{"type":"end"}"#.into())).await?;
            let n = reader.await?;
            anyhow::Ok(n)
        }));
    }
    let mut messages = 0usize;
    let mut failed = 0usize;
    for c in clients {
        match c.await? {
            Ok(n) => messages += n,
            Err(_) => failed += 1,
        }
    }
    let wall = started.elapsed();
    let metrics = http_get(addr, "/metrics").await?;
    let (count, p50, p90, p99) = quantiles(&metrics, "sgw_relay_overhead_seconds");
    println!(
        "sessions={sessions} audio_s_each={seconds} wall_s={:.1} messages={messages} failed_sessions={failed}",
        wall.as_secs_f64()
    );
    println!(
        "relay overhead (adapter receipt -> WebSocket frame written): n={count} p50={:.1}us p90={:.1}us p99={:.1}us",
        p50 * 1e6,
        p90 * 1e6,
        p99 * 1e6
    );
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf)
}

/// Count and p50/p90/p99 of a histogram in the exposition text.
fn quantiles(text: &str, name: &str) -> (u64, f64, f64, f64) {
    use speech_gateway::telemetry::exposition::histogram_quantile;
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let q = |p| histogram_quantile(text, name, p).unwrap_or(0.0);
    (count, q(0.5), q(0.9), q(0.99))
}
