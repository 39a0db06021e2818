//! The summary an [`Activity`] ends as: ranked Devices with their counts and verdicts, as JSON
//! or as CSV rows (docs/contract.md §5).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{time, unusual, Activity, Cell, Tally};
use crate::model::{Eui64, MessageType};
use crate::views::csv::CsvWriter;
use crate::views::Format;

/// The whole answer.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Visible records, with or without a Device.
    pub records: u64,
    /// Devices flagged for more activity than usual.
    pub devices_flagged: usize,
    /// Most unusual first: see [`rank`].
    pub devices: Vec<DeviceSummary>,
    /// Records about no Device (non-device requests).
    pub without_device: Counts,
    /// Every record, with or without a Device.
    pub totals: Counts,
    /// The UTC days the records span (the window each Device is judged over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Window>,
    pub rule: Rule,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Window {
    pub first: String,
    pub last: String,
}

/// The flag rule's constants, stated in every answer.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub k: f64,
    pub m: f64,
    pub min_excess: f64,
    pub min_days: usize,
}

const RULE: Rule = Rule {
    k: unusual::K,
    m: unusual::M,
    min_excess: unusual::MIN_EXCESS,
    min_days: unusual::MIN_DAYS,
};

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSummary {
    pub device_id: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub unusual: Unusual,
}

/// Counts over a set of records. Maps are sorted by key; SRVs by count, then SRV.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub records: u64,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    /// Records whose timestamp is not RFC 3339 (so in no day).
    pub undated: u64,
    pub by_message_type: BTreeMap<&'static str, u64>,
    pub by_srv: Vec<SrvCount>,
    pub by_alert_code: BTreeMap<String, u64>,
    pub by_response_code: BTreeMap<String, u64>,
    pub by_user_role: BTreeMap<String, u64>,
    pub by_day: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SrvCount {
    pub srv: Option<String>,
    pub srv_title: Option<String>,
    pub records: u64,
}

/// A Device's verdict ([`unusual`]).
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Unusual {
    /// Days judged: from the Device's first record to the window's last day.
    pub baseline_days: usize,
    /// Absent below `rule.minDays` days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mad: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub days: Vec<FlaggedDay>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FlaggedDay {
    pub day: String,
    pub records: u64,
    pub score: f64,
}

impl Activity {
    /// The summary, Devices ranked, all in memory: for tools and tests. The sidecar streams the
    /// same bytes with [`Activity::render`].
    pub fn summary(&self) -> Summary {
        let ranked = self.ranked();
        let flagged = flagged(&ranked);
        self.summary_of(ranked.into_iter().map(|(id, u)| self.device(id, u)).collect(), flagged)
    }

    /// The summary around `devices`: the one place its fields are filled.
    fn summary_of(&self, devices: Vec<DeviceSummary>, devices_flagged: usize) -> Summary {
        Summary {
            records: self.totals.records,
            devices_flagged,
            devices,
            without_device: self.counts(&self.without_device),
            totals: self.counts(&self.totals),
            days: self.window(),
            rule: RULE,
        }
    }

