//! The activity summary as one self-contained HTML page, for the analyst at a browser: flagged
//! Devices first, each with a daily chart (inline SVG, stacked by message type, flagged days
//! marked, the threshold drawn) and its breakdown tables; then one table row per other Device.
//!
//! Self-contained and inert: one document, one inline `<style>`, no script, no external asset,
//! no form; [`CSP`] says so to the browser (and a `<meta>` copy keeps saying so in a saved
//! file). Every string that came from the upstream (SRVs and their titles, codes, roles) goes
//! through [`escape`], which is enough for every place this page puts text: element text
//! (HTML's and the SVG's `<title>`/`<text>`) and double-quoted attribute values. Nothing is put
//! in a URL, a style or an unquoted attribute. The numbers are the JSON summary's
//! ([`Activity::ranked_devices`] is the same summary, Device by Device).

pub mod timeline;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::model::MessageType;
use crate::views::activity::render::{
    Counts, DeviceSummary, Summary, Unusual, ALERTS, ALERT_TYPES, OTHER_USERS, QUIET, RECORDS,
};
use crate::views::activity::{time, Activity};

/// The page's media type.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// No script, no loads of any kind (images, fonts, frames, fetches), no forms, no `<base>`, not
/// framed: only the page's own inline `<style>`.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The same policy as a `<meta>` element can state it (`frame-ancestors` is ignored there), so a
/// saved copy opened from disk is as inert as the served one.
const CSP_META: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// Shown in the browser, and saved under this name (`Content-Disposition`).
pub const DISPOSITION: &str = "inline; filename=\"satgate-activity.html\"";

/// The size the page is handed out in.
const PIECE_BYTES: usize = 64 * 1024;

/// Text safe in element content and in a double-quoted attribute value: `&`, `<`, `>`, `"` and
/// `'` as character references. (In SVG inside HTML, `<title>` and `<text>` are parsed as text
/// the same way.) Borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A number as the JSON has it (`12.0`, `3.5`).
fn num(f: f64) -> String {
    serde_json::to_string(&f).unwrap_or_else(|_| "null".to_owned())
}

/// The page, in pieces of about 64 KiB; one Device's section is made at a time.
pub fn page(activity: &Activity) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
    let (shell, devices) = activity.ranked_devices();
    let days = window_days(&shell);
    let mut page = Page {
        devices,
        days,
        state: State::Head,
        shell,
    };
    std::iter::from_fn(move || page.next_piece())
}

struct Page<I> {
    devices: I,
    /// Every day of the answer's window, oldest first: one bar group each.
    days: Vec<String>,
    state: State,
    shell: Summary,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Flagged,
    /// The table of the Devices without a flag is open.
    Others,
    Done,
}

impl<I: Iterator<Item = DeviceSummary>> Page<I> {
    fn next_piece(&mut self) -> Option<Vec<u8>> {
        let mut out = String::with_capacity(PIECE_BYTES + 16 * 1024);
        while out.len() < PIECE_BYTES && self.state != State::Done {
            match self.state {
                State::Head => {
                    head(&self.shell, &mut out);
                    self.state = State::Flagged;
                }
                State::Flagged | State::Others => match self.devices.next() {
                    Some(d) if !d.unusual.fired.is_empty() => device_section(&d, &self.days, &mut out),
                    Some(d) => {
                        if self.state == State::Flagged {
                            others_open(&mut out);
                            self.state = State::Others;
                        }
                        other_row(&d, &mut out);
                    }
                    None => {
                        if self.state == State::Others {
                            out.push_str("</tbody></table></div></section>\n");
                        }
                        tail(&self.shell, &mut out);
                        self.state = State::Done;
                    }
                },
                State::Done => {}
            }
        }
        (!out.is_empty()).then(|| out.into_bytes())
    }
}

/// Every day from the window's first to its last.
fn window_days(s: &Summary) -> Vec<String> {
    let day = |d: &str| time::parse(&format!("{d}T00:00:00Z")).map(time::Instant::day);
    let Some((first, last)) = s.days.as_ref().and_then(|w| day(&w.first).zip(day(&w.last))) else {
        return Vec::new();
    };
    (first..=last).map(time::day_to_string).collect()
}

