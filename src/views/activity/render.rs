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
    /// Devices flagged on any dimension (more records, alerts or other Users' records than usual,
    /// or gone quiet).
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
    pub quiet_fraction: f64,
    pub quiet_min_median: f64,
    pub quiet_min_run: usize,
}

const RULE: Rule = Rule {
    k: unusual::K,
    m: unusual::M,
    min_excess: unusual::MIN_EXCESS,
    min_days: unusual::MIN_DAYS,
    quiet_fraction: unusual::QUIET_FRACTION,
    quiet_min_median: unusual::QUIET_MIN_MEDIAN,
    quiet_min_run: unusual::QUIET_MIN_RUN,
};

/// The dimensions a Device is judged on, as verdicts name them.
pub const RECORDS: &str = "records";
pub const ALERTS: &str = "alerts";
pub const OTHER_USERS: &str = "otherUsers";
pub const QUIET: &str = "quiet";

/// The message types counted as alerts the Device raised.
pub const ALERT_TYPES: [MessageType; 2] = [MessageType::DeviceAlert, MessageType::DccAlert];

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
    /// Per day, records by message type (what the page's charts stack).
    pub by_day_message_type: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Per day, records another User than the caller sent or received.
    pub by_day_other_users: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct SrvCount {
    pub srv: Option<String>,
    pub srv_title: Option<String>,
    pub records: u64,
}

/// A Device's verdict ([`unusual`]): the rule over its records (written in place, as
/// `median` .. `days`), then the same rule over its alerts and other Users' records, and
/// [`unusual::quiet`] whether it went quiet.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Unusual {
    /// The dimensions that fired, of `records`, `alerts`, `otherUsers`, `quiet` (in that order).
    pub fired: Vec<&'static str>,
    /// Days judged: from the Device's first record to the window's last day.
    pub baseline_days: usize,
    /// The Device's records per day; its fields stand at this level of the JSON.
    #[serde(flatten)]
    pub records: Series,
    /// Alerts the Device raised per day (DeviceAlert and DCCAlert records).
    pub alerts: Series,
    /// Records another User than the caller sent or received per day.
    pub other_users: Series,
    /// Absent unless the Device has a usual (`rule.minDays` days, a median day of at least
    /// `rule.quietMinMedian`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet: Option<QuietVerdict>,
}

/// The robust rule over one daily series; `records` of a flagged day counts that series. The
/// baseline (`median`, `mad`, `threshold`) is absent below `rule.minDays` days.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Series {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mad: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub days: Vec<FlaggedDay>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuietVerdict {
    pub median: f64,
    /// Days with fewer records than this are quiet.
    pub below: f64,
    pub runs: Vec<QuietDays>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct QuietDays {
    pub first: String,
    pub last: String,
    pub days: usize,
    pub records: u64,
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

    /// The summary without its Devices (`devices` empty, the rest filled), and its Devices in rank
    /// order, each made only when asked for: for renderings other than JSON and CSV.
    pub fn ranked_devices(&self) -> (Summary, impl Iterator<Item = DeviceSummary> + Send + '_) {
        let ranked = self.ranked();
        let flagged = flagged(&ranked);
        let shell = self.summary_of(Vec::new(), flagged);
        (shell, ranked.into_iter().map(|(id, u)| self.device(id, u)))
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

    /// The summary in `format` (JSON or CSV: the page is [`crate::views::html`]'s, and `Html`
    /// here gives the JSON), in pieces of about [`PIECE_BYTES`]: only one Device's counts are
    /// rendered at a time, so memory stays near the tallies' whatever the answer's size.
    pub fn render(&self, format: Format) -> Rendering<'_> {
        let ranked = self.ranked();
        let flagged = flagged(&ranked);
        let (head, tail) = match format {
            Format::Json | Format::Html => json_around_devices(&self.summary_of(Vec::new(), flagged)),
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
                Cell::TypeDay(mt, day) => {
                    if let Some(mt) = MessageType::ALL.get(usize::from(mt)) {
                        c.by_day_message_type
                            .entry(time::day_to_string(day))
                            .or_default()
                            .insert(mt.as_str(), n);
                    }
                }
                Cell::OtherDay(day) => _ = c.by_day_other_users.insert(time::day_to_string(day), n),
            }
        }
        c.by_srv.sort_by(|a, b| {
            b.records
                .cmp(&a.records)
                .then_with(|| (&a.srv, &a.srv_title).cmp(&(&b.srv, &b.srv_title)))
        });
        c
    }

    /// Judges a Device's days from its first record to `last_day`, zeros included, on each
    /// dimension.
    fn unusual(&self, t: &Tally, last_day: i64) -> Unusual {
        let Some(first_day) = t.first.map(time::Instant::day) else {
            return Unusual::none(0);
        };
        let span = (last_day - first_day + 1).max(0) as usize;
        let (mut daily, mut alerts, mut others) = (vec![0u64; span], vec![0u64; span], vec![0u64; span]);
        let index = |day: i64| usize::try_from(day - first_day).ok().filter(|&i| i < span);
        for (cell, &n) in &t.cells {
            match *cell {
                Cell::Day(day) => index(day).into_iter().for_each(|i| daily[i] = n),
                Cell::OtherDay(day) => index(day).into_iter().for_each(|i| others[i] = n),
                Cell::TypeDay(mt, day) if ALERT_TYPES.iter().any(|a| *a as u8 == mt) => {
                    index(day).into_iter().for_each(|i| alerts[i] += n)
                }
                _ => {}
            }
        }
        let day_name = |i: usize| time::day_to_string(first_day + i as i64);
        let series = |daily: &[u64]| {
            let verdict = unusual::assess(daily);
            Series {
                median: verdict.baseline.map(|b| b.median),
                mad: verdict.baseline.map(|b| b.mad),
                threshold: verdict.baseline.map(|b| b.threshold),
                days: verdict
                    .flags
                    .iter()
                    .map(|f| FlaggedDay {
                        day: day_name(f.day),
                        records: f.count,
                        score: f.score,
                    })
                    .collect(),
            }
        };
        let quiet = unusual::quiet(&daily).map(|q| QuietVerdict {
            median: q.median,
            below: q.below,
            runs: q
                .runs
                .iter()
                .map(|r| QuietDays {
                    first: day_name(r.first),
                    last: day_name(r.first + r.days - 1),
                    days: r.days,
                    records: r.records,
                })
                .collect(),
        });
        let mut u = Unusual {
            fired: Vec::new(),
            baseline_days: span,
            records: series(&daily),
            alerts: series(&alerts),
            other_users: series(&others),
            quiet,
        };
        u.fired = [
            (RECORDS, !u.records.days.is_empty()),
            (ALERTS, !u.alerts.days.is_empty()),
            (OTHER_USERS, !u.other_users.days.is_empty()),
            (QUIET, u.quiet.as_ref().is_some_and(|q| !q.runs.is_empty())),
        ]
        .into_iter()
        .filter_map(|(name, fired)| fired.then_some(name))
        .collect();
        u
    }
}

