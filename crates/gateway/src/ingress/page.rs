//! The live-captions page: `GET /` and its assets, embedded in the binary (no build step,
//! nothing fetched from elsewhere). The page speaks the v1 contract like any client: it
//! captures the microphone with an AudioWorklet (or reads a dropped WAV file), sends
//! 16 kHz PCM16 in 100 ms frames over `/v1/audio/stream`, and shows partials in place,
//! finals appended (words shaded by confidence), per-utterance latency, the gateway's
//! `status` messages and its errors in plain words.
//!
//! Served only when `page.enabled` resolves to true (by default: when authentication is
//! off); otherwise these paths are 404 like any unknown path. Every answer carries
//! `Cache-Control: no-cache` and a strict Content-Security-Policy: scripts, styles and
//! images from the gateway itself only, connections only back to it (`connect-src` with
//! `ws:`/`wss:` to the same host), no frames, forms or plugins.

use axum::Router as HttpRouter;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::config::Config;

const INDEX_HTML: &str = include_str!("page/index.html");
const STYLE_CSS: &str = include_str!("page/style.css");
const APP_JS: &str = include_str!("page/app.js");
const WORKLET_JS: &str = include_str!("page/worklet.js");
const RESAMPLE_JS: &str = include_str!("page/resample.js");
const WAV_JS: &str = include_str!("page/wav.js");
const ICON_SVG: &str = include_str!("page/icon.svg");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The page's routes when `page.enabled` resolves to true; none otherwise (404).
pub fn router(config: &Config) -> HttpRouter<AppState> {
    if !config.page.enabled {
        return HttpRouter::new();
    }
    ASSETS
        .iter()
        .fold(HttpRouter::new(), |router, &(path, content_type, body)| {
            router.route(
                path,
                get(move |h: HeaderMap| async move { asset(&h, content_type, body) }),
            )
        })
}

/// Every path the page serves: (path, content type, the embedded file).
const ASSETS: [(&str, &str, &str); 7] = [
    ("/", HTML, INDEX_HTML),
    ("/style.css", CSS, STYLE_CSS),
    ("/app.js", JS, APP_JS),
    ("/worklet.js", JS, WORKLET_JS),
    ("/resample.js", JS, RESAMPLE_JS),
    ("/wav.js", JS, WAV_JS),
    ("/icon.svg", SVG, ICON_SVG),
];

/// One embedded file with its type and the page's headers.
fn asset(request: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let csp = content_security_policy(request.get(header::HOST));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// Self only. `connect-src 'self'` covers `ws:`/`wss:` to the same host in CSP Level 3
/// browsers; the host's `ws://` and `wss://` origins are listed too for older ones (only
/// when the `Host` header is a plain host name or address with an optional port).
pub fn content_security_policy(host: Option<&HeaderValue>) -> String {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    let connect = match host {
        Some(h) => format!("'self' ws://{h} wss://{h}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_a_well_formed_host() {
        let p = content_security_policy(Some(&HeaderValue::from_static("127.0.0.1:8080")));
        assert!(
            p.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"),
            "{p}"
        );
        let p = content_security_policy(Some(&HeaderValue::from_static("[::1]:8080")));
        assert!(p.contains("ws://[::1]:8080 "), "{p}");
        for bad in ["evil; script-src *", "a b", "x'y", ""] {
            let p = content_security_policy(Some(&HeaderValue::from_str(bad).unwrap()));
            assert!(p.contains("connect-src 'self';"), "{bad}: {p}");
        }
        assert!(content_security_policy(None).contains("connect-src 'self';"));
        assert!(
            content_security_policy(None).starts_with("default-src 'none'; script-src 'self';")
        );
    }

    #[test]
    fn assets_are_embedded_and_reference_each_other() {
        assert!(INDEX_HTML.contains("src=\"/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/style.css\""));
        assert!(APP_JS.contains("/worklet.js"));
        assert!(WORKLET_JS.contains("./resample.js"));
        // no inline script or style: the policy would block them
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
    }
}
