//! The security edge, exercised as clients and back ends meet it: a TLS client against the
//! listener (and its certificate reloaded without a restart), a Riva double that demands
//! client certificates, tokens of every kind of wrong, the per-IP connection limit, the
//! Origin allow-list, the message-size limit, the idle and length limits, and start-up
//! refusing unusable files. Certificates come from `scripts/gen-certs.sh` (openssl).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::SinkExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_testkit::{Client, Gateway, GatewayProcess, Received, Refused, Ws, attempt, tone};
use sgw_tools::client::connect;
use speech_gateway::security::auth::{MintOptions, mint};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_speech-gateway");

/// A fresh set of development certificates and JWT keys in `dir`.
fn gen_certs(dir: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gen-certs.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--out")
        .arg(dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "gen-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn riva() -> RivaDouble {
    RivaDouble::start(Mode::Auto {
        final_every_ms: 1_000,
    })
    .await
}

fn status_of(r: &Result<Ws, Refused>) -> u16 {
    match r {
        Ok(_) => 101,
        Err((code, _, _)) => *code,
    }
}

/// A short session: start, 600 ms of tone, end; returns every message and the close.
async fn short_session(ws: Ws) -> (Vec<Value>, Option<u16>) {
    let mut c = Client { ws };
    c.start(json!({})).await;
    for chunk in tone(600, 16_000).chunks(3_200) {
        c.audio(chunk).await;
    }
    c.end().await;
    c.drain().await
}

fn has_final(messages: &[Value]) -> bool {
    messages.iter().any(|m| m["type"] == "final")
}

// ---- TLS on the listener ----

/// Replaces the listener's files with `from`'s server pair, the way a rotation does
/// (the key lands first, so for a moment the pair does not match: that reload must fail
/// and keep the old certificate serving).
fn rotate(from: &Path, live: &Path) {
    std::fs::copy(from.join("server.key"), live.join("server.key")).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::copy(from.join("server.pem"), live.join("server.pem")).unwrap();
}

async fn wss_works(addr: std::net::SocketAddr, ca: &Path) -> bool {
    let url = format!("wss://localhost:{}/v1/audio/stream", addr.port());
    match connect::open(&url, None, Some(ca)).await {
        Ok(ws) => {
            let (messages, close) = short_session(ws).await;
            has_final(&messages) && close == Some(1000)
        }
        Err(_) => false,
    }
}

async fn wait_until_wss(addr: std::net::SocketAddr, ca: &Path) {
    for _ in 0..100 {
        if wss_works(addr, ca).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the listener never served a certificate from {}",
        ca.display()
    );
}

/// Two certificate sets (`a`, `b`) and a gateway serving `a`'s server pair from `live/`,
/// checking the files every `reload_interval`.
struct TlsSetup {
    dir: tempfile::TempDir,
    gw: Gateway,
    _riva: RivaDouble,
}

impl TlsSetup {
    async fn start(reload_interval: &str) -> TlsSetup {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, live) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("live"),
        );
        gen_certs(&a);
        gen_certs(&b);
        std::fs::create_dir_all(&live).unwrap();
        std::fs::copy(a.join("server.pem"), live.join("server.pem")).unwrap();
        std::fs::copy(a.join("server.key"), live.join("server.key")).unwrap();
        let riva = riva().await;
        let gw = Gateway::start(&[
            ("SGW_ROUTES__DEFAULT", riva.url()),
            ("SGW_TLS__CERT", s(&live.join("server.pem"))),
            ("SGW_TLS__KEY", s(&live.join("server.key"))),
            ("SGW_TLS__RELOAD_INTERVAL", reload_interval.into()),
        ])
        .await;
        TlsSetup {
            dir,
            gw,
            _riva: riva,
        }
    }

    fn a(&self) -> PathBuf {
        self.dir.path().join("a")
    }

    fn b(&self) -> PathBuf {
        self.dir.path().join("b")
    }

    fn live(&self) -> PathBuf {
        self.dir.path().join("live")
    }
}

