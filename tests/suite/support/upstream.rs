//! The in-test SSI upstream: the sample records, or misbehaviour chosen by the `mode` query
//! parameter (which also shows that the query reaches the upstream unchanged).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::sample;

/// The in-test SSI upstream. Behaviour is chosen by the `mode` query parameter, which also
/// shows that the query reaches the upstream unchanged.
pub struct Upstream {
    pub addr: SocketAddr,
    pub sent_bytes: Arc<AtomicU64>,
}

pub async fn start_upstream() -> Upstream {
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
        "late" => {
            // The records, after 2 s without response headers.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let text: String = records.iter().take(n).map(|l| format!("{l}\n")).collect();
            return Ok(ndjson(200, full(text)));
        }
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
            let (tx, body) = satgate::server::body::channel();
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
        "span" => {
            // The sample records a day apart from 2025-01-01: 500 records over 500 days.
            let mut text = String::new();
            for (i, line) in records.iter().take(n).enumerate() {
                let day = 20_089 + i as i64; // 2025-01-01
                let ts = satgate::views::activity::time::day_to_string(day) + "T12:00:00Z";
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let mut v = v.as_object().unwrap().clone();
                v.insert("timestamp".into(), json!(ts));
                text.push_str(&serde_json::to_string(&v).unwrap());
                text.push('\n');
            }
            return Ok(ndjson(200, full(text)));
        }
        "slow" => {
            // The sample records, one every 100 ms.
            let (tx, body) = satgate::server::body::channel();
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
        "malformed" => {
            // The sample records with a broken line after every 50th.
            let mut text = String::new();
            for (i, line) in records.iter().cycle().take(n).enumerate() {
                text.push_str(line);
                text.push('\n');
                if i % 50 == 49 {
                    text.push_str(if i % 100 == 49 {
                        "{\"recordId\": broken\n"
                    } else {
                        "not json at all\n"
                    });
                }
            }
            return Ok(ndjson(200, full(text)));
        }
        "trace" => {
            // What correlation headers arrived, as the record id.
            let header = |k: &str| {
                req.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let seen = format!(
                "{}|{}|{}",
                header("traceparent"),
                header("tracestate"),
                header("x-request-id")
            );
            let rec =
                json!({"recordId": seen, "timestamp":"t","messageType":"DCCAlert","userId":"90-B3-D5-1F-30-01-00-00"});
            return Ok(ndjson(200, full(format!("{rec}\n"))));
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
            let (tx, body) = satgate::server::body::channel();
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
    let (tx, body) = satgate::server::body::channel();
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

/// The in-test upstream, with a way to kill it: its port then refuses connections and every
/// response in flight ends mid-body, as when the SSI container dies.
pub struct Killable {
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    dead: tokio::sync::watch::Sender<bool>,
}

impl Killable {
    pub fn kill(&self) {
        let _ = self.dead.send(true);
        // The accept loop owns the listener: aborting it closes the port.
        self.accept.abort();
    }
}

pub async fn start_killable_upstream() -> Killable {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dead, alive) = tokio::sync::watch::channel(false);
    let records = sample();
    let sent = Arc::new(AtomicU64::new(0));
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (records, sent, mut alive) = (Arc::clone(&records), Arc::clone(&sent), alive.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    upstream_respond(Arc::clone(&records), Arc::clone(&sent), req)
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = alive.wait_for(|dead| *dead) => {}
                }
            });
        }
    });
    Killable { addr, accept, dead }
}
