//! The pre-upgrade gate every session endpoint shares. In this order: the per-IP
//! connection rate (429), the Origin allow-list (403), the credentials (401), the per-IP,
//! per-subject and per-API-key session caps (429), drain and admission (503). A refusal is counted
//! and logged once, here, and answered in the dialect's error shape with `Retry-After`
//! where waiting helps.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::dialect::{Contract, Upgrade};
use crate::config::Config;
use crate::resilience::admission::{Refusal, Ticket};
use crate::security::auth::{AuthError, Verified};
use crate::security::quota::QuotaGuard;
use crate::security::tls::PeerAddr;
use crate::session::{ErrorKind, SessionError};

/// A request the gate let through: its admission ticket, the name of its API key (if it
/// came with one), and its places under the per-IP, per-subject and per-key caps, held
/// for the life of the session.
pub struct Admitted {
    pub ticket: Ticket,
    pub key: Option<Arc<str>>,
    places: Places,
}

type Places = (
    Option<QuotaGuard<IpAddr>>,
    Option<QuotaGuard<String>>,
    Option<QuotaGuard<Arc<str>>>,
);

impl Admitted {
    /// The ticket for the session, its API key's name, and the places to hold until it
    /// ends.
    pub fn into_parts(self) -> (Ticket, Option<Arc<str>>, impl Send + 'static) {
        (self.ticket, self.key, self.places)
    }
}

/// Runs every check; the response is the refusal to send (boxed: it is large, and the
/// refusal is the rare path).
pub fn check<D: Contract>(
    state: &AppState,
    peer: PeerAddr,
    request: &Upgrade<'_>,
) -> Result<Admitted, Box<Response>> {
    let (ip, verified) = authenticate_from::<D>(state, peer, request)?;
    admit::<D>(state, ip, verified)
}

/// The checks of a request that opens no session (a listing): the connection rate, the
/// Origin and the credentials.
pub fn authenticate<D: Contract>(
    state: &AppState,
    peer: PeerAddr,
    request: &Upgrade<'_>,
) -> Result<(), Box<Response>> {
    authenticate_from::<D>(state, peer, request).map(|_| ())
}

type Authenticated = (IpAddr, Option<Verified>);

fn authenticate_from<D: Contract>(
    state: &AppState,
    peer: PeerAddr,
    request: &Upgrade<'_>,
) -> Result<Authenticated, Box<Response>> {
    let ip = client_ip(&state.config, request.headers, peer);
    if let Some(limiter) = &state.limiter
        && let Err(wait) = limiter.check(ip)
    {
        state.ctx.metrics.rejected("ip_rate_limit");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(Box::new(refusal::<D>(
            StatusCode::TOO_MANY_REQUESTS,
            Some(secs),
            ErrorKind::RateLimitExceeded,
            &format!("too many connection attempts from this address; retry after {secs} s"),
        )));
    }
    let allowed = &state.config.limits.allowed_origins;
    // Every `Origin` header must be allowed (a request carrying two is refused unless
    // both are: a proxy or client must not be able to hide one behind the other).
    if !allowed.is_empty()
        && request
            .headers
            .get_all(header::ORIGIN)
            .iter()
            .any(|origin| !allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()))
    {
        state.ctx.metrics.rejected("origin");
        tracing::info!("refused a session from an origin not in limits.allowed_origins");
        return Err(Box::new(refusal::<D>(
            StatusCode::FORBIDDEN,
            None,
            ErrorKind::AuthenticationFailed,
            "this origin is not allowed to open sessions",
        )));
    }
    let verified = match &state.auth {
        None => None,
        Some(authenticator) => {
            let verified = D::credentials(request, state.config.auth.query_token)
                .and_then(|token| authenticator.verify(&token.ok_or(AuthError::Missing)?));
            match verified {
                Ok(v) => Some(v),
                Err(why) => return Err(Box::new(unauthenticated::<D>(state, why))),
            }
        }
    };
    Ok((ip, verified))
}

/// The session caps (per IP, subject, API key), drain and admission.
fn admit<D: Contract>(
    state: &AppState,
    ip: IpAddr,
    verified: Option<Verified>,
) -> Result<Admitted, Box<Response>> {
    let Some(ip_place) = state.sessions_per_ip.enter(&ip) else {
        return Err(Box::new(too_many_sessions::<D>(state, SessionCap::Ip)));
    };
    let (subject, key) = match verified {
        Some(Verified { subject, key }) => (subject, key),
        None => (None, None),
    };
    let subject_place = match subject {
        None => None,
        Some(sub) => match state.sessions_per_subject.enter(&sub) {
            Some(place) => place,
            None => return Err(Box::new(too_many_sessions::<D>(state, SessionCap::Subject))),
        },
    };
    let key_place = match &key {
        None => None,
        Some(k) => match state.sessions_per_key.enter_up_to(&k.name, k.max_sessions) {
            Some(place) => place,
            None => {
                return Err(Box::new(too_many_sessions::<D>(
                    state,
                    SessionCap::Key(k.max_sessions),
                )));
            }
        },
    };
    let admitted = if state.draining.is_cancelled() {
        Err(Refusal::Draining)
    } else if state.overload.overloaded() {
        Err(Refusal::Overloaded)
    } else {
        state.admission.admit().ok_or(Refusal::GlobalLimit)
    };
    match admitted {
        Ok(ticket) => Ok(Admitted {
            ticket,
            key: key.map(|k| k.name.clone()),
            places: (ip_place, subject_place, key_place),
        }),
        Err(why) => Err(Box::new(refuse::<D>(state, why))),
    }
}

