//! One pipeline from body bytes to filtered chunks, whatever carries them: frames in
//! ([`Frames`]), line framing ([`super::lines`]), the scanner and the decision
//! ([`super::filter`]), the caller's [`Sink`], chunks out ([`Chunks`]). The hyper proxy
//! (`server::body`), the CLI on stdin (`cmd::filter`) and in-memory callers ([`filter_all`]) are
//! adapters around it; nothing here knows HTTP or a timer.
//!
//! Memory per stream is one chunk being filtered (at most [`IO_BUFFER_BYTES`] plus one record),
//! what the chunk adapter holds, one frame and at most one unfinished line; `server::limits`
//! adds it up for the proxy.
//!
//! Before any byte is sent, the first line may be checked to be a JSON object
//! ([`RecordStream::check_first_line`]: otherwise the proxy's caller gets 502, docs/contract.md
//! §5). After that, a failure ends the stream with an error, and the chunk adapter makes sure the
//! receiver cannot mistake the output for a whole one.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, Range};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::fields::RecordError;
use super::lines::{split_lines, Line, LineSplitter, SplitLines};
use super::record::Record;
use super::sink::Sink;
use super::{FilterStats, Outcome, RecordFilter, IO_BUFFER_BYTES};
use crate::model::Eui64;
use crate::ownership::{DeviceEntry, LookupResult, OwnershipSource};

/// The one text for a line over the limit, wherever it is found.
const TOO_LONG: &str = "line exceeds the line limit";

/// How many malformed lines a stream names (the rest are only counted).
pub const NAMED_MALFORMED: usize = 20;

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

/// Lines read ahead of the filter. One entry per run of lines, not per line, so what is held
/// follows the bytes read however short the lines are (a frame of 400 KB of `\n` is one entry).
enum Pending<B> {
    /// One or more whole lines joined by `\n` (shared with their frame when they were inside
    /// it, copied when a line spanned frames).
    Lines(B),
    /// A line over the limit, already skipped.
    TooLong,
}

impl<B: Shared> Pending<B> {
    fn lines(&self) -> SplitLines<'_> {
        match self {
            Pending::Lines(b) => split_lines(b),
            Pending::TooLong => SplitLines::EMPTY,
        }
    }
}

/// A frame's bytes, which the runs of whole lines inside it share instead of copying: `Bytes`
/// from a transport, or a borrowed slice of a buffer already in memory.
pub trait Shared: Deref<Target = [u8]> + Sized {
    /// The bytes at `range` of this frame, shared.
    fn share(&self, range: Range<usize>) -> Self;
    /// Bytes of no frame (a line that spanned two), copied.
    fn copied(bytes: &[u8]) -> Self;
}

impl Shared for Bytes {
    fn share(&self, range: Range<usize>) -> Self {
        self.slice(range)
    }

    fn copied(bytes: &[u8]) -> Self {
        Bytes::copy_from_slice(bytes)
    }
}

impl Shared for Cow<'_, [u8]> {
    fn share(&self, range: Range<usize>) -> Self {
        match self {
            Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
            Cow::Owned(v) => Cow::Owned(v[range].to_vec()),
        }
    }

    fn copied(bytes: &[u8]) -> Self {
        Cow::Owned(bytes.to_vec())
    }
}

/// Where body bytes come from: an upstream response, standard input, a buffer.
pub trait Frames {
    type Frame: Shared;

    /// The next piece of the body; `None` at its clean end. A body that may end inside a line
    /// must say so with an error; one whose last line may lack its `\n` (a file) must end it.
    fn frame(&mut self) -> impl Future<Output = Result<Option<Self::Frame>, StreamError>>;
}

/// Where filtered bytes go: a response body, standard output, a buffer.
pub trait Chunks {
    /// Takes the bytes in `out` (leaving it empty) as the next chunk.
    fn send(&mut self, out: &mut Vec<u8>) -> impl Future<Output = Result<(), StreamError>>;
}

/// One filtered stream: frames in, the filter and its sink, lines read ahead.
pub struct RecordStream<F: Frames, S> {
    frames: F,
    filter: RecordFilter<S>,
    splitter: LineSplitter,
    max_line_bytes: usize,
    pending: VecDeque<Pending<F::Frame>>,
    prefetch: bool,
    ended: bool,
    lines: u64,
    named: Vec<String>,
    pub lookup_errors: u64,
}