#[tokio::test]
async fn tls_listener_serves_wss_refuses_plaintext_and_reloads_on_file_change() {
    let t = TlsSetup::start("100ms").await;
    let (a, b, live, gw) = (t.a(), t.b(), t.live(), &t.gw);

    assert!(wss_works(gw.addr, &a.join("ca.pem")).await, "wss with CA A");
    // A client that does not trust the CA is refused by its own TLS check.
    assert!(!wss_works(gw.addr, &b.join("ca.pem")).await);
    // Plain WebSocket to the TLS port: no upgrade happens.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{}/v1/audio/stream", gw.addr)),
    )
    .await
    .expect("the listener answers plaintext promptly");
    assert!(
        plain.is_err(),
        "plaintext upgrade on the TLS port must fail"
    );
    // TLS 1.2 only clients are served too (1.3 is preferred when offered).
    let tls12 = tls12_handshake(gw.addr, &a.join("ca.pem")).await;
    assert_eq!(tls12, Some(rustls::ProtocolVersion::TLSv1_2));

    rotate(&b, &live);
    wait_until_wss(gw.addr, &b.join("ca.pem")).await;
    assert!(
        !wss_works(gw.addr, &a.join("ca.pem")).await,
        "the old certificate is gone after the reload"
    );
}

/// Handshakes with a TLS 1.2-only client; returns the negotiated version.
async fn tls12_handshake(addr: std::net::SocketAddr, ca: &Path) -> Option<rustls::ProtocolVersion> {
    let mut roots = rustls::RootCertStore::empty();
    for c in speech_gateway::security::files::certificates(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(speech_gateway::security::files::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    tls.get_ref().1.protocol_version()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_when_file_watching_is_off() {
    let t = TlsSetup::start("0s").await;
    let (a, b, live, gw) = (t.a(), t.b(), t.live(), &t.gw);
    assert!(wss_works(gw.addr, &a.join("ca.pem")).await);
    rotate(&b, &live);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        wss_works(gw.addr, &a.join("ca.pem")).await,
        "without file watching, nothing changes before SIGHUP"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until_wss(gw.addr, &b.join("ca.pem")).await;
}

// ---- mTLS to back ends ----

fn tls_double_config(certs: &Path) -> ServerTlsConfig {
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")))
}

/// A gateway in front of `url`; true if a session through it gets a final.
async fn session_through(url: String) -> (bool, Vec<Value>) {
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", url),
        ("SGW_RETRY__ATTEMPTS", "0".into()),
        ("SGW_RIVA__CONNECT_TIMEOUT", "2s".into()),
        ("SGW_RIVA__OPEN_TIMEOUT", "2s".into()),
    ])
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let (messages, close) = short_session(ws).await;
    (has_final(&messages) && close == Some(1000), messages)
}

#[tokio::test]
async fn a_backend_that_demands_client_certificates_gets_them_only_from_the_right_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    gen_certs(&a);
    gen_certs(&b);
    let double = RivaDouble::start_tls(
        Mode::Auto {
            final_every_ms: 1_000,
        },
        tls_double_config(&a),
    )
    .await;
    let base = format!("rivas://127.0.0.1:{}", double.addr.port());
    let ca = s(&a.join("ca.pem"));

    // No client certificate: the server refuses the handshake.
    let (ok, messages) = session_through(format!("{base}?ca={ca}")).await;
    assert!(!ok, "no client certificate must be refused");
    assert!(
        messages
            .iter()
            .any(|m| m["type"] == "error" && m["code"] == "MODEL_UNAVAILABLE"),
        "{messages:?}"
    );
    // A client certificate from another CA: refused.
    let wrong = format!(
        "{base}?ca={ca}&cert={}&key={}",
        s(&b.join("client.pem")),
        s(&b.join("client.key"))
    );
    assert!(
        !session_through(wrong).await.0,
        "a foreign client certificate must be refused"
    );
    // The gateway does not trust a server certificate from another CA either.
    let untrusted = format!(
        "{base}?ca={}&cert={}&key={}",
        s(&b.join("ca.pem")),
        s(&a.join("client.pem")),
        s(&a.join("client.key"))
    );
    assert!(
        !session_through(untrusted).await.0,
        "an untrusted server must be refused"
    );
    // The right files: a transcript.
    let right = format!(
        "{base}?ca={ca}&cert={}&key={}",
        s(&a.join("client.pem")),
        s(&a.join("client.key"))
    );
    let (ok, messages) = session_through(right.clone()).await;
    assert!(ok, "{messages:?}");
    // The server name override: `localhost` is in the certificate, `riva.wrong` is not.
    assert!(
        session_through(format!("{right}&server_name=localhost"))
            .await
            .0
    );
    assert!(
        !session_through(format!("{right}&server_name=riva.wrong"))
            .await
            .0
    );
    // Defaults from [backend_tls] apply to a URL without parameters.
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", base.clone()),
        ("SGW_BACKEND_TLS__CA", ca.clone()),
        ("SGW_BACKEND_TLS__CERT", s(&a.join("client.pem"))),
        ("SGW_BACKEND_TLS__KEY", s(&a.join("client.key"))),
    ])
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let (messages, close) = short_session(ws).await;
    assert!(has_final(&messages) && close == Some(1000), "{messages:?}");
}

