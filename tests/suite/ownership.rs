//! Ownership at request time through the cache and the sources: coalescing, TTLs, Change of
//! Supplier, failures that never widen, the HTTP source against an in-test inventory service,
//! and the staleness bound as a property.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use satgate::model::{Eui64, Principal};
use satgate::ownership::{
    CacheSettings, CachedSource, HttpSettings, HttpSource, Inventory, LookupResult, OwnershipSource, OwnershipStats,
    SourceError,
};
use satgate::views::filter_bytes_with;
use serde_json::json;

use crate::support::engine;

const ESME: &str = "00-DB-12-34-56-78-90-A0";
const SENDER: &str = "BB-00-00-00-00-00-00-09";

fn inventory_json(device: &str, supplier: &str) -> String {
    json!({"meterPoints":[{"mpxn":"1012345678901","fuel":"electricity","importSupplier":supplier,"networkOperator":"DNO1"}],
           "devices":[{"deviceId":device,"deviceType":"ESME","mpxns":["1012345678901"]}]})
    .to_string()
}

fn inventory(supplier: &str) -> Inventory {
    Inventory::parse(&inventory_json(ESME, supplier)).unwrap().0
}

fn id(s: &str) -> Eui64 {
    Eui64::parse(s).unwrap()
}

/// A source whose answers the test controls, counting calls, with an optional delay.
struct Scripted {
    inventory: Mutex<Option<Inventory>>,
    fail: AtomicBool,
    calls: AtomicUsize,
    delay: Duration,
}

impl Scripted {
    fn new(inv: Option<Inventory>, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inventory: Mutex::new(inv),
            fail: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            delay,
        })
    }
    fn set(&self, inv: Option<Inventory>) {
        *self.inventory.lock().unwrap() = inv;
    }
}

impl OwnershipSource for Scripted {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // The answer is what the inventory said when asked; it arrives after the delay.
            let answer = self
                .inventory
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|i| i.get(device).cloned());
            let fail = self.fail.load(Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if fail {
                return Err(SourceError("inventory service down".into()));
            }
            Ok(answer)
        })
    }
}

fn cached(source: Arc<dyn OwnershipSource>, ttl_ms: u64, unknown_ms: u64) -> Arc<CachedSource> {
    let settings = CacheSettings {
        capacity: 1000,
        ttl: Duration::from_millis(ttl_ms),
        unknown_ttl: Duration::from_millis(unknown_ms),
    };
    Arc::new(CachedSource::new(source, settings, OwnershipStats::default()))
}

fn record(user: &str) -> String {
    json!({"recordId":"r-1","timestamp":"2026-01-01T00:00:00Z","messageType":"ServiceRequest","deviceId":ESME,
           "userId":user,"userRole":"IS","payload":"SECRET-PAYLOAD"})
    .to_string()
        + "\n"
}

/// What `party`'s import-supplier User sees of one record sent by someone else and one of its own.
async fn sees(source: &dyn OwnershipSource, party: &str) -> (bool, bool) {
    let me = "AA-00-00-00-00-00-00-01";
    let p = Principal::from_claims(me, "IS", party).unwrap();
    let input = record(SENDER) + &record(me);
    let (out, _) = filter_bytes_with(engine().for_principal(&p), input.as_bytes(), source).await;
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let own_full = lines.iter().any(|l| l.contains(me) && l.contains("SECRET-PAYLOAD"));
    let others_title = lines.iter().any(|l| !l.contains("SECRET-PAYLOAD"));
    assert!(
        !lines.iter().any(|l| l.contains(SENDER)),
        "another User's identity leaked"
    );
    (others_title, own_full)
}