impl<F: Frames, S: Sink> RecordStream<F, S> {
    pub fn new(frames: F, filter: RecordFilter<S>, max_line_bytes: usize) -> Self {
        Self {
            frames,
            filter,
            splitter: LineSplitter::new(max_line_bytes),
            max_line_bytes,
            pending: VecDeque::new(),
            prefetch: true,
            ended: false,
            lines: 0,
            named: Vec::new(),
            lookup_errors: 0,
        }
    }

    /// Whether to look up, before filtering a frame, the new Devices its lines name, a few at a
    /// time (on by default; pointless for a source that answers at once).
    pub fn with_prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }

    pub fn stats(&self) -> &FilterStats {
        &self.filter.stats
    }

    pub fn filter(&self) -> &RecordFilter<S> {
        &self.filter
    }

    /// Where the frames come from (what a transport learned while reading them).
    pub fn frames(&self) -> &F {
        &self.frames
    }

    pub fn into_filter(self) -> RecordFilter<S> {
        self.filter
    }

    /// The first [`NAMED_MALFORMED`] malformed lines, as `line N: why`.
    pub fn malformed_lines(&self) -> &[String] {
        &self.named
    }

    /// Which policies let this stream's records through or kept them out.
    pub fn tally(&self) -> crate::decision::Tally {
        self.filter.tally()
    }

    /// Reads one frame into `pending`. `false` at the end of the body.
    async fn read_frame(&mut self) -> Result<bool, StreamError> {
        if self.ended {
            return Ok(false);
        }
        let Some(data) = self.frames.frame().await? else {
            if self.splitter.mid_line() {
                // NDJSON lines end with \n: a body that stops inside one was cut short, even
                // if the connection closed cleanly.
                return Err(StreamError::Upstream("body ended inside a line".into()));
            }
            // Not inside a line (checked above), so `finish` has nothing left to give.
            self.ended = true;
            return Ok(false);
        };
        // Only the lines that span frames go through the splitter (which keeps the unfinished
        // one, bounded by the line limit); the whole lines inside the frame are one shared run,
        // found with two searches instead of one per line. The filter checks their length.
        let pending = &mut self.pending;
        let spanning = |l: Line<'_>| match l {
            Line::Complete(b) => Pending::Lines(F::Frame::copied(b)),
            Line::TooLong => Pending::TooLong,
        };
        let mut from = 0;
        if self.splitter.mid_line() {
            match memchr::memchr(b'\n', &data) {
                Some(nl) => {
                    self.splitter.push(&data[..=nl], |l| pending.push_back(spanning(l)));
                    from = nl + 1;
                }
                None => {
                    self.splitter.push(&data, |l| pending.push_back(spanning(l)));
                    return Ok(true);
                }
            }
        }
        let rest = &data[from..];
        match memchr::memrchr(b'\n', rest) {
            Some(last) => {
                pending.push_back(Pending::Lines(data.share(from..from + last)));
                self.splitter
                    .push(&rest[last + 1..], |l| pending.push_back(spanning(l)));
            }
            None => self.splitter.push(rest, |l| pending.push_back(spanning(l))),
        }
        Ok(true)
    }

    /// Reads until the first non-blank line and checks it is a JSON object: before the response
    /// starts, anything else is the upstream's failure (502), not a record to skip.
    pub async fn check_first_line(&mut self) -> Result<(), StreamError> {
        loop {
            while let Some(front) = self.pending.front_mut() {
                let run = match front {
                    Pending::TooLong => return Err(StreamError::NotNdjson(TOO_LONG.into())),
                    Pending::Lines(run) => run,
                };
                let (line, rest) = match memchr::memchr(b'\n', run) {
                    Some(nl) => (&run[..nl], Some(nl + 1)),
                    None => (&run[..], None),
                };
                if line.len() > self.max_line_bytes {
                    return Err(StreamError::NotNdjson(TOO_LONG.into()));
                }
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
                    Some(next) => *run = Shared::share(&*run, next..run.len()),
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

    /// Filters everything, asking `source` about each Device the first time the stream sees it
    /// and handing the visible bytes to `chunks` in pieces of about [`IO_BUFFER_BYTES`]. Stops
    /// early, cleanly, once the sink says reading on is pointless.
    pub async fn run(&mut self, source: &dyn OwnershipSource, chunks: &mut impl Chunks) -> Result<(), StreamError> {
        let mut out = Vec::with_capacity(16 * 1024);
        self.filter.begin(&mut out);
        loop {
            if self.filter.stopped() {
                return Ok(());
            }
            if self.prefetch {
                let lines = self.pending.iter().flat_map(Pending::lines);
                self.filter.prefetch_devices(lines, source).await;
            }
            while let Some(entry) = self.pending.pop_front() {
                match entry {
                    Pending::TooLong => self.too_long(),
                    Pending::Lines(_) => {
                        for line in entry.lines() {
                            if line.len() > self.max_line_bytes {
                                self.too_long();
                                continue;
                            }
                            let filtered = self.filter.filter_line(line, &mut out, source).await;
                            self.lookup_errors += u64::from(filtered.lookup_failed);
                            self.counted(&filtered.outcome);
                            if out.len() >= IO_BUFFER_BYTES {
                                chunks.send(&mut out).await?;
                            }
                        }
                    }
                }
            }
            if !out.is_empty() {
                chunks.send(&mut out).await?;
            }
            if !self.read_frame().await? && self.pending.is_empty() {
                return Ok(());
            }
        }
    }

    /// Counts a line over the limit (never buffered whole: see [`super::lines`]).
    fn too_long(&mut self) {
        let outcome = self.filter.malformed(RecordError::Syntax(TOO_LONG.into()));
        self.counted(&outcome);
    }

    /// Numbers a line, naming it when it is one of the first malformed ones.
    fn counted(&mut self, outcome: &Outcome) {
        self.lines += 1;
        if let Outcome::Malformed(e) = outcome {
            if self.named.len() < NAMED_MALFORMED {
                self.named.push(format!("line {}: {e}", self.lines));
            }
        }
    }
}

/// Frames of an in-memory body, borrowed (nothing is copied but a line that spans two frames),
/// cut as the proxy's largest upstream frame ([`super::UPSTREAM_BUFFER_BYTES`]) so lines
/// spanning frames happen here as they do there; a last line without `\n` is still a line.
pub struct SliceFrames<'a> {
    rest: &'a [u8],
    ended: bool,
}

impl<'a> SliceFrames<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            rest: input,
            ended: false,
        }
    }
}

