//! The sidecar over HTTP, against an in-test upstream: every CONTRACT section 5 status, streaming
//! with bounded memory and backpressure, an upstream that dies mid-stream, concurrent principals,
//! hot reload and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use satgate::config::{JwtKey, LogFormat, OwnershipSourceConfig, ServeConfig};
use satgate::ownership::CacheSettings;
use satgate::server::State;
use serde_json::{json, Value};

pub(crate) const SECRET: &str = "test-secret-test-secret-test-secret!";

fn sample() -> Arc<Vec<String>> {
    let text = std::fs::read_to_string("tests/data/records.ndjson").unwrap();
    Arc::new(text.lines().map(str::to_owned).collect())
}

pub(crate) fn users() -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string("tests/data/users.json").unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["sub"].as_str().unwrap().into(),
                u["role"].as_str().unwrap().into(),
                u["party"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// The in-test SSI upstream. Behaviour is chosen by the `mode` query parameter, which also
/// shows that the query reaches the upstream unchanged.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    sent_bytes: Arc<AtomicU64>,
}

pub(crate) async fn start_upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let records = sample();
    let sent = Arc::clone(&sent_bytes);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (records, sent) = (Arc::clone(&records), Arc::clone(&sent));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    upstream_respond(Arc::clone(&records), Arc::clone(&sent), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, sent_bytes }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn upstream_respond(
    records: Arc<Vec<String>>,
    sent: Arc<AtomicU64>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    let mode = param("mode").unwrap_or_default();
    let n: usize = param("n").and_then(|v| v.parse().ok()).unwrap_or(records.len());
    let ndjson = |status: u16, body: Body| {
        let mut r = hyper::Response::new(body);
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    let full = |s: String| {
        http_body_util::Full::new(Bytes::from(s))
            .map_err(|never| match never {})
            .boxed()
    };
    match mode.as_str() {
        "status500" => return Ok(ndjson(500, full("{\"secret\":\"UPSTREAM-SECRET\"}\n".into()))),
        "garbage" => return Ok(ndjson(200, full("<html>UPSTREAM-SECRET</html>\n".into()))),
        "slowheaders" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Ok(ndjson(200, full(String::new())));
        }
        "big" => {
            // `n` records of the caller's own, `kb` KiB of payload each: everything visible to
            // them, so everything is written (the stalled-reader attack).
            let user = param("user").unwrap_or_default();
            let kb: usize = param("kb").and_then(|v| v.parse().ok()).unwrap_or(100);
            let payload = "A".repeat(kb * 1024);
            let (tx, body) = satgate::stream::body::channel();
            tokio::spawn(async move {
                for i in 0..n {
                    let rec = format!(
                        r#"{{"recordId":"r-{i}","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceRequest","srv":"4.1.1","srvTitle":"t","alertCode":null,"responseCode":null,"deviceId":null,"deviceType":null,"userId":"{user}","userRole":"OU","requestId":null,"metadata":null,"payload":"{payload}"}}"#
                    ) + "\n";
                    if tx.send(Bytes::from(rec)).await.is_err() {
                        return;
                    }
                }
                tx.finish();
            });
            return Ok(ndjson(200, body.boxed()));
        }
        "slow" => {
            // The sample records, one every 100 ms.
            let (tx, body) = satgate::stream::body::channel();
            tokio::spawn(async move {
                for line in records.iter().cycle().take(n) {
                    if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tx.finish();
            });
            return Ok(ndjson(200, body.boxed()));
        }
        "echo" => {
            let rec =
                json!({"recordId": query, "timestamp":"t","messageType":"DCCAlert","userId":"90-B3-D5-1F-30-01-00-00"});
            return Ok(ndjson(200, full(format!("{rec}\n"))));
        }
        "ragged" => {
            // Blank lines before the first record, 200 KB of empty lines in one frame, an
            // over-long line mid-stream, all cut at odd places.
            let mut text = String::from("\n \n\n");
            for (i, line) in records.iter().cycle().take(n).enumerate() {
                text.push_str(line);
                text.push('\n');
                if i == n / 3 {
                    text.push_str(&"x".repeat(70 * 1024));
                    text.push_str("\n\n");
                }
            }
            let (tx, body) = satgate::stream::body::channel();
            tokio::spawn(async move {
                let bytes = Bytes::from(text);
                // The empty lines go between two records.
                let middle = bytes[bytes.len() / 2..].iter().position(|b| *b == b'\n').unwrap();
                let (head, tail) = bytes.split_at(bytes.len() / 2 + middle + 1);
                let mut frames: Vec<Bytes> = head.chunks(777).map(Bytes::copy_from_slice).collect();
                frames.push(Bytes::from(vec![b'\n'; 200 * 1024]));
                frames.extend(tail.chunks(5000).map(Bytes::copy_from_slice));
                for f in frames {
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
                tx.finish();
            });
            return Ok(ndjson(200, body.boxed()));
        }
        _ => {}
    }
    let (tx, body) = satgate::stream::body::channel();
    tokio::spawn(async move {
        let mut chunk = String::new();
        for (i, line) in records.iter().cycle().take(n).enumerate() {
            chunk.push_str(line);
            chunk.push('\n');
            if chunk.len() >= 32 * 1024 {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if tx.send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                    return;
                }
            }
            if mode == "die" && i == n / 2 {
                // Half a line, then a broken body.
                let _ = tx.send(Bytes::from(line[..line.len() / 2].to_owned())).await;
                return; // unfinished: the upstream response breaks off
            }
            if mode == "cut" && i == n / 2 {
                // A clean end of body, but inside a line.
                let _ = tx
                    .send(Bytes::from(std::mem::take(&mut chunk) + &line[..line.len() / 2]))
                    .await;
                tx.finish();
                return;
            }
            if mode == "stall" && i == n / 2 {
                let _ = tx.send(Bytes::from(std::mem::take(&mut chunk))).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
        }
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if tx.send(Bytes::from(chunk)).await.is_ok() {
            tx.finish();
        }
    });
    let mut r = hyper::Response::new(body.boxed());
    r.headers_mut()
        .insert("content-type", "application/x-ndjson".parse().unwrap());
    Ok(r)
}

pub(crate) struct Sidecar {
    pub(crate) addr: SocketAddr,
    /// The operations listener, when the configuration sets one.
    pub(crate) ops_addr: Option<SocketAddr>,
    pub(crate) state: Arc<State>,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<()>,
}

fn config(dir: &std::path::Path, upstream: String, policies: PathBuf) -> ServeConfig {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let inventory = dir.join("inventory.json");
    if !inventory.exists() {
        std::fs::copy("tests/data/inventory.json", &inventory).unwrap();
    }
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: None,
        upstream,
        ownership: OwnershipSourceConfig::File(inventory),
        ownership_cache: CacheSettings::default(),
        admin_token_file: None,
        tls: None,
        policies,
        schema: "schemas/sat.cedarschema".into(),
        jwt_key: JwtKey::Hs256SecretFile(secret),
        jwt_issuer: None,
        jwt_audience: None,
        max_line_bytes: 64 * 1024,
        max_connections: 64,
        stream_limits: satgate::server::StreamLimits::DEFAULT,
        header_timeout: satgate::config::DEFAULT_HEADER_TIMEOUT,
        connect_timeout: Duration::from_secs(1),
        first_byte_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_millis(1500),
        reload_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(10),
        log_format: LogFormat::Text,
    }
}

async fn start_sidecar(upstream: String) -> Sidecar {
    start_sidecar_with(upstream, |_, _| {}).await
}

/// A sidecar whose configuration `tweak` may change first (given its temporary directory).
pub(crate) async fn start_sidecar_with(
    upstream: String,
    tweak: impl FnOnce(&mut ServeConfig, &std::path::Path),
) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir("policies").unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut cfg = config(dir.path(), upstream, policies);
    tweak(&mut cfg, dir.path());
    let (state, listener) = satgate::cmd::serve::start(&cfg).await.unwrap();
    let addr = listener.callers.local_addr().unwrap();
    let ops_addr = listener.ops.as_ref().map(|l| l.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(satgate::server::run(
        listener,
        Arc::clone(&state),
        async move {
            let _ = stopped.await;
        },
        cfg.shutdown_grace,
    ));
    Sidecar {
        addr,
        ops_addr,
        state,
        dir,
        stop: Some(stop),
        serving,
    }
}

pub(crate) fn token(sub: &str, role: &str, party: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": sub, "role": role, "party": party, "exp": now + exp_in});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Status, body, and whether the body ended cleanly.
pub(crate) async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Vec<u8>, bool) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    loop {
        match body.frame().await {
            None => return (status, bytes, true),
            Some(Err(_)) => return (status, bytes, false),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    bytes.extend_from_slice(&d);
                }
            }
        }
    }
}

/// Two reload polls: a change is loaded once it looks the same on two polls in a row.
pub(crate) fn reload(state: &State) {
    satgate::server::reload_once(state);
    satgate::server::reload_once(state);
}

fn supa() -> String {
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    token(&sub, &role, &party, 300)
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("error bodies are JSON");
    assert!(v["message"].is_string());
    v["error"].as_str().unwrap().to_owned()
}

/// What the library says this principal should get for the first `n` sample records.
pub(crate) fn expected_for(sub: &str, role: &str, party: &str, n: usize) -> Vec<u8> {
    let engine = crate::no_leak::engine();
    let p = satgate::model::Principal::from_claims(sub, role, party).unwrap();
    let text = std::fs::read_to_string("tests/data/inventory.json").unwrap();
    let (inv, _) = satgate::ownership::Inventory::parse(&text).unwrap();
    let input: String = sample().iter().cycle().take(n).map(|l| format!("{l}\n")).collect();
    satgate::stream::filter_bytes(engine.for_principal(&p), input.as_bytes(), |id| inv.get(id).cloned()).0
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
    for _ in 0..100 {
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