/// Fill colours per message type: the Okabe-Ito palette (told apart with colour blindness), alerts
/// in the warm ones.
const COLOURS: [(MessageType, &str); 7] = [
    (MessageType::ServiceRequest, "#0072B2"),
    (MessageType::SignedPreCommand, "#56B4E9"),
    (MessageType::Acknowledgement, "#999999"),
    (MessageType::PreCommand, "#009E73"),
    (MessageType::ServiceResponse, "#F0E442"),
    (MessageType::DeviceAlert, "#D55E00"),
    (MessageType::DccAlert, "#CC79A7"),
];

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem;color:#111;background:#fff}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin:0 0 .3rem}h3{font-size:1rem;margin:.8rem 0 .2rem}
section.device{border:1px solid #bbb;border-left:6px solid #D55E00;padding:.6rem 1rem;margin:1rem 0}
.fired{font-weight:600}.tag{display:inline-block;border:1px solid #D55E00;border-radius:3px;padding:0 .3rem;margin-right:.3rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.3rem 0}th,td{border-bottom:1px solid #ddd;padding:.15rem .5rem;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.flagged td{background:#fde7d9;font-weight:600}tr.quiet td{background:#e6eef7}
svg.chart{max-width:100%;height:auto;display:block}svg .axis{stroke:#333}svg .threshold{stroke:#000;stroke-dasharray:4 3}
svg text{font:11px system-ui,sans-serif}svg .mark{fill:#D55E00;font-weight:700}svg .quietmark{fill:#0072B2;font-weight:700}
.legend span{display:inline-block;margin-right:.8rem}.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.25rem;vertical-align:middle}
@media print{body{max-width:none;font-size:11pt}section.device{break-inside:avoid-page}.scroll{overflow:visible}tr.flagged td,tr.quiet td,.legend i,svg rect{print-color-adjust:exact;-webkit-print-color-adjust:exact}}
";

fn head(s: &Summary, out: &mut String) {
    let window = s.days.as_ref().map_or_else(
        || "no dated records".to_owned(),
        |w| format!("{} to {}", w.first, w.last),
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP_META}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>Device activity, {window}</title><style>{STYLE}"
    );
    for (mt, colour) in COLOURS {
        let _ = write!(out, ".mt-{}{{fill:{colour};background:{colour}}}", mt.as_str());
    }
    let r = &s.rule;
    let _ = write!(
        out,
        "</style></head><body><header><h1>Device activity, {window}</h1>\
         <p id=\"overview\">{} records; <strong>Devices flagged: {}</strong>, listed first. \
         {} records about no Device.</p>\
         <p class=\"rule\">A day is flagged on a dimension (all records, alerts, other Users' records) when its \
         count is above max({} &times; median, median + {} &times; MAD, median + {}) of the Device's days, \
         judged after {} days of history. A Device went quiet on a run of at least {} days each below \
         {} &times; its median day (median at least {}).</p>",
        s.records,
        s.devices_flagged,
        s.without_device.records,
        num(r.k),
        num(r.m),
        num(r.min_excess),
        r.min_days,
        r.quiet_min_run,
        num(r.quiet_fraction),
        num(r.quiet_min_median),
    );
    out.push_str("<p class=\"legend\">");
    for (mt, _) in COLOURS {
        let _ = write!(out, "<span><i class=\"mt-{0}\"></i>{0}</span>", mt.as_str());
    }
    out.push_str("</p></header><main>\n");
    if s.devices_flagged == 0 {
        out.push_str("<p id=\"none-flagged\">No Device is flagged.</p>\n");
    }
}

fn others_open(out: &mut String) {
    out.push_str(
        "<section id=\"others\"><h2>Devices not flagged</h2><div class=\"scroll\"><table>\
         <thead><tr><th>Device</th><th class=\"n\">Records</th><th>First</th><th>Last</th>\
         <th class=\"n\">Median day</th><th class=\"n\">Threshold</th><th class=\"n\">Days judged</th></tr></thead><tbody>\n",
    );
}

fn other_row(d: &DeviceSummary, out: &mut String) {
    let u = &d.unusual;
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        escape(&d.device_id),
        d.counts.records,
        escape(d.counts.first_timestamp.as_deref().unwrap_or("")),
        escape(d.counts.last_timestamp.as_deref().unwrap_or("")),
        u.records.median.map(num).unwrap_or_default(),
        u.records.threshold.map(num).unwrap_or_default(),
        u.baseline_days,
    );
}

/// What fired for a Device, in words: one line per dimension.
fn verdict_lines(u: &Unusual) -> Vec<String> {
    let mut lines = Vec::new();
    for (dim, what, days, threshold) in [
        (RECORDS, "records", &u.records.days, u.records.threshold),
        (ALERTS, "alerts", &u.alerts.days, u.alerts.threshold),
        (
            OTHER_USERS,
            "records of other Users",
            &u.other_users.days,
            u.other_users.threshold,
        ),
    ] {
        if days.is_empty() {
            continue;
        }
        let list: Vec<String> = days
            .iter()
            .map(|f| format!("{} ({} {what}, score {})", f.day, f.records, num(f.score)))
            .collect();
        lines.push(format!(
            "<span class=\"tag\">{dim}</span>more {what} than usual (threshold {} a day): {}",
            threshold.map(num).unwrap_or_default(),
            list.join(", ")
        ));
    }
    if let Some(q) = u.quiet.as_ref().filter(|q| !q.runs.is_empty()) {
        let list: Vec<String> = q
            .runs
            .iter()
            .map(|r| format!("{} to {} ({} days, {} records)", r.first, r.last, r.days, r.records))
            .collect();
        lines.push(format!(
            "<span class=\"tag\">{QUIET}</span>went quiet (fewer than {} records a day, usual {}): {}",
            num(q.below),
            num(q.median),
            list.join(", ")
        ));
    }
    lines
}

/// The days a Device is flagged on (any dimension except quiet), and its quiet days.
fn marked_days(u: &Unusual, days: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let flagged = [&u.records.days, &u.alerts.days, &u.other_users.days]
        .into_iter()
        .flatten()
        .map(|f| f.day.clone())
        .collect();
    let quiet = u
        .quiet
        .iter()
        .flat_map(|q| &q.runs)
        .flat_map(|r| days.iter().filter(|d| **d >= r.first && **d <= r.last).cloned())
        .collect();
    (flagged, quiet)
}

fn device_section(d: &DeviceSummary, days: &[String], out: &mut String) {
    let id = escape(&d.device_id);
    let u = &d.unusual;
    let _ = write!(
        out,
        "<section class=\"device\" id=\"d-{id}\" aria-labelledby=\"h-{id}\"><h2 id=\"h-{id}\">Device {id}</h2>\
         <p class=\"records\">{} records, {} to {}.</p><ul class=\"fired\">",
        d.counts.records,
        escape(d.counts.first_timestamp.as_deref().unwrap_or("-")),
        escape(d.counts.last_timestamp.as_deref().unwrap_or("-")),
    );
    for line in verdict_lines(u) {
        let _ = write!(out, "<li>{line}</li>");
    }
    out.push_str("</ul>");
    let (flagged, quiet) = marked_days(u, days);
    chart(d, days, &flagged, &quiet, out);
    day_table(&d.counts, days, &flagged, &quiet, out);
    breakdowns(&d.counts, out);
    out.push_str("</section>\n");
}

// The chart's geometry, in SVG user units.
const BAR: f64 = 14.0;
const STEP: f64 = 20.0;
const LEFT: f64 = 44.0;
const TOP: f64 = 16.0;
const PLOT: f64 = 150.0;
const BOTTOM: f64 = 34.0;

fn chart(d: &DeviceSummary, days: &[String], flagged: &BTreeSet<String>, quiet: &BTreeSet<String>, out: &mut String) {
    let c = &d.counts;
    let id = escape(&d.device_id);
    let threshold = d.unusual.records.threshold;
    let top = days
        .iter()
        .map(|day| c.by_day.get(day).copied().unwrap_or(0) as f64)
        .fold(threshold.unwrap_or(0.0), f64::max)
        .max(1.0);
    let width = LEFT + STEP * days.len() as f64 + 8.0;
    let height = TOP + PLOT + BOTTOM;
    let y = |v: f64| TOP + PLOT - PLOT * v / top;
    let flagged_list: Vec<String> = flagged
        .iter()
        .map(|day| format!("{day} ({} records)", c.by_day.get(day).copied().unwrap_or(0)))
        .collect();
    let _ = write!(
        out,
        "<figure><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"t-{id} s-{id}\">\
         <title id=\"t-{id}\">Daily records of Device {id}, stacked by message type</title>\
         <desc id=\"s-{id}\">{} days from {} to {}. Flagged days: {}.{} The table below has every day's counts.</desc>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        days.len(),
        escape(days.first().map_or("-", String::as_str)),
        escape(days.last().map_or("-", String::as_str)),
        if flagged_list.is_empty() {
            "none".to_owned()
        } else {
            flagged_list.join(", ")
        },
        threshold.map_or(String::new(), |t| format!(" Threshold: {} records a day.", num(t))),
        TOP + PLOT,
        TOP + PLOT,
        width - 4.0,
        TOP + PLOT,
        LEFT - 4.0,
        TOP + 4.0,
        num(top),
        LEFT - 4.0,
        TOP + PLOT,
    );
    for (i, day) in days.iter().enumerate() {
        let x = LEFT + 3.0 + STEP * i as f64;
        let class = match (flagged.contains(day), quiet.contains(day)) {
            (true, _) => "day flagged",
            (false, true) => "day quiet",
            _ => "day",
        };
        let total = c.by_day.get(day).copied().unwrap_or(0);
        let _ = write!(
            out,
            "<g class=\"{class}\" data-day=\"{}\" data-records=\"{total}\">",
            escape(day)
        );
        let mut base = 0.0;
        if let Some(types) = c.by_day_message_type.get(day) {
            for (mt, _) in COLOURS {
                let Some(&n) = types.get(mt.as_str()) else { continue };
                let (y0, y1) = (y(base), y(base + n as f64));
                let _ = write!(
                    out,
                    "<rect class=\"mt-{0}\" x=\"{x}\" y=\"{y1:.2}\" width=\"{BAR}\" height=\"{h:.2}\"><title>{1} {0}: {n}</title></rect>",
                    mt.as_str(),
                    escape(day),
                    h = y0 - y1
                );
                base += n as f64;
            }
        }
        let mark = match class {
            "day flagged" => Some(("mark", "\u{25B2}")),
            "day quiet" => Some(("quietmark", "\u{25BD}")),
            _ => None,
        };
        if let Some((mark_class, glyph)) = mark {
            let _ = write!(
                out,
                "<text class=\"{mark_class}\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{glyph}</text>",
                x + BAR / 2.0,
                TOP + PLOT + 12.0
            );
        }
        // A date label every seventh day, and on the last day.
        if i % 7 == 0 || i + 1 == days.len() {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + BAR / 2.0,
                TOP + PLOT + 28.0,
                escape(day.get(5..).unwrap_or(day))
            );
        }
        out.push_str("</g>");
    }
    if let Some(t) = threshold {
        let _ = write!(
            out,
            "<line class=\"threshold\" x1=\"{LEFT}\" y1=\"{0:.2}\" x2=\"{1}\" y2=\"{0:.2}\"/>\
             <text x=\"{4}\" y=\"{2:.2}\">threshold {3}</text>",
            y(t),
            width - 4.0,
            y(t) - 3.0,
            num(t),
            LEFT + 4.0
        );
    }
    out.push_str("</svg></figure>");
}

