//! The live-captions page (`GET /`) in a real headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol (`sgw_testkit::browser`), in front of the scripted
//! Riva double: Chromium's fake microphone plays `samples/hello.wav` (looped), the page
//! captures it with its AudioWorklet, and the double's words (`w0 w1 …`, one per 100 ms
//! of audio received) must appear as partials and finals in the DOM. Also: the route
//! picker from `/status`, reconnection across a gateway restart, a WAV file streamed at
//! real time, the token field against a gateway with auth, and when the page is served.
//! A screenshot is saved as `target/artifacts/page.png`.

use std::time::Duration;

use serde_json::{Value, json};
use sgw_testkit::browser::Browser;
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_testkit::{Gateway, Secured};

/// The final transcripts on the page since its last mark (session start), word by word.
const FINALS: &str = "(() => {
  const out = [];
  for (const el of document.getElementById('finals').children) {
    if (el.classList.contains('mark')) { out.length = 0; continue; }
    const words = [...el.querySelectorAll('.w')].map(w => w.textContent);
    const lat = el.querySelector('.latency');
    out.push({ text: words.join(' '), classes: [...el.querySelectorAll('.w')].map(w => w.className),
               title: el.querySelector('.w')?.title, latency_ms: lat?.dataset.ms ? Number(lat.dataset.ms) : null });
  }
  return out;
})()";

fn state_is(state: &str) -> String {
    format!("document.getElementById('state').dataset.state === '{state}'")
}

/// The finals' words are the double's `w<k>`, numbered on from `first` without a gap.
fn assert_consecutive(finals: &[Value], first: u64) -> u64 {
    let mut next = first;
    for f in finals {
        for w in f["text"].as_str().unwrap().split_whitespace() {
            assert_eq!(w, format!("w{next}"), "finals {finals:?}");
            next += 1;
        }
    }
    next
}

