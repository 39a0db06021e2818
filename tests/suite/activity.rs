//! `/sat/activity` and CSV answers over HTTP, against the in-test upstream: the summary is the
//! summary of what `/sat/records` gives the same caller for the same query, CSV comes on
//! `Accept: text/csv` for both views, and a cap gives 422 with the cap named.

use serde_json::Value;

use crate::support::sidecar::{get, get_accepting, get_with_headers, start_sidecar};
use crate::support::upstream::start_upstream;
use crate::support::{token, users};
use crate::views::{fields, titles_of};
use satgate::model::Eui64;
use satgate::views::activity::{Activity, Limits};

fn caller(role: &str, party: &str) -> String {
    user(role, party).1
}

/// A sample User with that role and party: its User ID and a token for it.
fn user(role: &str, party: &str) -> (Eui64, String) {
    let (sub, role, party) = users()
        .into_iter()
        .find(|u| u.1 == role && u.2 == party)
        .expect("a sample User with that role and party");
    (Eui64::parse(&sub).unwrap(), token(&sub, &role, &party, 300))
}

#[tokio::test]
async fn the_summary_counts_exactly_what_the_records_view_shows() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    for (sub, t) in [user("IS", "SUPA"), user("ED", "DNO1"), user("GT", "GT1")] {
        let (st, body, _) = get(s.addr, "/sat/records?mode=ok&n=500", Some(&t)).await;
        assert_eq!(st, 200);
        let text = String::from_utf8(body).unwrap();
        let mut expected = Activity::new(Limits::DEFAULT);
        for line in text.lines() {
            expected.add(&titles_of(&fields(line), sub));
        }
        let expected = serde_json::to_value(expected.summary()).unwrap();

        let (st, content_type, body) = get_accepting(s.addr, "/sat/activity?mode=ok&n=500", &t, "*/*").await;
        assert_eq!((st, content_type.as_str()), (200, "application/json"));
        let got: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, expected);
        assert_eq!(got["records"].as_u64(), Some(text.lines().count() as u64));
        assert_eq!(got["totals"]["records"], got["records"]);
        assert!(got["devices"].as_array().is_some_and(|d| !d.is_empty()));
        // Every sample caller sees records other Users sent (the owner view), so the new
        // dimension is exercised, not all zeros.
        let others: u64 = got["totals"]["byDayOtherUsers"]
            .as_object()
            .map_or(0, |days| days.values().filter_map(Value::as_u64).sum());
        assert!(others > 0, "no other Users' records counted");
        for secret in ["payload", "metadata", "userId", "requestId"] {
            assert!(
                !String::from_utf8_lossy(&body).contains(secret),
                "{secret} in a summary"
            );
        }
    }
}

#[tokio::test]
async fn csv_on_request_for_records_and_activity() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = caller("IS", "SUPA");
    let (_, ndjson, _) = get(s.addr, "/sat/records?n=200", Some(&t)).await;
    let records = ndjson.iter().filter(|&&b| b == b'\n').count();

    let (st, content_type, body) = get_accepting(s.addr, "/sat/records?n=200", &t, "text/csv").await;
    assert_eq!(st, 200);
    assert_eq!(content_type, "text/csv; charset=utf-8; header=present");
    let mut reader = csv::Reader::from_reader(&body[..]);
    assert_eq!(reader.headers().unwrap().get(0), Some("recordId"));
    assert_eq!(reader.records().count(), records);

    let (st, content_type, body) = get_accepting(s.addr, "/sat/activity?n=200", &t, "text/csv;q=0.9, */*;q=0.1").await;
    assert_eq!(st, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let mut reader = csv::Reader::from_reader(&body[..]);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["deviceId", "dimension", "key", "srvTitle", "records", "score"]
    );
    let total: u64 = reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[1] == "records" && &r[0] != "*")
        .map(|r| r[4].parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        total, records as u64,
        "the per-Device totals and the no-Device total add up"
    );
}

