//! The per-record step: parse, find the Device's facts, decide, hand a visible record to the
//! [`Sink`].
//!
//! Device look-ups happen once per Device per request: the first record naming a Device asks the
//! ownership source, every later one reuses the answer. That also keeps one response internally
//! consistent while a registration changes underneath it.

use rustc_hash::FxHashMap;

use super::fields::{Field, RecordError};
use super::record::Record;
use super::sink::Sink;
use crate::decision::{Decisions, DeviceFacts, Facts};
use crate::model::{Class, Eui64};
use crate::ownership::{DeviceEntry, OwnershipSource};

/// How many Devices one stream remembers (about 40 bytes each): 7/8 of 16,384, so the map never
/// grows past 16,384 buckets (~560 KiB), whatever a stream is about.
pub const MAX_DEVICES_PER_STREAM: usize = 14_336;

/// Most ownership look-ups one stream prefetches at once.
pub const PREFETCH_CONCURRENCY: usize = 8;

/// What happened to one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Visible: handed to the sink (written with at least the title fields, or counted).
    Written,
    /// The principal may not see this record at all.
    LeftOut,
    /// Not a usable record: left out and counted.
    Malformed(RecordError),
    /// An empty line: not a record, ignored.
    Blank,
}

/// What [`RecordFilter::filter_line`] did with one line.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    pub outcome: Outcome,
    /// The ownership source failed for the line's Device (so it had no owner view).
    pub lookup_failed: bool,
}

/// Counts for one filtered stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilterStats {
    pub records_in: u64,
    pub records_out: u64,
    pub left_out: u64,
    pub malformed: u64,
    /// Fields dropped from written records, indexed by class (see [`FilterStats::redacted`]).
    pub redacted_by_class: [u64; 4],
}

/// Filters one stream of records for one principal, handing what it may see to `S`.
pub struct RecordFilter<S> {
    decisions: Decisions,
    devices: FxHashMap<Eui64, Option<DeviceFacts>>,
    sink: S,
    pub stats: FilterStats,
}

impl<S: Sink> RecordFilter<S> {
    pub fn new(decisions: Decisions, sink: S) -> Self {
        Self {
            decisions,
            devices: FxHashMap::default(),
            sink,
            stats: FilterStats::default(),
        }
    }

