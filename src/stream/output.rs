//! What the filter does with a record the caller may see: write it as NDJSON or as a CSV row,
//! or count it in an activity summary. Every format is fed after the same decision, so none can
//! show more than another.

use super::csv::CsvWriter;
use super::project;
use super::record::Record;
use crate::activity::{Activity, Titles};
use crate::model::Classes;

/// The answer's format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// Where visible records go.
pub enum Output {
    /// NDJSON lines (docs/contract.md §5).
    Ndjson,
    /// CSV rows after a header row.
    Csv(Box<CsvWriter>),
    /// Counted, nothing written until the end.
    Activity(Box<Activity>),
}

impl Output {
    /// The rows of records, in `format`.
    pub fn records(format: Format) -> Self {
        match format {
            Format::Json => Output::Ndjson,
            Format::Csv => Output::Csv(Box::default()),
        }
    }

    /// What goes before the first record (the CSV header).
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if let Output::Csv(w) = self {
            w.header(out);
        }
    }

    /// Takes one record whose title the caller may see, with every class it may see.
    pub fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        match self {
            Output::Ndjson => {
                project::write(record, allowed, out);
            }
            Output::Csv(w) => w.record(record, allowed, out),
            Output::Activity(a) => a.add(&Titles::of(record)),
        }
    }

    /// The summary being built, for the activity view.
    pub fn activity(&self) -> Option<&Activity> {
        match self {
            Output::Activity(a) => Some(a),
            _ => None,
        }
    }
}