    /// The summary in `format`, in pieces of about [`PIECE_BYTES`]: only one Device's counts are
    /// rendered at a time, so memory stays near the tallies' whatever the answer's size.
    pub fn render(&self, format: Format) -> Rendering<'_> {
        let ranked = self.ranked();
        let flagged = flagged(&ranked);
        let (head, tail) = match format {
            Format::Json => json_around_devices(&self.summary_of(Vec::new(), flagged)),
            Format::Csv => (Vec::new(), Vec::new()),
        };
        Rendering {
            activity: self,
            format,
            ranked: ranked.into_iter(),
            stage: Stage::Head,
            csv: CsvWriter::new(),
            head,
            tail,
        }
    }

    /// Every Device with its verdict, in rank order.
    fn ranked(&self) -> Vec<(Eui64, Unusual)> {
        let last_day = self.last_day;
        let mut ranked: Vec<(Eui64, u64, Unusual)> = self
            .devices
            .iter()
            .map(|(id, t)| {
                let unusual = last_day.map_or_else(|| Unusual::none(0), |last| self.unusual(t, last));
                (*id, t.records, unusual)
            })
            .collect();
        ranked.sort_by(|a, b| rank((&a.2, a.1), (&b.2, b.1)).then(a.0.cmp(&b.0)));
        ranked.into_iter().map(|(id, _, u)| (id, u)).collect()
    }

    fn device(&self, id: Eui64, unusual: Unusual) -> DeviceSummary {
        let counts = self.devices.get(&id).map(|t| self.counts(t)).unwrap_or_default();
        DeviceSummary {
            device_id: id.to_string(),
            counts,
            unusual,
        }
    }

    fn window(&self) -> Option<Window> {
        self.first_day.zip(self.last_day).map(|(first, last)| Window {
            first: time::day_to_string(first),
            last: time::day_to_string(last),
        })
    }

    fn counts(&self, t: &Tally) -> Counts {
        let name = |id| self.name(id).map(str::to_owned);
        let mut c = Counts {
            records: t.records,
            first_timestamp: t.first.map(time::Instant::to_rfc3339),
            last_timestamp: t.last.map(time::Instant::to_rfc3339),
            undated: t.undated,
            by_message_type: MessageType::ALL
                .iter()
                .filter(|mt| t.by_type[**mt as usize] > 0)
                .map(|mt| (mt.as_str(), t.by_type[*mt as usize]))
                .collect(),
            ..Counts::default()
        };
        for (cell, &n) in &t.cells {
            let keyed = |id| name(id).unwrap_or_default();
            match *cell {
                Cell::Srv(srv, title) => c.by_srv.push(SrvCount {
                    srv: name(srv),
                    srv_title: name(title),
                    records: n,
                }),
                Cell::AlertCode(id) => _ = c.by_alert_code.insert(keyed(id), n),
                Cell::ResponseCode(id) => _ = c.by_response_code.insert(keyed(id), n),
                Cell::UserRole(id) => _ = c.by_user_role.insert(keyed(id), n),
                Cell::Day(day) => _ = c.by_day.insert(time::day_to_string(day), n),
            }
        }
        c.by_srv.sort_by(|a, b| {
            b.records
                .cmp(&a.records)
                .then_with(|| (&a.srv, &a.srv_title).cmp(&(&b.srv, &b.srv_title)))
        });
        c
    }

    /// Judges a Device's days from its first record to `last_day`, zeros included.
    fn unusual(&self, t: &Tally, last_day: i64) -> Unusual {
        let Some(first_day) = t.first.map(time::Instant::day) else {
            return Unusual::none(0);
        };
        let span = (last_day - first_day + 1).max(0) as usize;
        let mut daily = vec![0u64; span];
        for (cell, &n) in &t.cells {
            if let Cell::Day(day) = *cell {
                if let Some(slot) = usize::try_from(day - first_day).ok().and_then(|i| daily.get_mut(i)) {
                    *slot = n;
                }
            }
        }
        let verdict = unusual::assess(&daily);
        let Some(b) = verdict.baseline else {
            return Unusual::none(span);
        };
        Unusual {
            baseline_days: span,
            median: Some(b.median),
            mad: Some(b.mad),
            threshold: Some(b.threshold),
            days: verdict
                .flags
                .iter()
                .map(|f| FlaggedDay {
                    day: time::day_to_string(first_day + f.day as i64),
                    records: f.count,
                    score: f.score,
                })
                .collect(),
        }
    }
}

impl Unusual {
    fn none(baseline_days: usize) -> Self {
        Unusual {
            baseline_days,
            median: None,
            mad: None,
            threshold: None,
            days: Vec::new(),
        }
    }
}

fn flagged(ranked: &[(Eui64, Unusual)]) -> usize {
    ranked.iter().filter(|(_, u)| !u.days.is_empty()).count()
}

/// The order of Devices (verdict, records): flagged ones first, the most recent flagged day
/// first and, on the same day, the higher score; then the rest, busiest first. "Which Device
/// should I look at" is about what is unusual now, so recency beats size.
fn rank(a: (&Unusual, u64), b: (&Unusual, u64)) -> std::cmp::Ordering {
    let key = |u: &Unusual| u.days.last().map(|f| (f.day.clone(), f.score));
    match (key(a.0), key(b.0)) {
        (Some((da, sa)), Some((db, sb))) => db.cmp(&da).then(sb.total_cmp(&sa)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.1.cmp(&a.1),
    }
}

/// The size [`Rendering`] hands out its pieces at.
pub const PIECE_BYTES: usize = 64 * 1024;

/// The summary's bytes, piece by piece (see [`Activity::render`]). The JSON is byte for byte
/// what serializing [`Activity::summary`] gives (tested).
pub struct Rendering<'a> {
    activity: &'a Activity,
    format: Format,
    ranked: std::vec::IntoIter<(Eui64, Unusual)>,
    stage: Stage,
    csv: CsvWriter,
    /// JSON: the summary's bytes before and after its Devices (see [`json_around_devices`]).
    head: Vec<u8>,
    tail: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Devices { first: bool },
    Tail,
    Done,
}