#[tokio::test]
async fn a_cap_gives_422_naming_it_and_refusals_match_records() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = caller("IS", "SUPA");
    // 500 records a day apart: what SUPA sees spans more than 366 days.
    let (st, _, body) = get_accepting(s.addr, "/sat/activity?mode=span&n=500", &t, "*/*").await;
    assert_eq!(st, 422);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "too_much_activity");
    assert!(v["message"].as_str().unwrap().contains("366 days"), "{v}");
    // Fewer days: answered.
    let (st, _, _) = get_accepting(s.addr, "/sat/activity?mode=span&n=300", &t, "*/*").await;
    assert_eq!(st, 200);

    // The same refusals as /sat/records, before any upstream call or after it.
    let (st, _, _) = get(s.addr, "/sat/activity", None).await;
    assert_eq!(st, 401);
    let (st, body, _) = get(s.addr, "/sat/activity?mode=garbage", Some(&t)).await;
    assert_eq!(st, 502);
    assert!(!String::from_utf8_lossy(&body).contains("UPSTREAM-SECRET"));
    let (st, _, _) = get(s.addr, "/sat/activity?mode=status500", Some(&t)).await;
    assert_eq!(st, 502);
}

/// A browser's `Accept` gets the page on `/sat/activity`, inert by its headers, with the JSON's
/// numbers; `/sat/records` has no page and answers NDJSON as before.
#[tokio::test]
async fn a_browser_gets_a_page_of_the_same_summary() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = caller("IS", "SUPA");
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let (st, h, body) = get_with_headers(s.addr, "/sat/activity?mode=ok&n=500", &t, browser).await;
    assert_eq!(st, 200);
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let csp = header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("script"),
        "{csp}"
    );
    assert_eq!(
        header("content-disposition"),
        "inline; filename=\"satgate-activity.html\""
    );
    let page = String::from_utf8(body).unwrap();
    let (_, _, json) = get_accepting(s.addr, "/sat/activity?mode=ok&n=500", &t, "application/json").await;
    let summary: Value = serde_json::from_slice(&json).unwrap();
    let doc = scraper::Html::parse_document(&page);
    let overview: String = doc
        .select(&scraper::Selector::parse("#overview").unwrap())
        .flat_map(|e| e.text())
        .collect();
    assert!(
        overview.starts_with(&format!("{} records", summary["records"])),
        "{overview}"
    );
    for secret in ["payload", "metadata", "userId", "requestId"] {
        assert!(!page.contains(secret), "{secret} in the page");
    }

    let (st, content_type, _) = get_accepting(s.addr, "/sat/records?mode=ok&n=50", &t, browser).await;
    assert_eq!((st, content_type.as_str()), (200, "application/x-ndjson"));
}

/// A browser asking `/sat/records` about one Device gets its timeline page: the same records the
/// NDJSON answer holds about it, inert by its headers; without one `deviceId`, NDJSON.
#[tokio::test]
async fn a_browser_gets_one_devices_timeline() {
    let up = start_upstream().await;
    let s = start_sidecar(format!("http://{}", up.addr)).await;
    let t = caller("IS", "SUPA");
    let (_, ndjson, _) = get(s.addr, "/sat/records?mode=ok&n=500", Some(&t)).await;
    let text = String::from_utf8(ndjson).unwrap();
    let device = text
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l).ok()?["deviceId"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("a record about a Device");
    let about = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["deviceId"] == device.as_str())
        .count();

    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let path = format!("/sat/records?mode=ok&n=500&deviceId={device}");
    let (st, h, body) = get_with_headers(s.addr, &path, &t, browser).await;
    assert_eq!(st, 200);
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(header("content-security-policy").starts_with("default-src 'none'"));
    let doc = scraper::Html::parse_document(&String::from_utf8(body).unwrap());
    let rows = doc
        .select(&scraper::Selector::parse("tbody > tr:not(.before)").unwrap())
        .count();
    assert_eq!(rows, about, "the timeline holds the Device's visible records");

    let (st, content_type, _) = get_accepting(s.addr, "/sat/records?mode=ok&n=50", &t, browser).await;
    assert_eq!((st, content_type.as_str()), (200, "application/x-ndjson"));
}
