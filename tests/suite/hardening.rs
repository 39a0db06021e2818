//! The attacker's review, over HTTP against an in-test upstream: the operations listener apart
//! from callers, stream slots overall and per User, the request-header timeout, stream life
//! bounded by the token, and the admin endpoint's strict query. (The real binary under a flood
//! and 200 stalled readers is in `abuse.rs`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::sidecar::{get, start_sidecar_with};
use crate::support::upstream::start_upstream;
use crate::support::{token, users};

/// Every path an outsider might try, and the methods to try them with.
const PATHS: [&str; 12] = [
    "/",
    "/sat",
    "/sat/",
    "/sat/records/",
    "/sat/activity/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin",
    "/admin/ownership/invalidate",
    "/admin/ownership/invalidate?deviceId=00-DB-12-34-56-78-90-A0",
    "/%2Fsat%2Frecords",
];

/// Raw request, raw answer: status and the whole text (the connection is closed after it).
async fn raw(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Before: the callers' listener answered /metrics (counting other Users' hidden records),
/// /readyz (reload errors with file paths) and /admin.
#[tokio::test]
async fn with_an_ops_listener_the_callers_port_serves_only_records() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = s.ops_addr.expect("an operations listener");
    for path in PATHS {
        for method in ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"] {
            let (status, text) = raw(s.addr, method, path).await;
            assert_eq!(status, 404, "{method} {path} on the callers' port: {text}");
            for leak in ["satgate_", "policies", "lastReloadError", "invalidated"] {
                assert!(!text.contains(leak), "{method} {path} leaks {leak}: {text}");
            }
        }
    }
    // Unauthenticated, records and activity say 401 and nothing else.
    for path in ["/sat/records", "/sat/activity"] {
        let (status, text) = raw(s.addr, "GET", path).await;
        assert_eq!(status, 401, "{text}");
        assert_eq!(raw(s.addr, "POST", path).await.0, 405);
    }

    // The operations port has the rest, and no records.
    assert_eq!(get(ops, "/healthz", None).await.0, 200);
    assert_eq!(get(ops, "/readyz", None).await.0, 200);
    let (status, metrics, _) = get(ops, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&metrics).contains("satgate_streams_refused_total"));
    assert_eq!(raw(ops, "GET", "/sat/records").await.0, 404);
    assert_eq!(raw(ops, "GET", "/sat/activity").await.0, 404);
    assert_eq!(
        raw(ops, "POST", "/admin/ownership/invalidate").await.0,
        404,
        "admin not enabled"
    );
    assert_eq!(raw(ops, "GET", "/admin/ownership/invalidate").await.0, 405);
}

fn supa_sub() -> String {
    users().into_iter().find(|u| u.1 == "IS" && u.2 == "SUPA").unwrap().0
}

/// Opens a record stream and reads only its status line, leaving the body unread.
async fn open_stream(addr: SocketAddr, path: &str, token: &str) -> (tokio::net::TcpStream, u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (s, status, head)
}

/// Before: every stream was accepted, and stalled readers held memory until the idle timeout.
#[tokio::test]
async fn streams_are_bounded_overall_and_per_user_with_retry_after() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.stream_limits.max_streams = 3;
        c.stream_limits.max_streams_per_user = 2;
        c.idle_timeout = Duration::from_secs(10);
    })
    .await;
    let all = users();
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    let tok = |u: &(String, String, String)| token(&u.0, &u.1, &u.2, 300);
    let path = |u: &(String, String, String)| format!("/sat/records?mode=big&n=1000&kb=32&user={}", u.0);

    let a1 = open_stream(s.addr, &path(a), &tok(a)).await;
    let a2 = open_stream(s.addr, &path(a), &tok(a)).await;
    assert_eq!((a1.1, a2.1), (200, 200));
    let (_, status, head) = open_stream(s.addr, &path(a), &tok(a)).await;
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    let b1 = open_stream(s.addr, &path(b), &tok(b)).await;
    assert_eq!(b1.1, 200);
    let (_, status, head) = open_stream(s.addr, &path(c), &tok(c)).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert!(head.contains("\"error\":\"busy\""), "{head}");

    // A slot comes back when its stream ends (here: the client goes away).
    drop(a1);
    let mut freed = false;
    for _ in 0..50 {
        let (_, status, _) = open_stream(s.addr, &path(c), &tok(c)).await;
        if status == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a closed stream was not given back");
    let metrics = s.state.metrics.encode();
    for want in [
        "satgate_streams_refused_total{reason=\"max_streams\"}",
        "satgate_streams_refused_total{reason=\"max_streams_per_user\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
}

/// Before: the header timeout was 10 s and not settable, so a flood of one-byte sockets held
/// every slot for that long.
#[tokio::test]
async fn a_socket_that_never_finishes_its_headers_is_closed_after_the_header_timeout() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.header_timeout = Duration::from_millis(500);
    })
    .await;
    for sent in [&b""[..], b"G", b"GET /sat/records HTTP/1.1\r\nhost: x\r\n"] {
        let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        sock.write_all(sent).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
        let closed_after = started.elapsed();
        assert!(
            read.is_ok(),
            "{:?}: still open after 5 s",
            String::from_utf8_lossy(sent)
        );
        assert!(
            closed_after >= Duration::from_millis(400) && closed_after < Duration::from_secs(3),
            "{:?}: closed after {closed_after:?}",
            String::from_utf8_lossy(sent)
        );
    }
}

