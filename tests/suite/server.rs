//! The sidecar over HTTP, against an in-test upstream: every docs/contract.md §5 status, streaming
//! with bounded memory and backpressure, an upstream that dies mid-stream, concurrent principals,
//! hot reload and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::support::sidecar::{config, get, reload, start_sidecar, start_sidecar_with, Sidecar};
use crate::support::upstream::start_upstream;
use crate::support::{expected_for, token, users};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use satgate::config::{JwtKey, OwnershipSourceConfig};

fn supa() -> String {
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    token(&sub, &role, &party, 300)
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("error bodies are JSON");
    assert!(v["message"].is_string());
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_contract_status_code() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let good = supa();

    let (st, body, _) = get(s.addr, "/sat/records?mode=ok&n=10", Some(&good)).await;
    assert_eq!(st, 200);
    assert_eq!(body, expected_for(&users()[0].0, &users()[0].1, &users()[0].2, 10));

    let (st, body, _) = get(s.addr, "/sat/records", None).await;
    assert_eq!((st, error_code(&body).as_str()), (401, "unauthenticated"));
    let (st, _, _) = get(s.addr, "/sat/records", Some("garbage")).await;
    assert_eq!(st, 401);
    let (st, _, _) = get(
        s.addr,
        "/sat/records",
        Some(&token("90-B3-D5-1F-30-01-00-00", "IS", "SUPA", -3600)),
    )
    .await;
    assert_eq!(st, 401, "expired");
    let (st, body, _) = get(s.addr, "/sat/records", Some(&token("not-an-eui", "IS", "SUPA", 300))).await;
    assert_eq!((st, error_code(&body).as_str()), (403, "forbidden"));
    let (st, _, _) = get(
        s.addr,
        "/sat/records",
        Some(&token("90-B3-D5-1F-30-01-00-00", "CEO", "SUPA", 300)),
    )
    .await;
    assert_eq!(st, 403);

    for mode in ["status500", "garbage"] {
        let (st, body, _) = get(s.addr, &format!("/sat/records?mode={mode}"), Some(&good)).await;
        assert_eq!((st, error_code(&body).as_str()), (502, "bad_gateway"), "{mode}");
        assert!(
            !String::from_utf8_lossy(&body).contains("UPSTREAM-SECRET"),
            "upstream data in an error body"
        );
    }
    let (st, body, _) = get(s.addr, "/sat/records?mode=slowheaders", Some(&good)).await;
    assert_eq!((st, error_code(&body).as_str()), (504, "upstream_timeout"));

    let (st, body, _) = get(s.addr, "/healthz", None).await;
    assert_eq!((st, body), (200, br#"{"status":"ok"}"#.to_vec()));
    let (st, _, _) = get(s.addr, "/readyz", None).await;
    assert_eq!(st, 200);
    let (st, body, _) = get(s.addr, "/metrics", None).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(st, 200);
    for m in [
        "satgate_requests_total{status=\"401\"}",
        "satgate_records_out_total",
        "satgate_decision_cache_misses_total",
        "satgate_upstream_latency_seconds_bucket",
    ] {
        assert!(text.contains(m), "metrics lack {m}:\n{text}");
    }
    let (st, _, _) = get(s.addr, "/nope", None).await;
    assert_eq!(st, 404);

    // Unreachable upstream: 502, and not ready.
    let dead = start_sidecar("http://127.0.0.1:9".into()).await;
    let (st, body, _) = get(dead.addr, "/sat/records", Some(&good)).await;
    assert_eq!((st, error_code(&body).as_str()), (502, "bad_gateway"));
    let (st, _, _) = get(dead.addr, "/readyz", None).await;
    assert_eq!(st, 503);
    drop((s.dir, dead.dir));
}

#[tokio::test]
async fn the_query_reaches_the_upstream_unchanged() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let q = "mode=echo&deviceId=00-DB-12-34-56-78-90-A0&from=2026-11-01T00%3A00%3A00Z&x=%22";
    let t = token("90-B3-D5-1F-30-01-00-00", "IS", "SUPA", 300);
    let (st, body, _) = get(s.addr, &format!("/sat/records?{q}"), Some(&t)).await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["recordId"], q);
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_the_response_early_with_only_filtered_records() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "ED").unwrap();
    let t = token(&sub, &role, &party, 300);
    let full = expected_for(&sub, &role, &party, 2000);
    for mode in ["die", "stall", "cut"] {
        let (st, body, clean) = get(s.addr, &format!("/sat/records?mode={mode}&n=2000"), Some(&t)).await;
        assert_eq!(st, 200);
        assert!(!clean, "{mode}: the response must not look complete");
        assert!(
            !body.is_empty() && body.len() < full.len(),
            "{mode}: {} of {}",
            body.len(),
            full.len()
        );
        // Everything written is a whole, filtered record: a prefix of the full answer, in lines.
        let cut = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        assert_eq!(cut, body.len(), "{mode}: a partial line was written");
        assert_eq!(&full[..body.len()], &body[..], "{mode}");
    }
    let metrics = s.state.metrics.encode();
    assert!(
        metrics.contains("satgate_streams_aborted_total{reason=\"upstream_error\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("satgate_streams_aborted_total{reason=\"upstream_idle_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn blank_lines_an_over_long_line_and_ragged_frames_change_nothing_else() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    for (sub, role, party) in users() {
        let (st, body, clean) = get(
            s.addr,
            "/sat/records?mode=ragged&n=300",
            Some(&token(&sub, &role, &party, 300)),
        )
        .await;
        assert_eq!((st, clean), (200, true));
        assert!(body == expected_for(&sub, &role, &party, 300), "{role}/{party}");
    }
    let m = s.state.metrics.encode();
    assert!(
        m.contains("satgate_records_left_out_total{reason=\"malformed\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_slow_client_holds_back_the_upstream() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let own = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let t = token(&own.0, &own.1, &own.2, 300);
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("http://{}/sat/records?mode=ok&n=200000", s.addr))
        .header("authorization", format!("Bearer {t}"))
        .body(Empty::new())
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let mut read = 0;
    while read < 64 * 1024 {
        read += body.frame().await.unwrap().unwrap().into_data().map_or(0, |d| d.len());
    }
    // Once kernel socket buffers on both sides are full, the upstream is no longer read: the
    // bytes it has sent stop growing (polled, so a loaded machine only makes this slower).
    let total: u64 = 200_000 * 1200;
    let mut last = up.sent_bytes.load(Ordering::Relaxed);
    let mut stalled = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = up.sent_bytes.load(Ordering::Relaxed);
        if now == last {
            stalled = true;
            break;
        }
        last = now;
    }
    assert!(
        stalled,
        "upstream kept sending to a client that stopped reading ({last} bytes)"
    );
    assert!(
        last < total / 3,
        "upstream sent {last} of ~{total} bytes to a client that read {read}"
    );
    drop(body);
}

#[tokio::test]
async fn concurrent_principals_never_mix() {
    let up = start_upstream().await;
    // More streams at once than the default limit allows (limits are tested on their own).
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.stream_limits.max_streams = 128;
    })
    .await;
    let mut tasks = Vec::new();
    for round in 0..3 {
        for (sub, role, party) in users() {
            let addr = s.addr;
            tasks.push(tokio::spawn(async move {
                let n = 300 + round * 50;
                let (st, body, clean) = get(
                    addr,
                    &format!("/sat/records?mode=ok&n={n}"),
                    Some(&token(&sub, &role, &party, 300)),
                )
                .await;
                assert_eq!((st, clean), (200, true));
                assert!(
                    body == expected_for(&sub, &role, &party, n),
                    "{role}/{party} got another principal's view"
                );
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn policy_reload_takes_a_good_set_and_keeps_the_last_good_on_error() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = supa();
    let before = get(s.addr, "/sat/records?mode=ok&n=50", Some(&t)).await.1;
    assert!(!before.is_empty());

    let policies = s.dir.path().join("policies");
    std::fs::write(
        policies.join("zz-freeze.cedar"),
        "@id(\"freeze\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    reload(&s.state);
    let (st, frozen, _) = get(s.addr, "/sat/records?mode=ok&n=50", Some(&t)).await;
    assert_eq!((st, frozen.len()), (200, 0), "a good new policy takes effect");

    std::fs::write(
        policies.join("zz-freeze.cedar"),
        "@id(\"freeze\")\nforbid (principal, action, resource) when { resource.nope };\n",
    )
    .unwrap();
    reload(&s.state);
    let (_, still, _) = get(s.addr, "/sat/records?mode=ok&n=50", Some(&t)).await;
    assert_eq!(still.len(), 0, "a broken policy keeps the last good set");
    let m = s.state.metrics.encode();
    assert!(m.contains("satgate_policy_reloads_total{result=\"ok\"} 1"), "{m}");
    assert!(m.contains("satgate_policy_reloads_total{result=\"failed\"} 1"), "{m}");

    std::fs::remove_file(policies.join("zz-freeze.cedar")).unwrap();
    reload(&s.state);
    assert_eq!(get(s.addr, "/sat/records?mode=ok&n=50", Some(&t)).await.1, before);
}

#[tokio::test]
async fn a_policy_directory_being_rewritten_is_not_loaded_half_way() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let policies = s.dir.path().join("policies");
    let scope = std::fs::read_to_string(policies.join("scope.cedar")).unwrap();
    let has_scope = |s: &Sidecar| {
        s.state
            .policies
            .current()
            .policies()
            .policies()
            .any(|p| p.id().to_string() == "han-devices-only")
    };

    // `rm` then `cp`: the moment in between has no forbid policies at all.
    std::fs::remove_file(policies.join("scope.cedar")).unwrap();
    satgate::server::reload_once(&s.state);
    assert!(has_scope(&s), "a directory seen changing once is not loaded yet");
    std::fs::write(policies.join("scope.cedar"), format!("// reviewed\n{scope}")).unwrap();
    satgate::server::reload_once(&s.state);
    assert!(has_scope(&s));
    satgate::server::reload_once(&s.state);
    assert!(has_scope(&s), "the settled new set has the forbid policies");
    assert!(s
        .state
        .metrics
        .encode()
        .contains("satgate_policy_reloads_total{result=\"ok\"} 1"));
}

#[tokio::test]
async fn inventory_reload_moves_ownership_and_a_broken_file_keeps_the_last_good() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = supa();
    let before = get(s.addr, "/sat/records?mode=ok&n=200", Some(&t)).await.1;
    let inv_path = s.dir.path().join("inventory.json");
    let original = std::fs::read_to_string(&inv_path).unwrap();

    std::fs::write(&inv_path, "{ not json").unwrap();
    reload(&s.state);
    assert_eq!(
        get(s.addr, "/sat/records?mode=ok&n=200", Some(&t)).await.1,
        before,
        "broken file: last good stays"
    );
    let (_, ready, _) = get(s.addr, "/readyz", None).await;
    assert!(
        String::from_utf8_lossy(&ready).contains("lastReloadError"),
        "readyz reports the failed reload"
    );

    // Change of Supplier: every SUPA import registration moves to SUPB (atomic replace).
    let tmp = s.dir.path().join("inventory.json.new");
    std::fs::write(
        &tmp,
        original.replace("\"importSupplier\": \"SUPA\"", "\"importSupplier\": \"SUPB\""),
    )
    .unwrap();
    std::fs::rename(&tmp, &inv_path).unwrap();
    reload(&s.state);
    let after = get(s.addr, "/sat/records?mode=ok&n=200", Some(&t)).await.1;
    assert!(
        after.len() < before.len(),
        "SUPA lost the titles of Devices it no longer supplies"
    );
    assert!(
        after
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| l.windows(10).any(|w| w == b"\"payload\":")),
        "only its own records remain"
    );
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish() {
    let up = start_upstream().await;
    let mut s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = supa();
    let addr = s.addr;
    let n = 20_000;
    let in_flight = tokio::spawn(async move { get(addr, &format!("/sat/records?mode=ok&n={n}"), Some(&t)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = s.stop.take().unwrap().send(());
    let (st, body, clean) = in_flight.await.unwrap();
    assert_eq!((st, clean), (200, true));
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    assert!(body == expected_for(&sub, &role, &party, n));
    tokio::time::timeout(Duration::from_secs(5), s.serving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}

/// The real binary, configured by flags only, streams a response far larger than its memory
/// bound: peak RSS stays under 64 MiB whatever the size.
#[tokio::test]
async fn the_binary_streams_a_large_response_in_bounded_memory() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), String::new(), "policies".into());
    let JwtKey::Hs256SecretFile(secret) = &cfg.jwt_key else {
        unreachable!()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_satgate"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--upstream",
            &format!("http://{}", up.addr),
        ])
        .args([
            "--inventory",
            dir.path().join("inventory.json").to_str().unwrap(),
            "--policies",
            "policies",
            "--schema",
            "schemas/sat.cedarschema",
        ])
        .args(["--jwt-hs256-secret-file", secret.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut up_ok = false;
    // Start-up includes the policy guard (about 2 s of CPU in a debug build): generous on a
    // loaded machine.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up_ok, "satgate serve did not start");

    // 120 MB of upstream records through the filter, whatever the principal sees of them.
    let (sub, _, _) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let n = 100_000;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("http://{addr}/sat/records?mode=ok&n={n}"))
        .header("authorization", format!("Bearer {}", token(&sub, "IS", "SUPA", 300)))
        .body(Empty::new())
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let streamed = up.sent_bytes.load(Ordering::Relaxed);
    eprintln!("satgate peak RSS {hwm_kib} KiB after streaming {streamed} upstream bytes ({received} out)");
    assert!(streamed > 100 << 20, "only {streamed} bytes streamed");
    assert!(received > 0);
    assert!(
        hwm_kib < 64 * 1024,
        "peak RSS {hwm_kib} KiB while streaming {streamed} bytes"
    );
}

/// An inventory service answering from the sample inventory, one Device per call.
async fn sample_inventory_service() -> String {
    let inv: Value = serde_json::from_str(&std::fs::read_to_string("tests/data/inventory.json").unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(satgate::sample::inventory_service::serve(listener, Arc::new(inv)));
    format!("http://{addr}")
}

#[tokio::test]
async fn the_http_inventory_source_serves_like_the_file_and_the_admin_endpoint_clears_it() {
    let up = start_upstream().await;
    let inventory_url = sample_inventory_service().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), format!("http://{}", up.addr), "policies".into());
    cfg.ownership = OwnershipSourceConfig::Http(inventory_url, satgate::ownership::HttpSettings::default());
    let admin = dir.path().join("admin-token");
    std::fs::write(&admin, "admin-token-admin-token").unwrap();
    cfg.admin_token_file = Some(admin);
    let (state, listener) = satgate::cmd::serve::start(&cfg).await.unwrap();
    let addr = listener.callers.local_addr().unwrap();
    tokio::spawn(satgate::server::run(
        listener,
        Arc::clone(&state),
        std::future::pending(),
        cfg.shutdown_grace,
    ));

    for (sub, role, party) in users() {
        let (st, body, _) = get(
            addr,
            "/sat/records?mode=ok&n=300",
            Some(&token(&sub, &role, &party, 300)),
        )
        .await;
        assert_eq!(st, 200);
        assert!(
            body == expected_for(&sub, &role, &party, 300),
            "{role}/{party} differs from the file source"
        );
    }
    let o = state.metrics.encode();
    assert!(o.contains("satgate_ownership_cache_hits_total"), "{o}");
    let calls = state.metrics.ownership.source_calls.get();
    assert!(
        calls > 0 && calls <= 60,
        "each Device asked about once, then cached: {calls} calls"
    );

    let post = |auth: Option<&'static str>, query: &'static str| async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut req = hyper::Request::post(format!("http://{addr}/admin/ownership/invalidate{query}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(None, "").await, 401);
    assert_eq!(post(Some("Bearer wrong-token-wrong-token"), "").await, 401);
    assert_eq!(
        post(Some("Bearer admin-token-admin-token"), "?deviceId=nope").await,
        400
    );
    assert_eq!(
        post(
            Some("Bearer admin-token-admin-token"),
            "?deviceId=00-DB-00-00-00-00-01-01"
        )
        .await,
        200
    );
    assert_eq!(post(Some("Bearer admin-token-admin-token"), "").await, 200);
    let t = supa();
    get(addr, "/sat/records?mode=ok&n=300", Some(&t)).await;
    assert!(
        state.metrics.ownership.source_calls.get() > calls,
        "cleared cache asks the source again"
    );
}

/// `satgate filter` takes its ownership from the inventory service just as from the file.
#[tokio::test]
async fn filter_with_the_http_inventory_source_matches_the_file_source() {
    let url = sample_inventory_service().await;
    let run = |source: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_satgate"))
                .arg("filter")
                .args(&source)
                .args(["--sub", "90-B3-D5-1F-30-01-00-06", "--role", "ED", "--party", "DNO1"])
                .stdin(std::fs::File::open("tests/data/records.ndjson").unwrap())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(child.wait().unwrap().success());
            out
        })
    };
    let via_http = run(vec!["--inventory-url".into(), url]).await.unwrap();
    let via_file = run(vec!["--inventory".into(), "tests/data/inventory.json".into()])
        .await
        .unwrap();
    assert!(!via_file.is_empty());
    assert!(via_http == via_file, "HTTP and file sources disagree");
}

#[tokio::test]
async fn the_connection_limit_holds_new_connections_back() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), format!("http://{}", up.addr), "policies".into());
    cfg.max_connections = 2;
    let (state, listener) = satgate::cmd::serve::start(&cfg).await.unwrap();
    let addr = listener.callers.local_addr().unwrap();
    tokio::spawn(satgate::server::run(
        listener,
        state,
        std::future::pending(),
        cfg.shutdown_grace,
    ));

    let idle_a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _idle_b = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(async move { get(addr, "/healthz", None).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the limit of 2"
    );
    drop(idle_a);
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "served once a slot was free");
}

