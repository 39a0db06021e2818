//! The hyper side of a record stream: the upstream response body as [`Frames`] (with the idle
//! timeout), and the caller's response body as [`Chunks`]: a one-chunk channel, which is the
//! backpressure. When the caller reads slowly, sends wait, and so does the upstream read.
//!
//! A failure after the first byte ends the response with an error, which hyper turns into a
//! response without its final chunk, so a client cannot mistake it for a whole one.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::stream::{Chunks, Frames, StreamError};

/// The upstream's response body, read frame by frame; silence longer than `idle` is an error.
pub struct Upstream {
    pub body: Incoming,
    pub idle: Duration,
}

impl Frames for Upstream {
    type Frame = Bytes;

    async fn frame(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(StreamError::IdleTimeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(StreamError::Upstream(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    } // trailers carry no records
                }
            }
        }
    }
}

/// A response body fed by a channel. It ends cleanly only after [`BodySender::finish`]: if the
/// sender goes away any other way (an error, a panic, a stalled client), the body ends with an
/// error, so the response is cut short rather than looking complete.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    done: Arc<AtomicBool>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| match chunk {
            Some(bytes) => Some(Ok(Frame::data(bytes))),
            None if self.done.load(Ordering::Acquire) => None,
            None => Some(Err(std::io::Error::other("stream ended early"))),
        })
    }
}

/// The sending half of a [`ChannelBody`].
pub struct BodySender {
    tx: mpsc::Sender<Bytes>,
    done: Arc<AtomicBool>,
}

impl BodySender {
    /// Sends a chunk; `Err` when the receiver (the client's response) is gone.
    pub async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(drop)
    }

    /// Ends the body cleanly. Dropping the sender without this aborts the response.
    pub fn finish(self) {
        self.done.store(true, Ordering::Release);
    }
}

/// A bounded channel body holding one chunk: with the chunk hyper is writing and the one being
/// filtered, reading and writing overlap; and it is the source of backpressure.
pub fn channel() -> (BodySender, ChannelBody) {
    let (tx, rx) = mpsc::channel(1);
    let done = Arc::new(AtomicBool::new(false));
    (
        BodySender {
            tx,
            done: Arc::clone(&done),
        },
        ChannelBody { rx, done },
    )
}

/// The caller's response, fed with a timeout: a client that stops reading must not hold the
/// stream (and its upstream connection) forever.
pub struct Response<'a> {
    pub tx: &'a BodySender,
    pub idle: Duration,
}

impl Chunks for Response<'_> {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let chunk = Bytes::from(std::mem::replace(out, Vec::with_capacity(16 * 1024)));
        match tokio::time::timeout(self.idle, self.tx.send(chunk)).await {
            Err(_) => Err(StreamError::ClientStalled),
            Ok(Err(())) => Err(StreamError::ClientGone),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// For a view that writes nothing while it reads (it answers at the end): takes no chunk.
pub struct Nothing;

impl Chunks for Nothing {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        out.clear();
        Ok(())
    }
}
