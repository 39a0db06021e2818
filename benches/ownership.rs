//! Ownership look-ups on the request path: one page of 10,000 records over 50 Devices, filtered
//! with ownership from a local HTTP inventory service, (a) through a warm cache, (b) through a
//! cold cache (every page starts empty), (c) with no cache (each page asks the service once per
//! Device). All in one run.
//!
//! Run: `cargo bench --bench ownership`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use satgate::decision::PolicyEngine;
use satgate::ownership::{CacheSettings, CachedSource, HttpSettings, HttpSource, OwnershipSource, OwnershipStats};
use satgate::sample::{Market, Rng};
use serde_json::Value;

async fn inventory_service(inventory: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(satgate::sample::inventory_service::serve(listener, Arc::new(inventory)));
    format!("http://{addr}")
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
    let base = inventory_service(inventory).await;
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
    }
    println!("page: 10,000 records over 50 Devices; {pages} pages each; HTTP inventory service on loopback\n");
    println!("| ownership | mean page time | records/s |");
    println!("|---|---|---|");
    for (name, v) in [
        ("warm cache", &warm),
        ("cold cache", &cold),
        ("no cache (per-page memo only)", &none),
    ] {
        let m = mean(v);
        println!(
            "| {name} | {:.2} ms | {:.0} |",
            m.as_secs_f64() * 1e3,
            10_000.0 / m.as_secs_f64()
        );
    }
}
