//! TLS termination for the listener: a certificate chain and key from PEM files, reloaded when
//! they change (certificates are rotated under a running sidecar), a broken new pair keeping the
//! last good one in service.
//!
//! Bearer tokens cross this connection, so it is TLS 1.2 or 1.3 only (rustls' defaults: no
//! legacy versions or ciphers) and HTTP/1.1 by ALPN.
//!
//! [`client`]: TLS the other way, to the services satgate calls.

pub mod client;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::watch::Reloadable;

/// Why a certificate and key pair cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The listener's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The acceptor in force, swapped whole when the files change.
pub struct ServerTls {
    files: TlsFiles,
    acceptor: Reloadable<TlsAcceptor>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let acceptor = Reloadable::load(&files.paths(), || acceptor(&files))?;
        Ok(Self { files, acceptor })
    }

    /// The acceptor for a new connection; connections keep the one they started with.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::clone(&self.acceptor.current())
    }

    /// The error of the last reload, if it failed (the previous pair is still in use).
    pub fn last_error(&self) -> Option<String> {
        self.acceptor.last_error()
    }

    /// Reloads if either file changed and both have settled: `Some(Ok(()))` on success.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let reloaded = self.acceptor.reload(|| self.files.paths(), || acceptor(&self.files))?;
        Some(reloaded.map(drop))
    }
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError(format!("tls-key-file: {}: {e}", files.key.display())))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "tls: {} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("tls-cert-file: {}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "tls-cert-file: {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: format!("tests/data/tls/{cert}").into(),
            key: format!("tests/data/tls/{key}").into(),
        }
    }

    #[test]
    fn a_matching_pair_loads() {
        assert!(ServerTls::load(files("a.crt", "a.key")).is_ok());
    }

    #[test]
    fn problems_name_the_setting() {
        let err = |f: TlsFiles| ServerTls::load(f).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(files("a.key", "a.key")).starts_with("tls-cert-file:"));
        assert!(err(files("a.crt", "a.crt")).starts_with("tls-key-file:"));
        assert!(err(files("a.crt", "missing.key")).starts_with("tls-key-file:"));
        assert!(err(files("missing.crt", "a.key")).starts_with("tls-cert-file:"));
        // The key of another certificate.
        assert!(
            err(files("a.crt", "b.key")).starts_with("tls:"),
            "{}",
            err(files("a.crt", "b.key"))
        );
    }
}
