//! A stand-in for the inventory service behind `--inventory-url`, answering from an inventory
//! document: `GET /devices/{deviceId}` gives that Device and its meter points, or 404. Over plain
//! HTTP, or TLS with a required client certificate (the pod test's HTTPS inventory service).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The answer for one Device: an inventory document with just it and its meter points.
pub fn answer(inventory: &Value, device_id: &str) -> Option<String> {
    let device = inventory["devices"]
        .as_array()?
        .iter()
        .find(|d| d["deviceId"] == device_id)?;
    let mpxns = device["mpxns"].as_array()?;
    let points: Vec<&Value> = inventory["meterPoints"]
        .as_array()?
        .iter()
        .filter(|mp| mpxns.contains(&mp["mpxn"]))
        .collect();
    Some(json!({"meterPoints": points, "devices": [device]}).to_string())
}

/// Serves `inventory` until the task is dropped.
pub async fn serve(listener: TcpListener, inventory: Arc<Value>) {
    serve_over(listener, inventory, None).await
}

/// Serves `inventory` over TLS until the task is dropped; a connection whose handshake fails
/// (another CA, no client certificate when one is required) is dropped.
pub async fn serve_tls(listener: TcpListener, inventory: Arc<Value>, acceptor: TlsAcceptor) {
    serve_over(listener, inventory, Some(acceptor)).await
}

/// A TLS acceptor for the stand-in: its certificate chain and key, and with `client_ca` a client
/// certificate of that CA required, as a real inventory service would require satgate's.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, String> {
    let pem = |p: &Path| {
        CertificateDer::pem_file_iter(p)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let chain = pem(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(pem(ca)?);
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_over(listener: TcpListener, inventory: Arc<Value>, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (inventory, tls) = (Arc::clone(&inventory), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, inventory).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        connection(stream, inventory).await;
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, inventory: Arc<Value>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let found = req
            .uri()
            .path()
            .strip_prefix("/devices/")
            .and_then(|id| answer(&inventory, id));
        let (status, body) = match found {
            Some(body) => (http::StatusCode::OK, body),
            None => (http::StatusCode::NOT_FOUND, String::new()),
        };
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        async move { Ok::<_, Infallible>(resp) }
    });
    let _ = http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}
