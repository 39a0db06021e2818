//! The investigation view: per-Device activity over exactly the records a caller may see.
//!
//! [`Activity`] is a [`Sink`]: fed by the record filter after the decision, with the same records
//! `/sat/records` would write and only their title fields ([`Titles`]), so it can never count
//! what the caller could not see. Memory follows the number of distinct keys (Devices, days,
//! SRVs, codes), not of records, and is capped ([`Limits`]): past a cap the answer is a refusal
//! naming the cap, never a silently partial summary.

pub mod render;
pub mod time;
pub mod unusual;

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::model::Classes;
use crate::model::{Eui64, MessageType};
use crate::stream::scan::decode_string;
use crate::stream::{Field, Record, Sink};

/// The title fields the view reads, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Titles<'a> {
    pub timestamp: Option<Cow<'a, str>>,
    pub message_type: Option<MessageType>,
    pub srv: Option<Cow<'a, str>>,
    pub srv_title: Option<Cow<'a, str>>,
    pub alert_code: Option<Cow<'a, str>>,
    pub response_code: Option<Cow<'a, str>>,
    pub device_id: Option<Eui64>,
    pub user_role: Option<Cow<'a, str>>,
    /// Whether another User than the caller sent or received the record. Not a field the caller
    /// may lack: its own records always show it everything (`userId` included), so "not mine"
    /// is what `/sat/records` shows it too. False when the view was not told who the caller is.
    pub other_user: bool,
}

impl<'a> Titles<'a> {
    /// A parsed record's title fields (all of them title class: nothing else is read).
    pub fn of(record: &Record<'a>) -> Self {
        let text = |f: Field| {
            debug_assert_eq!(f.class(), crate::model::Class::Title);
            record.raw(f).and_then(decode_string)
        };
        Titles {
            timestamp: text(Field::Timestamp),
            message_type: Some(record.message_type),
            srv: text(Field::Srv),
            srv_title: text(Field::SrvTitle),
            alert_code: text(Field::AlertCode),
            response_code: text(Field::ResponseCode),
            device_id: record.device_id,
            user_role: text(Field::UserRole),
            other_user: false,
        }
    }
}

/// What one answer may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Distinct Devices.
    pub max_devices: usize,
    /// Days from the earliest to the latest record's UTC day, both included.
    pub max_span_days: i64,
    /// The tallies' estimated size in bytes (Devices, counters, distinct key strings).
    pub max_bytes: usize,
}

impl Limits {
    /// 5,000 Devices and a year and a day; 3 MiB of tallies, the buffers a `/sat/records` stream
    /// would use and this view does not (`server::limits` counts it so). A Device with a few
    /// records costs ~500 bytes; one with 60 records over 11 days and 22 SRVs (the sample market's
    /// average over four weeks) ~2.5 KB: so ~6,000 of the first kind fit, ~1,200 of the second.
    pub const DEFAULT: Limits = Limits {
        max_devices: 5_000,
        max_span_days: 366,
        max_bytes: 3 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which cap an answer went over. The summary is withheld: a partial one would be misread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("more than {0} Devices in this answer; ask about fewer Devices (one deviceId) or a shorter date range")]
    Devices(usize),
    #[error("these records span more than {0} days; narrow the query's date range")]
    SpanDays(i64),
    #[error("more than {0} bytes of distinct SRVs, codes and days in this answer; narrow the query")]
    Bytes(usize),
}

// Estimated sizes charged against `Limits::max_bytes`: a Device's tally with its map entry, one
// counter in a hash map (a 24-byte slot, from 7/16 to 7/8 full), and a key string (kept twice: in
// the map and in the list). The answer is streamed from the tallies, and every counter it
// renders was made by a record that carried its text, so it is never much larger than the
// records read.
const DEVICE_BYTES: usize = 256;
const CELL_BYTES: usize = 48;
const KEY_OVERHEAD_BYTES: usize = 64;

/// An interned string's id; `NULL` stands for a null or absent value.
type KeyId = u32;
const NULL: KeyId = KeyId::MAX;

/// One counter of a Device: what it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Cell {
    Srv(KeyId, KeyId),
    AlertCode(KeyId),
    ResponseCode(KeyId),
    UserRole(KeyId),
    Day(i64),
    /// A day's records of one message type (its index in [`MessageType::ALL`]).
    TypeDay(u8, i64),
    /// A day's records another User sent or received.
    OtherDay(i64),
}

/// Counts for one Device, or for the records without one.
#[derive(Clone, Debug, Default)]
struct Tally {
    records: u64,
    first: Option<time::Instant>,
    last: Option<time::Instant>,
    undated: u64,
    by_type: [u64; MessageType::ALL.len()],
    cells: FxHashMap<Cell, u64>,
}

