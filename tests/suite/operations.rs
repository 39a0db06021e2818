//! Operating satgate: metrics that Prometheus's own linter and the reference OpenMetrics parser
//! accept, with every family whose labels are known in advance present from start-up.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::sidecar::{get, start_sidecar_with};
use crate::support::upstream::start_upstream;
use crate::support::{token, users};

/// Runs `program args` with `input` on stdin, or says SKIPPED when it is not installed (a failure
/// when `SATGATE_REQUIRE_TOOLS` is set, as in CI). `None`: skipped.
fn check_with(test: &str, program: &str, args: &[&str], input: &str) -> Option<(bool, String)> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let why = format!("{program} is not installed");
    if !crate::support::tools::available(test, child.is_ok(), "SATGATE_REQUIRE_TOOLS", &why) {
        return None;
    }
    let mut child = child.ok()?;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

async fn scrape(addr: std::net::SocketAddr, openmetrics: bool) -> (String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = hyper::Request::get(format!("http://{addr}/metrics"));
    if openmetrics {
        req = req.header("accept", "application/openmetrics-text; version=1.0.0");
    }
    let resp = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_lint_clean_in_both_formats_with_known_families_from_start_up() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = s.ops_addr.unwrap();

    // Before any traffic: the families whose labels are known are there, at 0.
    let (_, fresh) = scrape(ops, false).await;
    for series in [
        "satgate_policy_reloads_total{result=\"failed\"} 0",
        "satgate_inventory_reloads_total{result=\"failed\"} 0",
        "satgate_streams_aborted_total{reason=\"client_stalled\"} 0",
        "satgate_streams_refused_total{reason=\"max_streams\"} 0",
        "satgate_records_left_out_total{reason=\"not_visible\"} 0",
        "satgate_fields_redacted_total{class=\"payload\"} 0",
        "satgate_requests_total{status=\"401\"} 0",
        "satgate_last_reload_successful{component=\"policy\"} 1",
        "satgate_last_reload_successful{component=\"jwt_key\"} 1",
        "satgate_inventory_owner_views_withheld 0",
    ] {
        assert!(fresh.contains(series), "{series} missing at start-up:\n{fresh}");
    }
    assert!(fresh.contains(&format!(
        "satgate_build_info{{version=\"{}\",cedar_version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        satgate::metrics::CEDAR_VERSION
    )));
    assert!(fresh.contains("satgate_policy_info{sha256=\""));

    // Traffic that touches the families: records served and hidden, a refusal, a malformed line.
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    assert_eq!(
        get(s.addr, "/sat/records?n=200", Some(&token(&sub, &role, &party, 300)))
            .await
            .0,
        200
    );
    assert_eq!(
        get(
            s.addr,
            "/sat/records?mode=ragged&n=100",
            Some(&token(&sub, &role, &party, 300))
        )
        .await
        .0,
        200
    );
    assert_eq!(get(s.addr, "/sat/records", Some("nope")).await.0, 401);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let (content_type, text) = scrape(ops, false).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(!text.contains("# EOF") && text.contains("# TYPE satgate_records_in_total counter"));
    if let Some((ok, out)) = check_with("operations::promtool", "promtool", &["check", "metrics"], &text) {
        assert!(ok, "promtool check metrics:\n{out}\n{text}");
    }

    let (content_type, om) = scrape(ops, true).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"));
    let parse = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                 print(len(list(text_string_to_metric_families(sys.stdin.read()))))";
    if let Some((ok, out)) = check_with("operations::openmetrics", "python3", &["-c", parse], &om) {
        let missing = out.contains("No module named");
        assert!(
            ok || (missing && std::env::var_os("SATGATE_REQUIRE_TOOLS").is_none()),
            "the OpenMetrics parser refused the exposition:\n{out}"
        );
        if missing {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED operations::openmetrics: pip install prometheus-client"
            );
        }
    }
}

fn own_only(body: &[u8]) -> bool {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .all(|l| l.windows(10).any(|w| w == b"\"payload\":"))
}

