//! Reading PEM files with errors that name the file and the problem, so a bad certificate
//! or key stops start-up with a message an operator can act on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct FileError {
    pub file: PathBuf,
    pub problem: String,
}

fn problem(file: &Path, problem: impl Into<String>) -> FileError {
    FileError {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads a whole file; the error says "cannot read" and the OS reason.
pub fn read(file: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(file).map_err(|e| problem(file, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = read(file)?;
    certificates_from(file, &pem)
}

fn certificates_from(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(file, format!("not a valid PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            file,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        problem(
            file,
            format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })
}

/// The crypto provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain with its key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, FileError> {
    let chain = certificates(cert)?;
    let der = private_key(key)?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => problem(
            key,
            format!(
                "does not match the certificate in {} (the key belongs to another certificate)",
                cert.display()
            ),
        ),
        other => problem(key, format!("unusable private key: {other}")),
    })
}

/// A root store of every certificate in a CA bundle.
pub fn root_store(ca: &Path) -> Result<rustls::RootCertStore, FileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| problem(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The TLS client configuration of an HTTP/1.1 back end (`openais://`, `deepgrams://`):
/// its CA bundle (the URL's or `[backend_tls]`'s), else the system's roots; its client
/// certificate, if any (mTLS); ALPN `http/1.1`.
pub fn backend_http1_config(
    tls: &crate::config::BackendTls,
) -> Result<rustls::ClientConfig, FileError> {
    let roots = match &tls.ca {
        Some(ca) => root_store(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default TLS versions")
        .with_root_certificates(roots);
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            certified_key(cert, key)?;
            builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| problem(key, format!("unusable client key: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client configuration trusting the system's roots and, if given, every certificate
/// of `ca` (e.g. the development CA of `scripts/gen-certs.sh`): the `healthcheck` probe's
/// and the client tools' `https://` / `wss://` connections to a gateway.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, FileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        roots.roots.extend(root_store(ca)?.roots);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = certificates(&missing).unwrap_err();
        assert_eq!(e.file, missing);
        assert!(e.to_string().contains("nope.pem: cannot read"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let e = certificates(&garbage).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        let e = private_key(&garbage).unwrap_err();
        assert!(e.to_string().contains("no usable private key"), "{e}");
    }
}