impl Iterator for Rendering<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(PIECE_BYTES + 4096);
        while out.len() < PIECE_BYTES {
            match self.stage {
                Stage::Done => break,
                Stage::Head => {
                    self.head(&mut out);
                    self.stage = Stage::Devices { first: true };
                }
                Stage::Devices { first } => match self.ranked.next() {
                    Some((id, unusual)) => {
                        let device = self.activity.device(id, unusual);
                        self.device(&device, first, &mut out);
                        self.stage = Stage::Devices { first: false };
                    }
                    None => self.stage = Stage::Tail,
                },
                Stage::Tail => {
                    self.tail(&mut out);
                    self.stage = Stage::Done;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Serializes one of the summary's parts. Plain structs of strings, numbers and string-keyed
/// maps: serde_json cannot fail on them.
fn json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("summary parts always serialize");
}

/// The summary without Devices, serialized by serde and cut where its Devices go: `head` ends
/// with `"devices":[`, `tail` starts with `]`. So serde alone owns the wire shape (a new field is
/// an edit of [`Summary`] and [`Activity::summary_of`]), and the Devices stream between the two.
/// The cut is found by the key's own bytes: `"devices":[]` cannot occur inside a JSON string
/// (its second `"` would be escaped) and the fields before it are numbers.
fn json_around_devices(shell: &Summary) -> (Vec<u8>, Vec<u8>) {
    const KEY: &[u8] = b"\"devices\":[";
    let mut bytes = Vec::new();
    json(&mut bytes, shell);
    let at = memchr::memmem::find(&bytes, b"\"devices\":[]").expect("a summary always has its devices key") + KEY.len();
    let tail = bytes.split_off(at);
    (bytes, tail)
}

impl Rendering<'_> {
    fn head(&mut self, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => out.extend_from_slice(&self.head),
            Format::Csv => self.csv.row(CSV_HEADER, out),
        }
    }

    fn device(&mut self, d: &DeviceSummary, first: bool, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => {
                if !first {
                    out.push(b',');
                }
                json(out, d);
            }
            Format::Csv => {
                let flagged = d.unusual.days.iter().map(|f| (f.day.as_str(), f.score)).collect();
                for row in counts_rows(&d.device_id, &d.counts, &flagged) {
                    self.csv.row(row, out);
                }
            }
        }
    }

    fn tail(&mut self, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => out.extend_from_slice(&self.tail),
            Format::Csv => {
                let without = self.activity.counts(&self.activity.without_device);
                for row in counts_rows("", &without, &BTreeMap::new()) {
                    self.csv.row(row, out);
                }
                let totals = self.activity.counts(&self.activity.totals);
                for row in counts_rows(TOTALS_ID, &totals, &BTreeMap::new()) {
                    self.csv.row(row, out);
                }
            }
        }
    }
}

/// The `deviceId` of the CSV rows counting every record (never an EUI-64).
pub const TOTALS_ID: &str = "*";

/// The CSV columns of the activity view, one row per counter (a "long" table for pivoting).
pub const CSV_HEADER: [&str; 6] = ["deviceId", "dimension", "key", "srvTitle", "records", "score"];

