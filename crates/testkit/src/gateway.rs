//! The gateway under test: in-process on 127.0.0.1:0 ([`Gateway`]) or as its own process
//! ([`GatewayProcess`]), WebSocket clients that speak the v1 contract, and test audio.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use speech_gateway::config::Config;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The gateway binary as operators run it (`serve --listen 127.0.0.1:0` and `args`), its
/// log (stderr) in a file. SIGTERM on [`GatewayProcess::stop`]; killed if dropped.
pub struct GatewayProcess {
    child: std::process::Child,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    log: std::path::PathBuf,
}

impl GatewayProcess {
    pub async fn spawn(
        args: &[&str],
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> GatewayProcess {
        Self::spawn_with(args, env, log, None).await
    }

    /// [`Self::spawn`] with the process's open-file limit (soft and hard) set to `nofile`.
    pub async fn spawn_with(
        args: &[&str],
        env: &[(&str, String)],
        log: &std::path::Path,
        nofile: Option<u64>,
    ) -> GatewayProcess {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = std::process::Command::new(crate::binary("speech-gateway"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SGW_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Killed by `Drop` if it never says where it listens.
        let mut gw = GatewayProcess {
            child: cmd.spawn().unwrap(),
            addr: String::new(),
            log: log.to_path_buf(),
        };
        // The address is in the log's first line ("listening on http://ADDR ...").
        for _ in 0..200 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                gw.addr = rest.split_whitespace().next().unwrap().to_string();
                return gw;
            }
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!("serve exited ({status}) before listening: {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the gateway did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/audio/stream", self.addr)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin listener's `HOST:PORT`, when `admin_listen` is set (from the log).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let rest = text.split("admin on http://").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// Resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors now.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as an operator would (SIGTERM), waits for the exit without blocking the
    /// test's runtime (in-process back ends keep serving its drain), and returns the exit
    /// status and the log.
    pub async fn stop(&mut self) -> (std::process::ExitStatus, String) {
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap()
                .success(),
            "SIGTERM delivered"
        );
        for _ in 0..3_000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, std::fs::read_to_string(&self.log).unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway did not exit within 60 s of SIGTERM");
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A refused upgrade: status, headers, JSON body.
pub type Refused = (u16, Vec<(String, String)>, Value);

/// One upgrade attempt: the socket, or the refusal.
pub async fn attempt(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), headers, body))
        }
        Err(e) => panic!("upgrade to {url} failed below HTTP: {e}"),
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts the gateway with the given `SGW_*` settings (routes included).
    pub async fn start(env: &[(&str, String)]) -> Gateway {
        let mut vars: Vec<(String, String)> = vec![
            ("SGW_LISTEN".into(), "127.0.0.1:0".into()),
            ("SGW_HEALTH__INTERVAL".into(), "200ms".into()),
            // Shutdown tests want sessions finalised at once; drain tests set their own.
            ("SGW_SESSION__DRAIN_TIMEOUT".into(), "0s".into()),
            // Auth is tested in tests/security.rs; elsewhere it would only add noise.
            ("SGW_AUTH__ENABLED".into(), "false".into()),
            // The gateway shares the test's runtime, which tests block at will (and debug
            // builds on a busy CI machine run late): overload refusal is tested where set.
            ("SGW_ADMISSION__MAX_DELAY".into(), "0s".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = Config::load(None, vars, Default::default()).expect("test config is valid");
        if std::env::var_os("SGW_TEST_LOG").is_some() {
            speech_gateway::telemetry::init_logging(&speech_gateway::config::LogConfig {
                json: false,
                filter: "debug,h2=info,hyper=info,tower=info".into(),
                burst: 0,
            });
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            speech_gateway::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway ran");
        });
        Gateway {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A gateway whose default route is these back ends, in order.
    pub async fn with_backends(urls: &[String]) -> Gateway {
        Self::start(&[("SGW_ROUTES__DEFAULT", urls.join(","))]).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/audio/stream", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("upgrade");
        Client { ws }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("serve returned after shutdown")
                .unwrap();
        }
    }

    /// One plain HTTP GET; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The value of one un-labelled (or exactly labelled) sample in `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_at(self.addr, series).await
    }

    /// Waits until `/metrics` shows `series` at `value` (gauges settle asynchronously).
    pub async fn wait_metric(&self, series: &str, value: f64) {
        for _ in 0..200 {
            if self.metric(series).await == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{series} never reached {value}; now {:?}",
            self.metric(series).await
        );
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.get("/ready").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway never became ready");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the local Triton (`scripts/local-triton.sh start`, quick when it already runs)
/// once per test process; returns its gRPC port (`TRITON_GRPC_PORT`, default 8001).
pub fn local_triton_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let script = crate::repo().join("scripts/local-triton.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .arg("start")
            .status()
            .expect("bash runs");
        assert!(
            status.success(),
            "scripts/local-triton.sh start failed (see its log in .venv/)"
        );
        std::env::var("TRITON_GRPC_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8001)
    })
}

/// The value of one un-labelled (or exactly labelled) sample in `/metrics` at `addr`.
pub async fn metric_at(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An HTTP answer: status, headers (lower-case names), body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// One HTTP/1.1 request over a raw socket (keeps test dependencies small), with
/// `Connection: close`; `Content-Length` is added when there is a body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = http_request(addr, "GET", path, &[], &[]).await;
    (answer.status, answer.body)
}

/// What a client can receive.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<u16>),
}

/// A v1 client for contract tests. It sends and reads raw JSON on purpose: the contract
/// tests pin the wire format from outside the gateway's own types
/// ([`speech_gateway::ingress::v1::wire`], which every other client uses), and they send
/// malformed messages that those types cannot express.
pub struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn start(&mut self, config: Value) {
        self.send_json(json!({"type":"start","config":config}))
            .await;
    }