fn day_table(c: &Counts, days: &[String], flagged: &BTreeSet<String>, quiet: &BTreeSet<String>, out: &mut String) {
    out.push_str(
        "<h3>Days</h3><div class=\"scroll\"><table class=\"days\"><thead><tr><th>Day</th><th class=\"n\">Records</th>\
         <th class=\"n\">Alerts</th><th class=\"n\">Other Users' records</th><th>Flag</th></tr></thead><tbody>",
    );
    for day in days {
        let records = c.by_day.get(day).copied().unwrap_or(0);
        let alerts: u64 = c
            .by_day_message_type
            .get(day)
            .map_or(0, |t| ALERT_TYPES.iter().filter_map(|a| t.get(a.as_str())).sum());
        let others = c.by_day_other_users.get(day).copied().unwrap_or(0);
        let (class, flag) = if flagged.contains(day) {
            (" class=\"flagged\"", "flagged")
        } else if quiet.contains(day) {
            (" class=\"quiet\"", "quiet")
        } else {
            ("", "")
        };
        let _ = write!(
            out,
            "<tr{class}><td>{}</td><td class=\"n\">{records}</td><td class=\"n\">{alerts}</td><td class=\"n\">{others}</td><td>{flag}</td></tr>",
            escape(day)
        );
    }
    out.push_str("</tbody></table></div>");
}