#[tokio::test]
async fn rs256_and_es256_tokens_and_a_rotated_jwt_key_file() {
    let up = start_upstream().await;
    let keys = |dir: &std::path::Path, names: &[&str]| {
        let text: String = names
            .iter()
            .map(|n| std::fs::read_to_string(format!("tests/data/jwt/{n}.pub")).unwrap())
            .collect();
        std::fs::write(dir.join("issuer.pem"), text).unwrap();
    };
    let s = start_sidecar_with(format!("http://{}", up.addr), |cfg, dir| {
        keys(dir, &["rs256", "es256-a"]);
        cfg.jwt_key = JwtKey::PublicKeyFile(dir.join("issuer.pem"));
    })
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let claims = json!({"sub": sub, "role": role, "party": party, "exp": 4_000_000_000u64});
    let signed = |alg: Algorithm, key: &str| {
        let pem = std::fs::read(format!("tests/data/jwt/{key}.key")).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        encode(&Header::new(alg), &claims, &key).unwrap()
    };
    let path = "/sat/records?mode=ok&n=30";
    let want = expected_for(&sub, &role, &party, 30);
    for t in [signed(Algorithm::RS256, "rs256"), signed(Algorithm::ES256, "es256-a")] {
        assert_eq!(get(s.addr, path, Some(&t)).await.1, want);
    }
    let next = signed(Algorithm::ES256, "es256-b");
    assert_eq!(get(s.addr, path, Some(&next)).await.0, 401, "not yet a known key");

    // The identity provider publishes its next key beside the current one.
    keys(s.dir.path(), &["es256-a", "es256-b"]);
    reload(&s.state);
    assert_eq!(get(s.addr, path, Some(&next)).await.1, want);
    let m = s.state.metrics.encode();
    assert!(m.contains("satgate_jwt_key_reloads_total{result=\"ok\"} 1"), "{m}");
    // The RSA key was retired with that change.
    assert_eq!(get(s.addr, path, Some(&signed(Algorithm::RS256, "rs256"))).await.0, 401);
}