/// `speech-gateway serve` with these variables must refuse to start; returns stderr.
fn refused_start(env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SGW_CONFIG")
        .env("SGW_LOG_FORMAT", "text")
        .env("SGW_AUTH__ENABLED", "false")
        .env("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdout(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "start-up must fail for {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn unusable_tls_and_key_files_stop_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    gen_certs(&a);
    gen_certs(&b);
    let missing = dir.path().join("missing-ca.pem");
    let err = refused_start(&[(
        "SGW_ROUTES__DEFAULT",
        format!("rivas://127.0.0.1:1?ca={}", s(&missing)),
    )]);
    assert!(
        err.contains("missing-ca.pem") && err.contains("cannot read"),
        "{err}"
    );

    let err = refused_start(&[(
        "SGW_ROUTES__DEFAULT",
        format!(
            "rivas://127.0.0.1:1?cert={}&key={}",
            s(&a.join("client.pem")),
            s(&b.join("client.key"))
        ),
    )]);
    assert!(
        err.contains(&s(&b.join("client.key"))) && err.contains("does not match"),
        "{err}"
    );

    let err = refused_start(&[
        ("SGW_TLS__CERT", s(&a.join("server.pem"))),
        ("SGW_TLS__KEY", s(&a.join("ca.pem"))),
    ]);
    assert!(
        err.contains("ca.pem") && err.contains("private key"),
        "{err}"
    );

    let err = refused_start(&[
        ("SGW_AUTH__ENABLED", "true".into()),
        ("SGW_AUTH__PUBLIC_KEYS", s(&a.join("server.key"))),
    ]);
    assert!(
        err.contains("server.key") && err.contains("public key"),
        "{err}"
    );

    let err = refused_start(&[("SGW_AUTH__ENABLED", "true".into())]);
    assert!(err.contains("auth") && err.contains("no key"), "{err}");

    // A plaintext URL with TLS files is a mistake worth stopping for.
    let err = refused_start(&[(
        "SGW_ROUTES__DEFAULT",
        format!("riva://127.0.0.1:1?ca={}", s(&a.join("ca.pem"))),
    )]);
    assert!(err.contains("rivas://"), "{err}");
}

// ---- JWT ----

struct AuthSetup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    gw: Gateway,
    _riva: RivaDouble,
}

async fn auth_gateway() -> AuthSetup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    gen_certs(&dir);
    let es = EncodingKey::from_ec_pem(&std::fs::read(dir.join("jwt-es256.key")).unwrap()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&es, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let set = JwkSet { keys: vec![jwk] };
    std::fs::write(dir.join("jwks.json"), serde_json::to_vec(&set).unwrap()).unwrap();
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_AUTH__ENABLED", "true".into()),
        (
            "SGW_AUTH__HS256_SECRET_FILE",
            s(&dir.join("jwt-hs256.secret")),
        ),
        ("SGW_AUTH__PUBLIC_KEYS", s(&dir.join("jwt-rs256.pub"))),
        ("SGW_AUTH__JWKS", s(&dir.join("jwks.json"))),
        ("SGW_AUTH__AUDIENCE", "speech".into()),
        ("SGW_AUTH__ISSUER", "https://issuer.test".into()),
        ("SGW_AUTH__LEEWAY", "5s".into()),
    ])
    .await;
    AuthSetup {
        _dir: tmp,
        dir,
        gw,
        _riva: riva,
    }
}

