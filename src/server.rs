//! The sidecar's HTTP server: accept loop, routing and the `/sat/records` request path.
//!
//! A request to `/sat/records` goes, in order: authenticate (401/403) -> take the current policy
//! set -> call the upstream (502/504) -> check the first line (502) -> stream, filtering every
//! record (see [`crate::stream::body`]). Errors before streaming are JSON bodies that never carry
//! record data; after streaming starts, a failure ends the response early.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, Refusal};
use crate::decision::PolicyStore;
use crate::metrics::{Metrics, ReasonLabel, ResultLabel, StatusLabel};
use crate::ownership::InventoryFile;
use crate::ownership::{CachedSource, OwnershipSource};
use crate::stream::body::{self, RecordStream, StreamError};
use crate::stream::RecordFilter;
use crate::tls::ServerTls;
use crate::upstream::Upstream;

pub type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// Everything a request needs, shared by all connections.
pub struct State {
    pub auth: Authenticator,
    pub policies: PolicyStore,
    /// The inventory file, when ownership comes from one (reloads, readiness).
    pub inventory: Option<Arc<InventoryFile>>,
    /// Ownership look-ups, cached, whatever the source.
    pub ownership: Arc<CachedSource>,
    /// `host:port` of the inventory service, when ownership comes from one (readiness probe).
    pub inventory_service: Option<String>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub max_line_bytes: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Bearer token for the admin endpoint; `None` disables it.
    pub admin_token: Option<Vec<u8>>,
    /// TLS termination; plain HTTP when `None`.
    pub tls: Option<ServerTls>,
}

/// Longest a client may take to send its request headers, or to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish for
/// up to `grace`.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // The accept loop holds the connection limit: at the limit it stops accepting, and the kernel
    // backlog (then the clients) wait, instead of satgate running out of memory or descriptors.
    let limit = Arc::new(tokio::sync::Semaphore::new(state.max_connections));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match state.tls.as_ref().map(ServerTls::acceptor) {
                        None => serve_connection(stream, state, peer, watcher).await,
                        Some(acceptor) => {
                            // The handshake runs in the connection's task, so a slow client
                            // holds only its own connection slot, never the accept loop.
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => serve_connection(tls, state, peer, watcher).await,
                                Ok(Err(e)) => {
                                    state.metrics.tls_handshake_failures.inc();
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    state.metrics.tls_handshake_failures.inc();
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                }
                            }
                        }
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// Serves HTTP/1.1 on one accepted connection, plain or TLS, until it closes.
async fn serve_connection<IO>(io: IO, state: Arc<State>, peer: SocketAddr, watcher: Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&state), req, peer));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/sat/records") => sat_records(&state, &req, peer).await,
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readyz(&state).await,
        (&Method::POST, "/admin/ownership/invalidate") => admin_invalidate(&state, &req).await,
        (&Method::GET, "/metrics") => metrics(&state, &req),
        (_, "/sat/records" | "/healthz" | "/readyz" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET is supported",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    state
        .metrics
        .requests
        .get_or_create(&StatusLabel {
            status: resp.status().as_u16(),
        })
        .inc();
    Ok(resp)
}

