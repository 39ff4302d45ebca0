//! The HTTP client of one `openai://` back end: hyper's pooled HTTP/1.1 client over TCP,
//! or over rustls for `openais://` (the same TLS files as `rivas://`: a CA bundle, else
//! the system's roots; an optional client certificate; the server name to check). One
//! client per back end keeps its connections alive between utterances and sessions.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::BackendUrl;
use crate::security::files::{self, FileError};

pub type HttpClient = Client<Connector, Full<Bytes>>;

/// Idle connections are closed after this (servers commonly close theirs after 5–75 s;
/// a request on a connection the server has just closed is retried by the pool).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled client for `url`.
pub fn client(url: &BackendUrl, connect_timeout: Duration) -> Result<HttpClient, FileError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false); // `https://` URIs: TLS is this connector's own
    let tls = match url.tls {
        true => {
            let name = url
                .tls_files
                .server_name
                .clone()
                .unwrap_or_else(|| url.host.clone());
            let name = ServerName::try_from(name.clone()).map_err(|_| FileError {
                file: Default::default(),
                problem: format!("`{name}` is not a valid TLS server name"),
            })?;
            Some((TlsConnector::from(Arc::new(tls_config(url)?)), name))
        }
        false => None,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(Connector { http, tls }))
}

/// rustls for `openais://`: HTTP/1.1 by ALPN, the URL's CA bundle (else the system's
/// roots), its client certificate if any.
fn tls_config(url: &BackendUrl) -> Result<rustls::ClientConfig, FileError> {
    files::backend_http1_config(&url.tls_files)
}

/// TCP, then TLS when the back end is `openais://`.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?.into_inner();
            let stream = match tls {
                None => Stream::Plain(tcp),
                Some((connector, name)) => {
                    Stream::Tls(Box::new(connector.connect(name, tcp).await?))
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A connection to the back end, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
