//! Loading and validation, end to end through figment, without the process environment.

use super::*;
use figment::value::Value;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_default_route() -> Vec<(String, String)> {
    vars(&[
        ("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051"),
        ("SGW_AUTH__ENABLED", "false"),
    ])
}

#[test]
fn defaults_validate_once_a_route_exists() {
    let c = Config::load(None, with_default_route(), Dict::new()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.session.max_frame, Duration::from_secs(1));
    assert_eq!(c.session.queue, Duration::from_secs(10));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "default");
    assert_eq!(c.routes[0].backends[0].port, 50051);
}

#[test]
fn no_route_is_refused_with_a_hint() {
    let err = Config::load(None, vec![], Dict::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes") && err.contains("--backend"), "{err}");
}

#[test]
fn environment_overrides_file_and_splits_on_double_underscore() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\n[session]\nqueue = \"20s\"\nmax_frame = \"500ms\"\n\
         [routes]\ndefault = [\"riva://a:1\", \"rivas://b:2/parakeet\"]\noffline = [\"riva://c:3\"]\n",
    )
    .unwrap();
    let env = vars(&[
        ("SGW_SESSION__QUEUE", "5s"),
        ("SGW_LOG_FORMAT", "text"),
        ("SGW_AUTH__ENABLED", "false"),
        ("OTHER", "x"),
    ]);
    let c = Config::load(Some(&file), env, Dict::new()).unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.session.queue, Duration::from_secs(5));
    assert_eq!(c.session.max_frame, Duration::from_millis(500));
    assert!(!c.log.json);
    let default = c.route("default").unwrap();
    assert_eq!(default.backends.len(), 2);
    assert!(default.backends[1].tls);
    assert_eq!(default.backends[1].model.as_deref(), Some("parakeet"));
    assert_eq!(c.route("offline").unwrap().backends[0].host, "c");
}

#[test]
fn command_line_overrides_everything() {
    let mut cli = Dict::new();
    cli.insert("listen".into(), Value::from("127.0.0.1:0"));
    let mut routes = Dict::new();
    routes.insert(
        "default".into(),
        Value::from(vec!["riva://x:7".to_string()]),
    );
    cli.insert("routes".into(), Value::from(routes));
    let env = vars(&[
        ("SGW_LISTEN", "127.0.0.1:1"),
        ("SGW_ROUTES__DEFAULT", "riva://y:8"),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let c = Config::load(None, env, cli).unwrap();
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.routes[0].backends[0].host, "x");
}

#[test]
fn env_route_accepts_comma_list() {
    let env = vars(&[
        ("SGW_ROUTES__DEFAULT", "riva://a:1, riva://b:2"),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let c = Config::load(None, env, Dict::new()).unwrap();
    assert_eq!(c.routes[0].backends.len(), 2);
    assert_eq!(c.routes[0].backends[1].host, "b");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("SGW_LISTEN", "nowhere", "listen"),
        ("SGW_SESSION__MAX_FRAME", "5ms", "session.max_frame"),
        ("SGW_SESSION__QUEUE", "100ms", "session.queue"),
        ("SGW_RIVA__SAMPLE_RATE", "4000", "riva.sample_rate"),
        ("SGW_LOG_FORMAT", "xml", "log_format"),
        ("SGW_RIVA__CONNECTIONS", "0", "riva.connections"),
        ("SGW_TRITON__CONNECTIONS", "65", "triton.connections"),
        ("SGW_HEALTH__INTERVAL", "0s", "health.interval"),
        ("SGW_ADMISSION__MAX_DELAY", "5ms", "admission.max_delay"),
        ("SGW_ADMISSION__MAX_DELAY", "11s", "admission.max_delay"),
        (
            "SGW_ADMISSION__SHED_LAGGING_PERCENT",
            "101",
            "admission.shed_lagging_percent",
        ),
    ];
    for (k, v, key) in cases {
        let mut env = with_default_route();
        env.push((k.into(), v.into()));
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{k}={v}: {err}");
    }
}

#[test]
fn unparseable_duration_is_refused() {
    let mut env = with_default_route();
    env.push(("SGW_SESSION__QUEUE".into(), "ten seconds".into()));
    assert!(Config::load(None, env, Dict::new()).is_err());
}

#[test]
fn unknown_file_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, "[session]\nqueue_size = 3\n").unwrap();
    let err = Config::load(Some(&file), with_default_route(), Dict::new()).unwrap_err();
    assert!(err.to_string().contains("queue_size"), "{err}");
}