fn good(key: &Path, kid: Option<&str>) -> String {
    mint(
        key,
        &MintOptions {
            subject: Some("user-1".into()),
            audience: Some("speech".into()),
            issuer: Some("https://issuer.test".into()),
            kid: kid.map(String::from),
            ttl: Duration::from_secs(300),
        },
    )
    .unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value, kid: Option<&str>) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn claims(exp: u64) -> Value {
    json!({"sub": "user-1", "aud": "speech", "iss": "https://issuer.test", "exp": exp, "nbf": now() - 1})
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade() {
    let setup = auth_gateway().await;
    let (dir, gw) = (&setup.dir, &setup.gw);
    let url = gw.ws_url();
    let bearer = |t: &str| format!("Bearer {t}");
    let secret = std::fs::read(dir.join("jwt-hs256.secret")).unwrap();
    let hs = EncodingKey::from_secret(&secret);

    // Good tokens of each kind, by header and by query.
    let hs_token = good(&dir.join("jwt-hs256.secret"), None);
    let ok = attempt(&url, &[("authorization", &bearer(&hs_token))]).await;
    let (messages, close) = short_session(ok.expect("HS256 accepted")).await;
    assert!(has_final(&messages) && close == Some(1000));
    let q = format!("{url}?token={hs_token}");
    assert_eq!(status_of(&attempt(&q, &[]).await), 101, "?token=");
    let rs = good(&dir.join("jwt-rs256.key"), None);
    assert_eq!(
        status_of(&attempt(&url, &[("authorization", &bearer(&rs))]).await),
        101,
        "RS256"
    );
    let es = good(&dir.join("jwt-es256.key"), Some("k1"));
    assert_eq!(
        status_of(&attempt(&url, &[("authorization", &bearer(&es))]).await),
        101,
        "ES256 from the JWKS"
    );

    let es_key =
        EncodingKey::from_ec_pem(&std::fs::read(dir.join("jwt-es256.key")).unwrap()).unwrap();
    let rs_pub = std::fs::read(dir.join("jwt-rs256.pub")).unwrap();
    let other_secret = EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes!!");
    // alg=none, no signature: base64url of {"alg":"none","typ":"JWT"} and of
    // {"exp":4102444800,"aud":"speech","iss":"https://issuer.test"}.
    let none_token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDAsImF1ZCI6InNwZWVjaCIsImlzcyI6Imh0dHBzOi8vaXNzdWVyLnRlc3QifQ.".to_string();
    let refused: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing"),
        (
            "expired",
            Some(sign(Algorithm::HS256, &hs, claims(now() - 120), None)),
            "expired",
        ),
        (
            "not yet valid",
            Some(sign(
                Algorithm::HS256,
                &hs,
                json!({"aud": "speech", "iss": "https://issuer.test", "exp": now() + 600, "nbf": now() + 300}),
                None,
            )),
            "not_yet_valid",
        ),
        (
            "wrongly signed",
            Some(sign(
                Algorithm::HS256,
                &other_secret,
                claims(now() + 300),
                None,
            )),
            "signature",
        ),
        (
            "wrong audience",
            Some(sign(
                Algorithm::HS256,
                &hs,
                json!({"aud": "billing", "iss": "https://issuer.test", "exp": now() + 300}),
                None,
            )),
            "audience",
        ),
        (
            "wrong issuer",
            Some(sign(
                Algorithm::HS256,
                &hs,
                json!({"aud": "speech", "iss": "https://evil.test", "exp": now() + 300}),
                None,
            )),
            "issuer",
        ),
        (
            "HS384 (not accepted)",
            Some(sign(Algorithm::HS384, &hs, claims(now() + 300), None)),
            "algorithm",
        ),
        // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
        (
            "HS256 keyed with the RS256 public key",
            Some(sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&rs_pub),
                claims(now() + 300),
                None,
            )),
            "signature",
        ),
        ("alg none", Some(none_token), "malformed"),
        (
            "unknown kid",
            Some(sign(
                Algorithm::ES256,
                &es_key,
                claims(now() + 300),
                Some("k9"),
            )),
            "unknown_key",
        ),
        ("garbage", Some("abc.def.ghi".into()), "malformed"),
    ];
    for (what, token, reason) in &refused {
        let headers: Vec<(&str, String)> =
            token.iter().map(|t| ("authorization", bearer(t))).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match attempt(&url, &headers).await {
            Ok(_) => panic!("{what}: accepted"),
            Err((code, h, body)) => {
                assert_eq!(code, 401, "{what}");
                assert_eq!(body["code"], "AUTHENTICATION_FAILED", "{what}: {body}");
                assert_eq!(body["recoverable"], false, "{what}");
                let challenge = h
                    .iter()
                    .find(|(k, _)| k == "www-authenticate")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
            }
        }
        let series = format!("sgw_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(
            gw.metric(&series).await.unwrap_or(0.0) >= 1.0,
            "{what}: {series}"
        );
    }
    // A non-Bearer scheme is no token.
    let basic = attempt(&url, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(status_of(&basic), 401);
}