/// Before: a changed inventory file that kept failing to load left the last good one in force
/// for ever, so an old Supplier kept the titles after a Change of Supplier it could not see.
#[tokio::test]
async fn an_inventory_file_failing_past_its_max_age_withholds_owner_views() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.inventory_max_age = std::time::Duration::from_millis(300);
    })
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let t = token(&sub, &role, &party, 300);
    let before = get(s.addr, "/sat/records?n=300", Some(&t)).await.1;
    assert!(!own_only(&before), "the supplier sees others' titles to begin with");

    let inv = s.dir.path().join("inventory.json");
    let good = std::fs::read(&inv).unwrap();
    std::fs::write(&inv, "{ not json").unwrap();
    crate::support::sidecar::reload(&s.state);
    assert_eq!(
        get(s.addr, "/sat/records?n=300", Some(&t)).await.1,
        before,
        "within the max age"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    satgate::server::reload_once(&s.state);
    let after = get(s.addr, "/sat/records?n=300", Some(&t)).await.1;
    assert!(
        !after.is_empty() && own_only(&after),
        "past the max age: own records only"
    );
    let readyz: serde_json::Value = serde_json::from_slice(&get(s.addr, "/readyz", None).await.1).unwrap();
    assert_eq!(readyz["inventory"]["ownerViewsWithheld"], true, "{readyz}");
    assert!(readyz["inventory"]["staleSeconds"].is_u64());
    let text = s.state.metrics.encode();
    assert!(text.contains("satgate_inventory_stale_seconds "));
    assert!(text.contains("satgate_inventory_owner_views_withheld 1\n"), "{text}");
    assert!(
        text.contains("satgate_last_reload_successful{component=\"inventory\"} 0\n"),
        "{text}"
    );

    // A good file again: the owner view is back.
    std::fs::write(&inv, &good).unwrap();
    crate::support::sidecar::reload(&s.state);
    assert_eq!(get(s.addr, "/sat/records?n=300", Some(&t)).await.1, before);
    let text = s.state.metrics.encode();
    assert!(text.contains("satgate_inventory_stale_seconds 0"));
    assert!(text.contains("satgate_inventory_owner_views_withheld 0\n"), "{text}");
    assert!(
        text.contains("satgate_last_reload_successful{component=\"inventory\"} 1\n"),
        "{text}"
    );
}

/// An inventory service that goes down: cached answers live out their TTL, and failures are
/// never cached, so past the TTL the owner view is gone (the caller's own records stay).
#[tokio::test]
async fn an_inventory_service_down_past_the_ttl_withholds_owner_views() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&down);
    let url = crate::support::inventory::start(Arc::new(move |_| !flag.load(Ordering::SeqCst))).await;
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), move |c, _| {
        c.ownership = satgate::config::OwnershipSourceConfig::Http(url, satgate::ownership::HttpSettings::default());
        c.ownership_cache.ttl = std::time::Duration::from_millis(500);
        c.ownership_cache.unknown_ttl = std::time::Duration::from_millis(500);
    })
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let t = token(&sub, &role, &party, 300);
    let before = get(s.addr, "/sat/records?n=300", Some(&t)).await.1;
    assert!(!own_only(&before));
    down.store(true, Ordering::SeqCst);
    assert_eq!(
        get(s.addr, "/sat/records?n=300", Some(&t)).await.1,
        before,
        "within the TTL: cached"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let after = get(s.addr, "/sat/records?n=300", Some(&t)).await.1;
    assert!(!after.is_empty() && own_only(&after), "past the TTL: own records only");
}

