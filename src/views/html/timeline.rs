//! One Device's timeline as a page: the records about it the caller may see, in time order, each
//! alert shown with the records other Users sent about the Device in the [`BEFORE_SECS`] before
//! it ("what was sent to my meter just before this alert"). Only title fields are read (SRV and
//! title, message type, role, codes, time), the same the activity view reads, so the page shows
//! nothing `/sat/records` would not show the same caller; "another User" is what the caller's
//! own records (which always show their `userId`) already tell it.
//!
//! The records are kept until the end (a page needs them all in order), so their number is
//! capped ([`MAX_ENTRIES`]); past it the answer is a refusal, never a partial timeline.

use std::fmt::Write as _;

use super::{escape, CSP_META};
use crate::model::{Classes, Eui64, MessageType};
use crate::stream::{Record, Sink};
use crate::views::activity::render::ALERT_TYPES;
use crate::views::activity::{time, Titles};

/// How far before an alert other Users' records are listed with it: an hour, long enough for a
/// command's alerts to follow it, short enough that what is listed is plausibly related.
pub const BEFORE_SECS: i64 = 3600;

/// Most records on one page (about 200 bytes each kept: ~4 MB).
pub const MAX_ENTRIES: usize = 20_000;

/// One record's title fields, owned.
#[derive(Clone, Debug)]
struct Entry {
    at: Option<time::Instant>,
    timestamp: String,
    message_type: Option<MessageType>,
    srv: String,
    srv_title: String,
    code: String,
    user_role: String,
    other_user: bool,
}

/// The timeline of one Device, as a [`Sink`].
#[derive(Debug)]
pub struct Timeline {
    device: Eui64,
    caller: Option<Eui64>,
    entries: Vec<Entry>,
    overflow: bool,
}

/// The one Device a `/sat/records` query names (`deviceId=EUI-64`), if it names exactly one.
pub fn device_of(query: Option<&str>) -> Option<Eui64> {
    let mut ids = query?
        .split('&')
        .filter_map(|pair| pair.strip_prefix("deviceId="))
        .map(Eui64::parse);
    match (ids.next(), ids.next()) {
        (Some(Ok(id)), None) => Some(id),
        _ => None,
    }
}

impl Timeline {
    pub fn new(device: Eui64) -> Self {
        Self {
            device,
            caller: None,
            entries: Vec::new(),
            overflow: false,
        }
    }

    /// Tells the records of `caller` from other Users'.
    pub fn for_caller(mut self, caller: Eui64) -> Self {
        self.caller = Some(caller);
        self
    }

    /// Whether the records went over [`MAX_ENTRIES`].
    pub fn overflow(&self) -> bool {
        self.overflow
    }

    /// Keeps one visible record about the Device (records about others are not this page's).
    pub fn add(&mut self, t: &Titles<'_>) {
        if self.overflow || t.device_id != Some(self.device) {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.overflow = true;
            return;
        }
        let text = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().unwrap_or("").to_owned();
        self.entries.push(Entry {
            at: t.timestamp.as_deref().and_then(time::parse),
            timestamp: text(&t.timestamp),
            message_type: t.message_type,
            srv: text(&t.srv),
            srv_title: text(&t.srv_title),
            code: text(if t.alert_code.is_some() {
                &t.alert_code
            } else {
                &t.response_code
            }),
            user_role: text(&t.user_role),
            other_user: t.other_user,
        });
    }

    /// The page, whole.
    pub fn page(&self) -> Vec<u8> {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        // Time order; undated records last, in the order they came.
        entries.sort_by_key(|e| (e.at.is_none(), e.at));
        let id = self.device.to_string();
        let mut out = String::with_capacity(4096 + 200 * entries.len());
        let alerts = entries.iter().filter(|e| is_alert(e)).count();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP_META}\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\"><title>Timeline of Device {id}</title><style>{STYLE}</style></head>\
             <body><h1>Timeline of Device {id}</h1><p id=\"overview\">{} records, {alerts} alerts, in time order. \
             Each alert lists the records other Users sent or received about this Device in the {} minutes before it.</p>\
             <div class=\"scroll\"><table><thead><tr><th>Time (UTC)</th><th>Message type</th><th>SRV</th><th>Title</th>\
             <th>Code</th><th>Role</th><th>Whose</th></tr></thead><tbody>\n",
            entries.len(),
            BEFORE_SECS / 60
        );
        for (i, e) in entries.iter().enumerate() {
            let class = if is_alert(e) { " class=\"alert\"" } else { "" };
            row(e, class, &mut out);
            if !is_alert(e) {
                continue;
            }
            let Some(at) = e.at else { continue };
            let before: Vec<&Entry> = entries[..i]
                .iter()
                .copied()
                .filter(|p| p.other_user && !is_alert(p))
                .filter(|p| {
                    p.at.is_some_and(|t| t.secs <= at.secs && at.secs - t.secs <= BEFORE_SECS)
                })
                .collect();
            let _ = write!(
                out,
                "<tr class=\"before\"><td colspan=\"7\"><details open><summary>Before this alert: {} record(s) of other Users</summary>",
                before.len()
            );
            if !before.is_empty() {
                out.push_str("<ul>");
                for p in before {
                    let _ = write!(
                        out,
                        "<li>{} {} {} {} (role {})</li>",
                        escape(&p.timestamp),
                        p.message_type.map_or("", MessageType::as_str),
                        escape(&p.srv),
                        escape(&p.srv_title),
                        escape(&p.user_role)
                    );
                }
                out.push_str("</ul>");
            }
            out.push_str("</details></td></tr>\n");
        }
        out.push_str("</tbody></table></div></body></html>\n");
        out.into_bytes()
    }
}