    /// Writes what comes before the first record (the sink's header, if any).
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        self.sink.begin(out);
    }

    /// The sink, as the caller chose it.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, kept after the filter is gone.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Whether reading on is pointless: the sink says so.
    pub fn stopped(&self) -> bool {
        self.sink.stopped()
    }

    /// Whether the Device's owners are still to be looked up for this stream.
    pub fn needs_device(&self, record: &Record<'_>) -> Option<Eui64> {
        record.device_id.filter(|id| !self.devices.contains_key(id))
    }

    /// Looks up, concurrently ([`PREFETCH_CONCURRENCY`] at a time), the Devices that `lines`
    /// (read ahead) name and this stream has not seen yet, so a page about many new Devices waits
    /// for a few rounds of look-ups instead of one per Device. Only a speed-up: ids are found by a cheap scan, answers are the source's own,
    /// and a failed look-up is left for the record path to retry and report.
    pub async fn prefetch_devices<'l>(&mut self, lines: impl Iterator<Item = &'l [u8]>, source: &dyn OwnershipSource) {
        const MARKER: &[u8] = b"\"deviceId\":\"";
        const MAX: usize = 64;
        let mut ids = Vec::new();
        for line in lines {
            let Some(at) = memchr::memmem::find(line, MARKER) else {
                continue;
            };
            let start = at + MARKER.len();
            let Some(id) = line.get(start..start + 23) else {
                continue;
            };
            let Some(id) = std::str::from_utf8(id).ok().and_then(|s| Eui64::parse(s).ok()) else {
                continue;
            };
            if !self.devices.contains_key(&id) && !ids.contains(&id) {
                ids.push(id);
                if ids.len() == MAX {
                    break;
                }
            }
        }
        if ids.len() < 2 {
            return;
        }
        // A few at a time per stream: one page about many new Devices must not take every slot
        // of a shared source (HTTP: --inventory-max-in-flight) and make other callers' look-ups
        // queue into their timeouts.
        let mut answers = Vec::with_capacity(ids.len());
        for batch in ids.chunks(PREFETCH_CONCURRENCY) {
            answers.extend(futures_util::future::join_all(batch.iter().map(|id| source.lookup(*id))).await);
        }
        for (id, answer) in ids.into_iter().zip(answers) {
            if let Ok(entry) = answer {
                self.learn_device(id, entry.as_deref());
            }
        }
    }

    /// Records what the ownership source said about a Device (`None`: unknown or failed).
    pub fn learn_device(&mut self, id: Eui64, entry: Option<&DeviceEntry>) {
        if self.devices.len() >= MAX_DEVICES_PER_STREAM {
            // Bounded memory for streams over very many Devices: start over. Later records of a
            // forgotten Device are looked up again (through the shared cache).
            self.devices.clear();
        }
        let facts = entry.map(|e| DeviceFacts::of(self.decisions.principal(), e));
        self.devices.insert(id, facts);
    }

    /// Decides and writes a parsed record. Its Device must have been learnt (else: no owners).
    pub fn emit(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Outcome {
        self.stats.records_in += 1;
        let device = record.device_id.and_then(|id| self.devices.get(&id).cloned().flatten());
        let facts = Facts::new(self.decisions.principal(), record.user_id, record.message_type, device);
        let allowed = self.decisions.allowed(&facts);
        // No title, no record: left out entirely, whatever the output.
        if !allowed.contains(Class::Title) {
            self.stats.left_out += 1;
            return Outcome::LeftOut;
        }
        self.sink.visible(record, allowed, out);
        self.stats.records_out += 1;
        for f in Field::ALL {
            if !allowed.contains(f.class()) && record.raw(f).is_some() {
                self.stats.redacted_by_class[f.class() as usize] += 1;
            }
        }
        Outcome::Written
    }

    /// Which policies let this stream's records through or kept them out.
    pub fn tally(&self) -> crate::decision::Tally {
        self.decisions.tally()
    }

    /// Counts a line that could not be parsed.
    pub fn malformed(&mut self, e: RecordError) -> Outcome {
        self.stats.records_in += 1;
        self.stats.malformed += 1;
        Outcome::Malformed(e)
    }

    /// One line, asking `source` about a Device the first time this stream
    /// sees it. A source error means no owners for that Device (fail closed); it is logged and
    /// reported in [`Filtered::lookup_failed`].
    pub async fn filter_line(&mut self, line: &[u8], out: &mut Vec<u8>, source: &dyn OwnershipSource) -> Filtered {
        let record = match self.parse(line) {
            Ok(r) => r,
            Err(outcome) => {
                return Filtered {
                    outcome,
                    lookup_failed: false,
                }
            }
        };
        let mut lookup_failed = false;
        if let Some(id) = self.needs_device(&record) {
            let entry = match source.lookup(id).await {
                Ok(entry) => entry,
                Err(e) => {
                    lookup_failed = true;
                    tracing::warn!(device = %id, error = %e, "ownership look-up failed; no owner view for this Device");
                    None
                }
            };
            self.learn_device(id, entry.as_deref());
        }
        Filtered {
            outcome: self.emit(&record, out),
            lookup_failed,
        }
    }

    /// The record in a line, or what the line counts as instead (blank, or malformed: counted).
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Record<'l>, Outcome> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(Outcome::Blank);
        }
        Record::parse(line).map_err(|e| self.malformed(e))
    }
}

impl FilterStats {
    /// Fields of `class` dropped from written records.
    pub fn redacted(&self, class: Class) -> u64 {
        self.redacted_by_class[class as usize]
    }
}
