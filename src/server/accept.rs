//! The listeners: accepting connections within their limits, TLS, HTTP/1.1 with a request-header
//! timeout, dispatch through the route table, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::records;
use super::response::{error, ResponseBody};
use super::routes::{self, NoRoute, Route, Side};
use super::steps::View;
use super::{ops, State};
use crate::metrics::StatusLabel;
use crate::stream::IO_BUFFER_BYTES;
use crate::tls::ServerTls;

/// Most connections the operations listener serves at once: probes and a scraper need a few;
/// the limit keeps a flood there from costing much.
pub const OPS_MAX_CONNECTIONS: usize = 64;

/// The bound sockets: callers (`--listen`) and, when set, operations (`--ops-listen`).
pub struct Listeners {
    pub callers: TcpListener,
    pub ops: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(callers: TcpListener) -> Self {
        Self { callers, ops: None }
    }
}

/// Serves both listeners until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for up to `grace`.
pub async fn run(
    listeners: impl Into<Listeners>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let listeners = listeners.into();
    let graceful = GracefulShutdown::new();
    let (stop, stopped) = watch::channel(false);
    let callers_side = if listeners.ops.is_some() {
        Side::Callers
    } else {
        Side::Both
    };
    let callers = accept_loop(
        listeners.callers,
        callers_side,
        state.max_connections,
        &state,
        &graceful,
        stopped.clone(),
    );
    let ops = async {
        if let Some(ops) = listeners.ops {
            accept_loop(ops, Side::Ops, OPS_MAX_CONNECTIONS, &state, &graceful, stopped.clone()).await;
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(callers, ops, signal);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// Serves the operations listener alone (for `ext-proc`, whose callers come through Envoy) until
/// `shutdown` resolves.
pub async fn run_ops(ops: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let (stop, stopped) = watch::channel(false);
    let serve = accept_loop(ops, Side::Ops, OPS_MAX_CONNECTIONS, &state, &graceful, stopped);
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(serve, signal);
}

async fn accept_loop(
    listener: TcpListener,
    side: Side,
    max_connections: usize,
    state: &Arc<State>,
    graceful: &GracefulShutdown,
    mut stopped: watch::Receiver<bool>,
) {
    // The accept loop holds the connection limit: at the limit it stops accepting, and the kernel
    // backlog (then the clients) wait, instead of satgate running out of memory or descriptors.
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let tls = match side {
        Side::Ops => None,
        Side::Callers | Side::Both => state.tls.as_ref(),
    };
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(state);
        let watcher = graceful.watcher();
        let acceptor = tls.map(ServerTls::acceptor);
        tokio::spawn(async move {
            let timeout = state.header_timeout;
            let served = match acceptor {
                None => connection(stream, side, Arc::clone(&state), peer, watcher).await,
                Some(acceptor) => {
                    // The handshake runs in the connection's task, so a slow client holds only
                    // its own connection slot, never the accept loop.
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, side, Arc::clone(&state), peer, watcher).await,
                        Ok(Err(e)) => {
                            state.metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            state.metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
}

/// HTTP/1.1 on one accepted connection, plain or TLS. A client that has not sent complete
/// request headers within `--header-timeout` (at the start, or between keep-alive requests) is
/// disconnected, so idle or trickling sockets cannot hold connection slots for long.
async fn connection<IO>(
    io: IO,
    side: Side,
    state: Arc<State>,
    peer: SocketAddr,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = state.header_timeout;
    let service = service_fn(move |req| handle(Arc::clone(&state), side, req, peer));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        // Bounds what hyper buffers per connection in both directions (see server::limits).
        .max_buf_size(IO_BUFFER_BYTES)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

async fn handle(
    state: Arc<State>,
    side: Side,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let resp = match routes::route(side, req.method(), req.uri().path()) {
        Ok(Route::Records) => records::serve(&state, &req, peer, View::Records).await,
        Ok(Route::Activity) => records::serve(&state, &req, peer, View::Activity).await,
        Ok(Route::Healthz) => ops::healthz(),
        Ok(Route::Readyz) => ops::readyz(&state).await,
        Ok(Route::Metrics) => ops::metrics(&state, &req),
        Ok(Route::AdminInvalidate) => ops::admin_invalidate(&state, &req).await,
        Err(NoRoute::NotFound) => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        Err(NoRoute::MethodNotAllowed(allowed)) => {
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("only {allowed} is supported"),
            );
            if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
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
