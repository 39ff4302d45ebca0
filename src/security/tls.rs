//! TLS on the client-facing listener: a rustls server configuration (TLS 1.3 preferred,
//! 1.2 accepted, ALPN `http/1.1` for WebSocket upgrades) whose certificate can be swapped
//! while the gateway runs, and a listener that completes handshakes off the accept path.
//!
//! Handshakes run in their own tasks (bounded in number and in time), so a client that
//! opens a TCP connection and never speaks TLS holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::files::{self, FileError};
use super::reload::{FileStamp, Reloadable};
use crate::telemetry::metrics::Metrics;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;

/// The listener's certificate and key, re-read from their files on demand.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: FileStamp,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair, refusing files that cannot be read, parsed, or do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, FileError> {
        let loaded = files::certified_key(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
            stamp: FileStamp::new(&[cert, key]),
        }))
    }
}

impl Reloadable for CertStore {
    fn what(&self) -> &'static str {
        "tls_certificate"
    }

    fn changed(&self) -> bool {
        self.stamp.changed()
    }

    /// Swaps in the new pair only if it is complete and consistent: a half-written
    /// rotation keeps the old certificate serving.
    fn reload(&self) -> Result<(), FileError> {
        self.stamp.refresh();
        let loaded = files::certified_key(&self.cert, &self.key)?;
        *self.current.write().expect("cert lock") = Arc::new(loaded);
        Ok(())
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().expect("cert lock").clone())
    }
}

/// The server configuration: TLS 1.3 and 1.2 (1.3 preferred by rustls), no client
/// certificates, ALPN `http/1.1`.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(files::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Accepts TCP connections and hands out those whose TLS handshake completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, metrics: Arc<Metrics>) -> Self {
        let local = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ready, metrics) = (acceptor.clone(), tx.clone(), metrics.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failed("error");
                            tracing::debug!(error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake_failed("timeout");
                            tracing::debug!("TLS handshake timed out");
                        }
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        TlsListener {
            ready,
            local,
            acceptor: task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// The gateway's listener: plain TCP or TLS.
pub enum GatewayListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Listener for GatewayListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            GatewayListener::Plain(l) => {
                let (io, addr) = Listener::accept(l).await;
                let _ = io.set_nodelay(true);
                (Either::Left(io), addr)
            }
            GatewayListener::Tls(l) => match l.ready.recv().await {
                Some((io, addr)) => (Either::Right(io), addr),
                // The acceptor task only ends when the listener is dropped.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            GatewayListener::Plain(l) => l.local_addr(),
            GatewayListener::Tls(l) => Ok(l.local),
        }
    }
}

/// The client's TCP peer address, as handlers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, GatewayListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, GatewayListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