/// 400 for a request the dialect cannot open a session from (its settings).
pub fn bad_request<D: Contract>(state: &AppState, e: &SessionError) -> Response {
    state.ctx.metrics.rejected("bad_request");
    refusal::<D>(StatusCode::BAD_REQUEST, None, e.kind, &e.message)
}

/// A refusal in the dialect's shape, with `Retry-After` when given.
pub fn refusal<D: Contract>(
    status: StatusCode,
    retry_after: Option<u64>,
    kind: ErrorKind,
    message: &str,
) -> Response {
    let mut response = (status, axum::Json(D::error_body(kind, message))).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// 401 with the dialect's body and a `WWW-Authenticate` challenge.
fn unauthenticated<D: Contract>(state: &AppState, why: AuthError) -> Response {
    state.ctx.metrics.rejected("unauthenticated");
    state.ctx.metrics.auth_failed(why.reason());
    tracing::info!(
        reason = why.reason(),
        "refused a session: authentication failed"
    );
    let challenge = match why {
        AuthError::Missing => r#"Bearer realm="speech-gateway""#.to_string(),
        other => format!(
            r#"Bearer realm="speech-gateway", error="invalid_token", error_description="{}""#,
            other.message()
        ),
    };
    let mut response = refusal::<D>(
        StatusCode::UNAUTHORIZED,
        None,
        ErrorKind::AuthenticationFailed,
        why.message(),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The `Retry-After` of every refusal made for the gateway's own limits (whole seconds).
pub fn retry_after_secs(state: &AppState) -> u64 {
    state.admission.settings().retry_after.as_secs().max(1)
}

/// Which concurrent-session cap refused a session.
#[derive(Clone, Copy)]
enum SessionCap {
    Ip,
    Subject,
    /// An API key's own `max_sessions`.
    Key(usize),
}

/// 429 for a client IP or token subject at its concurrent-session cap.
fn too_many_sessions<D: Contract>(state: &AppState, cap: SessionCap) -> Response {
    let (reason, who, key, limit) = match cap {
        SessionCap::Ip => (
            "ip_session_limit",
            "this address",
            "limits.max_sessions_per_ip",
            state.sessions_per_ip.limit(),
        ),
        SessionCap::Subject => (
            "subject_session_limit",
            "this token's subject",
            "limits.max_sessions_per_subject",
            state.sessions_per_subject.limit(),
        ),
        SessionCap::Key(limit) => (
            "key_session_limit",
            "this API key",
            "its max_sessions in auth.api_keys_file",
            limit,
        ),
    };
    state.ctx.metrics.rejected(reason);
    let retry_after = retry_after_secs(state);
    refusal::<D>(
        StatusCode::TOO_MANY_REQUESTS,
        Some(retry_after),
        ErrorKind::RateLimitExceeded,
        &format!(
            "{who} already holds {limit} live sessions ({key}); end one or retry after {retry_after} s"
        ),
    )
}

/// 503 with `Retry-After`: draining, overloaded, or at the session limit.
fn refuse<D: Contract>(state: &AppState, why: Refusal) -> Response {
    state.ctx.metrics.rejected(why.as_str());
    let retry_after = retry_after_secs(state);
    let message = match why {
        Refusal::Draining => {
            "the gateway is shutting down; connect to another instance".to_string()
        }
        Refusal::Overloaded => format!(
            "the gateway is overloaded: its tasks run {} ms late on average \
             (admission.max_delay {} ms), and more sessions would slow every session; \
             retry after {retry_after} s or connect to another instance",
            state.overload.delay().as_millis(),
            state.overload.limit().unwrap_or_default().as_millis()
        ),
        _ => format!(
            "the gateway is at its limit of {} sessions; retry after {retry_after} s",
            state.admission.settings().max_sessions
        ),
    };
    refusal::<D>(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(retry_after),
        ErrorKind::RateLimitExceeded,
        &message,
    )
}

/// The address the connection limit counts: the TCP peer, or — behind a proxy, when
/// `limits.client_ip_header` is set — the last address in that header (the one the
/// proxy itself appended; earlier ones are the client's word).
pub(super) fn client_ip(config: &Config, headers: &HeaderMap, peer: PeerAddr) -> IpAddr {
    config
        .limits
        .client_ip_header
        .as_deref()
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.0.ip())
}