impl Unusual {
    fn none(baseline_days: usize) -> Self {
        Unusual {
            fired: Vec::new(),
            baseline_days,
            records: Series::default(),
            alerts: Series::default(),
            other_users: Series::default(),
            quiet: None,
        }
    }

    /// The most recent flagged day on any dimension (a quiet run by its last day, scored 0),
    /// with the highest score of that day.
    pub fn latest(&self) -> Option<(&str, f64)> {
        let flagged = [&self.records.days, &self.alerts.days, &self.other_users.days]
            .into_iter()
            .flatten()
            .map(|f| (f.day.as_str(), f.score));
        let quiet = self.quiet.iter().flat_map(|q| &q.runs).map(|r| (r.last.as_str(), 0.0));
        flagged
            .chain(quiet)
            .max_by(|a, b| a.0.cmp(b.0).then(a.1.total_cmp(&b.1)))
    }
}

fn flagged(ranked: &[(Eui64, Unusual)]) -> usize {
    ranked.iter().filter(|(_, u)| !u.fired.is_empty()).count()
}

/// The order of Devices (verdict, records): flagged ones first, the most recent flagged day
/// first and, on the same day, the higher score; then the rest, busiest first. "Which Device
/// should I look at" is about what is unusual now, so recency beats size.
fn rank(a: (&Unusual, u64), b: (&Unusual, u64)) -> std::cmp::Ordering {
    match (a.0.latest(), b.0.latest()) {
        (Some((da, sa)), Some((db, sb))) => db.cmp(da).then(sb.total_cmp(&sa)),
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
            Format::Json | Format::Html => out.extend_from_slice(&self.head),
            Format::Csv => self.csv.row(CSV_HEADER, out),
        }
    }

    fn device(&mut self, d: &DeviceSummary, first: bool, out: &mut Vec<u8>) {
        match self.format {
            Format::Json | Format::Html => {
                if !first {
                    out.push(b',');
                }
                json(out, d);
            }
            Format::Csv => {
                let flagged = d
                    .unusual
                    .records
                    .days
                    .iter()
                    .map(|f| (f.day.as_str(), f.score))
                    .collect();
                let mut rows = counts_rows(&d.device_id, &d.counts, &flagged);
                rows.extend(verdict_rows(&d.device_id, &d.unusual));
                for row in rows {
                    self.csv.row(row, out);
                }
            }
        }
    }

    fn tail(&mut self, out: &mut Vec<u8>) {
        match self.format {
            Format::Json | Format::Html => out.extend_from_slice(&self.tail),
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
    for (day, types) in &c.by_day_message_type {
        for (mt, n) in types {
            row(
                "dayMessageType",
                &format!("{day}/{mt}"),
                "",
                n.to_string(),
                String::new(),
            );
        }
    }
    for (day, n) in &c.by_day_other_users {
        row("dayOtherUsers", day, "", n.to_string(), String::new());
    }
    rows
}

/// A Device's flags on every dimension as CSV rows: `flag` rows keyed `dimension/day` with the
/// day's count in that dimension and its score, then `quiet` rows keyed `first/last` with the
/// run's records. (Flagged record days also carry their score on their `day` row, as before.)
fn verdict_rows(device: &str, u: &Unusual) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for (dim, days) in [
        (RECORDS, &u.records.days),
        (ALERTS, &u.alerts.days),
        (OTHER_USERS, &u.other_users.days),
    ] {
        for f in days {
            rows.push([
                device.to_owned(),
                "flag".to_owned(),
                format!("{dim}/{}", f.day),
                String::new(),
                f.records.to_string(),
                f.score.to_string(),
            ]);
        }
    }
    for r in u.quiet.iter().flat_map(|q| &q.runs) {
        rows.push([
            device.to_owned(),
            QUIET.to_owned(),
            format!("{}/{}", r.first, r.last),
            String::new(),
            r.records.to_string(),
            String::new(),
        ]);
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
        assert_eq!(s.devices[0].unusual.records.days[0].day, "2026-11-14");
        assert_eq!(s.devices[3].unusual.baseline_days, 2);
        assert_eq!(s.records, 14 * 50 + (13 * 3 + 90) + (13 * 2 + 40) + 500);
        assert_eq!(s.devices[2].counts.by_alert_code["8F84"], 700);
        assert_eq!(s.devices[2].counts.by_day.len(), 14);
    }

    fn add_as(a: &mut Activity, device: u64, day: u32, n: usize, mt: MessageType, other_user: bool) {
        for _ in 0..n {
            a.add(&Titles {
                timestamp: Some(Cow::Owned(format!("2026-11-{day:02}T10:00:00Z"))),
                message_type: Some(mt),
                device_id: Some(Eui64::from_u64(device)),
                other_user,
                ..Titles::default()
            });
        }
    }

    #[test]
    fn each_dimension_fires_on_its_own_and_says_so() {
        let mut a = Activity::new(Limits::DEFAULT);
        for day in 1..=14 {
            // 1: 20 own requests a day and 1 alert; on day 12, 25 alerts in place of requests,
            // so its daily total stays 21.
            let alerts = if day == 12 { 21 } else { 1 };
            add_as(&mut a, 1, day, 21 - alerts, MessageType::ServiceRequest, false);
            add_as(&mut a, 1, day, alerts, MessageType::DccAlert, false);
            // 2: 20 records a day of its own plus 2 by other Users; 30 by others on day 13, a
            // total of 50 that stays under the records threshold (3 x 22).
            add_as(&mut a, 2, day, 20, MessageType::ServiceResponse, false);
            let others = if day == 13 { 30 } else { 2 };
            add_as(&mut a, 2, day, others, MessageType::ServiceRequest, true);
            // 3: 20 a day, none from day 11 on.
            if day < 11 {
                add_as(&mut a, 3, day, 20, MessageType::ServiceRequest, false);
            }
        }
        add_as(&mut a, 4, 14, 1, MessageType::ServiceRequest, false); // the window's last day
        let s = a.summary();
        let by_id = |n: u64| {
            let id = Eui64::from_u64(n).to_string();
            s.devices.iter().find(|d| d.device_id == id).unwrap()
        };
        let d1 = by_id(1);
        assert_eq!(d1.unusual.fired, [ALERTS]);
        assert_eq!(d1.unusual.alerts.days[0].day, "2026-11-12");
        assert_eq!(d1.unusual.alerts.days[0].records, 21);
        assert_eq!(d1.counts.by_day_message_type["2026-11-12"]["DCCAlert"], 21);
        let d2 = by_id(2);
        assert_eq!(d2.unusual.fired, [OTHER_USERS]);
        assert_eq!(d2.unusual.other_users.days[0].day, "2026-11-13");
        assert_eq!(d2.counts.by_day_other_users["2026-11-13"], 30);
        let d3 = by_id(3);
        assert_eq!(d3.unusual.fired, [QUIET]);
        let q = d3.unusual.quiet.as_ref().unwrap();
        assert_eq!(
            (q.runs[0].first.as_str(), q.runs[0].last.as_str()),
            ("2026-11-11", "2026-11-14")
        );
        assert_eq!(s.devices_flagged, 3);
        // Most recent flag first: quiet to the last day, then day 13, then day 12.
        let order: Vec<u64> = s
            .devices
            .iter()
            .map(|d| d.device_id.as_bytes()[22] as u64 - b'0' as u64)
            .collect();
        assert_eq!(order, [3, 2, 1, 4]);
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
        assert_eq!(v["rule"]["quietMinRun"], 3);
        assert_eq!(v["devices"][0]["byDayMessageType"]["2026-11-01"]["DeviceAlert"], 2);
        assert_eq!(v["devices"][0]["unusual"]["fired"], serde_json::json!([]));
        assert!(v["devices"][0]["unusual"]["alerts"]["days"].is_array());
        assert!(v["devices"][0]["unusual"]["otherUsers"]["days"].is_array());
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
                    "dayMessageType",
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
