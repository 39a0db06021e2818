//! Ownership look-ups on the request path: one page of 10,000 records over 50 Devices, filtered
//! with ownership from a local HTTP inventory service, (a) through a warm cache, (b) through a
//! cold cache (every page starts empty), (c) with no cache (each page asks the service once per
//! Device); (b) and (c) again over HTTPS with mutual TLS (test CA made here), with pooled
//! connections and with new ones every page (every look-up batch pays the handshakes). All in
//! one run.
//!
//! Run: `cargo bench --bench ownership`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use satgate::decision::PolicyEngine;
use satgate::ownership::{CacheSettings, CachedSource, HttpSettings, HttpSource, OwnershipSource, OwnershipStats};
use satgate::sample::{Market, Rng};
use satgate::tls::client::{ClientTls, ClientTlsFiles};
use serde_json::Value;

async fn inventory_service(inventory: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(satgate::sample::inventory_service::serve(listener, Arc::new(inventory)));
    format!("http://{addr}")
}

/// The same service over TLS, requiring a client certificate; gives its URL and what a client
/// needs to reach it.
async fn tls_inventory_service(inventory: Value, dir: &std::path::Path) -> (String, Arc<ClientTls>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("ca").pem();
        (pem, Issuer::new(params, key))
    };
    let leaf = |name: &str, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, issuer)
            .expect("leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (server_ca, server_issuer) = ca("inventory CA");
    let (client_ca, client_issuer) = ca("client CA");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (cert, key) = leaf("localhost", &server_issuer);
    let acceptor = satgate::sample::inventory_service::acceptor(
        &write("server.crt", &cert),
        &write("server.key", &key),
        Some(&write("client-ca.crt", &client_ca)),
    )
    .expect("acceptor");
    let (cert, key) = leaf("satgate", &client_issuer);
    let files = ClientTlsFiles {
        ca: write("ca.crt", &server_ca),
        client: Some((write("client.crt", &cert), write("client.key", &key))),
    };
    let tls = Arc::new(ClientTls::load("inventory", files, Default::default()).expect("client TLS"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(satgate::sample::inventory_service::serve_tls(
        listener,
        Arc::new(inventory),
        acceptor,
    ));
    (format!("https://localhost:{port}"), tls)
}

#[tokio::main]
async fn main() {
    let market = Market::generate(12, 7);
    // 50 Devices, 10,000 records about them.
    let devices: Vec<_> = market.devices.iter().take(50).cloned().collect();
    let mut page_market = market.clone();
    page_market.devices = devices;
    let mut rng = Rng::new(7);
    let page: String = (0..10_000).map(|n| page_market.record(&mut rng, n) + "\n").collect();
    let inventory: Value = serde_json::from_str(&market.inventory_json).expect("inventory");
    let base = inventory_service(inventory.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tls_base, tls) = tls_inventory_service(inventory, dir.path()).await;
    let https = |tls: &Arc<ClientTls>| -> Arc<dyn OwnershipSource> {
        Arc::new(HttpSource::with_tls(&tls_base, HttpSettings::default(), Some(Arc::clone(tls))).expect("source"))
    };
    let pooled_https = https(&tls);
    let engine =
        Arc::new(PolicyEngine::load("policies".as_ref(), "schemas/sat.cedarschema".as_ref()).expect("policies"));
    let principal = market.users[0].principal.clone();
    let http: Arc<dyn OwnershipSource> = Arc::new(HttpSource::new(&base, HttpSettings::default()).expect("source"));
    let settings = CacheSettings::default();

    let run = |source: Arc<dyn OwnershipSource>| {
        let (engine, principal, page) = (Arc::clone(&engine), principal.clone(), page.as_bytes());
        async move {
            let t = Instant::now();
            let (out, stats) =
                satgate::views::filter_bytes_with(engine.for_principal(&principal), page, source.as_ref()).await;
            std::hint::black_box(out);
            assert_eq!(stats.records_in, 10_000);
            t.elapsed()
        }
    };
    let pages = 30;
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;

    let warm_cache: Arc<dyn OwnershipSource> = Arc::new(CachedSource::new(
        Arc::clone(&http),
        settings.clone(),
        OwnershipStats::default(),
    ));
    run(Arc::clone(&warm_cache)).await;
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut none = Vec::new();
    let mut cold_https = Vec::new();
    let mut none_https = Vec::new();
    let mut fresh_https = Vec::new();
    // The pooled HTTPS connections made before timing, as the warm-up above made the HTTP ones.
    run(Arc::clone(&pooled_https)).await;
    // Interleaved, so all three see the same machine conditions.
    for _ in 0..pages {
        warm.push(run(Arc::clone(&warm_cache)).await);
        let fresh: Arc<dyn OwnershipSource> = Arc::new(CachedSource::new(
            Arc::clone(&http),
            settings.clone(),
            OwnershipStats::default(),
        ));
        cold.push(run(fresh).await);
        none.push(run(Arc::clone(&http)).await);
        let fresh: Arc<dyn OwnershipSource> = Arc::new(CachedSource::new(
            Arc::clone(&pooled_https),
            settings.clone(),
            OwnershipStats::default(),
        ));
        cold_https.push(run(fresh).await);
        none_https.push(run(Arc::clone(&pooled_https)).await);
        fresh_https.push(run(https(&tls)).await);
    }
    println!("page: 10,000 records over 50 Devices; {pages} pages each; inventory service on loopback\n");
    println!("| ownership | mean page time | records/s |");
    println!("|---|---|---|");
    for (name, v) in [
        ("warm cache", &warm),
        ("cold cache", &cold),
        ("no cache (per-page memo only)", &none),
        ("cold cache, HTTPS (mTLS, pooled connections)", &cold_https),
        ("no cache, HTTPS (mTLS, pooled connections)", &none_https),
        ("no cache, HTTPS (mTLS, new connections every page)", &fresh_https),
    ] {
        let m = mean(v);
        println!(
            "| {name} | {:.2} ms | {:.0} |",
            m.as_secs_f64() * 1e3,
            10_000.0 / m.as_secs_f64()
        );
    }
}