impl Tally {
    /// Counts one record, charging `bytes` for each new counter.
    fn count(
        &mut self,
        mt: Option<MessageType>,
        at: Option<time::Instant>,
        cells: [Option<Cell>; 7],
        bytes: &mut usize,
    ) {
        self.records += 1;
        if let Some(mt) = mt {
            self.by_type[mt as usize] += 1;
        }
        match at {
            Some(at) => {
                self.first = Some(self.first.map_or(at, |f| f.min(at)));
                self.last = Some(self.last.map_or(at, |l| l.max(at)));
            }
            None => self.undated += 1,
        }
        for cell in cells.into_iter().flatten() {
            let count = self.cells.entry(cell).or_insert_with(|| {
                *bytes += CELL_BYTES;
                0
            });
            *count += 1;
        }
    }
}

/// The running summary of one answer.
#[derive(Debug, Default)]
pub struct Activity {
    limits: Limits,
    /// The caller's User ID, to tell its own records from other Users'.
    caller: Option<Eui64>,
    /// Every record, with or without a Device.
    totals: Tally,
    devices: FxHashMap<Eui64, Tally>,
    without_device: Tally,
    keys: FxHashMap<Box<str>, KeyId>,
    names: Vec<Box<str>>,
    first_day: Option<i64>,
    last_day: Option<i64>,
    bytes: usize,
    overflow: Option<Overflow>,
}

impl Activity {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Tells records of `caller` (the User asking) from those of other Users.
    pub fn for_caller(mut self, caller: Eui64) -> Self {
        self.caller = Some(caller);
        self
    }

    /// The cap this answer went over, if any; once set, nothing more is counted.
    pub fn overflow(&self) -> Option<Overflow> {
        self.overflow
    }

    pub fn records(&self) -> u64 {
        self.totals.records
    }

    /// The tallies' estimated size, counted against [`Limits::max_bytes`].
    pub fn tally_bytes(&self) -> usize {
        self.bytes
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counts one visible record.
    pub fn add(&mut self, t: &Titles<'_>) {
        if self.overflow.is_some() {
            return;
        }
        let at = t.timestamp.as_deref().and_then(time::parse);
        if let Some(day) = at.map(time::Instant::day) {
            let first = self.first_day.map_or(day, |d| d.min(day));
            let last = self.last_day.map_or(day, |d| d.max(day));
            if last - first + 1 > self.limits.max_span_days {
                self.overflow = Some(Overflow::SpanDays(self.limits.max_span_days));
                return;
            }
            (self.first_day, self.last_day) = (Some(first), Some(last));
        }
        let srv = (t.srv.is_some() || t.srv_title.is_some())
            .then(|| Cell::Srv(self.intern(t.srv.as_deref()), self.intern(t.srv_title.as_deref())));
        let alert = t.alert_code.as_deref().map(|s| Cell::AlertCode(self.intern(Some(s))));
        let response = t
            .response_code
            .as_deref()
            .map(|s| Cell::ResponseCode(self.intern(Some(s))));
        let role = t.user_role.as_deref().map(|s| Cell::UserRole(self.intern(Some(s))));
        let day = at.map(|at| at.day());
        let type_day = t.message_type.zip(day).map(|(mt, day)| Cell::TypeDay(mt as u8, day));
        let other_day = day.filter(|_| t.other_user).map(Cell::OtherDay);
        let cells = [srv, alert, response, role, day.map(Cell::Day), type_day, other_day];

        let tally = match t.device_id {
            None => &mut self.without_device,
            Some(id) => {
                if !self.devices.contains_key(&id) {
                    if self.devices.len() >= self.limits.max_devices {
                        self.overflow = Some(Overflow::Devices(self.limits.max_devices));
                        return;
                    }
                    self.bytes += DEVICE_BYTES;
                }
                self.devices.entry(id).or_default()
            }
        };
        tally.count(t.message_type, at, cells, &mut self.bytes);
        self.totals.count(t.message_type, at, cells, &mut self.bytes);
        if self.bytes > self.limits.max_bytes {
            self.overflow = Some(Overflow::Bytes(self.limits.max_bytes));
        }
    }

    fn intern(&mut self, s: Option<&str>) -> KeyId {
        let Some(s) = s else { return NULL };
        if let Some(&id) = self.keys.get(s) {
            return id;
        }
        // Ids stay below NULL: the byte cap is met long before 4 billion keys.
        let id = self.names.len() as KeyId;
        self.bytes += KEY_OVERHEAD_BYTES + 2 * s.len();
        self.keys.insert(s.into(), id);
        self.names.push(s.into());
        id
    }

    fn name(&self, id: KeyId) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }
}

