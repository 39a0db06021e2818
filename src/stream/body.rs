//! The streaming response: upstream body frames in, filtered NDJSON chunks out.
//!
//! A task reads the upstream body, frames lines, filters each record and sends the visible
//! bytes through a one-chunk channel to the response body. The channel is the backpressure:
//! when the caller reads slowly, sends wait, and so does the upstream read. Memory per stream is
//! one chunk being filtered and one waiting (each at most [`IO_BUFFER_BYTES`] plus one record),
//! one upstream frame and at most one unfinished line; `server::limits` adds it up.
//!
//! Before any byte is sent, the first line must be a JSON object (otherwise the caller gets 502,
//! docs/contract.md §5). After that, a failure ends the response early with an error, which hyper
//! turns into a response without its final chunk, so a client cannot mistake it for a whole one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::lines::{split_lines, Line, LineSplitter, SplitLines};
use super::record::{Record, RecordError};
use super::{FilterStats, Outcome, RecordFilter, IO_BUFFER_BYTES};
use crate::ownership::OwnershipSource;

/// Why a stream could not start or had to stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("upstream went idle for longer than the idle timeout")]
    IdleTimeout,
    #[error("upstream body failed: {0}")]
    Upstream(String),
    #[error("upstream did not send NDJSON: {0}")]
    NotNdjson(String),
    #[error("client went away")]
    ClientGone,
    #[error("client stopped reading for longer than the idle timeout")]
    ClientStalled,
    #[error("the caller's token expired")]
    TokenExpired,
}

impl StreamError {
    /// The `reason` label of `satgate_streams_aborted_total`.
    pub const fn reason(&self) -> &'static str {
        match self {
            StreamError::IdleTimeout => "upstream_idle_timeout",
            StreamError::Upstream(_) | StreamError::NotNdjson(_) => "upstream_error",
            StreamError::ClientGone => "client_gone",
            StreamError::ClientStalled => "client_stalled",
            StreamError::TokenExpired => "token_expired",
        }
    }

    pub const REASONS: [&'static str; 5] = [
        "upstream_idle_timeout",
        "upstream_error",
        "client_gone",
        "client_stalled",
        "token_expired",
    ];
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

/// Lines read ahead of the filter. One entry per run of lines, not per line, so what is held
/// follows the bytes read however short the lines are (a frame of 400 KB of `\n` is one entry).
enum Pending {
    /// One or more whole lines joined by `\n` (shared with their upstream frame when they were
    /// inside it, copied when a line spanned frames).
    Lines(Bytes),
    /// A line over the limit, already skipped.
    TooLong,
}

impl Pending {
    fn lines(&self) -> SplitLines<'_> {
        match self {
            Pending::Lines(b) => split_lines(b),
            Pending::TooLong => SplitLines::EMPTY,
        }
    }
}

/// One filtered stream: the upstream body, the filter for the caller, and lines read ahead.
pub struct RecordStream {
    upstream: Incoming,
    filter: RecordFilter,
    ownership: Arc<dyn OwnershipSource>,
    splitter: LineSplitter,
    pending: VecDeque<Pending>,
    idle: Duration,
    /// When the caller's token expires: the stream ends then, like any other early end.
    deadline: Option<Instant>,
    ended: bool,
    pub lookup_errors: u64,
}

impl RecordStream {
    pub fn new(
        upstream: Incoming,
        filter: RecordFilter,
        ownership: Arc<dyn OwnershipSource>,
        max_line_bytes: usize,
        idle: Duration,
    ) -> Self {
        Self {
            upstream,
            filter,
            ownership,
            splitter: LineSplitter::new(max_line_bytes),
            pending: VecDeque::new(),
            idle,
            deadline: None,
            ended: false,
            lookup_errors: 0,
        }
    }