fn breakdowns(c: &Counts, out: &mut String) {
    let table = |out: &mut String, caption: &str, head: &str, rows: Vec<(String, u64)>| {
        if rows.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "<h3>{caption}</h3><div class=\"scroll\"><table><thead><tr><th>{head}</th><th class=\"n\">Records</th></tr></thead><tbody>"
        );
        for (key, n) in rows {
            let _ = write!(out, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", escape(&key));
        }
        out.push_str("</tbody></table></div>");
    };
    let pairs = |m: &std::collections::BTreeMap<String, u64>| m.iter().map(|(k, n)| (k.clone(), *n)).collect();
    table(
        out,
        "By message type",
        "Message type",
        c.by_message_type.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
    );
    if !c.by_srv.is_empty() {
        out.push_str(
            "<h3>By SRV</h3><div class=\"scroll\"><table><thead><tr><th>SRV</th><th>Title</th><th class=\"n\">Records</th></tr></thead><tbody>",
        );
        for s in &c.by_srv {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(s.srv.as_deref().unwrap_or("")),
                escape(s.srv_title.as_deref().unwrap_or("")),
                s.records
            );
        }
        out.push_str("</tbody></table></div>");
    }
    table(out, "By alert code", "Alert code", pairs(&c.by_alert_code));
    table(out, "By response code", "Response code", pairs(&c.by_response_code));
    table(out, "By User role", "Role", pairs(&c.by_user_role));
}

