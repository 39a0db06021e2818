//! The response body as it passes through Envoy: the chunks Envoy streams to satgate as
//! [`Frames`] (`FULL_DUPLEX_STREAMED`: as they arrive from the upstream), and the filtered chunks
//! satgate streams back as [`Chunks`]. The outgoing channel is bounded, and gRPC's flow control
//! is behind it, so a slow caller slows the filter as it does under `serve`.

use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request::Request as Phase, ProcessingRequest, ProcessingResponse,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::message;
use crate::stream::{Chunks, Frames, StreamError};

/// Largest body chunk sent back: Envoy's advice for `StreamedBodyResponse` (64 KiB).
const MAX_CHUNK: usize = 64 * 1024;

/// The upstream's body, read from the messages Envoy sends on the stream.
pub struct EnvoyBody<'a> {
    pub inbound: &'a mut Streaming<ProcessingRequest>,
    pub idle: Duration,
    /// Set once the body ended (end of stream, or trailers).
    pub ended: bool,
    /// The trailers' names, when the body ended with trailers (they must be answered).
    pub trailers: Option<Vec<String>>,
}

impl<'a> EnvoyBody<'a> {
    /// `ended`: the upstream's headers already said there is no body.
    pub fn new(inbound: &'a mut Streaming<ProcessingRequest>, idle: Duration, ended: bool) -> Self {
        Self {
            inbound,
            idle,
            ended,
            trailers: None,
        }
    }
}

impl Frames for EnvoyBody<'_> {
    type Frame = Bytes;

    async fn frame(&mut self) -> Result<Option<Bytes>, StreamError> {
        while !self.ended {
            let next = match tokio::time::timeout(self.idle, self.inbound.message()).await {
                Err(_) => return Err(StreamError::IdleTimeout),
                Ok(Err(status)) => {
                    return Err(StreamError::Upstream(format!(
                        "Envoy's stream failed: {}",
                        status.code()
                    )))
                }
                // Envoy ended the stream before the body did (the caller went, or Envoy failed):
                // the body is cut short, never taken as whole.
                Ok(Ok(None)) => {
                    return Err(StreamError::Upstream(
                        "Envoy closed the stream before the body ended".into(),
                    ))
                }
                Ok(Ok(Some(message))) => message,
            };
            match next.request {
                Some(Phase::ResponseBody(body)) => {
                    self.ended = body.end_of_stream;
                    if !body.body.is_empty() {
                        return Ok(Some(Bytes::from(body.body)));
                    }
                }
                Some(Phase::ResponseTrailers(t)) => {
                    self.ended = true;
                    let headers = message::Headers::read(t.trailers.as_ref());
                    self.trailers = Some(headers.names);
                }
                _ => {
                    return Err(StreamError::Upstream(
                        "Envoy sent a message out of order in the response body".into(),
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// The filtered body, sent back to Envoy chunk by chunk; a caller that stops reading for longer
/// than `idle` ends the stream, as under `serve`.
pub struct ToEnvoy<'a> {
    pub out: &'a mpsc::Sender<Result<ProcessingResponse, Status>>,
    pub idle: Duration,
}

impl ToEnvoy<'_> {
    pub async fn send(&self, message: ProcessingResponse) -> Result<(), StreamError> {
        match tokio::time::timeout(self.idle, self.out.send(Ok(message))).await {
            Err(_) => Err(StreamError::ClientStalled),
            Ok(Err(_)) => Err(StreamError::ClientGone),
            Ok(Ok(())) => Ok(()),
        }
    }
}

impl Chunks for ToEnvoy<'_> {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let bytes = std::mem::take(out);
        if bytes.len() <= MAX_CHUNK {
            return ToEnvoy::send(self, message::body_chunk(bytes, false)).await;
        }
        // Even pieces: a 70 KiB chunk is two of 35, not 64 and a sliver.
        let pieces = bytes.len().div_ceil(MAX_CHUNK);
        for piece in bytes.chunks(bytes.len().div_ceil(pieces)) {
            ToEnvoy::send(self, message::body_chunk(piece.to_vec(), false)).await?;
        }
        Ok(())
    }
}