async fn sat_records(state: &Arc<State>, req: &Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
    let started = Instant::now();
    let query = req.uri().query().map(str::to_owned);
    let access = |status: u16, principal: Option<&crate::model::Principal>, detail: &str| {
        tracing::info!(
            target: "satgate::access",
            %peer,
            sub = principal.map(|p| p.user_id.to_string()),
            role = principal.map(|p| p.role.as_str()),
            party = principal.map(|p| p.party.as_str()),
            query = query.as_deref().unwrap_or(""),
            status,
            detail,
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "request refused"
        );
    };

    let principal = match state
        .auth
        .principal(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Ok(p) => p,
        Err(Refusal::Unauthenticated(why)) => {
            access(401, None, &why);
            return error(StatusCode::UNAUTHORIZED, "unauthenticated", &why);
        }
        Err(Refusal::Forbidden(why)) => {
            access(403, None, &why);
            return error(StatusCode::FORBIDDEN, "forbidden", &why);
        }
    };
    // The policy set in force now; this request keeps it even if a reload happens meanwhile.
    let engine = state.policies.current();

    let (upstream, latency) = match state.upstream.records(query.as_deref()).await {
        Ok(ok) => ok,
        Err(e) => {
            access(e.status().as_u16(), Some(&principal), &e.to_string());
            let code = if e.status() == StatusCode::GATEWAY_TIMEOUT {
                "upstream_timeout"
            } else {
                "bad_gateway"
            };
            return error(e.status(), code, &e.to_string());
        }
    };
    state.metrics.upstream_latency.observe(latency.as_secs_f64());

    let filter = RecordFilter::new(engine.for_principal(&principal));
    let mut stream = RecordStream::new(
        upstream.into_body(),
        filter,
        Arc::clone(&state.ownership) as Arc<dyn OwnershipSource>,
        state.max_line_bytes,
        state.upstream.timeouts().idle,
    );
    if let Err(e) = stream.check_first_line().await {
        let (status, code) = match e {
            StreamError::IdleTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            _ => (StatusCode::BAD_GATEWAY, "bad_gateway"),
        };
        access(status.as_u16(), Some(&principal), &e.to_string());
        return error(status, code, &e.to_string());
    }

    let (tx, body) = body::channel();
    let metrics = Arc::clone(&state.metrics);
    metrics.active_streams.inc();
    tokio::spawn(async move {
        let (stream, result) = stream.run(tx).await;
        metrics.active_streams.dec();
        let s = stream.stats();
        metrics.record_stream(s);
        let outcome = match &result {
            Ok(()) => "complete".to_owned(),
            Err(e) => {
                let reason = match e {
                    StreamError::IdleTimeout => "upstream_idle_timeout",
                    StreamError::ClientGone => "client_gone",
                    StreamError::ClientStalled => "client_stalled",
                    _ => "upstream_error",
                };
                metrics.streams_aborted.get_or_create(&ReasonLabel { reason }).inc();
                format!("ended early: {e}")
            }
        };
        tracing::info!(
            target: "satgate::access",
            %peer,
            sub = %principal.user_id,
            role = principal.role.as_str(),
            party = principal.party.as_str(),
            query = query.as_deref().unwrap_or(""),
            status = 200,
            upstream_status = 200,
            records_in = s.records_in,
            records_out = s.records_out,
            records_not_visible = s.left_out,
            records_malformed = s.malformed,
            ownership_errors = stream.lookup_errors,
            outcome,
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "request served"
        );
    });

    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.boxed())
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "could not build response",
            )
        })
}