// ---- limits ----

#[tokio::test]
async fn connection_attempts_per_ip_are_limited_with_429() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_LIMITS__CONNECT_RATE", "0.2".into()),
        ("SGW_LIMITS__CONNECT_BURST", "2".into()),
        ("SGW_LIMITS__CLIENT_IP_HEADER", "X-Forwarded-For".into()),
    ])
    .await;
    let url = gw.ws_url();
    assert_eq!(status_of(&attempt(&url, &[]).await), 101);
    assert_eq!(status_of(&attempt(&url, &[]).await), 101);
    match attempt(&url, &[]).await {
        Ok(_) => panic!("the third attempt in a burst of 2 must be refused"),
        Err((code, headers, body)) => {
            assert_eq!(code, 429);
            assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
            assert_eq!(body["recoverable"], true);
            let retry: u64 = headers
                .iter()
                .find(|(k, _)| k == "retry-after")
                .map(|(_, v)| v.parse().unwrap())
                .expect("Retry-After");
            assert!((1..=5).contains(&retry), "{retry}");
        }
    }
    // Another client behind the same proxy has its own budget (the last address counts;
    // what the client itself put first does not).
    let xff = [("x-forwarded-for", "127.0.0.1, 203.0.113.9")];
    assert_eq!(status_of(&attempt(&url, &xff).await), 101);
    // Probes are not limited.
    for _ in 0..5 {
        assert_eq!(gw.get("/health").await.0, 200);
    }
    assert_eq!(
        gw.metric("sgw_rejections_total{reason=\"ip_rate_limit\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        (
            "SGW_LIMITS__ALLOWED_ORIGINS",
            "https://app.example, https://tutor.example:8443".into(),
        ),
    ])
    .await;
    let url = gw.ws_url();
    let evil = attempt(&url, &[("origin", "https://evil.example")]).await;
    assert_eq!(status_of(&evil), 403);
    assert_eq!(
        status_of(&attempt(&url, &[("origin", "https://app.example")]).await),
        101
    );
    assert_eq!(
        status_of(&attempt(&url, &[("origin", "https://tutor.example:8443")]).await),
        101
    );
    // Native apps send no Origin.
    assert_eq!(status_of(&attempt(&url, &[]).await), 101);
}