    /// Ends the stream at `deadline` (the caller's token expiry), wherever it is.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn stats(&self) -> &FilterStats {
        &self.filter.stats
    }

    pub fn filter(&self) -> &RecordFilter {
        &self.filter
    }

    pub fn into_filter(self) -> RecordFilter {
        self.filter
    }

    /// Which policies let this stream's records through or kept them out.
    pub fn tally(&self) -> crate::decision::Tally {
        self.filter.tally()
    }

    /// Reads one upstream frame into `pending`. `false` at the end of the body.
    async fn read_frame(&mut self) -> Result<bool, StreamError> {
        if self.ended {
            return Ok(false);
        }
        loop {
            let frame = match tokio::time::timeout(self.idle, self.upstream.frame()).await {
                Err(_) => return Err(StreamError::IdleTimeout),
                Ok(None) if self.splitter.mid_line() => {
                    // NDJSON lines end with \n: a body that stops inside one was cut short, even
                    // if the connection closed cleanly.
                    return Err(StreamError::Upstream("body ended inside a line".into()));
                }
                Ok(None) => {
                    // Not inside a line (checked above), so `finish` has nothing left to give.
                    self.ended = true;
                    return Ok(false);
                }
                Ok(Some(Err(e))) => return Err(StreamError::Upstream(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue }; // trailers carry no records
            let pending = &mut self.pending;
            // The run of whole lines inside this frame so far, as a byte range of it: shared,
            // not copied, and one entry however many lines it holds.
            let mut run: Option<(usize, usize)> = None;
            let base = data.as_ptr() as usize;
            self.splitter.push(&data, |l| match l {
                Line::Complete(b) if within(&data, b) => {
                    let (start, end) = (b.as_ptr() as usize - base, b.as_ptr() as usize - base + b.len());
                    run = match run {
                        // The next line starts right after the previous one's `\n`.
                        Some((s, e)) if e + 1 == start => Some((s, end)),
                        other => {
                            if let Some((s, e)) = other {
                                pending.push_back(Pending::Lines(data.slice(s..e)));
                            }
                            Some((start, end))
                        }
                    };
                }
                other => {
                    if let Some((s, e)) = run.take() {
                        pending.push_back(Pending::Lines(data.slice(s..e)));
                    }
                    pending.push_back(match other {
                        Line::Complete(b) => Pending::Lines(Bytes::copy_from_slice(b)),
                        Line::TooLong => Pending::TooLong,
                    });
                }
            });
            if let Some((s, e)) = run {
                self.pending.push_back(Pending::Lines(data.slice(s..e)));
            }
            return Ok(true);
        }
    }

    /// Reads until the first non-blank line and checks it is a JSON object: before the response
    /// starts, anything else is the upstream's failure (502), not a record to skip.
    pub async fn check_first_line(&mut self) -> Result<(), StreamError> {
        loop {
            while let Some(front) = self.pending.front_mut() {
                let run = match front {
                    Pending::TooLong => return Err(StreamError::NotNdjson("first line exceeds the line limit".into())),
                    Pending::Lines(run) => run,
                };
                let (line, rest) = match memchr::memchr(b'\n', run) {
                    Some(nl) => (&run[..nl], Some(nl + 1)),
                    None => (&run[..], None),
                };
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return match Record::parse(line) {
                        Err(e @ (RecordError::NotUtf8 | RecordError::Syntax(_))) => {
                            Err(StreamError::NotNdjson(e.to_string()))
                        }
                        _ => Ok(()),
                    };
                }
                // A blank line before the first record: drop it and look at the next.
                match rest {
                    Some(next) => *run = run.slice(next..),
                    None => {
                        self.pending.pop_front();
                    }
                }
            }
            if !self.read_frame().await? {
                return Ok(());
            }
        }
    }

    /// Filters everything, sending the visible bytes. On error the receiver gets an error too,
    /// which aborts the response.
    pub async fn run(mut self, tx: BodySender) -> (Self, Result<(), StreamError>) {
        let result = self.pump_until_deadline(Some(&tx)).await;
        if result.is_ok() {
            tx.finish();
        }
        // Otherwise `tx` is dropped unfinished: the response ends with an error.
        (self, result)
    }

    /// Filters everything without sending anything: for an output that answers at the end (the
    /// activity view). Stops early once the filter says reading on is pointless.
    pub async fn consume(mut self) -> (Self, Result<(), StreamError>) {
        let result = self.pump_until_deadline(None).await;
        (self, result)
    }

    async fn pump_until_deadline(&mut self, tx: Option<&BodySender>) -> Result<(), StreamError> {
        match self.deadline {
            None => self.pump(tx).await,
            Some(at) => tokio::time::timeout_at(at.into(), self.pump(tx))
                .await
                .unwrap_or(Err(StreamError::TokenExpired)),
        }
    }

    async fn pump(&mut self, tx: Option<&BodySender>) -> Result<(), StreamError> {
        let mut out = Vec::with_capacity(16 * 1024);
        self.filter.begin(&mut out);
        loop {
            if self.filter.stopped() {
                return Ok(());
            }
            self.prefetch_devices().await;
            while let Some(entry) = self.pending.pop_front() {
                match entry {
                    Pending::TooLong => {
                        self.filter
                            .malformed(RecordError::Syntax("line exceeds the line limit".into()));
                    }
                    Pending::Lines(_) => {
                        for line in entry.lines() {
                            self.filter_one(line, &mut out).await;
                            if out.len() >= IO_BUFFER_BYTES {
                                Self::send(tx, &mut out, self.idle).await?;
                            }
                        }
                    }
                }
            }
            if !out.is_empty() {
                Self::send(tx, &mut out, self.idle).await?;
            }
            if !self.read_frame().await? && self.pending.is_empty() {
                return Ok(());
            }
        }
    }

    /// Hands the filtered bytes so far to the response, as one chunk (or drops them when there
    /// is no response to stream to: an output that writes nothing).
    async fn send(tx: Option<&BodySender>, out: &mut Vec<u8>, idle: Duration) -> Result<(), StreamError> {
        let Some(tx) = tx else {
            out.clear();
            return Ok(());
        };
        let chunk = Bytes::from(std::mem::replace(out, Vec::with_capacity(16 * 1024)));
        // A client that stops reading must not hold the stream (and its upstream connection)
        // forever.
        match tokio::time::timeout(idle, tx.send(chunk)).await {
            Err(_) => Err(StreamError::ClientStalled),
            Ok(Err(())) => Err(StreamError::ClientGone),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn prefetch_devices(&mut self) {
        let lines = self.pending.iter().flat_map(Pending::lines);
        self.filter.prefetch_devices(lines, self.ownership.as_ref()).await;
    }

    async fn filter_one(&mut self, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        let filtered = self.filter.filter_line(line, out, self.ownership.as_ref()).await;
        self.lookup_errors += u64::from(filtered.lookup_failed);
        filtered.outcome
    }
}

fn within(outer: &Bytes, inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run holds whole lines joined by `\n` (no trailing one), so `n` newlines mean `n + 1`
    /// lines, empty ones included.
    #[test]
    fn a_run_gives_back_exactly_its_lines() {
        let lines = |run: &'static [u8]| {
            Pending::Lines(Bytes::from_static(run))
                .lines()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(b""), vec![b"".to_vec()]);
        assert_eq!(lines(b"\n"), vec![b"".to_vec(), b"".to_vec()]);
        assert_eq!(
            lines(b"{}\n\n{\"a\":1}"),
            vec![b"{}".to_vec(), b"".to_vec(), b"{\"a\":1}".to_vec()]
        );
        assert_eq!(Pending::TooLong.lines().count(), 0);
    }
}