#[tokio::test]
async fn a_thousand_concurrent_lookups_of_a_cold_device_make_one_source_call() {
    let source = Scripted::new(Some(inventory("SUPA")), Duration::from_millis(50));
    let cache = cached(source.clone(), 10_000, 1_000);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = Arc::clone(&cache);
            tokio::spawn(async move { c.lookup(id(ESME)).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    let s = cache.stats();
    assert_eq!(s.source_calls.get(), 1);
    assert_eq!(s.hits.get() + s.coalesced_waits.get(), 999);
}

#[tokio::test]
async fn change_of_supplier_takes_effect_within_the_ttl() {
    let source = Scripted::new(Some(inventory("SUPA")), Duration::ZERO);
    let cache = cached(source.clone(), 300, 100);
    // (titles of others' records, own records in full): own records never depend on ownership.
    assert_eq!(sees(cache.as_ref(), "SUPA").await, (true, true));
    assert_eq!(sees(cache.as_ref(), "SUPB").await, (false, true));

    source.set(Some(inventory("SUPB")));
    // Within the bound the old answer may still be served; after it, never.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        sees(cache.as_ref(), "SUPA").await,
        (false, true),
        "old supplier lost the Device"
    );
    assert_eq!(
        sees(cache.as_ref(), "SUPB").await,
        (true, true),
        "new supplier sees its history"
    );

    // A known change can be applied at once.
    source.set(Some(inventory("SUPA")));
    cache.invalidate(id(ESME)).await;
    assert_eq!(sees(cache.as_ref(), "SUPA").await, (true, true));
}

#[tokio::test]
async fn an_answer_in_flight_during_an_invalidation_is_not_kept() {
    let source = Scripted::new(Some(inventory("SUPA")), Duration::from_millis(100));
    let cache = cached(source.clone(), 60_000, 60_000);
    let in_flight = {
        let c = Arc::clone(&cache);
        tokio::spawn(async move { c.lookup(id(ESME)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    source.set(Some(inventory("SUPB")));
    cache.invalidate_all();
    let old = in_flight.await.unwrap().unwrap().unwrap();
    assert_eq!(
        old.meter_points[0].import_supplier.as_deref(),
        Some("SUPA"),
        "asked before the change"
    );
    let now = cache.lookup(id(ESME)).await.unwrap().unwrap();
    assert_eq!(
        now.meter_points[0].import_supplier.as_deref(),
        Some("SUPB"),
        "the old answer was not cached"
    );
}

#[tokio::test]
async fn unknown_devices_are_rechecked_sooner() {
    let source = Scripted::new(None, Duration::ZERO);
    let cache = cached(source.clone(), 10_000, 100);
    assert!(cache.lookup(id(ESME)).await.unwrap().is_none());
    source.set(Some(inventory("SUPA")));
    assert!(cache.lookup(id(ESME)).await.unwrap().is_none(), "cached unknown");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(cache.lookup(id(ESME)).await.unwrap().is_some(), "unknown TTL expired");
}

#[tokio::test]
async fn a_flapping_source_never_widens_and_errors_are_not_cached() {
    let source = Scripted::new(Some(inventory("SUPA")), Duration::ZERO);
    let cache = cached(source.clone(), 10_000, 1_000);
    for round in 0..20 {
        let down = round % 2 == 0;
        source.fail.store(down, Ordering::SeqCst);
        if down {
            cache.invalidate_all();
        }
        let (others, own) = sees(cache.as_ref(), "SUPA").await;
        assert!(own, "the caller's own records are served whatever the source does");
        assert_eq!(others, !down, "round {round}: owner view only with a good answer");
        // Another party never gains anything, up or down.
        assert!(!sees(cache.as_ref(), "SUPB").await.0);
    }
    assert!(cache.stats().source_errors.get() >= 10);
}

/// An in-test inventory service. Device ids pick the behaviour.
async fn inventory_service(in_flight_max: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (in_flight, max) = (Arc::clone(&in_flight), Arc::clone(&in_flight_max));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (in_flight, max) = (Arc::clone(&in_flight), Arc::clone(&max));
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        // Decrements even when the client gives up and the handler is dropped.
                        struct Leave(Arc<AtomicUsize>);
                        impl Drop for Leave {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        let _leave = Leave(Arc::clone(&in_flight));
                        let device = req.uri().path().trim_start_matches("/inv/devices/").to_owned();
                        let (status, body) = match device.as_str() {
                            "00-00-00-00-00-00-00-01" => {
                                tokio::time::sleep(Duration::from_millis(400)).await;
                                (200, inventory_json(&device, "SUPA"))
                            }
                            "00-00-00-00-00-00-00-02" => (500, "oops".into()),
                            "00-00-00-00-00-00-00-03" => (200, "{not json".into()),
                            "00-00-00-00-00-00-00-04" => (200, inventory_json(ESME, "SUPA")),
                            "00-00-00-00-00-00-00-05" => (404, String::new()),
                            d => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                (200, inventory_json(d, "SUPA"))
                            }
                        };
                        let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/inv")
}

#[tokio::test]
async fn http_source_answers_known_unknown_and_fails_closed() {
    let max = Arc::new(AtomicUsize::new(0));
    let base = inventory_service(Arc::clone(&max)).await;
    let settings = HttpSettings {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
        max_in_flight: 4,
        tls: None,
    };
    let http = HttpSource::new(&base, settings).unwrap();
    let known = http.lookup(id(ESME)).await.unwrap().unwrap();
    assert_eq!(&*known.device_type, "ESME");
    assert!(
        http.lookup(Eui64::from_u64(5)).await.unwrap().is_none(),
        "404 is unknown"
    );
    for (n, why) in [
        (1, "no answer within"),
        (2, "500"),
        (3, "expected"),
        (4, "does not describe"),
    ] {
        let e = http.lookup(Eui64::from_u64(n)).await.unwrap_err().to_string();
        assert!(e.contains(why), "device {n}: {e}");
    }
    // Bounded concurrency: 40 distinct Devices at once, at most 4 calls in flight (after the
    // timed-out call above has finished on the server side too).
    tokio::time::sleep(Duration::from_millis(200)).await;
    max.store(0, Ordering::SeqCst);
    let http = Arc::new(http);
    let tasks: Vec<_> = (0..40u64)
        .map(|n| {
            let h = Arc::clone(&http);
            tokio::spawn(async move { h.lookup(Eui64::from_u64(0x100 + n)).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    assert!(
        max.load(Ordering::SeqCst) <= 4,
        "{} calls in flight",
        max.load(Ordering::SeqCst)
    );

    // Through the cache, an HTTP failure gives no owner view but keeps the caller's own records.
    let cache = cached(Arc::clone(&http) as Arc<dyn OwnershipSource>, 10_000, 1_000);
    assert_eq!(sees(cache.as_ref(), "SUPA").await, (true, true));
}

#[derive(Debug, Clone)]
enum Step {
    Set(Option<&'static str>),
    Query,
    Sleep(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::sample::select(vec![None, Some("SUPA"), Some("SUPB")]).prop_map(Step::Set),
        Just(Step::Query),
        (0u64..12).prop_map(Step::Sleep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (crate::support::cases() / 20).max(32), ..ProptestConfig::default() })]

    /// For any sequence of inventory changes and queries, every answer is what the inventory said
    /// at some moment within the staleness bound (the TTL) before or during the query.
    #[test]
    fn every_answer_was_true_within_the_staleness_bound(steps in proptest::collection::vec(step(), 1..16)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ttl = Duration::from_millis(25);
            let source = Scripted::new(Some(inventory("SUPA")), Duration::ZERO);
            let cache = cached(source.clone(), 25, 10);
            // (from, state): each state holds until the next one starts.
            let mut history: Vec<(Instant, Option<&str>)> = vec![(Instant::now(), Some("SUPA"))];
            for s in steps {
                match s {
                    Step::Set(state) => {
                        source.set(state.map(inventory));
                        history.push((Instant::now(), state));
                    }
                    Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    Step::Query => {
                        let start = Instant::now();
                        let answer = cache.lookup(id(ESME)).await.unwrap();
                        let end = Instant::now();
                        let got = answer.and_then(|e| e.meter_points[0].import_supplier.clone());
                        // Scheduling slack on a loaded machine.
                        let window_start = start.checked_sub(ttl + Duration::from_millis(15)).unwrap_or(start);
                        let possible: Vec<Option<&str>> = history
                            .iter()
                            .enumerate()
                            .filter(|(i, (from, _))| {
                                let until = history.get(i + 1).map_or(end, |(next, _)| *next);
                                *from <= end && until >= window_start
                            })
                            .map(|(_, (_, s))| *s)
                            .collect();
                        prop_assert!(possible.contains(&got.as_deref()), "answer {:?} not among {:?}", got, possible);
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// Counts concurrent and total look-ups; every Device is known and supplied by SUPA.
struct Concurrent {
    calls: AtomicUsize,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl OwnershipSource for Concurrent {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            let inv = Inventory::parse(&inventory_json(&device.to_string(), "SUPA"))
                .unwrap()
                .0;
            Ok(inv.get(device).cloned())
        })
    }
}

#[tokio::test]
async fn a_page_about_many_new_devices_looks_them_up_together_once_each() {
    let source = Concurrent {
        calls: AtomicUsize::new(0),
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    };
    let devices: Vec<String> = (0..30u64).map(|n| Eui64::from_u64(0xD000 + n).to_string()).collect();
    let mut input = String::new();
    for round in 0..3 {
        for d in &devices {
            let rec = json!({"recordId":format!("r-{round}-{d}"),"timestamp":"t","messageType":"DeviceAlert",
                             "deviceId":d,"userId":SENDER,"payload":"SECRET-PAYLOAD"});
            input.push_str(&format!("{rec}\n"));
        }
    }
    let p = Principal::from_claims("AA-00-00-00-00-00-00-01", "IS", "SUPA").unwrap();
    let (out, stats) = filter_bytes_with(engine().for_principal(&p), input.as_bytes(), &source).await;
    assert_eq!(stats.records_out, 90, "titles of every record about its Devices");
    assert!(!String::from_utf8(out).unwrap().contains("SECRET-PAYLOAD"));
    assert_eq!(
        source.calls.load(Ordering::SeqCst),
        30,
        "one look-up per Device per stream"
    );
    let most = source.max.load(Ordering::SeqCst);
    assert!(most > 1, "look-ups were made one at a time");
    assert!(
        most <= satgate::stream::filter::PREFETCH_CONCURRENCY,
        "{most} look-ups at once: one page must not take every slot of a shared source"
    );
}