/// Prometheus text by default; OpenMetrics when the scraper asks for it. The exposition is the
/// same (OpenMetrics' `# EOF` is a comment to the Prometheus text parser).
fn metrics(state: &State, req: &Request<Incoming>) -> Response<ResponseBody> {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut resp = Response::new(full(state.metrics.encode()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// `POST /admin/ownership/invalidate[?deviceId=EUI]`: forget one Device's cached owners, or all,
/// when a registration change is known to have happened.
async fn admin_invalidate(state: &State, req: &Request<Incoming>) -> Response<ResponseBody> {
    let Some(expected) = &state.admin_token else {
        return error(StatusCode::NOT_FOUND, "not_found", "the admin endpoint is not enabled");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer(v.as_bytes()))
        .unwrap_or_default();
    if !constant_time_eq(given, expected) {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "admin token required");
    }
    let device = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("deviceId="));
    match device {
        None => {
            state.ownership.invalidate_all();
            tracing::info!("admin: ownership cache cleared");
            json_response(StatusCode::OK, json!({"invalidated": "all"}))
        }
        Some(raw) => match crate::model::Eui64::parse(raw) {
            Ok(id) => {
                state.ownership.invalidate(id).await;
                tracing::info!(device = %id, "admin: cached owners forgotten");
                json_response(StatusCode::OK, json!({"invalidated": id.to_string()}))
            }
            Err(_) => error(StatusCode::BAD_REQUEST, "bad_request", "deviceId must be an EUI-64"),
        },
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(state: &State) -> Response<ResponseBody> {
    let upstream_ok = reachable(state.upstream.authority()).await;
    let engine = state.policies.current();
    let (inventory, inventory_ok) = match (&state.inventory, &state.inventory_service) {
        (Some(file), _) => (
            json!({"source": "file", "loaded": true, "devices": file.current().len(), "lastReloadError": file.last_error()}),
            true,
        ),
        (None, service) => {
            let ok = reachable(service.clone()).await;
            (
                json!({"source": "http", "reachable": ok, "cachedDevices": state.ownership.stats().entries.get()}),
                ok,
            )
        }
    };
    let mut body = json!({
        "policies": {"loaded": true, "count": engine.policies().policies().count(), "lastReloadError": state.policies.last_error()},
        "inventory": inventory,
        "upstream": {"reachable": upstream_ok},
        "auth": {"keys": state.auth.key_count(), "lastReloadError": state.auth.last_error()},
    });
    if let Some(tls) = &state.tls {
        body["tls"] = json!({"loaded": true, "lastReloadError": tls.last_error()});
    }
    // A failed reload is reported but not fatal: the last good policies and inventory serve.
    let status = if upstream_ok && inventory_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body)
}

/// Whether a TCP connection to `addr` opens within a second.
async fn reachable(addr: Option<String>) -> bool {
    match addr {
        Some(addr) => matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        None => false,
    }
}

fn full(text: impl Into<Bytes>) -> ResponseBody {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ResponseBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A CONTRACT section 5 error body. `message` is ours, never record data.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json_response(status, json!({"error": code, "message": message}))
}

/// Reloads policies, JWT keys, TLS files and inventory when their files change, every `interval`.
pub fn spawn_reloader(state: Arc<State>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || reload_once(&s)).await;
        }
    })
}

/// One reload check of every watched file.
pub fn reload_once(state: &State) {
    let m = &state.metrics;
    if let Some(n) = counted(&m.policy_reloads, "policy set", state.policies.reload_if_changed()) {
        tracing::info!(policies = n, "policy set reloaded");
    }
    if let Some(n) = counted(&m.jwt_key_reloads, "JWT key", state.auth.reload_if_changed()) {
        tracing::info!(keys = n, "JWT verification keys reloaded");
    }
    if let Some(tls) = &state.tls {
        if counted(&m.tls_reloads, "TLS certificate", tls.reload_if_changed()).is_some() {
            tracing::info!("TLS certificate and key reloaded");
        }
    }
    let Some(inventory) = &state.inventory else { return };
    if let Some(warnings) = counted(&m.inventory_reloads, "inventory", inventory.reload_if_changed()) {
        // Owners cached from the old file must not outlive it.
        state.ownership.invalidate_all();
        for w in warnings.iter().take(20) {
            tracing::warn!(entry = %w, "inventory entry left out");
        }
        tracing::info!(devices = inventory.current().len(), "inventory reloaded");
    }
}

/// Counts one reload check's outcome (nothing when the files had not changed) and logs a
/// failure; gives back what a successful reload loaded.
fn counted<T, E: std::fmt::Display>(
    reloads: &Family<ResultLabel, Counter>,
    what: &str,
    outcome: Option<Result<T, E>>,
) -> Option<T> {
    let result = if outcome.as_ref()?.is_ok() { "ok" } else { "failed" };
    reloads.get_or_create(&ResultLabel { result }).inc();
    match outcome? {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            tracing::error!(error = %e, "{what} reload failed; the last good one stays in use");
            None
        }
    }
}