fn tail(s: &Summary, out: &mut String) {
    let _ = write!(
        out,
        "</main><footer><h2>Totals</h2><p id=\"totals\">{} records in all; {} about no Device; {} flagged Devices.</p>",
        s.totals.records, s.without_device.records, s.devices_flagged
    );
    breakdowns(&s.totals, out);
    out.push_str("</footer></body></html>\n");
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use scraper::{Html, Selector};

    use super::*;
    use crate::model::Eui64;
    use crate::views::activity::{Limits, Titles};

    /// Strings built to leave each context the page puts upstream text in: element text, a
    /// double-quoted attribute, SVG's `<title>`/`<text>`, and a raw-text element.
    const HOSTILE: [&str; 6] = [
        "</td></tr></table><script>alert(1)</script>",
        "\"><img src=x onerror=alert(2)>",
        "'><svg onload=alert(3)>",
        "</title></svg><iframe src=//evil.example></iframe>",
        "</style><style>body{background:url(//evil.example/x)}</style>",
        "&lt;b&gt; &amp; \u{202E}txt.exe",
    ];

    fn add(a: &mut Activity, device: u64, day: u32, n: usize, mt: MessageType, title: &str) {
        for _ in 0..n {
            a.add(&Titles {
                timestamp: Some(Cow::Owned(format!("2026-11-{day:02}T10:00:00Z"))),
                message_type: Some(mt),
                srv: Some(Cow::Owned(title.to_owned())),
                srv_title: Some(Cow::Owned(title.to_owned())),
                alert_code: (mt == MessageType::DeviceAlert).then(|| Cow::Owned(title.to_owned())),
                response_code: Some(Cow::Owned(title.to_owned())),
                device_id: Some(Eui64::from_u64(device)),
                user_role: Some(Cow::Owned(title.to_owned())),
                other_user: false,
            });
        }
    }

    /// Device 1 steady, device 2 with an alert burst on the last day, both with hostile titles.
    fn hostile_activity() -> Activity {
        let mut a = Activity::new(Limits::DEFAULT);
        for day in 1..=14 {
            for (i, title) in HOSTILE.iter().enumerate() {
                add(&mut a, 1, day, 1 + i % 2, MessageType::ServiceRequest, title);
                add(&mut a, 2, day, 1, MessageType::ServiceRequest, title);
            }
            add(
                &mut a,
                2,
                day,
                if day == 14 { 40 } else { 1 },
                MessageType::DeviceAlert,
                HOSTILE[0],
            );
        }
        a
    }

    fn page_text(a: &Activity) -> String {
        String::from_utf8(page(a).flatten().collect()).unwrap()
    }

    fn count(doc: &Html, selector: &str) -> usize {
        doc.select(&Selector::parse(selector).unwrap()).count()
    }

    #[test]
    fn escape_covers_text_and_quoted_attributes() {
        assert!(matches!(escape("4.1.1 Read"), Cow::Borrowed(_)));
        assert_eq!(
            escape(r#"<a href="x" title='y'>&"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn hostile_titles_stay_text_and_change_no_structure() {
        let a = hostile_activity();
        let text = page_text(&a);
        let doc = Html::parse_document(&text);
        // Nothing the titles tried to add exists; the page's own structure is as built.
        for tag in [
            "script", "img", "iframe", "object", "embed", "base", "link", "form", "a",
        ] {
            assert_eq!(count(&doc, tag), 0, "a <{tag}> in the page");
        }
        assert_eq!(count(&doc, "style"), 1);
        assert_eq!(count(&doc, "svg"), 1, "one chart: one flagged Device");
        assert_eq!(count(&doc, "section.device"), 1);
        assert_eq!(count(&doc, "#others tbody tr"), 1);
        for element in doc.root_element().descendants().filter_map(scraper::ElementRef::wrap) {
            for (name, value) in element.value().attrs() {
                assert!(!name.starts_with("on"), "event handler {name}={value}");
                assert!(!value.contains("evil.example"), "{name}={value}");
            }
        }
        // Each hostile string is there, as text, exactly as the upstream sent it.
        let cells: Vec<String> = doc
            .select(&Selector::parse("section.device td").unwrap())
            .map(|td| td.text().collect())
            .collect();
        for h in HOSTILE {
            assert!(cells.iter().any(|c| c == h), "{h:?} not shown as text");
        }
        assert!(text.contains(&format!("content=\"{CSP_META}\"")));
    }

    #[test]
    fn the_chart_has_a_bar_group_per_day_and_marks_the_burst() {
        let a = hostile_activity();
        let doc = Html::parse_document(&page_text(&a));
        let summary = a.summary();
        let burst = &summary.devices[0];
        assert_eq!(burst.unusual.fired, [RECORDS, ALERTS]);
        let days: Vec<_> = doc.select(&Selector::parse("svg g.day").unwrap()).collect();
        assert_eq!(days.len(), 14);
        let flagged: Vec<&str> = days
            .iter()
            .filter(|g| g.value().classes().any(|c| c == "flagged"))
            .filter_map(|g| g.value().attr("data-day"))
            .collect();
        assert_eq!(flagged, ["2026-11-14"]);
        // The numbers are the JSON's: each day's records, and the stacked rects' counts sum to it.
        for g in &days {
            let day = g.value().attr("data-day").unwrap();
            let records: u64 = g.value().attr("data-records").unwrap().parse().unwrap();
            assert_eq!(records, burst.counts.by_day[day]);
            let stacked: u64 = g
                .select(&Selector::parse("rect > title").unwrap())
                .map(|t| {
                    t.text()
                        .collect::<String>()
                        .rsplit(' ')
                        .next()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            assert_eq!(stacked, records, "{day}");
        }
        assert_eq!(count(&doc, "svg line.threshold"), 1);
        // The chart's text alternative names the flagged day.
        let desc: String = doc
            .select(&Selector::parse("svg desc").unwrap())
            .flat_map(|d| d.text())
            .collect();
        assert!(desc.contains("2026-11-14 (46 records)"), "{desc}");
        let overview: String = doc
            .select(&Selector::parse("#overview").unwrap())
            .flat_map(|d| d.text())
            .collect();
        assert!(overview.contains(&format!("{} records", summary.records)), "{overview}");
    }

    #[test]
    fn an_empty_answer_is_a_whole_page() {
        let a = Activity::new(Limits::DEFAULT);
        let text = page_text(&a);
        assert!(text.starts_with("<!DOCTYPE html>") && text.ends_with("</html>\n"));
        assert!(text.contains("No Device is flagged."));
    }

    /// What a page of 1,000 Devices over 28 days costs: 100 flagged (charts and tables), 900 in
    /// the table of the rest.
    #[test]
    fn a_page_of_a_thousand_devices_is_bounded() {
        let mut a = Activity::new(Limits::DEFAULT);
        for device in 0..1_000u64 {
            for day in 1..=28 {
                let n = if device % 10 == 0 && day == 28 {
                    60
                } else {
                    2 + (device % 3) as usize
                };
                add(
                    &mut a,
                    device,
                    day,
                    n,
                    MessageType::ServiceRequest,
                    "Read Instantaneous Import Registers",
                );
            }
        }
        let started = std::time::Instant::now();
        let pieces: Vec<Vec<u8>> = page(&a).collect();
        let elapsed = started.elapsed();
        let bytes: usize = pieces.iter().map(Vec::len).sum();
        eprintln!(
            "1,000 Devices (100 flagged), 28 days: {bytes} bytes in {} pieces, {elapsed:?}",
            pieces.len()
        );
        assert!(pieces.iter().all(|p| p.len() < PIECE_BYTES + 64 * 1024));
        assert!(bytes < 4 * 1024 * 1024, "{bytes} bytes");
        let doc = Html::parse_document(&String::from_utf8(pieces.concat()).unwrap());
        assert_eq!(count(&doc, "section.device"), 100);
        assert_eq!(count(&doc, "#others tbody tr"), 900);
    }
}