/// Before: a stream outlived its token by as long as the upstream kept sending.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, _| {
        c.idle_timeout = Duration::from_secs(10);
    })
    .await;
    let sub = supa_sub();
    // Expired 28 s ago: still inside the 30 s leeway for 2 s more.
    let t = token(&sub, "IS", "SUPA", -28);
    let started = Instant::now();
    let (status, body, clean) = get(s.addr, "/sat/records?mode=slow&n=200", Some(&t)).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(!clean, "the response must be cut short, not end cleanly");
    assert!(
        took < Duration::from_secs(8),
        "ran {took:?}: 200 records at 100 ms would take 20 s"
    );
    // Only whole records were written before the cut.
    assert!(body.is_empty() || body.ends_with(b"\n"));
    let mut seen = false;
    for _ in 0..20 {
        if s.state
            .metrics
            .encode()
            .contains("satgate_streams_aborted_total{reason=\"token_expired\"} 1")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the expiry was not counted");
}

/// Before: `?deviceid=` (wrong case) or any unknown parameter cleared the whole cache.
#[tokio::test]
async fn the_admin_endpoint_refuses_unknown_parameters() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |c, dir| {
        let f = dir.join("admin-token");
        std::fs::write(&f, "admin-token-admin-token").unwrap();
        c.admin_token_file = Some(f);
        c.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = s.ops_addr.unwrap();
    let post = |query: &'static str| async move {
        let mut sock = tokio::net::TcpStream::connect(ops).await.unwrap();
        let req = format!(
            "POST /admin/ownership/invalidate{query} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer admin-token-admin-token\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        sock.read_to_string(&mut text).await.unwrap();
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("null")).unwrap_or(Value::Null);
        (text[9..12].to_owned(), body)
    };
    for bad in ["?deviceid=00-DB-12-34-56-78-90-A0", "?all=1", "?deviceId=a&deviceId=b"] {
        let (status, body) = post(bad).await;
        assert_eq!(status, "400", "{bad}: {body}");
    }
    let (status, body) = post("?deviceId=00-db-12-34-56-78-90-a0").await;
    assert_eq!(
        (status.as_str(), body["invalidated"].as_str()),
        ("200", Some("00-DB-12-34-56-78-90-A0"))
    );
    let (status, body) = post("").await;
    assert_eq!((status.as_str(), body["invalidated"].as_str()), ("200", Some("all")));
}

/// Before: the 403 body and log quoted the offending `role` value.
#[tokio::test]
async fn a_403_never_quotes_the_claim() {
    let up = start_upstream().await;
    let s = start_sidecar_with(format!("http://{}", up.addr), |_, _| {}).await;
    let t = token(&supa_sub(), "<script>ROLE-VALUE", "SUPA", 300);
    let (status, body, _) = get(s.addr, "/sat/records", Some(&t)).await;
    assert_eq!(status, 403);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("ROLE-VALUE") && !text.contains("script"), "{text}");
    assert!(text.contains("role"), "{text}");
}

/// A Party claim may hold U+2028 (a line break to some log readers) or U+202E (which reverses
/// what follows on screen): the access line names it escaped, in JSON and in text format, and
/// the request is still served.
#[tokio::test]
async fn claim_text_in_the_access_log_is_escaped() {
    let up = start_upstream().await;
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("satgate.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let upstream = format!("http://{}", up.addr);
        let satgate = crate::support::binary::spawn_with(
            &[
                "--upstream",
                &upstream,
                "--inventory",
                "tests/data/inventory.json",
                "--log-format",
                format,
            ],
            |cmd| {
                cmd.env("RUST_LOG", "info").stdout(log.try_clone().unwrap()).stderr(log);
            },
        )
        .await;
        let party = "SUP\u{2028}A\u{202e}\"evil";
        let t = token("90-B3-D5-1F-30-01-00-00", "IS", party, 300);
        let (status, _, _) = get(satgate.listen, "/sat/records?n=3", Some(&t)).await;
        assert_eq!(status, 200);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&log_path).unwrap();
            if text.contains("request served") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let line = text
            .lines()
            .find(|l| l.contains("request served"))
            .expect("an access line");
        assert!(
            !line.contains('\u{2028}') && !line.contains('\u{202e}'),
            "{format}: {line}"
        );
        // Escaped once in text, and that escape escaped again by JSON.
        assert!(
            line.replace('\\', "").contains("SUPu{2028}Au{202e}"),
            "{format}: {line}"
        );
        drop(satgate);
    }
}