async fn wait_finals(b: &mut Browser, at_least: usize, timeout: Duration) -> Vec<Value> {
    let v = b
        .wait_for(
            &format!(
                "(() => {{ const f = {FINALS}; return f.length >= {at_least} ? f : null }})()"
            ),
            timeout,
        )
        .await;
    v.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_captions_in_a_real_browser() {
    let started = std::time::Instant::now();
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 1000,
    })
    .await;
    // The first back end of the default route accepts streams and never answers: the
    // session fails over to the second after the stall timeout, and the page says so.
    let stuck = RivaDouble::start(Mode::Scripted).await;
    let mut gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("{},{}", stuck.url(), riva.url()),
        ),
        ("SGW_ROUTES__SPARE", riva.url()),
        ("SGW_SESSION__STALL_TIMEOUT", "300ms".into()),
    ])
    .await;
    gw.wait_ready().await;
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    let mut b = Browser::launch(&wav, 1100, 900).await;
    b.navigate(&gw.http("/")).await;
    b.wait_for(
        "document.documentElement.dataset.app === 'ready'",
        Duration::from_secs(10),
    )
    .await;

    // The route picker, from /status (the main listener serves it here).
    let routes = b
        .eval("document.getElementById('route-select').hidden ? null : [...document.querySelectorAll('#route-select option')].map(o => o.value)")
        .await;
    assert_eq!(routes, json!(["default", "spare"]));

    // Start: the fake microphone, the worklet, the session.
    b.eval("document.getElementById('start').click()").await;
    b.wait_for(&state_is("live"), Duration::from_secs(20)).await;
    let partial = b
        .wait_for(
            "(() => { const t = document.getElementById('partial').textContent; return /^w\\d+/.test(t) ? t : null })()",
            Duration::from_secs(10),
        )
        .await;
    // (the double's partial: the words of the utterance so far)
    assert!(partial.as_str().unwrap().starts_with('w'), "{partial}");
    let finals = wait_finals(&mut b, 2, Duration::from_secs(15)).await;
    // the stalled back end was left for the next, and the page said so in plain words
    let said = b
        .eval("document.body.dataset.gatewayStatus === 'failover' ? document.getElementById('events').textContent : null")
        .await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("Moved to another speech back end")),
        "{said}"
    );
    // the failover replays the audio since the last final: nothing lost or repeated
    assert_consecutive(&finals, 0);
    // 100 ms frames from the worklet: after the replay, a final every ten of them (the
    // double finals at each second of audio received)
    assert_eq!(
        finals[1]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        10,
        "{finals:?}"
    );
    // words shaded by confidence (the double says 0.75), latency measured
    assert!(
        finals[0]["classes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c == "w c3"),
        "{finals:?}"
    );
    assert_eq!(finals[0]["title"], "confidence 0.75");
    for f in &finals {
        let ms = f["latency_ms"].as_f64().expect("a latency");
        assert!(ms < 5_000.0, "{finals:?}");
    }
    let partials: u64 = b
        .eval("Number(document.getElementById('transcript').dataset.partials)")
        .await
        .as_u64()
        .unwrap();
    assert!(partials >= 5, "{partials} partials");
    b.screenshot(&sgw_testkit::repo().join("target/artifacts/page-live.png"))
        .await;

    // The gateway goes away (close 1001): the page says it is reconnecting, and carries on
    // when a gateway is back at the same address.
    let addr = gw.addr;
    gw.shutdown().await;
    let said = b
        .wait_for(
            "(() => { const s = document.getElementById('state'); return s.dataset.state === 'reconnecting' ? s.textContent : null })()",
            Duration::from_secs(10),
        )
        .await;
    assert!(said.as_str().unwrap().contains("Reconnecting"), "{said}");
    let notice = b
        .eval("document.getElementById('notice').textContent")
        .await;
    assert!(
        notice.as_str().unwrap().contains("shutting down")
            || notice.as_str().unwrap().contains("cannot be reached"),
        "{notice}"
    );
    let mut gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_LISTEN", addr.to_string()),
    ])
    .await;
    b.wait_for(&state_is("live"), Duration::from_secs(20)).await;
    let after = wait_finals(&mut b, 1, Duration::from_secs(15)).await;
    // a new session: its words count from w0 again
    assert_consecutive(&after, 0);
    b.eval(
        "document.getElementById('start').disabled && !document.getElementById('stop').disabled",
    )
    .await
    .as_bool()
    .filter(|x| *x)
    .expect("Start disabled, Stop enabled while live");

    // Stop: `end`, the last final, close 1000.
    b.eval("document.getElementById('stop').click()").await;
    b.wait_for(&state_is("stopped"), Duration::from_secs(15))
        .await;

    // A WAV file, streamed at real time: 4.09 s, so the double's words are w0 … w40, the
    // last ending where the file does: every sample arrived.
    b.eval("document.getElementById('clear').click()").await;
    let t0 = std::time::Instant::now();
    b.set_file("#file", &wav).await;
    b.wait_for(
        "document.getElementById('state').textContent.includes('hello.wav')",
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(&state_is("stopped"), Duration::from_secs(20))
        .await;
    let streamed = t0.elapsed();
    let finals = wait_finals(&mut b, 1, Duration::from_secs(1)).await;
    assert_eq!(assert_consecutive(&finals, 0), 41, "{finals:?}");
    assert!(
        streamed >= Duration::from_millis(3_900),
        "real time, not faster: {streamed:?}"
    );
    let state = b.eval("document.getElementById('state').textContent").await;
    assert_eq!(state, "Done \u{2014} hello.wav transcribed.");
    b.screenshot(&sgw_testkit::repo().join("target/artifacts/page.png"))
        .await;

    // Nothing the page did was refused by its own Content-Security-Policy, and it threw nothing.
    let problems: Vec<&String> = b
        .console
        .iter()
        .filter(|l| {
            l.contains("Content Security Policy")
                || l.starts_with("exception")
                || l.contains("Refused")
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // The token field: a gateway with auth (and the page enabled explicitly) refuses a wrong
    // token in plain words, and takes a good one as `?token=`.
    gw.shutdown().await;
    let mut secured = Secured::start(
        &riva.url(),
        &[("page", 0)],
        &[
            ("SGW_PAGE__ENABLED", "true".into()),
            // the route list is on the admin listener: the page falls back to a text field
            ("SGW_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ],
    )
    .await;
    b.navigate(&secured.gw.http("/")).await;
    b.wait_for(
        "document.documentElement.dataset.app === 'ready'",
        Duration::from_secs(10),
    )
    .await;
    let note = b
        .eval("document.getElementById('route-select').hidden && !document.getElementById('route-text').hidden ? document.getElementById('route-note').textContent : null")
        .await;
    assert!(note.as_str().unwrap().contains("admin listener"), "{note}");
    b.eval("document.getElementById('token').value = 'not-a-token'; document.getElementById('start').click()")
        .await;
    let notice = b
        .wait_for(
            "(() => { const n = document.getElementById('notice'); return !n.hidden && n.textContent.includes('refused') ? n.textContent : null })()",
            Duration::from_secs(20),
        )
        .await;
    assert!(notice.as_str().unwrap().contains("token"), "{notice}");
    b.eval("document.getElementById('stop').click()").await;
    b.wait_for(&state_is("stopped"), Duration::from_secs(10))
        .await;
    let token = &secured.token;
    b.eval(&format!(
        "document.getElementById('route-text').value = 'default'; document.getElementById('token').value = '{token}'; document.getElementById('start').click()"
    ))
    .await;
    b.wait_for(&state_is("live"), Duration::from_secs(20)).await;
    let finals = wait_finals(&mut b, 1, Duration::from_secs(15)).await;
    assert_consecutive(&finals, 0);
    b.eval("document.getElementById('stop').click()").await;
    b.wait_for(&state_is("stopped"), Duration::from_secs(15))
        .await;
    secured.gw.shutdown().await;
    eprintln!("browser test took {:?}", started.elapsed());
}

/// One GET; status, headers (lower-case names), body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let a = sgw_testkit::http_request(addr, "GET", path, &[], &[]).await;
    (a.status, a.headers, a.body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// `page.enabled`: unset follows auth (on without, off with), explicit values decide; off
/// is 404. The page's answers carry their type, `no-cache` and the strict policy.
#[tokio::test]
async fn the_page_is_served_when_enabled_with_a_strict_policy() {
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 1000,
    })
    .await;

    // auth off (the test kit's default), page unset: served
    let gw = Gateway::start(&[("SGW_ROUTES__DEFAULT", riva.url())]).await;
    let assets = [
        ("/", "text/html; charset=utf-8", "<title>Live captions"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "/v1/audio/stream",
        ),
        (
            "/worklet.js",
            "text/javascript; charset=utf-8",
            "registerProcessor",
        ),
        (
            "/resample.js",
            "text/javascript; charset=utf-8",
            "export class Resampler",
        ),
        (
            "/wav.js",
            "text/javascript; charset=utf-8",
            "export function decodeWav",
        ),
        ("/style.css", "text/css; charset=utf-8", ".transcript"),
        ("/icon.svg", "image/svg+xml", "<svg"),
    ];
    for (path, content_type, needle) in assets {
        let (status, headers, body) = get(gw.addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), content_type, "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert!(body.contains(needle), "{path}: {body}");
        let csp = header(&headers, "content-security-policy");
        assert_eq!(
            csp,
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self' ws://{a} wss://{a}; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
                a = gw.addr
            )
        );
    }
    drop(gw);

    // explicitly off, auth off: 404 (and the session endpoint is untouched)
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_PAGE__ENABLED", "false".into()),
    ])
    .await;
    assert_eq!(get(gw.addr, "/").await.0, 404);
    assert_eq!(get(gw.addr, "/app.js").await.0, 404);
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    drop(c);
    drop(gw);

    // auth on, page unset: 404
    let secured = Secured::start(&riva.url(), &[("k", 0)], &[]).await;
    assert_eq!(get(secured.gw.addr, "/").await.0, 404);
    assert_eq!(get(secured.gw.addr, "/worklet.js").await.0, 404);
    drop(secured);
    // auth on, page enabled explicitly: served
    let secured = Secured::start(
        &riva.url(),
        &[("k", 0)],
        &[("SGW_PAGE__ENABLED", "true".into())],
    )
    .await;
    let (status, headers, _) = get(secured.gw.addr, "/").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-security-policy").starts_with("default-src 'none'"));
}