    pub async fn end(&mut self) {
        self.send_json(json!({"type":"end"})).await;
    }

    pub async fn audio(&mut self, pcm: &[u8]) {
        self.ws
            .send(Message::Binary(pcm.to_vec().into()))
            .await
            .unwrap();
    }

    /// The next JSON message or the close, within 10 s.
    pub async fn recv(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("the gateway answered within 10 s");
            match next {
                Some(Ok(Message::Text(t))) => {
                    return Received::Json(serde_json::from_str(t.as_str()).unwrap());
                }
                Some(Ok(Message::Close(f))) => {
                    return Received::Closed(f.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    /// The next JSON message; panics on a close.
    pub async fn json(&mut self) -> Value {
        match self.recv().await {
            Received::Json(v) => v,
            Received::Closed(c) => panic!("expected a message, the gateway closed ({c:?})"),
        }
    }

    /// Skips messages until one of `type`; panics on a close.
    pub async fn until(&mut self, ty: &str) -> Value {
        loop {
            let v = self.json().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Everything until the close; returns the messages and the close code.
    pub async fn drain(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                Received::Json(v) => out.push(v),
                Received::Closed(c) => return (out, c),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub fn close_code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// The finals among a session's v1 messages must tile `[0, total_ms)` exactly, word after
/// word: no audio lost, none repeated (the Riva double's auto mode words every 100 ms).
pub fn assert_tiles(msgs: &[Value], total_ms: u64) {
    let mut cursor = 0.0f64;
    let mut covered = 0;
    for f in msgs.iter().filter(|m| m["type"] == "final") {
        covered += f["duration_ms"].as_u64().unwrap();
        for w in f["words"].as_array().unwrap() {
            let start = w["start"].as_f64().unwrap();
            assert!(
                (start - cursor).abs() < 0.002,
                "word at {start} s, expected {cursor} s: {f}"
            );
            cursor = w["end"].as_f64().unwrap();
        }
    }
    assert_eq!(
        covered, total_ms,
        "finals cover exactly the audio sent: {msgs:?}"
    );
}

/// A session that failed over mid-stream and ended well: closed 1000, told `failover`,
/// never sent an error, and its finals tile `[0, total_ms)` ([`assert_tiles`]).
pub fn assert_failed_over_without_loss(msgs: &[Value], close: Option<u16>, total_ms: u64) {
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m["type"] == "status" && m["state"] == "failover"),
        "{msgs:?}"
    );
    assert!(!msgs.iter().any(|m| m["type"] == "error"), "{msgs:?}");
    assert_tiles(msgs, total_ms);
}

/// Sends `ms` of 16 kHz tone in 100 ms frames, 20 ms apart (five times real time).
pub async fn send_paced(c: &mut Client, ms: u64) {
    let frame = tone(100, 16_000);
    for _ in 0..ms / 100 {
        c.audio(&frame).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ms` of a 440 Hz tone at `rate`, as PCM16LE.
pub fn tone(ms: u64, rate: u32) -> Vec<u8> {
    let n = rate as u64 * ms / 1000;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / rate as f64;
            (((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect()
}

/// `ms` of a voiced buzz (140 Hz with harmonics, amplitude-modulated) at 16 kHz, as
/// PCM16LE: the gateway's VAD takes it for speech.
pub fn voiced(ms: u64) -> Vec<u8> {
    (0..16 * ms)
        .flat_map(|i| {
            let t = i as f64 / 16_000.0;
            let buzz: f64 = (1..12)
                .map(|h| (t * 140.0 * h as f64 * std::f64::consts::TAU).sin() / h as f64)
                .sum();
            let env = 0.6 + 0.4 * (t * 4.0 * std::f64::consts::TAU).sin();
            ((buzz * env * 6000.0) as i16).to_le_bytes()
        })
        .collect()
}

/// Bytes of `ms` of PCM16 mono at `rate`.
pub fn bytes_for(ms: u64, rate: u32) -> usize {
    (rate as u64 * ms / 1000) as usize * 2
}

/// A gateway with authentication on: an HS256 secret for JWTs and an API key file, as the
/// dialect tests use it.
pub struct Secured {
    pub gw: Gateway,
    /// A JWT (`sub` = the first key's name), valid for 10 minutes.
    pub token: String,
    /// The API keys, in the order [`Secured::start`] named them.
    pub api_keys: Vec<String>,
    pub keys_file: std::path::PathBuf,
    /// Holds the secret and key files.
    pub dir: tempfile::TempDir,
}

impl Secured {
    /// Starts a gateway whose default route is `route`, with JWT and API-key
    /// authentication: one key per `(name, max_sessions)` of `keys` (at least one);
    /// `extra` are more `SGW_*` settings.
    pub async fn start(route: &str, keys: &[(&str, usize)], extra: &[(&str, String)]) -> Secured {
        use speech_gateway::security::apikeys;
        use speech_gateway::security::auth::{MintOptions, mint};
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secured").unwrap();
        let api_keys: Vec<String> = keys.iter().map(|_| apikeys::generate().unwrap()).collect();
        let keys_file = dir.path().join("api-keys.toml");
        let entries: String = keys
            .iter()
            .zip(&api_keys)
            .map(|((name, max), key)| apikeys::entry(name, key, *max))
            .collect();
        std::fs::write(&keys_file, entries).unwrap();
        let mut env = vec![
            ("SGW_ROUTES__DEFAULT", route.to_string()),
            ("SGW_AUTH__ENABLED", "true".into()),
            (
                "SGW_AUTH__HS256_SECRET_FILE",
                secret.to_string_lossy().into_owned(),
            ),
            (
                "SGW_AUTH__API_KEYS_FILE",
                keys_file.to_string_lossy().into_owned(),
            ),
        ];
        env.extend(extra.iter().cloned());
        let gw = Gateway::start(&env).await;
        let token = mint(
            &secret,
            &MintOptions {
                subject: keys.first().map(|(name, _)| name.to_string()),
                audience: None,
                issuer: None,
                kid: None,
                ttl: Duration::from_secs(600),
            },
        )
        .unwrap();
        Secured {
            gw,
            token,
            api_keys,
            keys_file,
            dir,
        }
    }

    /// [`Secured::start`] in front of a new Riva double that finals every second of audio
    /// (and at the half-close): the setup of the tests that drive a dialect with its own
    /// client. Keep the double as long as the gateway.
    pub async fn before_riva(
        keys: &[(&str, usize)],
        extra: &[(&str, String)],
    ) -> (Secured, crate::riva_double::RivaDouble) {
        use crate::riva_double::{Mode, RivaDouble};
        let riva = RivaDouble::start(Mode::Auto {
            final_every_ms: 1_000,
        })
        .await;
        (Secured::start(&riva.url(), keys, extra).await, riva)
    }
}
