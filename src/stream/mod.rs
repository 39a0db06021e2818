//! The response path: NDJSON records in, the visible part of each record out (as NDJSON lines,
//! CSV rows, or counted for the activity view).

pub mod body;
pub mod csv;
pub mod fields;
pub mod filter;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod lines;
pub mod output;
pub mod project;
pub mod record;
#[doc(hidden)]
pub mod reference;
pub mod scan;

pub use fields::{Field, RecordError};
pub use filter::{FilterStats, Filtered, Outcome, RecordFilter, MAX_DEVICES_PER_STREAM};
pub use output::{Format, Output};
pub use record::Record;

use std::sync::Arc;

use crate::decision::Decisions;
use crate::model::Eui64;
use crate::ownership::{DeviceEntry, OwnershipSource};

/// Default longest accepted line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The size of hyper's buffers towards the caller, and of the filtered chunks a stream hands to
/// its response: small enough that a stalled stream holds little, large enough that a chunk
/// carries many records.
pub const IO_BUFFER_BYTES: usize = 64 * 1024;

/// The most the upstream connection reads at once, and so the largest upstream frame (hyper's
/// own default ceiling, written down so the memory bound can count it). Reading the upstream in
/// 64 KiB pieces cost 10-15% of the proxy's throughput (benches/proxy.rs).
pub const UPSTREAM_BUFFER_BYTES: usize = 400 * 1024;

/// Filters a whole in-memory NDJSON buffer: for tools, tests and benchmarks.
pub fn filter_bytes(
    decisions: Decisions,
    input: &[u8],
    lookup: impl Fn(Eui64) -> Option<Arc<DeviceEntry>>,
) -> (Vec<u8>, FilterStats) {
    let mut filter = RecordFilter::new(decisions);
    let out = filter_all(&mut filter, input, lookup);
    (out, filter.stats)
}

/// Runs `filter` (whatever its output) over a whole in-memory NDJSON buffer.
pub fn filter_all(
    filter: &mut RecordFilter,
    input: &[u8],
    lookup: impl Fn(Eui64) -> Option<Arc<DeviceEntry>>,
) -> Vec<u8> {
    let mut splitter = lines::LineSplitter::new(DEFAULT_MAX_LINE_BYTES);
    let mut out = Vec::with_capacity(input.len());
    filter.begin(&mut out);
    let mut on_line = |line: lines::Line<'_>| match line {
        lines::Line::Complete(l) => {
            filter.filter_line_sync(l, &mut out, &lookup);
        }
        lines::Line::TooLong => {
            filter.malformed(RecordError::Syntax("line too long".into()));
        }
    };
    splitter.push(input, &mut on_line);
    splitter.finish(&mut on_line);
    out
}

/// Like [`filter_bytes`], with look-ups through an ownership source (async).
pub async fn filter_bytes_with(
    decisions: Decisions,
    input: &[u8],
    source: &dyn OwnershipSource,
) -> (Vec<u8>, FilterStats) {
    let mut filter = RecordFilter::new(decisions);
    let mut out = Vec::with_capacity(input.len());
    let lines: Vec<&[u8]> = lines::split_lines(input).collect();
    // In batches, as the sidecar sees them in upstream frames.
    for batch in lines.chunks(256) {
        filter.prefetch_devices(batch.iter().copied(), source).await;
        for line in batch {
            filter.filter_line(line, &mut out, source).await;
        }
    }
    (out, filter.stats)
}
