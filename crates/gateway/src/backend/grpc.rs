//! gRPC plumbing shared by the adapters: lazily connected channels, waiting for a usable
//! connection, and the classification of gRPC statuses into [`BackendError`]s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{BackendError, BackendErrorKind};
use crate::config::BackendUrl;
use crate::error::ErrorClass;
use crate::security::files::{self, FileError};

/// Largest response message accepted from a back end.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A channel that connects on first use (and reconnects after failures), with HTTP/2
/// keep-alives so a dead peer is noticed between sessions. TLS: [`client_tls`].
pub fn lazy_channel(url: &BackendUrl, connect_timeout: Duration) -> Result<Channel, BackendError> {
    let invalid = |e: tonic::transport::Error| {
        BackendError::new(
            BackendErrorKind::Unavailable,
            ErrorClass::Internal,
            format!("invalid endpoint {}: {e}", url.url),
        )
    };
    let mut endpoint = Endpoint::from_shared(url.endpoint())
        .map_err(invalid)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.tls {
        let tls = client_tls(url).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Unavailable,
                ErrorClass::Internal,
                format!("TLS settings of {}: {e}", url.url),
            )
        })?;
        endpoint = endpoint.tls_config(tls).map_err(invalid)?;
    }
    Ok(endpoint.connect_lazy())
}

/// Several lazily connected channels to one back end, each its own TCP + HTTP/2
/// connection; streams take them in turn. One connection carries every stream's audio
/// through one socket and one connection task, and a server (or a proxy in front of it)
/// that caps concurrent streams per connection (`MAX_CONCURRENT_STREAMS`, often 100 at a
/// proxy) caps the back end's sessions with it.
pub struct ChannelPool {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl ChannelPool {
    /// `connections` channels (at least one) to `url`.
    pub fn new(
        url: &BackendUrl,
        connect_timeout: Duration,
        connections: usize,
    ) -> Result<Self, BackendError> {
        let channels = (0..connections.max(1))
            .map(|_| lazy_channel(url, connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChannelPool {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// The channel for the next stream (round robin).
    pub fn next(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }

    /// The channel for health probes and model queries (the first).
    pub fn first(&self) -> &Channel {
        &self.channels[0]
    }
}

/// The TLS client configuration of a `rivas://` / `tritons://` back end: its CA bundle
/// (else the system's roots), its client certificate and key (mTLS), its server name
/// (else the URL's host). Every file is read and checked here — readable, PEM, a key that
/// matches its certificate — so a bad file stops start-up with its name.
pub fn client_tls(url: &BackendUrl) -> Result<ClientTlsConfig, FileError> {
    let f = &url.tls_files;
    let mut tls = ClientTlsConfig::new()
        .domain_name(f.server_name.clone().unwrap_or_else(|| url.host.clone()));
    match &f.ca {
        Some(ca) => {
            files::root_store(ca)?;
            tls = tls.ca_certificate(Certificate::from_pem(files::read(ca)?));
        }
        None => tls = tls.with_native_roots(),
    }
    if let (Some(cert), Some(key)) = (&f.cert, &f.key) {
        files::certified_key(cert, key)?;
        tls = tls.identity(Identity::from_pem(files::read(cert)?, files::read(key)?));
    }
    Ok(tls)
}

/// Waits (bounded) until `channel` has a usable connection. Opening a stream must not wait
/// for response headers instead: gRPC servers send those with their first result, which
/// needs audio the session only sends once the stream is open.
pub async fn ready(channel: &Channel, timeout: Duration) -> Result<Channel, BackendError> {
    let mut channel = channel.clone();
    tokio::time::timeout(timeout, tower::ServiceExt::ready(&mut channel))
        .await
        .map_err(|_| {
            BackendError::new(
                BackendErrorKind::Timeout,
                ErrorClass::UpstreamRetryable,
                format!("no connection within {timeout:?}"),
            )
        })?
        .map_err(|e| {
            BackendError::new(
                BackendErrorKind::Unavailable,
                ErrorClass::UpstreamRetryable,
                format!("connect failed: {e}"),
            )
        })?;
    Ok(channel)
}

/// Classifies a gRPC status. Invalid arguments come from the client's own settings
/// (language, model), so they are the client's fault and never count against the back end.
pub fn map_status(status: Status) -> BackendError {
    use BackendErrorKind as K;
    use ErrorClass as C;
    let (kind, class) = match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            (K::Unavailable, C::UpstreamRetryable)
        }
        Code::DeadlineExceeded => (K::Timeout, C::UpstreamRetryable),
        Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::DataLoss
        | Code::OutOfRange => (K::ServerError, C::UpstreamRetryable),
        Code::InvalidArgument => (K::Rejected, C::Client),
        Code::NotFound
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists => (K::Rejected, C::UpstreamFatal),
        Code::Ok => (K::Protocol, C::UpstreamRetryable),
    };
    let mut message = format!("grpc {:?}", status.code());
    if !status.message().is_empty() {
        // Server messages are short diagnostics; cap them so nothing large reaches logs.
        let m: String = status.message().chars().take(200).collect();
        message.push_str(": ");
        message.push_str(&m);
    }
    BackendError::new(kind, class, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let cases = [
            (Code::Unavailable, ErrorClass::UpstreamRetryable),
            (Code::DeadlineExceeded, ErrorClass::UpstreamRetryable),
            (Code::ResourceExhausted, ErrorClass::UpstreamRetryable),
            (Code::Internal, ErrorClass::UpstreamRetryable),
            (Code::InvalidArgument, ErrorClass::Client),
            (Code::NotFound, ErrorClass::UpstreamFatal),
            (Code::Unauthenticated, ErrorClass::UpstreamFatal),
        ];
        for (code, class) in cases {
            assert_eq!(map_status(Status::new(code, "x")).class, class, "{code:?}");
        }
        let long = map_status(Status::new(Code::Internal, "y".repeat(1000)));
        assert!(long.message.len() < 260);
    }
}
