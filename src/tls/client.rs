//! TLS to the services satgate calls: the inventory service, and the SSI upstream when it is not
//! on the pod's loopback. Their answers decide who sees what, so the channel is authenticated
//! both ways:
//!
//! - the server's chain must lead to a trust anchor of the CA file given (no built-in roots: a
//!   deployment that wants the system's names the system bundle file), and name the host of the
//!   URL; TLS 1.2 or 1.3 only (rustls' defaults);
//! - with a client certificate, satgate proves who it is, and refuses a server that does not ask
//!   for it (a service that answers anyone is not the one configured to know satgate);
//! - no session resumption: every connection is verified against the files in force, so a CA
//!   removed at rotation stops being trusted at the next connection.
//!
//! The files are reloaded when they change (the one reload mechanism, [`crate::watch`]); a broken
//! new set keeps the last good one. Handshake failures are counted by reason and the last one is
//! kept for `/readyz`; none of this carries key material.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::{ResolvesClientCert, Resumption};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, sign, ClientConfig, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::TlsError;
use crate::watch::Reloadable;

/// The PEM files of one outbound TLS client: trust anchors, and the client certificate chain and
/// its key for mutual TLS (both or neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.ca.clone()];
        if let Some((cert, key)) = &self.client {
            paths.extend([cert.clone(), key.clone()]);
        }
        paths
    }
}

/// `satgate_outbound_tls_failures_total{peer, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub peer: &'static str,
    pub reason: &'static str,
}

/// Counts shared with the metrics registry (cloning a family shares it).
pub type Failures = Family<FailureLabel, Counter>;

/// Why a handshake (or the first read after it) failed, in one word.
pub const REASONS: [&str; 6] = [
    "unknown_ca",
    "wrong_name",
    "expired",
    "client_cert_refused",
    "client_cert_not_requested",
    "other",
];

/// The client configuration in force for one peer, swapped whole when its files change.
pub struct ClientTls {
    peer: &'static str,
    files: ClientTlsFiles,
    config: Reloadable<ClientConfig>,
    failures: Failures,
    /// The last TLS outcome: 0 after a handshake or a read that succeeded, `i + 1` after a
    /// failure for `REASONS[i]`.
    last_failure: AtomicUsize,
    /// Bumped by each reload that changes the files in force: a connection made before it is not
    /// used for another request (see [`Self::current_generation`]).
    generation: AtomicU64,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("peer", &self.peer)
            .field("files", &self.files)
            .finish()
    }
}

impl ClientTls {
    /// `peer` names the service in metrics and logs (`inventory`, `upstream`).
    pub fn load(peer: &'static str, files: ClientTlsFiles, failures: Failures) -> Result<Self, TlsError> {
        for reason in REASONS {
            let _ = failures.get_or_create(&FailureLabel { peer, reason });
        }
        let config = Reloadable::load(&files.paths(), || client_config(peer, &files))?;
        Ok(Self {
            peer,
            files,
            config,
            failures,
            last_failure: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        })
    }