/// One set of counts as CSV rows: a `records` row first, then one per counter; flagged days carry
/// their score. Devices come in rank order, then the records without a Device (empty `deviceId`).
fn counts_rows(device: &str, c: &Counts, flagged: &BTreeMap<&str, f64>) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    let mut row = |dimension: &str, key: &str, title: &str, records: String, score: String| {
        rows.push([
            device.to_owned(),
            dimension.to_owned(),
            key.to_owned(),
            title.to_owned(),
            records,
            score,
        ]);
    };
    row("records", "", "", c.records.to_string(), String::new());
    for (dim, ts) in [
        ("firstTimestamp", &c.first_timestamp),
        ("lastTimestamp", &c.last_timestamp),
    ] {
        if let Some(ts) = ts {
            row(dim, ts, "", String::new(), String::new());
        }
    }
    if c.undated > 0 {
        row("undated", "", "", c.undated.to_string(), String::new());
    }
    for (k, n) in &c.by_message_type {
        row("messageType", k, "", n.to_string(), String::new());
    }
    for s in &c.by_srv {
        row(
            "srv",
            s.srv.as_deref().unwrap_or(""),
            s.srv_title.as_deref().unwrap_or(""),
            s.records.to_string(),
            String::new(),
        );
    }
    for (dim, map) in [
        ("alertCode", &c.by_alert_code),
        ("responseCode", &c.by_response_code),
        ("userRole", &c.by_user_role),
    ] {
        for (k, n) in map {
            row(dim, k, "", n.to_string(), String::new());
        }
    }
    for (day, n) in &c.by_day {
        let score = flagged.get(day.as_str()).map(f64::to_string).unwrap_or_default();
        row("day", day, "", n.to_string(), score);
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::{Limits, Titles};
    use super::*;

    fn add(a: &mut Activity, device: u64, day: u32, n: usize) {
        for _ in 0..n {
            a.add(&Titles {
                timestamp: Some(Cow::Owned(format!("2026-11-{day:02}T10:00:00Z"))),
                message_type: Some(MessageType::DeviceAlert),
                alert_code: Some(Cow::Borrowed("8F84")),
                device_id: Some(Eui64::from_u64(device)),
                ..Titles::default()
            });
        }
    }

    #[test]
    fn devices_with_a_recent_burst_come_first() {
        let mut a = Activity::new(Limits::DEFAULT);
        for day in 1..=14 {
            add(&mut a, 1, day, 50); // busiest, steady
            add(&mut a, 2, day, if day == 5 { 90 } else { 3 }); // old burst
            add(&mut a, 3, day, if day == 14 { 40 } else { 2 }); // burst on the last day
        }
        add(&mut a, 4, 13, 500); // new: two days of history only
        let s = a.summary();
        let order: Vec<&str> = s.devices.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(
            order,
            [
                "00-00-00-00-00-00-00-03",
                "00-00-00-00-00-00-00-02",
                "00-00-00-00-00-00-00-01",
                "00-00-00-00-00-00-00-04"
            ]
        );
        assert_eq!(s.devices_flagged, 2);
        assert_eq!(s.devices[0].unusual.days[0].day, "2026-11-14");
        assert_eq!(s.devices[3].unusual.baseline_days, 2);
        assert_eq!(s.records, 14 * 50 + (13 * 3 + 90) + (13 * 2 + 40) + 500);
        assert_eq!(s.devices[2].counts.by_alert_code["8F84"], 700);
        assert_eq!(s.devices[2].counts.by_day.len(), 14);
    }

    #[test]
    fn json_names_the_contract_fields() {
        let mut a = Activity::new(Limits::DEFAULT);
        add(&mut a, 7, 1, 2);
        let v = serde_json::to_value(a.summary()).unwrap();
        assert_eq!(v["records"], 2);
        assert_eq!(v["devices"][0]["deviceId"], "00-00-00-00-00-00-00-07");
        assert_eq!(v["devices"][0]["records"], 2);
        assert_eq!(v["devices"][0]["byMessageType"]["DeviceAlert"], 2);
        assert_eq!(v["devices"][0]["firstTimestamp"], "2026-11-01T10:00:00Z");
        assert_eq!(v["withoutDevice"]["records"], 0);
        assert_eq!(v["days"]["first"], "2026-11-01");
        assert_eq!(v["rule"]["minDays"], 7);
    }

    #[test]
    fn csv_rows_cover_every_counter() {
        let mut a = Activity::new(Limits::DEFAULT);
        add(&mut a, 7, 1, 2);
        let csv: Vec<u8> = a.render(Format::Csv).flatten().collect();
        let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(&csv[..])
            .records()
            .map(Result::unwrap)
            .collect();
        let dims: Vec<(&str, &str)> = rows.iter().map(|r| (&r[0], &r[1])).collect();
        let device = "00-00-00-00-00-00-00-07";
        let mut expected = vec![];
        for id in [device, TOTALS_ID] {
            expected.extend(
                [
                    "records",
                    "firstTimestamp",
                    "lastTimestamp",
                    "messageType",
                    "alertCode",
                    "day",
                ]
                .map(|d| (id, d)),
            );
            if id == device {
                expected.push(("", "records")); // the records without a Device: none
            }
        }
        assert_eq!(dims, expected);
        assert_eq!(&rows[0][4], "2");
    }

    /// The streamed JSON is exactly the summary's serialization, however it is cut into pieces.
    #[test]
    fn rendering_in_pieces_gives_the_summary_byte_for_byte() {
        let mut a = Activity::new(Limits::DEFAULT);
        for device in 0..3_000 {
            add(&mut a, device, 1 + (device % 20) as u32, 1 + (device % 3) as usize);
        }
        let pieces: Vec<Vec<u8>> = a.render(Format::Json).collect();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.len() < PIECE_BYTES + 4096));
        assert_eq!(pieces.concat(), serde_json::to_vec(&a.summary()).unwrap());
        let empty = Activity::new(Limits::DEFAULT);
        assert_eq!(
            empty.render(Format::Json).flatten().collect::<Vec<u8>>(),
            serde_json::to_vec(&empty.summary()).unwrap()
        );
    }
}
