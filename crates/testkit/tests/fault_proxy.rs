//! The fault-injecting TCP proxy (`sgw_tools::chaos::FaultProxy`) in front of a plain
//! echo server, and between the gateway's Riva adapter and the zero-compute back end.
//! Timings are not asserted: only what arrives, in what order, and how connections end.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use sgw_testkit::proxy::{Fault, FaultProxy, Forwarded};
use sgw_testkit::sim::SimOptions;
use sgw_testkit::sim::local::{self as sim, chunks, collect, fed, params};
use sgw_testkit::sim::marker::marker_audio;
use speech_gateway::backend::{BackendErrorKind, SpeechBackend};
use speech_gateway::config::BackendProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on 127.0.0.1:0.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxy_to(upstream: SocketAddr) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    FaultProxy::start(listener, upstream).unwrap()
}

/// Sends `msg` and reads its echo.
async fn echo(conn: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    conn.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
        .await
        .expect("the echo came back")
        .unwrap();
    got
}

/// Waits (bounded) until `check` holds: counters move a moment after the bytes do.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn passes_bytes_through_both_ways_and_counts_them() {
    let proxy = proxy_to(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(echo(&mut conn, b"hello").await, b"hello");
    assert_eq!(echo(&mut conn, b" world").await, b" world");
    eventually("both directions counted", || {
        proxy.forwarded()
            == Forwarded {
                to_upstream: 11,
                to_client: 11,
            }
    })
    .await;
    assert_eq!(proxy.connections(), 1);
    drop(conn);
    eventually("the connection closed", || proxy.connections() == 0).await;
}

#[tokio::test]
async fn reset_resets_live_connections_and_every_new_one() {
    let proxy = proxy_to(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    echo(&mut conn, b"before").await;
    proxy.set_fault(Fault::Reset);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset),
        "the live connection was reset"
    );
    eventually("the reset connection is gone", || proxy.connections() == 0).await;

    let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), fresh.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));

    proxy.set_fault(Fault::None);
    let mut again = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(echo(&mut again, b"after").await, b"after");
}

#[tokio::test]
async fn blackhole_forwards_nothing_until_lifted_for_new_connections() {
    let proxy = proxy_to(echo_server().await).await;
    let mut live = TcpStream::connect(proxy.local_addr()).await.unwrap();
    echo(&mut live, b"before").await;
    proxy.set_fault(Fault::Blackhole);
    let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
    for conn in [&mut live, &mut fresh] {
        conn.write_all(b"into the void").await.unwrap();
        let mut buf = [0u8; 16];
        // A negative check: nothing may come back in this window.
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
        assert!(read.is_err(), "a blackholed connection answered {read:?}");
    }
    assert_eq!(proxy.connections(), 2, "blackholed connections stay open");

    proxy.set_fault(Fault::None);
    let mut after = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(echo(&mut after, b"after").await, b"after");
}

#[tokio::test]
async fn delay_keeps_content_and_order_both_ways() {
    let proxy = proxy_to(echo_server().await).await;
    proxy.set_fault(Fault::Delay(Duration::from_millis(200)));
    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![i; 100 + i as usize];
        conn.write_all(&chunk).await.unwrap();
        sent.extend(chunk);
    }
    let mut got = vec![0; sent.len()];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, sent);
    assert_eq!(proxy.fault(), Fault::Delay(Duration::from_millis(200)));
}

#[tokio::test]
async fn shutdown_closes_every_connection() {
    let proxy = proxy_to(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.local_addr()).await.unwrap();
    echo(&mut conn, b"x").await;
    proxy.shutdown().await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0)), "a clean close: {read:?}");
}

#[tokio::test]
async fn a_reset_between_the_riva_adapter_and_the_sim_ends_the_stream_with_an_error() {
    let server = sim::start(BackendProtocol::Riva, SimOptions::default()).await;
    let proxy = proxy_to(server.addr).await;
    let riva = sim::riva_backend(proxy.local_addr());

    // through the proxy, a stream works
    let events = riva
        .open(params(), chunks(&marker_audio(1, 3, 1_600)))
        .await
        .unwrap();
    let (events, error) = collect(events).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.last().unwrap().text, "w1 w2 w3");

    // a live stream, then the path is reset under it
    let (tx, audio) = fed();
    let mut events = riva.open(params(), audio).await.unwrap();
    tx.send(marker_audio(1, 2, 1_600).into()).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.text, "w1");
    proxy.set_fault(Fault::Reset);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended within 5 s");
    let Some(Err(e)) = ended else {
        panic!("the stream ends with an error, not quietly: {ended:?}");
    };
    // tonic reports the broken HTTP/2 connection as UNKNOWN; the adapter classes it as
    // retryable, so the session would reopen elsewhere
    assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    drop(tx);
}
