//! The record filter: NDJSON body bytes in, the visible part of each record handed to a
//! [`Sink`] the caller chose, filtered chunks out. It knows no view (those are
//! [`crate::views`]) and no transport (the adapters are in `server::body`, `cmd::filter` and
//! [`pipeline`] for in-memory input).
//!
//! [`fields`] (the field table) <- [`scan`] (the validating scanner) <- [`record`] (one record,
//! its fields' exact bytes) <- [`filter`] (per record: decide, hand to the sink) <- [`pipeline`]
//! (framing with [`lines`], chunks out). [`reference`] is the serde_json parser the scanner is
//! tested against.

pub mod fields;
pub mod filter;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod lines;
pub mod pipeline;
pub mod record;
#[doc(hidden)]
pub mod reference;
pub mod scan;
pub mod sink;

pub use fields::{Field, RecordError};
pub use filter::{FilterStats, Filtered, Outcome, RecordFilter, MAX_DEVICES_PER_STREAM};
pub use pipeline::{filter_all, filter_all_with, Chunks, Frames, RecordStream, StreamError};
pub use record::Record;
pub use sink::Sink;

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
