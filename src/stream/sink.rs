//! Where the visible records go. The filter decides; a [`Sink`] chosen once by the caller makes
//! something of each record the caller may see. The sinks themselves (NDJSON, CSV, the activity
//! tallies) are views, in [`crate::views`]: nothing here knows them.

use super::record::Record;
use crate::model::Classes;

/// What becomes of the records a caller may see.
pub trait Sink {
    /// Writes what goes before the first record (a header row, say).
    fn begin(&mut self, _out: &mut Vec<u8>) {}

    /// Takes one record whose title the caller may see, with every class it may see. Whatever it
    /// writes to `out` is sent on, in order.
    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>);

    /// Whether reading on is pointless (the sink will take nothing more, say).
    fn stopped(&self) -> bool {
        false
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn begin(&mut self, out: &mut Vec<u8>) {
        (**self).begin(out);
    }

    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        (**self).visible(record, allowed, out);
    }

    fn stopped(&self) -> bool {
        (**self).stopped()
    }
}
