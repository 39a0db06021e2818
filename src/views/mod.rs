//! What a caller gets of the records it may see: each view is a [`Sink`] the record filter
//! hands visible records to, picked once per request (or run) by the server or the CLI.
//!
//! - [`ndjson`]: the records as NDJSON lines, only the allowed fields (the allowlist);
//! - [`csv`]: the same records as CSV rows;
//! - [`activity`]: per-Device tallies of the same records, answered at the end;
//! - [`html`]: the activity summary as a page for a browser (it reads [`activity`]'s summary),
//!   and one Device's timeline.
//!
//! Every view is fed after the same decision, so none can show more than another. A new view is
//! a file here (a type implementing [`Sink`]) and an arm in the server's route.

pub mod activity;
pub mod csv;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod html;
pub mod ndjson;

use std::sync::Arc;

use crate::decision::Decisions;
use crate::model::{Classes, Eui64};
use crate::ownership::{DeviceEntry, OwnershipSource};
use crate::stream::{filter_all, filter_all_with, FilterStats, Record, RecordFilter, Sink};

pub use self::csv::CsvWriter;
pub use activity::{Activity, Limits};
pub use ndjson::Ndjson;

/// The answer's format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Csv,
    /// A page for a browser: the activity page ([`activity_pieces`]) or one Device's timeline
    /// ([`html::timeline`]); the server asks for it only where there is one.
    Html,
}

/// The activity summary's bytes in `format`, in pieces.
pub fn activity_pieces(activity: &Activity, format: Format) -> Box<dyn Iterator<Item = Vec<u8>> + Send + '_> {
    match format {
        Format::Html => Box::new(html::page(activity)),
        Format::Json | Format::Csv => Box::new(activity.render(format)),
    }
}

/// The content type of CSV answers (records or summary).
pub const CSV_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// The records themselves, in the format asked for.
pub enum Records {
    /// NDJSON lines (docs/contract.md §5).
    Ndjson(Ndjson),
    /// CSV rows after a header row.
    Csv(Box<CsvWriter>),
}

impl Records {
    pub fn new(format: Format) -> Self {
        match format {
            // A page of records is one Device's timeline (`html::timeline`), picked by the server
            // when the query names one; otherwise a browser gets NDJSON.
            Format::Json | Format::Html => Records::Ndjson(Ndjson),
            Format::Csv => Records::Csv(Box::default()),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Records::Ndjson(_) => "application/x-ndjson",
            Records::Csv(_) => CSV_TYPE,
        }
    }
}

impl Sink for Records {
    fn begin(&mut self, out: &mut Vec<u8>) {
        match self {
            Records::Ndjson(s) => s.begin(out),
            Records::Csv(s) => s.begin(out),
        }
    }

    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        match self {
            Records::Ndjson(s) => s.visible(record, allowed, out),
            Records::Csv(s) => s.visible(record, allowed, out),
        }
    }
}

/// Filters a whole in-memory NDJSON buffer to NDJSON: for tools, tests and benchmarks.
pub fn filter_bytes(
    decisions: Decisions,
    input: &[u8],
    lookup: impl Fn(Eui64) -> Option<Arc<DeviceEntry>> + Send + Sync,
) -> (Vec<u8>, FilterStats) {
    let (out, filter) = filter_all(RecordFilter::new(decisions, Ndjson), input, lookup);
    (out, filter.stats)
}

/// Like [`filter_bytes`], with look-ups through an ownership source (async, prefetched as the
/// sidecar does).
pub async fn filter_bytes_with(
    decisions: Decisions,
    input: &[u8],
    source: &dyn OwnershipSource,
) -> (Vec<u8>, FilterStats) {
    let (out, filter) = filter_all_with(RecordFilter::new(decisions, Ndjson), input, source, true).await;
    (out, filter.stats)
}
