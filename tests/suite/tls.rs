//! TLS termination: records served over TLS exactly as over plain HTTP, plain HTTP refused on a
//! TLS listener, and certificates rotated under a running sidecar.
//!
//! `tests/data/tls/{a,b}.{crt,key}`: two self-signed P-256 certificates for `localhost` and
//! 127.0.0.1, test-only, made with `openssl req -x509 -newkey ec -pkeyopt
//! ec_paramgen_curve:P-256 -nodes -days 36500 -addext subjectAltName=DNS:localhost,IP:127.0.0.1`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use satgate::tls::TlsFiles;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::sidecar::{reload, start_sidecar_with, Sidecar};
use crate::support::upstream::start_upstream;
use crate::support::{expected_for, token, users};

/// A client that trusts only the certificate in `tests/data/tls/{name}.crt`.
fn trusting(name: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(format!("tests/data/tls/{name}.crt")).unwrap())
        .unwrap();
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// GET over TLS: status and body, or the error (handshake or HTTP) as text.
async fn get_tls(addr: SocketAddr, client: &TlsConnector, path: &str, bearer: &str) -> Result<(u16, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = client.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {bearer}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body.to_vec()))
}

/// A sidecar serving TLS from copies of `tests/data/tls/{name}.*` in its directory.
async fn tls_sidecar(name: &str) -> (Sidecar, crate::support::upstream::Upstream) {
    let up = start_upstream().await;
    let name = name.to_owned();
    let s = start_sidecar_with(format!("http://{}", up.addr), move |cfg, dir| {
        let files = TlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        std::fs::copy(format!("tests/data/tls/{name}.crt"), &files.cert).unwrap();
        std::fs::copy(format!("tests/data/tls/{name}.key"), &files.key).unwrap();
        cfg.tls = Some(files);
    })
    .await;
    (s, up)
}

#[tokio::test]
async fn over_tls_a_caller_sees_exactly_what_plain_http_shows_and_plain_http_is_refused() {
    let (s, _up) = tls_sidecar("a").await;
    for (sub, role, party) in users() {
        let (status, body) = get_tls(
            s.addr,
            &trusting("a"),
            "/sat/records?mode=ok&n=200",
            &token(&sub, &role, &party, 300),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert!(body == expected_for(&sub, &role, &party, 200), "{role}/{party}");
    }

    // A plain HTTP request to the TLS port gets no HTTP answer at all.
    let (sub, role, party) = users().remove(0);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("http://{}/sat/records?mode=ok&n=10", s.addr))
        .header("authorization", format!("Bearer {}", token(&sub, &role, &party, 300)))
        .body(Empty::new())
        .unwrap();
    assert!(client.request(req).await.is_err());
    // The handshake failure is counted once the server has read and refused the bytes.
    for _ in 0..100 {
        if s.state.metrics.tls_handshake_failures.get() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.state.metrics.tls_handshake_failures.get(), 1);

    // A client that does not trust the certificate never gets to send its token.
    let err = get_tls(s.addr, &trusting("b"), "/healthz", "x").await.unwrap_err();
    assert!(err.starts_with("handshake:"), "{err}");
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_a_broken_one_keeps_the_last_good() {
    let (s, _up) = tls_sidecar("a").await;
    let supa = {
        let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
        token(&sub, &role, &party, 300)
    };
    let path = "/sat/records?mode=ok&n=20";
    assert_eq!(get_tls(s.addr, &trusting("a"), path, &supa).await.unwrap().0, 200);

    // Rotation: the key is replaced first, then the certificate, as a tool writing two files
    // would; the reload waits for both to settle.
    let dir = s.dir.path();
    std::fs::copy("tests/data/tls/b.key", dir.join("server.key")).unwrap();
    std::fs::copy("tests/data/tls/b.crt", dir.join("server.crt")).unwrap();
    reload(&s.state);
    let tls = s.state.tls.as_ref().unwrap();
    assert_eq!(tls.last_error(), None);
    assert_eq!(get_tls(s.addr, &trusting("b"), path, &supa).await.unwrap().0, 200);
    let err = get_tls(s.addr, &trusting("a"), path, &supa).await.unwrap_err();
    assert!(err.starts_with("handshake:"), "{err}");

    // A broken certificate file: reported, and the last good pair keeps serving.
    std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
    reload(&s.state);
    let last = tls.last_error().expect("the failed reload is reported");
    assert!(last.starts_with("tls-cert-file:"), "{last}");
    assert_eq!(get_tls(s.addr, &trusting("b"), path, &supa).await.unwrap().0, 200);
    let failed = s
        .state
        .metrics
        .tls_reloads
        .get_or_create(&satgate::metrics::ResultLabel { result: "failed" })
        .get();
    assert_eq!(failed, 1);
}
