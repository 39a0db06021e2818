//! `satgate ext-proc`: the same filter inside Envoy, as an external processor
//! (`envoy.service.ext_proc.v3.ExternalProcessor`). Envoy routes, terminates TLS and calls the
//! upstream; satgate sees each request's headers and its response, and answers as `serve` would,
//! through the same steps ([`super::steps`]), state, limits, logs and metrics.
//!
//! - `exchange`: one request, phase by phase (the order Envoy sends them);
//! - `body`: the response body in and out, as the pipeline's frames and chunks;
//! - `message`: the ext_proc messages read and written;
//! - `fuzz`: what the `ext_proc_message` fuzz target checks of that reading.
//!
//! The gRPC listener has no authentication of its own: whoever can reach it can have records
//! filtered for a token they hold, and nothing more, but it is kept to the loopback (checked at
//! start-up), where only the pod's Envoy reaches it.

mod body;
mod exchange;
pub mod fuzz;
mod message;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::State;

/// Answers queued towards Envoy per request: one being sent, one being filtered.
const OUT_QUEUE: usize = 1;

struct Processor {
    state: Arc<State>,
}

#[tonic::async_trait]
impl ExternalProcessor for Processor {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let peer = request.remote_addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(exchange::exchange(
            Arc::clone(&self.state),
            request.into_inner(),
            tx,
            peer,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves Envoy's ext_proc streams on `listener` until `shutdown` resolves; streams in flight
/// then finish (Envoy's own drain bounds how long).
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // Every phase is a small message answered at once: without TCP_NODELAY, Nagle's algorithm
    // and Envoy's delayed ACKs hold each for tens of milliseconds.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(conn)
    });
    tonic::transport::Server::builder()
        // Envoy multiplexes every request over a few HTTP/2 connections.
        .max_concurrent_streams(None)
        .add_service(ExternalProcessorServer::new(Processor { state }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
