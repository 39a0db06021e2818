//! What the end-to-end benches share: a fast in-process SSI upstream over a realistic corpus, a
//! client that drains answers, page latency, and a process's peak RSS.

#![allow(dead_code)] // each bench uses its own part

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use satgate::sample::Market;

/// The bench corpus: 10,000 realistic records of a generated market (50 premises), in 64 KiB
/// chunks, and the market (its inventory and Users).
pub fn corpus() -> (Market, Corpus) {
    let market = Market::generate(50, 42);
    let text = market.ndjson(10_000, 42);
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        current.push('\n');
        count += 1;
        if current.len() >= 64 * 1024 {
            chunks.push((Bytes::from(std::mem::take(&mut current)), count));
            count = 0;
        }
    }
    chunks.push((Bytes::from(current), count));
    (market, Corpus { chunks })
}

/// An HS256 token for `user`, valid for an hour.
pub fn token(user: &satgate::model::Principal, secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": user.user_id.to_string(), "role": user.role.as_str(), "party": user.party, "exp": exp});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// 10,000 distinct records, served in 64 KiB chunks, cycled up to `n` records.
pub struct Corpus {
    pub chunks: Vec<(Bytes, usize)>,
}

pub fn serve_upstream(listener: std::net::TcpListener, corpus: Arc<Corpus>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let corpus = Arc::clone(&corpus);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let corpus = Arc::clone(&corpus);
                    async move {
                        let n: usize = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("n="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(100);
                        let (tx, body) = satgate::server::body::channel();
                        tokio::spawn(async move {
                            let mut left = n;
                            for (chunk, records) in corpus.chunks.iter().cycle() {
                                if left == 0 {
                                    break;
                                }
                                let chunk = if *records <= left {
                                    left -= records;
                                    chunk.clone()
                                } else {
                                    // The first `left` lines of this chunk.
                                    let end = chunk
                                        .iter()
                                        .enumerate()
                                        .filter(|(_, b)| **b == b'\n')
                                        .nth(left - 1)
                                        .map_or(0, |(i, _)| i + 1);
                                    left = 0;
                                    chunk.slice(..end)
                                };
                                if tx.send(chunk).await.is_err() {
                                    return;
                                }
                            }
                            tx.finish();
                        });
                        Ok::<_, Infallible>(hyper::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// GETs a URL, counting body bytes without keeping them.
pub async fn drain(client: &HttpClient, url: &str, token: &str) -> usize {
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .expect("request");
    let resp = client.request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "{url}");
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        n += f.expect("body").into_data().map_or(0, |d| d.len());
    }
    n
}

/// GETs a URL's body as text (no token: `/metrics`).
pub async fn get_text(client: &HttpClient, url: &str) -> String {
    let req = hyper::Request::get(url).body(Empty::new()).expect("request");
    let resp = client.request(req).await.expect("response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

pub async fn latency(client: &HttpClient, base: &str, token: &str, clients: usize, per_client: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), format!("{base}/sat/records?n=100"), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                drain(&client, &url, &token).await;
                v.push(t.elapsed());
            }
            v
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort();
    all
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `satgate COMMAND` (`serve` or `ext-proc`) from `bin` on `listen`, in front of `upstream`, with
/// the bench's inventory and secret in `dir`, once it listens.
pub async fn spawn_satgate(
    bin: &std::path::Path,
    command: &str,
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    extra: &[&std::ffi::OsStr],
) -> std::process::Child {
    let child = std::process::Command::new(bin)
        .args([
            command,
            "--listen",
            &listen.to_string(),
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .arg("--inventory")
        .arg(dir.join("inventory.json"))
        .arg("--jwt-hs256-secret-file")
        .arg(dir.join("secret"))
        // One User runs every client here: room for all of them at once.
        .args(["--max-streams", "128", "--max-streams-per-user", "128"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("satgate (build with cargo bench)");
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// What every end-to-end bench sets up: N records a stream (`SATGATE_BENCH_RECORDS`, default
/// 1,000,000), the market, the in-process upstream over its corpus, a directory with the
/// inventory and the HS256 secret, and a token for the market's first User.
pub struct Setup {
    pub n: usize,
    pub market: Market,
    pub upstream: std::net::SocketAddr,
    pub dir: std::path::PathBuf,
    pub token: String,
}

pub fn setup(name: &str, secret: &str) -> Setup {
    let n = std::env::var("SATGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (market, corpus) = corpus();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let upstream = listener.local_addr().expect("addr");
    serve_upstream(listener, Arc::new(corpus));
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("inventory.json"), &market.inventory_json).expect("inventory");
    std::fs::write(dir.join("secret"), secret).expect("secret");
    let token = token(&market.users[0].principal, secret);
    Setup {
        n,
        market,
        upstream,
        dir,
        token,
    }
}
