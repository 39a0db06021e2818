//! A sidecar in the test process, configured as `satgate serve` would be, with a temporary
//! directory holding its policies, inventory and secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use satgate::config::{JwtKey, OwnershipSourceConfig, ServeConfig};
use satgate::server::State;

use super::SECRET;

pub struct Sidecar {
    pub addr: SocketAddr,
    /// The operations listener, when the configuration sets one.
    pub ops_addr: Option<SocketAddr>,
    pub state: Arc<State>,
    pub dir: tempfile::TempDir,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub serving: tokio::task::JoinHandle<()>,
}

/// The test configuration: the defaults, with short timeouts, a small line limit, no file polling
/// (tests call [`reload`]) and the files in `dir`.
pub fn config(dir: &std::path::Path, upstream: String, policies: PathBuf) -> ServeConfig {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let inventory = dir.join("inventory.json");
    if !inventory.exists() {
        std::fs::copy("tests/data/inventory.json", &inventory).unwrap();
    }
    let mut c = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        OwnershipSourceConfig::File(inventory),
        JwtKey::Hs256SecretFile(secret),
    );
    c.policies = policies;
    c.max_line_bytes = 64 * 1024;
    c.max_connections = 64;
    c.connect_timeout = Duration::from_secs(1);
    c.first_byte_timeout = Duration::from_millis(1500);
    c.idle_timeout = Duration::from_millis(1500);
    c.reload_interval = Duration::from_secs(3600);
    c.shutdown_grace = Duration::from_secs(10);
    c
}

pub async fn start_sidecar(upstream: String) -> Sidecar {
    start_sidecar_with(upstream, |_, _| {}).await
}

/// A sidecar whose configuration `tweak` may change first (given its temporary directory).
pub async fn start_sidecar_with(upstream: String, tweak: impl FnOnce(&mut ServeConfig, &std::path::Path)) -> Sidecar {
    try_start_sidecar_with(upstream, tweak).await.unwrap()
}

/// Like [`start_sidecar_with`], giving back why it did not start.
pub async fn try_start_sidecar_with(
    upstream: String,
    tweak: impl FnOnce(&mut ServeConfig, &std::path::Path),
) -> Result<Sidecar, String> {
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
    let (state, listener) = satgate::cmd::serve::start(&cfg).await.map_err(|e| e.to_string())?;
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
    Ok(Sidecar {
        addr,
        ops_addr,
        state,
        dir,
        stop: Some(stop),
        serving,
    })
}

/// Status, body, and whether the body ended cleanly.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Vec<u8>, bool) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
    read(resp).await
}

/// A response's status, body, and whether the body ended cleanly (not cut short).
pub async fn read(resp: hyper::Response<hyper::body::Incoming>) -> (u16, Vec<u8>, bool) {
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
pub fn reload(state: &State) {
    satgate::server::reload_once(state);
    satgate::server::reload_once(state);
}

/// Status, `Content-Type` and body of a GET with a token and an `Accept` header.
pub async fn get_accepting(addr: SocketAddr, path: &str, token: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let (status, headers, body) = get_with_headers(addr, path, token, accept).await;
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, body)
}

/// Like [`get_accepting`], with every header of the answer.
pub async fn get_with_headers(
    addr: SocketAddr,
    path: &str,
    token: &str,
    accept: &str,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", accept)
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let headers = resp.headers().clone();
    let (status, body, clean) = read(resp).await;
    assert!(clean, "{path} was cut short");
    (status, headers, body)
}