#[tokio::test]
async fn an_oversized_message_ends_only_its_own_session_with_message_too_large() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_LIMITS__MAX_MESSAGE_BYTES", "8192".into()),
    ])
    .await;
    // A bystander session, mid-stream.
    let mut other = gw.connect().await;
    other.start(json!({})).await;
    other.audio(&tone(300, 16_000)[..6400]).await;

    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&vec![0u8; 20_000]).await;
    let (messages, close) = c.drain().await;
    let err = messages
        .iter()
        .find(|m| m["type"] == "error")
        .unwrap_or_else(|| panic!("no error in {messages:?}"));
    assert_eq!(err["code"], "MESSAGE_TOO_LARGE", "{err}");
    assert_eq!(err["recoverable"], false);
    assert!(err["message"].as_str().unwrap().contains("8192"), "{err}");
    assert_eq!(close, Some(1009));

    // The bystander goes on and ends normally.
    for chunk in tone(400, 16_000).chunks(3_200) {
        other.audio(chunk).await;
    }
    other.end().await;
    let (messages, close) = other.drain().await;
    assert!(has_final(&messages), "{messages:?}");
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn an_idle_client_gets_its_finals_then_session_timeout() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_SESSION__IDLE_TIMEOUT", "600ms".into()),
    ])
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    for chunk in tone(400, 16_000).chunks(3_200) {
        c.audio(chunk).await;
    }
    // ...and then nothing.
    let (messages, close) = c.drain().await;
    let fin = messages.iter().position(|m| m["type"] == "final");
    let err = messages
        .iter()
        .position(|m| m["type"] == "error" && m["code"] == "SESSION_TIMEOUT");
    assert!(
        matches!((fin, err), (Some(f), Some(e)) if f < e),
        "finals first, then SESSION_TIMEOUT: {messages:?}"
    );
    assert!(
        messages[err.unwrap()]["message"]
            .as_str()
            .unwrap()
            .contains("idle")
    );
    assert_eq!(close, Some(1008));
    assert_eq!(
        gw.metric("sgw_sessions_total{dialect=\"v1\",outcome=\"timed_out\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_session_past_its_maximum_length_is_finalised_and_closed() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_SESSION__MAX_DURATION", "1s".into()),
    ])
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let audio = tone(3_000, 16_000);
    let mut chunks = audio.chunks(3_200);
    let mut messages = Vec::new();
    let close = loop {
        if let Some(chunk) = chunks.next()
            && c.ws
                .send(Message::Binary(chunk.to_vec().into()))
                .await
                .is_err()
        {
            break c.drain().await.1;
        }
        match tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
            Ok(Received::Json(v)) => messages.push(v),
            Ok(Received::Closed(code)) => break code,
            Err(_) => {}
        }
    };
    let err = messages
        .iter()
        .position(|m| m["type"] == "error" && m["code"] == "SESSION_TIMEOUT")
        .unwrap_or_else(|| panic!("no SESSION_TIMEOUT in {messages:?}"));
    assert!(
        messages[..err].iter().any(|m| m["type"] == "final"),
        "{messages:?}"
    );
    assert!(
        messages[err]["message"]
            .as_str()
            .unwrap()
            .contains("maximum length")
    );
    assert_eq!(close, Some(1008));
}

// ---- privacy ----

/// The gateway binary at the most verbose log level, with auth, TLS to nothing and a
/// session whose transcript holds distinctive words: nothing it logs may contain the
/// words, the token (or its signature), the secret, or the audio's bytes.
#[tokio::test]
async fn logs_hold_no_transcript_token_secret_or_audio() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    gen_certs(dir.path());
    let words = ["zanzibarquux", "plumbobtrellis", "quokkamantle"];
    let transcript = dir.path().join("transcript.txt");
    std::fs::write(&transcript, words.join(" ")).unwrap();
    // The zero-compute back end turns non-marker audio into the transcript's words.
    let mut sim = Command::new(sgw_testkit::binary("sim-backend"))
        .args([
            "--riva",
            "127.0.0.1:0",
            "--word-ms",
            "200",
            "--final-words",
            "2",
        ])
        .arg("--transcript")
        .arg(&transcript)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let riva_addr = line.trim().rsplit(' ').next().unwrap().to_string();

    let secret_file = dir.path().join("jwt-hs256.secret");
    let mut gw = GatewayProcess::spawn(
        &[],
        &[
            ("SGW_ROUTES__DEFAULT", format!("riva://{riva_addr}")),
            ("SGW_LOG_LEVEL", "trace".into()),
            ("SGW_LOG_FORMAT", "json".into()),
            ("SGW_AUTH__ENABLED", "true".into()),
            (
                "SGW_AUTH__HS256_SECRET_FILE",
                secret_file.display().to_string(),
            ),
        ],
        &dir.path().join("gateway.log"),
    )
    .await;
    let addr = gw.addr.clone();
    let token = good(&secret_file, None);
    // A header session and a query-token session, each with a transcript.
    let url = format!("ws://{addr}/v1/audio/stream");
    let mut audio = Vec::new();
    for i in 0..16_000 * 2 {
        let v = ((i as f64 * 0.07).sin() * 9000.0) as i16 + (i % 7) as i16;
        audio.extend_from_slice(&v.to_le_bytes());
    }
    let mut heard = String::new();
    for ws in [
        attempt(&url, &[("authorization", &format!("Bearer {token}"))])
            .await
            .unwrap(),
        attempt(&format!("{url}?token={token}"), &[]).await.unwrap(),
    ] {
        let mut c = Client { ws };
        c.start(json!({})).await;
        for chunk in audio.chunks(3_200) {
            c.audio(chunk).await;
        }
        c.end().await;
        let (messages, _) = c.drain().await;
        for m in &messages {
            heard.push_str(m["text"].as_str().unwrap_or(""));
            heard.push(' ');
        }
    }
    // A refused token is not logged either.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let _ = attempt(&url, &[("authorization", &format!("Bearer {forged}"))]).await;
    let (_, logged) = gw.stop().await;
    let _ = sim.kill();
    let _ = sim.wait();

    assert!(
        words.iter().any(|w| heard.contains(w)),
        "the test must produce a transcript to look for: {heard}"
    );
    assert!(
        logged.lines().count() > 10,
        "trace logging produced almost nothing"
    );
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    let mut needles: Vec<(String, String)> = words
        .iter()
        .map(|w| (format!("transcript word {w}"), w.to_string()))
        .collect();
    needles.push(("token".into(), token.clone()));
    needles.push(("token signature".into(), signature.to_string()));
    needles.push((
        "forged token signature".into(),
        forged.rsplit('.').next().unwrap().to_string(),
    ));
    needles.push(("secret".into(), secret.trim().to_string()));
    // Audio: 16 bytes from the middle, as hex, as a Rust byte list, and as base64-ish runs.
    let sample = &audio[20_000..20_016];
    let hex: String = sample.iter().map(|b| format!("{b:02x}")).collect();
    needles.push(("audio (hex)".into(), hex));
    let list: String = sample
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    needles.push(("audio (byte list)".into(), list));
    for (what, needle) in &needles {
        assert!(
            !logged.to_lowercase().contains(&needle.to_lowercase()),
            "the log contains the {what}"
        );
    }
}