impl<'a> Frames for SliceFrames<'a> {
    type Frame = Cow<'a, [u8]>;

    async fn frame(&mut self) -> Result<Option<Self::Frame>, StreamError> {
        if self.rest.is_empty() {
            if self.ended {
                return Ok(None);
            }
            self.ended = true;
            return Ok(Some(Cow::Borrowed(b"\n")));
        }
        let (frame, rest) = self.rest.split_at(self.rest.len().min(super::UPSTREAM_BUFFER_BYTES));
        self.rest = rest;
        if rest.is_empty() && frame.ends_with(b"\n") {
            self.ended = true;
        }
        Ok(Some(Cow::Borrowed(frame)))
    }
}

/// Chunks gathered into one buffer.
impl<C: Chunks> Chunks for &mut C {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        (**self).send(out).await
    }
}

impl Chunks for Vec<u8> {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.is_empty() {
            std::mem::swap(self, out);
        } else {
            self.append(out);
        }
        Ok(())
    }
}

/// An ownership source that answers at once from a function (an in-memory inventory).
pub struct Lookup<L>(pub L);

impl<L> OwnershipSource for Lookup<L>
where
    L: Fn(Eui64) -> Option<Arc<DeviceEntry>> + Send + Sync,
{
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        let answer = (self.0)(device);
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// Runs `filter` over a whole in-memory NDJSON buffer, looking Devices up in `source`, and
/// returns what its sink wrote and the filter.
pub async fn filter_all_with<S: Sink>(
    filter: RecordFilter<S>,
    input: &[u8],
    source: &dyn OwnershipSource,
    prefetch: bool,
) -> (Vec<u8>, RecordFilter<S>) {
    let mut stream =
        RecordStream::new(SliceFrames::new(input), filter, super::DEFAULT_MAX_LINE_BYTES).with_prefetch(prefetch);
    let mut out = Vec::with_capacity(input.len());
    // An in-memory body neither fails nor ends inside a line, and a Vec takes every chunk.
    let _ = stream.run(source, &mut out).await;
    (out, stream.into_filter())
}

/// Like [`filter_all_with`], for a caller whose look-ups answer at once (tools, tests and
/// benchmarks over an in-memory inventory): no prefetch, no runtime needed.
pub fn filter_all<S: Sink>(
    filter: RecordFilter<S>,
    input: &[u8],
    lookup: impl Fn(Eui64) -> Option<Arc<DeviceEntry>> + Send + Sync,
) -> (Vec<u8>, RecordFilter<S>) {
    let source = Lookup(lookup);
    futures_util::FutureExt::now_or_never(filter_all_with(filter, input, &source, false))
        .expect("an in-memory stream never waits")
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
        assert_eq!(Pending::<Bytes>::TooLong.lines().count(), 0);
    }
}