/// The caller's request id is echoed and reaches the upstream; its trace continues there.
#[tokio::test]
async fn the_request_id_and_trace_context_reach_the_upstream() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |_, _| {}).await;
    let t = token("90-B3-D5-1F-30-01-00-00", "IS", "SUPA", 300);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let (client, t, addr) = (client.clone(), t.clone(), s.addr);
        async move {
            let mut req = hyper::Request::get(format!("http://{addr}/sat/records?mode=trace"))
                .header("authorization", format!("Bearer {t}"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = client
                .request(req.body(http_body_util::Empty::new()).unwrap())
                .await
                .unwrap();
            let id = resp
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let rec: serde_json::Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
            (id, rec["recordId"].as_str().unwrap().to_owned())
        }
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (id, seen) = ask(vec![
        ("x-request-id", "req-42"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", "vendor=1"),
    ])
    .await;
    assert_eq!(id.as_deref(), Some("req-42"));
    let parts: Vec<&str> = seen.split('|').collect();
    assert!(
        parts[0].starts_with(&format!("00-{trace}-")) && parts[0].ends_with("-01"),
        "{seen}"
    );
    assert_eq!((parts[1], parts[2]), ("vendor=1", "req-42"));

    // No id and no trace from the caller: new ones, the same at both ends.
    let (id, seen) = ask(vec![("x-request-id", "not a sane id!")]).await;
    let id = id.unwrap();
    assert_eq!(id.len(), 32);
    let parts: Vec<&str> = seen.split('|').collect();
    assert_eq!(parts[2], id);
    assert!(parts[0].starts_with("00-") && !parts[0].contains(trace));
    // Refusals carry the id too.
    let req = hyper::Request::get(format!("http://{}/sat/records", s.addr))
        .header("authorization", "Bearer nope")
        .header("x-request-id", "req-refused")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "req-refused");
}

/// Two decision records per served request (start and end), with counts and policy ids only.
#[tokio::test]
async fn the_decision_log_counts_by_policy_and_never_carries_values_or_tokens() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, dir| {
        c.decision_log = Some(dir.join("decisions.ndjson"));
    })
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap();
    let t = token(&sub, &role, &party, 300);
    assert_eq!(get(s.addr, "/sat/records?n=500", Some(&t)).await.0, 200);
    let path = s.dir.path().join("decisions.ndjson");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The end record is durable before the answer's last byte: both are there once it is read.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let start: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let d: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        (start["event"].as_str(), d["event"].as_str()),
        (Some("start"), Some("end"))
    );
    assert_eq!(start["requestId"], d["requestId"]);
    assert_eq!(start["policy"], d["policy"]);
    assert_eq!(d["schema"], "satgate.decision/2");
    assert_eq!(d["principal"]["sub"], sub.to_uppercase());
    assert_eq!(d["query"], "n=500");
    assert_eq!((d["view"].as_str(), d["status"].as_u64()), (Some("records"), Some(200)));
    assert_eq!(d["policy"]["sha256"], s.state.policies.current().identity().sha256);
    assert_eq!(d["requestId"].as_str().map(str::len), Some(32));
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let (records_in, out, hidden, bad) = (
        n(&d["records"]["in"]),
        n(&d["records"]["out"]),
        n(&d["records"]["notVisible"]),
        n(&d["records"]["malformed"]),
    );
    assert_eq!(records_in, 500);
    assert_eq!(out + hidden + bad, records_in);
    let sum = |m: &serde_json::Value| m.as_object().unwrap().values().map(n).sum::<u64>();
    assert!(
        sum(&d["allowedBy"]) >= out && out > 0,
        "every written record was allowed by a permit: {d}"
    );
    assert!(sum(&d["deniedBy"]) >= hidden && hidden > 0, "{d}");
    assert!(d["allowedBy"].get("own-records").is_some(), "{d}");
    assert!(n(&d["fieldsRedacted"]["payload"]) > 0);

    // The activity view is logged too, before it answers, with its view and status (a cap's 422).
    assert_eq!(get(s.addr, "/sat/activity?mode=span&n=500", Some(&t)).await.0, 422);
    let both = std::fs::read_to_string(&path).unwrap();
    let a: serde_json::Value = serde_json::from_str(both.lines().nth(3).expect("a second end record")).unwrap();
    assert_eq!(
        (a["view"].as_str(), a["status"].as_u64()),
        (Some("activity"), Some(422))
    );
    assert_eq!(a["query"], "mode=span&n=500");

    // A Supplier's titles about others' records are named by Device, counted, and add up.
    let shown = d["ownerView"]["devices"].as_object().unwrap();
    assert!(!shown.is_empty(), "{d}");
    let own = n(&d["allowedBy"]["own-records"]);
    assert_eq!(shown.values().map(n).sum::<u64>() + own, out, "{d}");
    // A refused summary showed nothing.
    assert_eq!(a["ownerView"]["devices"], serde_json::json!({}));

    // Never a value from a record, never the token.
    assert!(!text.contains(&t));
    let records = std::fs::read_to_string("tests/data/records.ndjson").unwrap();
    for r in records.lines().take(500) {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        for field in ["payload", "requestId", "srvTitle", "recordId"] {
            if let Some(value) = v[field].as_str().filter(|s| s.len() > 6) {
                assert!(!text.contains(value), "{field} value in the decision log");
            }
        }
    }
}

/// The inventory look-ups a request makes carry its trace context and request id.
#[tokio::test]
async fn inventory_lookups_carry_the_requests_trace_context() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let url = crate::support::inventory::start(Arc::new(move |req| {
        let h = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        record
            .lock()
            .unwrap()
            .push(format!("{}|{}", h("traceparent"), h("x-request-id")));
        true
    }))
    .await;
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), move |c, _| {
        c.ownership = satgate::config::OwnershipSourceConfig::Http(url, satgate::ownership::HttpSettings::default());
    })
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("http://{}/sat/records?n=50", s.addr))
        .header("authorization", format!("Bearer {}", token(&sub, &role, &party, 300)))
        .header("x-request-id", "req-inventory")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    use http_body_util::BodyExt;
    let _ = resp.into_body().collect().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the inventory service was asked");
    for s in &seen {
        assert!(
            s.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && s.ends_with("|req-inventory"),
            "{s}"
        );
    }
}
