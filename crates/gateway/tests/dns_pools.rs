//! DNS pools (`riva+dns://NAME:PORT`) against a real DNS server — dnslib's, run by
//! `tests/conformance/dns_server.py` — whose records the test changes while sessions run,
//! with Riva doubles as the replicas (one port, several loopback addresses).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sgw_testkit::proxy::{Fault, FaultProxy};
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_testkit::{
    Client, Gateway, assert_failed_over_without_loss, assert_tiles, send_paced, tone,
};

const AUTO: Mode = Mode::Auto {
    final_every_ms: 1_000,
};
const NAME: &str = "replicas.test.";

/// The DNS server; its records are a JSON file it reads at every query.
struct Dns {
    child: Child,
    port: u16,
    records: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(records: &Value) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        std::fs::write(&path, records.to_string()).unwrap();
        let (child, port) = sgw_testkit::python_server(
            "dns_server.py",
            &[
                "--port".as_ref(),
                "0".as_ref(),
                "--ttl".as_ref(),
                "1".as_ref(),
                "--records".as_ref(),
                path.as_os_str(),
            ],
        );
        Dns {
            child,
            port,
            records: path,
            _dir: dir,
        }
    }

    /// Replaces the records at once (a rename: no query sees half a file).
    fn set(&self, records: &Value) {
        let tmp = self.records.with_extension("tmp");
        std::fs::write(&tmp, records.to_string()).unwrap();
        std::fs::rename(&tmp, &self.records).unwrap();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.get("/status").await.1).unwrap()
}

/// The default route's back-end names in `/status`.
fn members(status: &Value) -> Vec<String> {
    status["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `/status` until `ok` holds (at most 10 s).
async fn until(gw: &Gateway, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let s = status(gw).await;
        if ok(&s) {
            return s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session whose stream is open (its first partial came).
async fn session(gw: &Gateway) -> Client {
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(100, 16_000)).await;
    c.until("partial").await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_join_and_leave_a_dns_pool_and_a_leavers_session_fails_over_without_loss() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let at = |host: &str| -> SocketAddr { format!("{host}:{port}").parse().unwrap() };
    // Replica .2 sits behind a fault proxy, so the test can cut its connections mid-stream
    // (a pod that dies); replica .3 listens there itself.
    let r2 = RivaDouble::start(AUTO).await;
    let proxy2 = FaultProxy::start(
        tokio::net::TcpListener::bind(at("127.0.0.2"))
            .await
            .unwrap(),
        r2.addr,
    )
    .unwrap();
    let r3 = RivaDouble::start_at(AUTO, at("127.0.0.3")).await;
    let (u2, u3) = (
        format!("riva://127.0.0.2:{port}"),
        format!("riva://127.0.0.3:{port}"),
    );
    let dns = Dns::start(&json!({ NAME: ["127.0.0.2"] }));
    let gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("riva+dns://replicas.test:{port}"),
        ),
        ("SGW_DNS__SERVERS", format!("127.0.0.1:{}", dns.port)),
        ("SGW_DNS__INTERVAL", "1s".into()),
    ])
    .await;
    gw.wait_ready().await;
    let s = status(&gw).await;
    assert_eq!(members(&s), [u2.as_str()], "{s}");
    assert_eq!(
        s["routes"][0]["pools"][0]["name"],
        format!("riva+dns://replicas.test:{port}")
    );
    assert_eq!(s["routes"][0]["pools"][0]["addresses"], 1);

    // Session A streams on the only replica.
    let mut a = session(&gw).await;
    send_paced(&mut a, 900).await;
    assert_eq!(r2.stats.streams_opened.load(Ordering::Relaxed), 1);

    // A replica is added: it joins within the TTL / interval and takes the next session
    // (the other has A: least outstanding).
    dns.set(&json!({ NAME: ["127.0.0.2", "127.0.0.3"] }));
    let changed = Instant::now();
    until(&gw, "the new replica joins", |s| members(s).len() == 2).await;
    let mut b = session(&gw).await;
    let first_session = changed.elapsed();
    assert_eq!(
        r3.stats.streams_opened.load(Ordering::Relaxed),
        1,
        "the new replica took B"
    );
    eprintln!(
        "dns_pools: DNS change to the first session on the new replica: {} ms",
        first_session.as_millis()
    );

    // 127.0.0.2 leaves the name: it takes no new session, but A goes on there.
    dns.set(&json!({ NAME: ["127.0.0.3"] }));
    until(&gw, "the old replica leaves", |s| {
        members(s) == [u3.clone()]
    })
    .await;
    let audio_before = r2.stats.audio_bytes.load(Ordering::Relaxed);
    send_paced(&mut a, 1_000).await;
    let mut c = session(&gw).await;
    assert_eq!(
        r3.stats.streams_opened.load(Ordering::Relaxed),
        2,
        "C went to the replica in the name"
    );
    assert_eq!(
        r2.stats.streams_opened.load(Ordering::Relaxed),
        1,
        "none to the one that left"
    );
    assert!(
        r2.stats.audio_bytes.load(Ordering::Relaxed) > audio_before,
        "A's stream stays where it was"
    );

    // The replica that left dies: A fails over to the other without losing audio.
    proxy2.set_fault(Fault::Reset);
    send_paced(&mut a, 1_500).await;
    a.end().await;
    let (msgs, close) = a.drain().await;
    assert_failed_over_without_loss(&msgs, close, 100 + 900 + 1_000 + 1_500);

    // The name stops resolving: the last good set stays, and /status says why.
    dns.set(&json!({}));
    let s = until(&gw, "the lookup failure shows", |s| {
        s["routes"][0]["pools"][0]["problem"].is_string()
    })
    .await;
    assert!(
        s["routes"][0]["pools"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("replicas.test"),
        "{s}"
    );
    assert_eq!(members(&s), [u3.as_str()], "the last good set is kept: {s}");
    let mut d = session(&gw).await;
    send_paced(&mut d, 900).await;
    d.end().await;
    let (msgs, close) = d.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert_tiles(&msgs, 1_000);
    let failed = gw
        .metric(&format!(
            "sgw_dns_resolutions_total{{pool=\"riva+dns://replicas.test:{port}\",outcome=\"failed\"}}"
        ))
        .await
        .unwrap_or(0.0);
    assert!(failed >= 1.0, "failed lookups counted: {failed}");
    for c in [&mut b, &mut c] {
        c.end().await;
        let (msgs, close) = c.drain().await;
        assert_eq!(close, Some(1000), "{msgs:?}");
    }
}