#[test]
fn backend_urls_parse_and_refuse() {
    let b = BackendUrl::parse("riva://[::1]:50051").unwrap();
    assert_eq!(b.host, "::1");
    assert_eq!(b.endpoint(), "http://[::1]:50051");
    assert_eq!(
        BackendUrl::parse("rivas://riva.example:443")
            .unwrap()
            .endpoint(),
        "https://riva.example:443"
    );
    let t = BackendUrl::parse("triton://127.0.0.1:8001/asr_stream").unwrap();
    assert_eq!(t.protocol, BackendProtocol::Triton);
    assert_eq!(t.model.as_deref(), Some("asr_stream"));
    assert!(BackendUrl::parse("tritons://h:1/m").unwrap().tls);
    for bad in [
        "triton://h:8001",
        "riva://host",
        "http://h:1",
        "riva://:1",
        "riva://h:0",
        "nothing",
    ] {
        assert!(BackendUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn backend_tls_comes_from_the_url_over_the_defaults() {
    let env = vars(&[
        (
            "SGW_ROUTES__DEFAULT",
            "rivas://a:1?ca=/u/ca.pem&server_name=riva-a, rivas://b:2, riva://c:3",
        ),
        ("SGW_AUTH__ENABLED", "false"),
        ("SGW_BACKEND_TLS__CA", "/d/ca.pem"),
        ("SGW_BACKEND_TLS__CERT", "/d/c.pem"),
        ("SGW_BACKEND_TLS__KEY", "/d/c.key"),
    ]);
    let c = Config::load(None, env, Dict::new()).unwrap();
    let b = &c.routes[0].backends;
    assert_eq!(b[0].url, "rivas://a:1", "the name has no query");
    assert_eq!(b[0].tls_files.ca.as_deref(), Some(Path::new("/u/ca.pem")));
    assert_eq!(b[0].tls_files.server_name.as_deref(), Some("riva-a"));
    assert_eq!(b[0].tls_files.cert.as_deref(), Some(Path::new("/d/c.pem")));
    assert_eq!(b[1].tls_files.ca.as_deref(), Some(Path::new("/d/ca.pem")));
    assert_eq!(
        b[2].tls_files,
        BackendTls::default(),
        "plaintext: no TLS files"
    );
    for bad in [
        "riva://a:1?ca=/x.pem",
        "rivas://a:1?bogus=1",
        "rivas://a:1?ca=",
        "rivas://a:1?cert=/c.pem",
    ] {
        let env = vars(&[("SGW_ROUTES__DEFAULT", bad), ("SGW_AUTH__ENABLED", "false")]);
        assert!(Config::load(None, env, Dict::new()).is_err(), "{bad}");
    }
}

#[test]
fn deepgram_urls_take_a_default_port_a_key_file_and_pass_the_rest_upstream() {
    let d = BackendUrl::parse("deepgrams://api.deepgram.com?model=nova-3&key_file=/k/dg").unwrap();
    assert_eq!(d.protocol, BackendProtocol::Deepgram);
    assert!(d.tls);
    assert_eq!((d.host.as_str(), d.port), ("api.deepgram.com", 443));
    assert_eq!(d.key_file.as_deref(), Some(Path::new("/k/dg")));
    assert_eq!(d.params, vec![("model".to_string(), "nova-3".to_string())]);
    assert_eq!(
        d.url, "deepgrams://api.deepgram.com?model=nova-3",
        "the name keeps the model (two models are two back ends), not the key file"
    );
    let plain = BackendUrl::parse("deepgram://10.0.0.7").unwrap();
    assert_eq!(
        (plain.port, plain.tls, plain.url.as_str()),
        (80, false, "deepgram://10.0.0.7")
    );
    let v6 = BackendUrl::parse("deepgram://[::1]:8080").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
    assert_eq!(BackendUrl::parse("deepgram://[::1]").unwrap().port, 80);
    for bad in [
        "deepgram://h:1/nova-3",
        "deepgram://h:1?ca=/x.pem",
        "deepgram://h:1?model=",
        "deepgram://:1",
        "riva://h:1?key_file=/k",
        "riva://h:1?model=x",
    ] {
        assert!(BackendUrl::parse(bad).is_err(), "{bad}");
    }
    // The section: defaults, bounds, and the key file for URLs without one.
    let c = Config::load(None, with_default_route(), Dict::new()).unwrap();
    assert_eq!(c.deepgram_backend.key_file, None);
    assert_eq!(c.deepgram_backend.keepalive, Duration::from_secs(4));
    assert_eq!(c.deepgram_backend.sample_rate, 16_000);
    let mut env = with_default_route();
    env.push(("SGW_DEEPGRAM_BACKEND__KEY_FILE".into(), "/k/cloud".into()));
    let c = Config::load(None, env, Dict::new()).unwrap();
    assert_eq!(
        c.deepgram_backend.key_file.as_deref(),
        Some(Path::new("/k/cloud"))
    );
    for (key, value) in [
        ("SGW_DEEPGRAM_BACKEND__KEEPALIVE", "10s"),
        ("SGW_DEEPGRAM_BACKEND__KEEPALIVE", "500ms"),
        ("SGW_DEEPGRAM_BACKEND__SAMPLE_RATE", "4000"),
        ("SGW_DEEPGRAM_BACKEND__CONNECT_TIMEOUT", "0s"),
    ] {
        let mut env = with_default_route();
        env.push((key.into(), value.into()));
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("deepgram_backend."), "{key}={value}: {err}");
    }
}

#[test]
fn security_settings_are_validated() {
    let base = || vars(&[("SGW_ROUTES__DEFAULT", "riva://a:1")]);
    let err = Config::load(None, base(), Dict::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth") && err.contains("no key"), "{err}");
    let cases = [
        (
            vec![("SGW_AUTH__HS256_SECRET", "short")],
            "auth.hs256_secret",
        ),
        (vec![("SGW_TLS__CERT", "/c.pem")], "tls.cert"),
        (
            vec![("SGW_LIMITS__ALLOWED_ORIGINS", "app.example")],
            "limits.allowed_origins",
        ),
        (
            vec![("SGW_LIMITS__CONNECT_RATE", "-1")],
            "limits.connect_rate",
        ),
        (
            vec![("SGW_LIMITS__MAX_MESSAGE_BYTES", "100")],
            "limits.max_message_bytes",
        ),
        (
            vec![("SGW_LIMITS__WRITE_TIMEOUT", "50ms")],
            "`limits.write_timeout`: must be between 100ms and 10m",
        ),
        (
            vec![("SGW_LIMITS__HEADER_TIMEOUT", "11m")],
            "`limits.header_timeout`: must be between 100ms and 10m",
        ),
        (
            vec![("SGW_TLS__HANDSHAKE_TIMEOUT", "2m")],
            "`tls.handshake_timeout`: must be between 100ms and 1m",
        ),
        (vec![("SGW_TLS__MAX_HANDSHAKES", "0")], "tls.max_handshakes"),
        (
            vec![("SGW_LIMITS__MAX_WRITE_BUFFER_BYTES", "1000")],
            "limits.max_write_buffer_bytes",
        ),
        (
            vec![("SGW_LIMITS__MAX_CONNECTIONS", "5")],
            "limits.max_connections",
        ),
        (vec![("SGW_ADMIN_LISTEN", "nowhere")], "admin_listen"),
    ];
    for (extra, key) in cases {
        let mut env = base();
        env.push(("SGW_AUTH__ENABLED".into(), "false".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let mut env = base();
    env.push(("SGW_AUTH__HS256_SECRET".into(), "x".repeat(32)));
    env.push(("SGW_AUTH__AUDIENCE".into(), "a, b".into()));
    let c = Config::load(None, env, Dict::new()).unwrap();
    assert!(c.auth.enabled);
    assert_eq!(c.auth.audience, vec!["a", "b"]);
    assert!(
        !format!("{:?}", c.auth).contains(&"x".repeat(32)),
        "Debug hides the secret"
    );
}

/// `.env.example` must list exactly the keys the code knows, with their defaults.
#[test]
fn env_example_matches_the_code() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example"))
        .expect(".env.example exists");
    let mut listed: Vec<(String, String)> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter(|l| l.starts_with(ENV_PREFIX))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    listed.sort();
    assert_eq!(listed, env_defaults());
}

#[test]
fn deepgram_idle_timeout_is_bounded_and_zero_defers_to_the_session() {
    let c = Config::load(None, with_default_route(), Dict::new()).unwrap();
    assert_eq!(c.deepgram.idle_timeout, Some(Duration::from_secs(10)));
    let mut env = with_default_route();
    env.push(("SGW_DEEPGRAM__IDLE_TIMEOUT".into(), "11m".into()));
    let e = Config::load(None, env, Dict::new()).unwrap_err();
    assert!(e.to_string().contains("deepgram.idle_timeout"), "{e}");
    let mut env = with_default_route();
    env.push(("SGW_DEEPGRAM__IDLE_TIMEOUT".into(), "0s".into()));
    let c = Config::load(None, env, Dict::new()).unwrap();
    assert_eq!(c.deepgram.idle_timeout, None);
}

/// `page.enabled` is a tri-state: unset follows authentication (on without it, off with
/// it), `true` / `false` decide; an empty variable is unset; anything else is refused.
#[test]
fn page_enabled_is_a_tri_state_that_follows_auth_when_unset() {
    let load = |extra: &[(&str, &str)]| {
        let mut env = vars(&[("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051")]);
        env.extend(vars(extra));
        Config::load(None, env, Dict::new())
    };
    let secret = "x".repeat(32);
    let auth_on = [("SGW_AUTH__HS256_SECRET", "0123456789abcdef0123456789abcdef")];
    let auth_off = [("SGW_AUTH__ENABLED", "false")];
    let with = |base: &[(&'static str, &'static str)], page: &'static str| {
        let mut v = base.to_vec();
        v.push(("SGW_PAGE__ENABLED", page));
        v
    };
    // unset: follows auth
    let c = load(&auth_off).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (true, None));
    let c = load(&auth_on).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (false, None));
    // empty (as .env.example lists it): unset
    let c = load(&with(&auth_on, "")).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (false, None));
    let c = load(&with(&auth_off, " ")).unwrap();
    assert!(c.page.enabled);
    // explicit either way
    let c = load(&with(&auth_on, "true")).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (true, Some(true)));
    let c = load(&with(&auth_off, "false")).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (false, Some(false)));
    // anything else names the key
    let e = load(&with(&auth_off, "maybe")).unwrap_err().to_string();
    assert!(e.contains("page.enabled") && e.contains("maybe"), "{e}");
    let e = load(&with(&auth_off, "1")).unwrap_err().to_string();
    assert!(e.contains("page.enabled"), "{e}");
    // TOML: a boolean, or absent
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, "[page]\nenabled = true\n").unwrap();
    let env = vars(&[
        ("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051"),
        ("SGW_AUTH__HS256_SECRET", &secret),
    ]);
    let c = Config::load(Some(&file), env.clone(), Dict::new()).unwrap();
    assert_eq!((c.page.enabled, c.page.explicit), (true, Some(true)));
    std::fs::write(&file, "[page]\nenabled = \"on\"\n").unwrap();
    let e = Config::load(Some(&file), env, Dict::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("page.enabled"), "{e}");
}

