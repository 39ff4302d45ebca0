//! TLS on the client-facing listener: a rustls server configuration (TLS 1.3 preferred,
//! 1.2 accepted, ALPN `http/1.1` for WebSocket upgrades) whose certificate can be swapped
//! while the gateway runs.
//!
//! The handshakes themselves run in the connection layer ([`crate::ingress::server`]), each
//! in its connection's task, bounded in number (gateway-wide and per peer address) and in
//! time, so a client that opens a TCP connection and never speaks TLS holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::files::{self, FileError};
use super::reload::{FileStamp, Reloadable};

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

/// The client's TCP peer address, as handlers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);