// ---- bad input, with a bystander ----

/// What one bad input got: the HTTP refusal, or the messages and close after it.
fn describe(messages: &[Value], close: Option<u16>) -> String {
    let errors: Vec<String> = messages
        .iter()
        .filter(|m| m["type"] == "error")
        .map(|m| {
            format!(
                "{} (recoverable: {})",
                m["code"].as_str().unwrap_or("?"),
                m["recoverable"]
            )
        })
        .collect();
    let errors = if errors.is_empty() {
        "no error".to_string()
    } else {
        errors.join(", ")
    };
    match close {
        Some(c) => format!("{errors}; close {c}"),
        None => format!("{errors}; no close frame"),
    }
}

/// A catalogue of bad inputs, each on its own connection, while a bystander session
/// streams: each gets its documented answer and the bystander's transcript is untouched.
/// Run with `--no-capture` to print the table.
#[tokio::test]
async fn bad_input_gets_its_documented_answer_and_never_disturbs_a_bystander() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    gen_certs(dir.path());
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_AUTH__ENABLED", "true".into()),
        (
            "SGW_AUTH__HS256_SECRET_FILE",
            s(&dir.path().join("jwt-hs256.secret")),
        ),
        ("SGW_LIMITS__MAX_MESSAGE_BYTES", "65536".into()),
    ])
    .await;
    let token = good(&dir.path().join("jwt-hs256.secret"), None);
    let auth = format!("Bearer {token}");
    let url = gw.ws_url();
    let open = || async {
        Client {
            ws: attempt(&url, &[("authorization", auth.as_str())])
                .await
                .expect("upgrade"),
        }
    };

    let mut bystander = open().await;
    bystander.start(json!({})).await;
    let bystander_audio = tone(3_000, 16_000);
    let mut chunks = bystander_audio.chunks(3_200);
    for chunk in chunks.by_ref().take(5) {
        bystander.audio(chunk).await;
    }

    let mut table: Vec<(String, String)> = Vec::new();
    // (input, what to send after start (None: before start), expected error, expected close)
    type Case = (&'static str, bool, Message, &'static str, Option<u16>);
    let cases: Vec<Case> = vec![
        (
            "odd-length audio frame (3 bytes)",
            true,
            Message::Binary(vec![1u8, 2, 3].into()),
            "AUDIO_FORMAT_ERROR",
            None,
        ),
        (
            "frame of 1.5 s (> session.max_frame)",
            true,
            Message::Binary(vec![0u8; 48_000].into()),
            "AUDIO_FORMAT_ERROR",
            None,
        ),
        (
            "message of 100 KB (> limits.max_message_bytes)",
            true,
            Message::Binary(vec![0u8; 100_000].into()),
            "MESSAGE_TOO_LARGE",
            Some(1009),
        ),
        (
            "text that is not JSON",
            true,
            Message::Text("hello".into()),
            "INVALID_REQUEST",
            None,
        ),
        (
            "JSON without a known type",
            true,
            Message::Text(r#"{"type":"bogus"}"#.into()),
            "INVALID_REQUEST",
            None,
        ),
        (
            "a second start",
            true,
            Message::Text(r#"{"type":"start"}"#.into()),
            "INVALID_REQUEST",
            None,
        ),
        (
            "start with sample_rate 4000",
            false,
            Message::Text(r#"{"type":"start","config":{"sample_rate":4000}}"#.into()),
            "AUDIO_FORMAT_ERROR",
            None,
        ),
        (
            "start with sample_rate \"fast\"",
            false,
            Message::Text(r#"{"type":"start","config":{"sample_rate":"fast"}}"#.into()),
            "AUDIO_FORMAT_ERROR",
            None,
        ),
        (
            "start for an unknown route",
            false,
            Message::Text(r#"{"type":"start","config":{"model":"nope"}}"#.into()),
            "MODEL_UNAVAILABLE",
            Some(1013),
        ),
        (
            "3 MB of JSON text",
            false,
            Message::Text("x".repeat(3_000_000).into()),
            "MESSAGE_TOO_LARGE",
            Some(1009),
        ),
    ];
    for (what, after_start, msg, code, close) in cases {
        let mut c = open().await;
        if after_start {
            c.start(json!({})).await;
        }
        let _ = c.ws.send(msg).await;
        // Recoverable errors leave the session open: end it to collect everything.
        let mut messages = Vec::new();
        let mut closed = None;
        let mut ended = false;
        loop {
            match tokio::time::timeout(Duration::from_millis(1_500), c.recv()).await {
                Ok(Received::Json(v)) => messages.push(v),
                Ok(Received::Closed(code)) => {
                    closed = code;
                    break;
                }
                Err(_) if !ended => {
                    ended = true;
                    let _ = c.ws.send(Message::Text(r#"{"type":"end"}"#.into())).await;
                }
                Err(_) => break,
            }
        }
        let got = describe(&messages, closed);
        assert!(
            messages
                .iter()
                .any(|m| m["type"] == "error" && m["code"] == code),
            "{what}: expected {code}, got {got}"
        );
        if let Some(expected) = close {
            assert_eq!(closed, Some(expected), "{what}: {got}");
        } else {
            assert_eq!(
                closed,
                Some(1000),
                "{what}: the session survives and ends normally: {got}"
            );
        }
        table.push((what.to_string(), got));
    }

    // Invalid UTF-8 in a text frame is a WebSocket protocol error.
    {
        let mut c = open().await;
        c.start(json!({})).await;
        let tcp = c.ws.get_mut();
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = tcp else {
            unreachable!()
        };
        // A masked text frame (FIN, opcode 1) of 2 bytes that are not UTF-8.
        let mask = [1u8, 2, 3, 4];
        let payload = [0xffu8, 0xfe];
        let mut frame = vec![0x81, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&frame).await.unwrap();
        let (messages, close) = c.drain().await;
        table.push((
            "text frame with invalid UTF-8".into(),
            describe(&messages, close),
        ));
    }
    // Bytes that are not HTTP at all.
    {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(b"\x16\x03\x01garbage\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        let line = String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        table.push((
            "bytes that are not HTTP".into(),
            format!("`{line}`, connection closed"),
        ));
    }
    // Refusals before the upgrade.
    for (what, headers) in [
        ("no token", vec![]),
        (
            "a forged token",
            vec![(
                "authorization",
                format!("Bearer {}x", &token[..token.len() - 1]),
            )],
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = attempt(&url, &h).await;
        assert_eq!(status_of(&r), 401, "{what}");
        table.push((
            what.into(),
            "HTTP 401 AUTHENTICATION_FAILED, no upgrade".into(),
        ));
    }

    // The bystander finishes as if nothing happened.
    for chunk in chunks {
        bystander.audio(chunk).await;
    }
    bystander.end().await;
    let (messages, close) = bystander.drain().await;
    assert!(
        messages.iter().all(|m| m["type"] != "error"),
        "bystander got an error: {messages:?}"
    );
    assert!(has_final(&messages));
    assert_eq!(close, Some(1000));

    println!("| input | the gateway's answer | bystander session |");
    println!("|---|---|---|");
    for (input, answer) in &table {
        println!("| {input} | {answer} | unaffected |");
    }
}
