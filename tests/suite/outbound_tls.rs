//! TLS to the inventory service: owner views only from a service that proves, with a certificate
//! of the configured CA for the URL's host, that it is the inventory, and that asks for satgate's
//! client certificate. Every other case (another CA, another name, an expired certificate, a
//! refused or unrequested client certificate, plain text) gives no owner view to anyone, leaves
//! own records served, and is counted and shown in `/readyz`.
//!
//! The certificates are made here, per test, with rcgen.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use satgate::config::OwnershipSourceConfig;
use satgate::ownership::HttpSettings;
use satgate::tls::client::{ClientTlsFiles, FailureLabel};
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::support::sidecar::{get, reload, start_sidecar_with, try_start_sidecar_with, Sidecar};
use crate::support::upstream::{start_upstream, Upstream};
use crate::support::{engine, expected_for, sample, token, users};

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate chain and its key, as PEM.
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`; `expired`: valid only in January 2020.
    fn issue(&self, names: &[&str], expired: bool) -> Pair {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 31);
        }
        let key = KeyPair::generate().unwrap();
        Pair {
            cert: params.signed_by(&key, &self.issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }
}

/// What the stand-in inventory service answers.
#[derive(Clone, Copy)]
enum Answers {
    /// The sample inventory, one Device per call.
    Sample,
    /// Every Party of the test users registered in every role on every Device asked about.
    EveryoneOwnsEverything,
}

/// How the stand-in authenticates callers.
enum ClientAuth {
    /// Requires a client certificate of this CA.
    Require(String),
    /// Asks for none.
    None,
}

/// An inventory service over TLS with `server`'s certificate, on 127.0.0.1 (named `localhost`
/// in the URL given back); `None` for `server`: plain HTTP on that URL.
async fn inventory(server: Option<&Pair>, clients: ClientAuth, answers: Answers) -> String {
    let inv: Value = serde_json::from_str(&std::fs::read_to_string("tests/data/inventory.json").unwrap()).unwrap();
    let acceptor = server.map(|pair| {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
        let builder = ServerConfig::builder();
        let builder = match &clients {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Require(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                    .unwrap();
                builder.with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap())
            }
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (inv, acceptor) = (inv.clone(), acceptor.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let id = req.uri().path().trim_start_matches("/devices/").to_owned();
                    let body = match answers {
                        Answers::Sample => satgate::sample::inventory_service::answer(&inv, &id),
                        Answers::EveryoneOwnsEverything => Some(everyone_owns(&id)),
                    };
                    let mut r =
                        hyper::Response::new(http_body_util::Full::new(Bytes::from(body.clone().unwrap_or_default())));
                    if body.is_none() {
                        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                    }
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                        }
                    }
                }
            });
        }
    });
    format!("https://localhost:{port}")
}

/// An inventory answer for `device` registering every test Party in every role.
fn everyone_owns(device: &str) -> String {
    let parties: Vec<String> = users().into_iter().map(|(_, _, p)| p).collect();
    let mut points = Vec::new();
    for (i, p) in parties.iter().enumerate() {
        points.push(json!({"mpxn": format!("90000000000{i:02}"), "fuel": "electricity",
            "importSupplier": p, "exportSupplier": p, "networkOperator": p}));
        points.push(json!({"mpxn": format!("90000{i:02}"), "fuel": "gas", "gasSupplier": p, "networkOperator": p}));
    }
    let mpxns: Vec<&Value> = points.iter().map(|p| &p["mpxn"]).collect();
    // The type a Device really has does not matter to the attack; an ESME is in every role's scope.
    json!({"devices": [{"deviceId": device, "deviceType": "ESME", "mpxns": mpxns}], "meterPoints": points}).to_string()
}

/// A sidecar asking `url`, trusting `ca` and presenting `client` (written to its directory).
async fn sidecar(up: &Upstream, url: String, ca: &str, client: Option<&Pair>) -> Sidecar {
    let (ca, client) = (ca.to_owned(), client.map(|c| (c.cert.clone(), c.key.clone())));
    start_sidecar_with(format!("http://{}", up.addr), move |cfg, dir| {
        cfg.ownership = OwnershipSourceConfig::Http(url, settings(dir, &ca, client));
    })
    .await
}

fn settings(dir: &Path, ca: &str, client: Option<(String, String)>) -> HttpSettings {
    let ca_file = dir.join("inventory-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let client = client.map(|(cert, key)| {
        let (c, k) = (dir.join("inventory-client.pem"), dir.join("inventory-client.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    });
    HttpSettings {
        tls: Some(ClientTlsFiles { ca: ca_file, client }),
        ..HttpSettings::default()
    }
}

const N: usize = 300;

/// What this principal gets of the first `N` sample records when no Device has owners.
fn expected_without_owners(sub: &str, role: &str, party: &str) -> Vec<u8> {
    let p = satgate::model::Principal::from_claims(sub, role, party).unwrap();
    let input: String = sample().iter().cycle().take(N).map(|l| format!("{l}\n")).collect();
    satgate::views::filter_bytes(engine().for_principal(&p), input.as_bytes(), |_| None).0
}

/// Each test user's records through the sidecar.
async fn served(s: &Sidecar) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (sub, role, party) in users() {
        let (st, body, clean) = get(
            s.addr,
            &format!("/sat/records?mode=ok&n={N}"),
            Some(&token(&sub, &role, &party, 300)),
        )
        .await;
        assert_eq!((st, clean), (200, true), "{role}/{party}");
        out.push((format!("{role}/{party}"), body));
    }
    out
}

fn assert_owner_views(got: &[(String, Vec<u8>)]) {
    for ((who, body), (sub, role, party)) in got.iter().zip(users()) {
        assert!(
            *body == expected_for(&sub, &role, &party, N),
            "{who}: not the owner view"
        );
    }
}

/// No owner view for anyone; what a principal sees without owners (its own records, what its
/// role sees of everyone's) still served. Some principal must actually lose something, or the
/// comparison would prove nothing.
fn assert_no_owner_views(got: &[(String, Vec<u8>)]) {
    let mut narrowed = 0;
    for ((who, body), (sub, role, party)) in got.iter().zip(users()) {
        let without = expected_without_owners(&sub, &role, &party);
        assert!(*body == without, "{who}: got more (or other) than without owners");
        narrowed += usize::from(without != expected_for(&sub, &role, &party, N));
    }
    assert!(narrowed >= 3, "the sample must give owner views to several users");
}

fn failures(s: &Sidecar, reason: &'static str) -> u64 {
    s.state
        .metrics
        .outbound_tls_failures
        .get_or_create(&FailureLabel {
            peer: "inventory",
            reason,
        })
        .get()
}

/// Counted under `reason`, with ownership source errors, and shown (not ready) in `/readyz`.
async fn assert_failed_visibly(s: &Sidecar, reason: &'static str) {
    assert!(
        failures(s, reason) > 0,
        "{reason} not counted: {}",
        s.state.metrics.encode()
    );
    assert!(s.state.metrics.ownership.source_errors.get() > 0);
    let (status, body, _) = get(s.addr, "/readyz", None).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["inventory"]["tls"]["lastFailure"], reason, "{body}");
    let text = s.state.metrics.encode();
    assert!(
        text.contains(&format!(
            "satgate_outbound_tls_failures_total{{peer=\"inventory\",reason=\"{reason}\"}}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_right_ca_and_client_certificate_give_owner_views() {
    let (ca, clients) = (Ca::new("inventory CA"), Ca::new("client CA"));
    let up = start_upstream().await;
    let url = inventory(
        Some(&ca.issue(&["localhost"], false)),
        ClientAuth::Require(clients.pem.clone()),
        Answers::Sample,
    )
    .await;
    let s = sidecar(&up, url, &ca.pem, Some(&clients.issue(&["satgate"], false))).await;
    assert_owner_views(&served(&s).await);
    assert_eq!(s.state.metrics.ownership.source_errors.get(), 0);
    let (status, body, _) = get(s.addr, "/readyz", None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn an_unauthenticated_inventory_gives_no_owner_view_to_anyone_and_is_counted() {
    let (ca, other, clients) = (Ca::new("inventory CA"), Ca::new("another CA"), Ca::new("client CA"));
    let client = clients.issue(&["satgate"], false);
    let good = ca.issue(&["localhost"], false);
    let cases: [(&str, Option<Pair>, ClientAuth, &'static str); 5] = [
        (
            "another CA",
            Some(other.issue(&["localhost"], false)),
            ClientAuth::Require(clients.pem.clone()),
            "unknown_ca",
        ),
        (
            "another name",
            Some(ca.issue(&["inventory.example"], false)),
            ClientAuth::Require(clients.pem.clone()),
            "wrong_name",
        ),
        (
            "expired",
            Some(ca.issue(&["localhost"], true)),
            ClientAuth::Require(clients.pem.clone()),
            "expired",
        ),
        (
            "client certificate refused",
            Some(ca.issue(&["localhost"], false)),
            ClientAuth::Require(other.pem.clone()),
            "client_cert_refused",
        ),
        (
            "client certificate not asked for",
            Some(good),
            ClientAuth::None,
            "client_cert_not_requested",
        ),
    ];
    let up = start_upstream().await;
    for (case, server, auth, reason) in cases {
        let url = inventory(server.as_ref(), auth, Answers::Sample).await;
        let s = sidecar(&up, url, &ca.pem, Some(&client)).await;
        assert_no_owner_views(&served(&s).await);
        assert_failed_visibly(&s, reason).await;
        for other_reason in satgate::tls::client::REASONS.into_iter().filter(|r| *r != reason) {
            assert_eq!(failures(&s, other_reason), 0, "{case}: counted as {other_reason}");
        }
    }
}

#[tokio::test]
async fn a_rotated_ca_file_is_picked_up_without_a_restart() {
    let (old, new, clients) = (Ca::new("old CA"), Ca::new("new CA"), Ca::new("client CA"));
    let up = start_upstream().await;
    let url = inventory(
        Some(&new.issue(&["localhost"], false)),
        ClientAuth::Require(clients.pem.clone()),
        Answers::Sample,
    )
    .await;
    let s = sidecar(&up, url, &old.pem, Some(&clients.issue(&["satgate"], false))).await;
    assert_no_owner_views(&served(&s).await);
    assert_eq!(
        s.state.inventory_tls.as_ref().unwrap().last_failure(),
        Some("unknown_ca")
    );

    // Both anchors during the rotation, as an operator would roll it out.
    std::fs::write(s.dir.path().join("inventory-ca.pem"), format!("{}{}", old.pem, new.pem)).unwrap();
    reload(&s.state);
    assert_eq!(s.state.inventory_tls.as_ref().unwrap().last_error(), None);
    assert_owner_views(&served(&s).await);
    let (status, _, _) = get(s.addr, "/readyz", None).await;
    assert_eq!(status, 200);

    // A broken CA file keeps the last good one.
    std::fs::write(s.dir.path().join("inventory-ca.pem"), "not a certificate").unwrap();
    reload(&s.state);
    assert!(s.state.inventory_tls.as_ref().unwrap().last_error().is_some());
    s.state.ownership.invalidate_all();
    assert_owner_views(&served(&s).await);

    // The new CA withdrawn: neither cached owners nor pooled connections it vouched for outlive it.
    std::fs::write(s.dir.path().join("inventory-ca.pem"), &old.pem).unwrap();
    reload(&s.state);
    assert_eq!(s.state.inventory_tls.as_ref().unwrap().last_error(), None);
    assert_no_owner_views(&served(&s).await);
}

#[tokio::test]
async fn an_impostor_claiming_every_party_owns_every_device_widens_nothing() {
    let (ca, attacker, clients) = (Ca::new("inventory CA"), Ca::new("attacker CA"), Ca::new("client CA"));
    let client = clients.issue(&["satgate"], false);
    let up = start_upstream().await;
    let impostor_cert = attacker.issue(&["localhost"], false);

    // The claim is one that would widen views if it were believed: trusted, it does.
    let url = inventory(Some(&impostor_cert), ClientAuth::None, Answers::EveryoneOwnsEverything).await;
    let believed = sidecar(&up, url, &attacker.pem, None).await;
    let widened = served(&believed).await;
    let more = widened
        .iter()
        .zip(users())
        .filter(|((_, body), (sub, role, party))| body.len() > expected_for(sub, role, party, N).len())
        .count();
    assert!(
        more >= 3,
        "the impostor's claim must be one that widens views when believed"
    );

    // On the inventory's address, with its own CA's certificate, or in plain text: nothing.
    let over_tls = inventory(Some(&impostor_cert), ClientAuth::None, Answers::EveryoneOwnsEverything).await;
    let plaintext = inventory(None, ClientAuth::None, Answers::EveryoneOwnsEverything).await;
    for url in [over_tls, plaintext] {
        let s = sidecar(&up, url, &ca.pem, Some(&client)).await;
        assert_no_owner_views(&served(&s).await);
        assert!(s.state.metrics.ownership.source_errors.get() > 0);
    }
}

#[tokio::test]
async fn plain_http_is_refused_off_the_loopback_and_https_needs_a_ca() {
    let up = start_upstream().await;
    let start = |url: &'static str, tls: bool| {
        let up = format!("http://{}", up.addr);
        async move {
            try_start_sidecar_with(up, move |cfg, dir| {
                let mut settings = HttpSettings::default();
                if tls {
                    settings = self::settings(dir, &Ca::new("x").pem, None);
                }
                cfg.ownership = OwnershipSourceConfig::Http(url.into(), settings);
            })
            .await
            .err()
        }
    };
    // The source itself refuses https:// without a CA (the configuration refuses earlier still).
    assert!(start("https://localhost:1", false).await.unwrap().contains("CA file"));
    assert_eq!(start("https://localhost:1", true).await, None);
    assert_eq!(start("http://127.0.0.1:1", false).await, None);

    let resolve = |args: &[&str]| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: satgate::config::ServeArgs,
        }
        let mut argv = vec![
            "satgate",
            "--policies",
            "policies",
            "--jwt-hs256-secret-file",
            "Cargo.toml",
        ];
        argv.extend(args);
        satgate::config::ServeConfig::resolve(&Cli::parse_from(argv).serve)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let ca = "--inventory-ca-file=Cargo.toml";
    let up = "--upstream=http://127.0.0.1:9090";
    let inv = |url: &str| format!("--inventory-url={url}");
    for (args, problem) in [
        (
            vec![up.into(), inv("http://inventory.dcc.svc:8080")],
            Some("inventory-url: plain http://"),
        ),
        (
            vec![up.into(), inv("http://10.0.0.7")],
            Some("inventory-url: plain http://"),
        ),
        (
            vec![up.into(), inv("https://inventory.dcc.svc")],
            Some("inventory-ca-file: required"),
        ),
        (
            vec![up.into(), inv("http://127.0.0.1:8080"), ca.into()],
            Some("inventory-url: TLS files"),
        ),
        (
            vec![
                up.into(),
                inv("https://inventory.dcc.svc"),
                ca.into(),
                "--inventory-client-cert-file=Cargo.toml".into(),
            ],
            Some("inventory-client-key-file: required"),
        ),
        (
            vec!["--upstream=http://ssi:9090".into(), inv("http://127.0.0.1:1")],
            Some("upstream: plain http://"),
        ),
        (
            vec!["--upstream=https://ssi:9090".into(), inv("http://127.0.0.1:1")],
            Some("upstream-ca-file: required"),
        ),
        (
            vec![
                up.into(),
                inv("http://inventory.dcc.svc:8080"),
                "--inventory-allow-plaintext".into(),
            ],
            None,
        ),
        (
            vec![
                "--upstream=http://ssi:9090".into(),
                "--upstream-allow-plaintext".into(),
                inv("http://[::1]:1"),
            ],
            None,
        ),
        (vec![up.into(), inv("https://inventory.dcc.svc"), ca.into()], None),
        (vec![up.into(), inv("http://localhost:8080")], None),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        match (resolve(&argv), problem) {
            (Ok(()), None) => {}
            (Err(e), Some(p)) => assert!(e.starts_with(p), "{args:?}: {e}"),
            (got, want) => panic!("{args:?}: got {got:?}, wanted {want:?}"),
        }
    }
}

/// A TLS front for the plain upstream `to`, as an SSI off the pod's loopback would be: requires a
/// client certificate of `clients`.
async fn tls_front(server: &Pair, clients: &Ca, to: std::net::SocketAddr) -> String {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(server.cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(clients.pem.as_bytes()).unwrap())
        .unwrap();
    let config = ServerConfig::builder()
        .with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap())
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut tls), Ok(mut plain)) =
                    (acceptor.accept(tcp).await, tokio::net::TcpStream::connect(to).await)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test]
async fn an_https_upstream_is_verified_like_the_inventory() {
    let (ca, other, clients) = (Ca::new("SSI CA"), Ca::new("another CA"), Ca::new("client CA"));
    let client = clients.issue(&["satgate"], false);
    let up = start_upstream().await;
    let front = tls_front(&ca.issue(&["localhost"], false), &clients, up.addr).await;
    for (trusted, ok) in [(&ca, true), (&other, false)] {
        let (ca_pem, cert, key) = (trusted.pem.clone(), client.cert.clone(), client.key.clone());
        let s = start_sidecar_with(front.clone(), move |cfg, dir| {
            let files = [
                ("upstream-ca.pem", ca_pem),
                ("upstream-client.pem", cert),
                ("upstream-client.key", key),
            ]
            .map(|(name, text)| {
                std::fs::write(dir.join(name), text).unwrap();
                dir.join(name)
            });
            let [ca, cert, key] = files;
            cfg.upstream_tls = Some(ClientTlsFiles {
                ca,
                client: Some((cert, key)),
            });
        })
        .await;
        let (sub, role, party) = users().remove(0);
        let (status, body, _) = get(
            s.addr,
            &format!("/sat/records?mode=ok&n={N}"),
            Some(&token(&sub, &role, &party, 300)),
        )
        .await;
        if ok {
            assert_eq!(status, 200);
            assert!(body == expected_for(&sub, &role, &party, N));
        } else {
            assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
            let failed = s.state.metrics.outbound_tls_failures.get_or_create(&FailureLabel {
                peer: "upstream",
                reason: "unknown_ca",
            });
            assert_eq!(failed.get(), 1);
            let (status, body, _) = get(s.addr, "/readyz", None).await;
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (status, &body["upstream"]["tls"]["lastFailure"]),
                (503, &json!("unknown_ca")),
                "{body}"
            );
        }
    }
}