#[test]
fn routes_are_tiers_with_capacities() {
    let env = vars(&[
        (
            "SGW_ROUTES__DEFAULT",
            "riva://a:1?max_sessions=40, riva://b:1 | triton://cloud:2/m",
        ),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let c = Config::load(None, env, Dict::new()).unwrap();
    let b = &c.routes[0].backends;
    let got: Vec<(&str, usize, Option<usize>)> = b
        .iter()
        .map(|b| (b.host.as_str(), b.tier, b.max_sessions))
        .collect();
    assert_eq!(
        got,
        [("a", 0, Some(40)), ("b", 0, None), ("cloud", 1, None)]
    );
    assert_eq!(b[0].url, "riva://a:1", "the name has no query");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        "[auth]\nenabled = false\n[routes]\n\
         default = [[\"riva://a:1\", \"riva://b:1\"], [\"riva://c:1?max_sessions=5\"]]\n\
         offline = [\"riva://a:1\"]\n",
    )
    .unwrap();
    let c = Config::load(Some(&file), vec![], Dict::new()).unwrap();
    let tiers: Vec<usize> = c
        .route("default")
        .unwrap()
        .backends
        .iter()
        .map(|b| b.tier)
        .collect();
    assert_eq!(tiers, [0, 0, 1]);
    assert_eq!(c.route("offline").unwrap().backends[0].tier, 0);

    for (bad, needle) in [
        ("riva://a:1 | ", "a tier needs"),
        ("riva://a:1?max_sessions=0", "max_sessions"),
        ("riva://a:1?max_sessions=x", "max_sessions"),
        ("riva://a:1, riva://a:1", "named twice"),
    ] {
        let env = vars(&[("SGW_ROUTES__DEFAULT", bad), ("SGW_AUTH__ENABLED", "false")]);
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
    let env = vars(&[
        ("SGW_ROUTES__DEFAULT", "riva://a:1?max_sessions=4"),
        ("SGW_ROUTES__OTHER", "riva://a:1?max_sessions=5"),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let err = Config::load(None, env, Dict::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another max_sessions"), "{err}");
}

#[test]
fn dns_pools_parse_and_their_settings_are_validated() {
    let env = vars(&[
        (
            "SGW_ROUTES__DEFAULT",
            "riva+dns://riva-headless.speech.svc:50051?max_sessions=100 | rivas://cloud:443",
        ),
        ("SGW_AUTH__ENABLED", "false"),
        ("SGW_DNS__SERVERS", "127.0.0.1:5353, [::1]:53"),
    ]);
    let c = Config::load(None, env, Dict::new()).unwrap();
    let pool = &c.routes[0].backends[0];
    assert!(pool.dns && !c.routes[0].backends[1].dns);
    assert_eq!(pool.url, "riva+dns://riva-headless.speech.svc:50051");
    assert_eq!(pool.max_sessions, Some(100));
    assert_eq!(c.dns.interval, Duration::from_secs(5));
    assert_eq!(c.dns.servers.len(), 2);
    let one = pool.at_address("10.0.3.7".parse().unwrap());
    assert_eq!(one.url, "riva://10.0.3.7:50051");
    assert!(!one.dns);
    assert_eq!(one.max_sessions, Some(100));
    let v6 = pool.at_address("fd00::7".parse().unwrap());
    assert_eq!(v6.url, "riva://[fd00::7]:50051");
    assert_eq!(v6.endpoint(), "http://[fd00::7]:50051");
    // TLS: the service name stays the name the certificate is checked against.
    let env = vars(&[
        (
            "SGW_ROUTES__DEFAULT",
            "tritons+dns://triton.svc:8001/asr_offline",
        ),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let c = Config::load(None, env, Dict::new()).unwrap();
    let one = c.routes[0].backends[0].at_address("10.0.0.9".parse().unwrap());
    assert_eq!(one.url, "tritons://10.0.0.9:8001/asr_offline");
    assert_eq!(one.tls_files.server_name.as_deref(), Some("triton.svc"));
    for (key, value, needle) in [
        ("SGW_DNS__INTERVAL", "500ms", "dns.interval"),
        ("SGW_DNS__SERVERS", "dns.example", "dns.servers"),
    ] {
        let mut env = with_default_route();
        env.push((key.into(), value.into()));
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn openai_urls_and_settings() {
    let b = BackendUrl::parse("openai://127.0.0.1:8000/v1?model=glm-asr&key_file=/k/key").unwrap();
    assert_eq!(b.protocol, BackendProtocol::OpenAi);
    assert!(!b.tls);
    let o = b.openai.as_ref().unwrap();
    assert_eq!(o.base_path, "v1");
    assert_eq!(b.model.as_deref(), Some("glm-asr"));
    assert_eq!(o.key_file.as_deref(), Some(Path::new("/k/key")));
    assert_eq!(
        (o.language, o.health),
        (LanguageForm::Iso639, HealthProbe::Models)
    );
    let nim = BackendUrl::parse("openai://nim:9000/v1?model=parakeet&language=bcp47&health=ready")
        .unwrap();
    let o = nim.openai.unwrap();
    assert_eq!(
        (o.language, o.health),
        (LanguageForm::Bcp47, HealthProbe::Ready)
    );
    assert_eq!(nim.url, "openai://nim:9000/v1?model=parakeet");
    assert_eq!(
        b.url, "openai://127.0.0.1:8000/v1?model=glm-asr",
        "the name keeps the model (two models of one server are two back ends), never the key file"
    );
    let s =
        BackendUrl::parse("openais://api.openai.com:443/v1/?model=whisper-1&ca=/c.pem").unwrap();
    assert!(s.tls);
    assert_eq!(s.openai.as_ref().unwrap().base_path, "v1");
    assert_eq!(s.tls_files.ca.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(
        BackendUrl::parse("openai://h:1/proxy/openai/v1?model=m")
            .unwrap()
            .openai
            .unwrap()
            .base_path,
        "proxy/openai/v1"
    );
    for bad in [
        "openai://h:8000/v1",                   // no model
        "openai://h:8000?model=m",              // no base path
        "openai://h:8000/v1?model=",            // empty model
        "openai://h:8000/v1?model=m&ca=/c.pem", // TLS files on plaintext
        "openai://h:8000/v1?model=m&bogus=1",
        "triton://h:1/m?model=x", // model= is openai's only
        "riva://h:1?key_file=/k",
        "openai://h:1/v1?model=m&language=en",
        "openai://h:1/v1?model=m&health=live",
    ] {
        assert!(BackendUrl::parse(bad).is_err(), "{bad}");
    }

    let mut env = vars(&[
        ("SGW_ROUTES__DEFAULT", "openai://127.0.0.1:8000/v1?model=m"),
        ("SGW_AUTH__ENABLED", "false"),
    ]);
    let c = Config::load(None, env.clone(), Dict::new()).unwrap();
    let o = &c.openai_backend;
    assert_eq!(o.sample_rate, 16_000);
    assert_eq!(o.request_timeout, Duration::from_secs(10));
    assert!(
        !o.partials,
        "partials are off by default (each is a whole request)"
    );
    assert_eq!(o.key_file, None);
    env.push(("SGW_OPENAI_BACKEND__KEY_FILE".into(), "/k/key".into()));
    env.push(("SGW_OPENAI_BACKEND__PARTIALS".into(), "true".into()));
    let c = Config::load(None, env, Dict::new()).unwrap();
    assert_eq!(
        c.openai_backend.key_file.as_deref(),
        Some(Path::new("/k/key"))
    );
    assert!(c.openai_backend.partials);
    for (k, v, key) in [
        (
            "SGW_OPENAI_BACKEND__SAMPLE_RATE",
            "22050",
            "openai_backend.sample_rate",
        ),
        (
            "SGW_OPENAI_BACKEND__REQUEST_TIMEOUT",
            "0s",
            "openai_backend.request_timeout",
        ),
        (
            "SGW_OPENAI_BACKEND__ENDPOINTING",
            "5ms",
            "openai_backend.endpointing",
        ),
        (
            "SGW_OPENAI_BACKEND__MAX_UTTERANCE",
            "500ms",
            "openai_backend.max_utterance",
        ),
        (
            "SGW_OPENAI_BACKEND__PARTIAL_INTERVAL",
            "0s",
            "openai_backend.partial_interval",
        ),
    ] {
        let mut env = with_default_route();
        env.push((k.into(), v.into()));
        let err = Config::load(None, env, Dict::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{k}={v}: {err}");
    }
}