/// The activity view as a sink: every visible record counted by its title fields, nothing
/// written until the end; once a cap is passed, reading on is pointless.
impl Sink for Activity {
    fn visible(&mut self, record: &Record<'_>, _allowed: Classes, _out: &mut Vec<u8>) {
        let mut titles = Titles::of(record);
        titles.other_user = self.caller.is_some_and(|caller| record.user_id != caller);
        self.add(&titles);
    }

    fn stopped(&self) -> bool {
        self.overflow.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(day: u32, device: Option<u64>, srv: &'static str) -> Titles<'static> {
        Titles {
            timestamp: Some(Cow::Owned(format!("2026-11-{day:02}T10:00:00Z"))),
            message_type: Some(MessageType::ServiceRequest),
            srv: Some(Cow::Borrowed(srv)),
            srv_title: Some(Cow::Borrowed("Title")),
            alert_code: None,
            response_code: None,
            device_id: device.map(Eui64::from_u64),
            user_role: Some(Cow::Borrowed("IS")),
            other_user: false,
        }
    }

    #[test]
    fn records_are_counted_per_device_and_without_one() {
        let mut a = Activity::new(Limits::DEFAULT);
        a.add(&titles(1, Some(1), "4.1.1"));
        a.add(&titles(2, Some(1), "4.1.1"));
        a.add(&titles(2, Some(2), "1.1.1"));
        a.add(&titles(3, None, "8.2"));
        assert_eq!(a.records(), 4);
        assert_eq!(a.devices.len(), 2);
        assert_eq!(a.devices[&Eui64::from_u64(1)].records, 2);
        assert_eq!(a.without_device.records, 1);
        assert_eq!((a.first_day, a.last_day), (Some(20_758), Some(20_760)));
        assert_eq!(a.overflow(), None);
    }

    #[test]
    fn the_device_cap_withholds_the_summary() {
        let limits = Limits {
            max_devices: 2,
            ..Limits::DEFAULT
        };
        let mut a = Activity::new(limits);
        for d in 0..2 {
            a.add(&titles(1, Some(d), "4.1.1"));
        }
        // More records of known Devices are fine; a third Device is not.
        a.add(&titles(1, Some(0), "4.1.1"));
        assert_eq!(a.overflow(), None);
        a.add(&titles(1, Some(9), "4.1.1"));
        assert_eq!(a.overflow(), Some(Overflow::Devices(2)));
        let before = a.records();
        a.add(&titles(1, Some(0), "4.1.1"));
        assert_eq!(a.records(), before, "nothing is counted after a cap");
    }

    #[test]
    fn the_day_span_cap_counts_from_earliest_to_latest() {
        let limits = Limits {
            max_span_days: 3,
            ..Limits::DEFAULT
        };
        let mut a = Activity::new(limits);
        a.add(&titles(5, Some(1), "4.1.1"));
        a.add(&titles(3, Some(1), "4.1.1"));
        a.add(&titles(4, None, "4.1.1"));
        assert_eq!(a.overflow(), None);
        a.add(&titles(6, Some(1), "4.1.1"));
        assert_eq!(a.overflow(), Some(Overflow::SpanDays(3)));
    }

    #[test]
    fn the_byte_cap_bounds_distinct_keys() {
        let limits = Limits {
            max_bytes: 64 * 1024,
            ..Limits::DEFAULT
        };
        let mut a = Activity::new(limits);
        // One Device, a new SRV title on every record: a hostile upstream's way to grow memory.
        let mut n = 0;
        while a.overflow().is_none() {
            let mut t = titles(1, Some(1), "4.1.1");
            t.srv_title = Some(Cow::Owned(format!("title {n}")));
            a.add(&t);
            n += 1;
            assert!(n < 10_000, "never capped");
        }
        assert_eq!(a.overflow(), Some(Overflow::Bytes(64 * 1024)));
        assert!(a.bytes <= 64 * 1024 + 2 * (CELL_BYTES + KEY_OVERHEAD_BYTES + 64));
    }

    #[test]
    fn undated_records_are_counted_but_have_no_day() {
        let mut a = Activity::new(Limits::DEFAULT);
        let mut t = titles(1, Some(1), "4.1.1");
        t.timestamp = Some(Cow::Borrowed("yesterday"));
        a.add(&t);
        let tally = &a.devices[&Eui64::from_u64(1)];
        assert_eq!((tally.records, tally.undated, tally.first), (1, 1, None));
        assert!(!tally.cells.keys().any(|c| matches!(c, Cell::Day(_))));
        assert_eq!(a.first_day, None);
    }

    #[test]
    fn strings_decode_borrowed_unless_escaped() {
        assert!(matches!(decode_string("\"abc\""), Some(Cow::Borrowed("abc"))));
        assert_eq!(decode_string(r#""a\u0062\"c""#).as_deref(), Some("ab\"c"));
        assert_eq!(decode_string("null"), None);
    }
}