fn is_alert(e: &Entry) -> bool {
    e.message_type.is_some_and(|mt| ALERT_TYPES.contains(&mt))
}

fn row(e: &Entry, class: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&e.timestamp),
        e.message_type.map_or("", MessageType::as_str),
        escape(&e.srv),
        escape(&e.srv_title),
        escape(&e.code),
        escape(&e.user_role),
        if e.other_user { "another User" } else { "yours" },
    );
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.15rem .5rem;text-align:left;vertical-align:top}\
tr.alert td{background:#fde7d9;font-weight:600}tr.before td{padding-left:2rem;color:#333}\
@media print{.scroll{overflow:visible}tr.alert td{print-color-adjust:exact;-webkit-print-color-adjust:exact}}";

impl Sink for Timeline {
    fn visible(&mut self, record: &Record<'_>, _allowed: Classes, _out: &mut Vec<u8>) {
        let mut titles = Titles::of(record);
        titles.other_user = self.caller.is_some_and(|caller| record.user_id != caller);
        self.add(&titles);
    }

    fn stopped(&self) -> bool {
        self.overflow
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use scraper::{Html, Selector};

    use super::*;

    fn titles(device: u64, at: &str, mt: MessageType, title: &str, other_user: bool) -> Titles<'static> {
        Titles {
            timestamp: Some(Cow::Owned(at.to_owned())),
            message_type: Some(mt),
            srv: Some(Cow::Borrowed("6.15.1")),
            srv_title: Some(Cow::Owned(title.to_owned())),
            user_role: Some(Cow::Borrowed("ED")),
            device_id: Some(Eui64::from_u64(device)),
            other_user,
            ..Titles::default()
        }
    }

    #[test]
    fn an_alert_lists_other_users_records_of_the_hour_before_it() {
        let mut t = Timeline::new(Eui64::from_u64(1));
        let req = MessageType::ServiceRequest;
        // Fed out of order: the page sorts by time.
        t.add(&titles(1, "2026-11-28T10:00:00Z", MessageType::DeviceAlert, "-", false));
        t.add(&titles(1, "2026-11-28T09:30:00Z", req, "inside the hour", true));
        t.add(&titles(1, "2026-11-28T08:59:59Z", req, "over an hour before", true));
        t.add(&titles(1, "2026-11-28T09:45:00Z", req, "the caller's own", false));
        t.add(&titles(1, "2026-11-28T10:05:00Z", req, "after the alert", true));
        t.add(&titles(2, "2026-11-28T09:50:00Z", req, "another Device", true));
        t.add(&titles(
            1,
            "2026-11-28T09:55:00Z",
            req,
            "</li></ul><script>alert(1)</script>",
            true,
        ));
        let doc = Html::parse_document(&String::from_utf8(t.page()).unwrap());
        let sel = |s: &str| Selector::parse(s).unwrap();
        assert_eq!(doc.select(&sel("script")).count(), 0);
        let times: Vec<String> = doc
            .select(&sel("tbody > tr:not(.before) > td:first-child"))
            .map(|td| td.text().collect())
            .collect();
        assert_eq!(times.len(), 6, "records of Device 1 only");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order: {times:?}");
        let listed: Vec<String> = doc.select(&sel("tr.before li")).map(|li| li.text().collect()).collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed[0].contains("inside the hour"));
        assert!(listed[1].contains("</li></ul><script>alert(1)</script>"));
    }

    #[test]
    fn the_timeline_is_capped() {
        let mut t = Timeline::new(Eui64::from_u64(1));
        for _ in 0..=MAX_ENTRIES {
            t.add(&titles(
                1,
                "2026-11-28T10:00:00Z",
                MessageType::ServiceRequest,
                "x",
                true,
            ));
        }
        assert!(t.overflow());
    }

    #[test]
    fn only_a_query_naming_one_device_has_a_timeline() {
        let id = "00-DB-00-00-00-00-01-01";
        assert_eq!(
            device_of(Some(&format!("from=2026-11-28&deviceId={id}"))).map(|d| d.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(device_of(Some("from=2026-11-28")), None);
        assert_eq!(device_of(Some(&format!("deviceId={id}&deviceId={id}"))), None);
        assert_eq!(device_of(Some("deviceId=nonsense")), None);
        assert_eq!(device_of(None), None);
    }
}