    pub fn peer(&self) -> &'static str {
        self.peer
    }

    /// The error of the last reload, if it failed (the previous files are still in use).
    pub fn last_error(&self) -> Option<String> {
        self.config.last_error()
    }

    /// Why the last TLS exchange failed; `None` once a handshake or a read has succeeded since
    /// (or none was made), so a pooled connection that keeps working clears an old failure.
    pub fn last_failure(&self) -> Option<&'static str> {
        let n = self.last_failure.load(Ordering::Relaxed);
        n.checked_sub(1).and_then(|i| REASONS.get(i).copied())
    }

    /// Notes that data arrived over TLS (a cheap load on the read path; a store only after a
    /// failure).
    pub fn succeeded(&self) {
        if self.last_failure.load(Ordering::Relaxed) != 0 {
            self.last_failure.store(0, Ordering::Relaxed);
        }
    }

    /// Reloads if any file changed and all have settled: `Some(Ok(()))` on success.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let reloaded = self
            .config
            .reload(|| self.files.paths(), || client_config(self.peer, &self.files))?;
        if reloaded.is_ok() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Some(reloaded.map(drop))
    }

    /// Which files a connection was verified with: a pooled connection of an older generation
    /// may have been verified against a CA the rotation removed, so it refuses new requests
    /// (kept alive under steady load, it would otherwise never be checked again).
    pub fn current_generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The TLS handshake over `tcp` to `host` (the URL's host: the name the certificate must be
    /// valid for).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        // A configuration of its own per connection, sharing everything but the flag that tells
        // whether this server asked for the client certificate.
        let mut config = ClientConfig::clone(&self.config.current());
        let asked = Arc::new(AtomicBool::new(false));
        let wants_client_cert = config.client_auth_cert_resolver.has_certs();
        config.client_auth_cert_resolver = Arc::new(Asked {
            inner: Arc::clone(&config.client_auth_cert_resolver),
            asked: Arc::clone(&asked),
        });
        let result = TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
        let result = match result {
            Ok(_) if wants_client_cert && !asked.load(Ordering::SeqCst) => {
                Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, NotRequested))
            }
            other => other,
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    /// Counts and logs a failed handshake, or a read that failed because the server refused the
    /// client certificate after the handshake (TLS 1.3 sends that refusal after it). Other I/O
    /// errors are not TLS failures and are left to the caller.
    pub fn failed(&self, e: &std::io::Error) {
        let Some(reason) = reason(e) else { return };
        self.failures
            .get_or_create(&FailureLabel {
                peer: self.peer,
                reason,
            })
            .inc();
        let index = REASONS.iter().position(|r| *r == reason).unwrap_or(REASONS.len() - 1);
        self.last_failure.store(index + 1, Ordering::Relaxed);
        // The error names certificates and alerts, never key material.
        tracing::warn!(peer = self.peer, reason, error = %e.to_string().escape_debug(), "outbound TLS failed");
    }
}

/// The reason label of a TLS failure; `None` for an I/O error that is not one.
pub fn reason(e: &std::io::Error) -> Option<&'static str> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let inner = e.get_ref()?;
    if inner.is::<NotRequested>() {
        return Some("client_cert_not_requested");
    }
    let tls = inner.downcast_ref::<R>()?;
    Some(match tls {
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown_ca",
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => "wrong_name",
        R::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "expired",
        R::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked,
        ) => "client_cert_refused",
        _ => "other",
    })
}

/// A server that completed the handshake without asking for the client certificate.
#[derive(Debug, thiserror::Error)]
#[error("the server did not ask for satgate's client certificate")]
struct NotRequested;

/// Wraps the client certificate resolver to note that the server asked for a certificate (rustls
/// calls it only then).
#[derive(Debug)]
struct Asked {
    inner: Arc<dyn ResolvesClientCert>,
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for Asked {
    fn resolve(&self, hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<sign::CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.inner.resolve(hints, schemes)
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

fn client_config(peer: &str, files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let setting = |what: &str| format!("{peer}-{what}");
    let mut roots = RootCertStore::empty();
    let anchors = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {}: {e}", setting("ca-file"), files.ca.display())))?;
    let (added, _ignored) = roots.add_parsable_certificates(anchors);
    if added == 0 {
        return Err(TlsError(format!(
            "{}: {}: no usable CA certificate in the file",
            setting("ca-file"),
            files.ca.display()
        )));
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError(format!("{}: {}: {e}", setting("client-cert-file"), cert.display())))?;
            if chain.is_empty() {
                return Err(TlsError(format!(
                    "{}: {}: no certificate in the file",
                    setting("client-cert-file"),
                    cert.display()
                )));
            }
            let private = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError(format!("{}: {}: {e}", setting("client-key-file"), key.display())))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                TlsError(format!(
                    "{peer} client certificate: {} and {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
