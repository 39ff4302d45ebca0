//! `GET /realtimestt/health`: the phone-call STT server's JSON health shape, as a view of
//! what `/status` and `/metrics` hold (for monitoring written against that server). Each
//! field's meaning here:
//!
//! | field | gateway |
//! |---|---|
//! | `status` | `healthy` (ready: every route has a usable back end), `draining`, or `unhealthy` |
//! | `recorder_state` | `ready`, `draining` or `unavailable`, likewise |
//! | `uptime_seconds` | since the gateway started |
//! | `active_connections` | live sessions, every dialect |
//! | `total_connections` | sessions ended since start, plus the live ones |
//! | `connections_per_minute` | `total_connections` over the uptime |
//! | `audio_chunks_processed` | audio received by all sessions, in 100 ms chunks |
//! | `transcription_errors` | errors sent to clients (`sgw_errors_total`) |
//! | `recorder_errors` | back-end requests that failed (`sgw_backend_requests_total`, outcome other than `ok`) |
//! | `last_activity_seconds` | 0 while a session is live; `null` otherwise (not tracked) |
//! | `consecutive_errors` | the most consecutive failures of any back end now |
//! | `recovery_attempts` | retries of failed back-end streams (`sgw_retries_total`) |
//!
//! It is served where `/status` is: on the admin listener when `admin_listen` is set.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::ingress::AppState;

pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.ctx.metrics.encode();
    let draining = state.draining.is_cancelled();
    let ready = state.ctx.router.ready();
    let routes = state.ctx.router.status();
    let consecutive = routes
        .iter()
        .flat_map(|r| &r.backends)
        .map(|b| b.consecutive_failures)
        .max()
        .unwrap_or(0);
    axum::Json(view(
        &text,
        ready,
        draining,
        state.started.elapsed().as_secs_f64(),
        consecutive,
    ))
}

/// The sum of every sample of `name` (any labels) whose labels do not contain `except`.
fn sum(text: &str, name: &str, except: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            if except.is_some_and(|e| rest.contains(e)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// The health body from the Prometheus text and the gateway's state.
fn view(metrics: &str, ready: bool, draining: bool, uptime_s: f64, consecutive: u32) -> Value {
    let (status, recorder) = match (draining, ready) {
        (true, _) => ("draining", "draining"),
        (false, true) => ("healthy", "ready"),
        (false, false) => ("unhealthy", "unavailable"),
    };
    let active = sum(metrics, "sgw_sessions_active", None);
    let total = sum(metrics, "sgw_sessions_total", None) + active;
    let per_minute = if uptime_s > 0.0 {
        total * 60.0 / uptime_s
    } else {
        0.0
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "status": status,
        "recorder_state": recorder,
        "uptime_seconds": round(uptime_s),
        "active_connections": active as u64,
        "total_connections": total as u64,
        "connections_per_minute": round(per_minute),
        "audio_chunks_processed": (sum(metrics, "sgw_audio_seconds_total", None) * 10.0) as u64,
        "transcription_errors": sum(metrics, "sgw_errors_total", None) as u64,
        "recorder_errors": sum(metrics, "sgw_backend_requests_total", Some("outcome=\"ok\"")) as u64,
        "last_activity_seconds": if active > 0.0 { json!(0.0) } else { Value::Null },
        "consecutive_errors": consecutive,
        "recovery_attempts": sum(metrics, "sgw_retries_total", None) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_sums_the_metrics() {
        let text = "# HELP sgw_sessions Sessions ended\n\
            sgw_sessions_active 2\n\
            sgw_sessions_total{dialect=\"v1\",outcome=\"completed\"} 3\n\
            sgw_sessions_total{dialect=\"realtimestt\",outcome=\"client_gone\"} 1\n\
            sgw_sessions_lagging 1\n\
            sgw_audio_seconds_total{key=\"\"} 1.5\n\
            sgw_errors_total{code=\"INVALID_REQUEST\"} 4\n\
            sgw_backend_requests_total{backend=\"riva://a:1\",outcome=\"ok\"} 9\n\
            sgw_backend_requests_total{backend=\"riva://a:1\",outcome=\"unavailable\"} 2\n\
            sgw_retries_total{reason=\"ok\"} 1\n";
        let v = view(text, true, false, 120.0, 0);
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["active_connections"], 2);
        assert_eq!(v["total_connections"], 6);
        assert_eq!(v["connections_per_minute"], 3.0);
        assert_eq!(v["audio_chunks_processed"], 15);
        assert_eq!(v["transcription_errors"], 4);
        assert_eq!(v["recorder_errors"], 2);
        assert_eq!(v["recovery_attempts"], 1);
        assert_eq!(v["last_activity_seconds"], 0.0);
        assert_eq!(
            view("", false, false, 1.0, 3)["recorder_state"],
            "unavailable"
        );
        assert_eq!(view("", true, true, 1.0, 0)["status"], "draining");
    }
}
